// Shared pieces of the fault runs (fuzz.ts, crash.ts): RESP request encoding,
// an incremental scanner for the server's replies, RSS sampling, a PING probe
// and small command-line helpers.

import { readFileSync } from 'node:fs';
import { Socket } from 'node:net';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

/** Encodes one request as a RESP array of bulk strings. */
export { encodeCommand } from '../test/helpers/resp.js';

/** One top-level reply: its type byte ('+', '-', ':', '$', '*', ...), the first line, and nested items for arrays. */
export interface Reply {
  readonly kind: string;
  readonly line: string;
  readonly items: readonly Reply[];
  readonly bulk: string | null;
}

/**
 * Reads one reply starting at `pos`; returns it and the position after it,
 * or null when the bytes are not all there yet.
 */
function readReply(buf: Buffer, pos: number): { reply: Reply; end: number } | null {
  const lineEnd = buf.indexOf('\r\n', pos, 'latin1');
  if (lineEnd < 0) return null;
  const kind = String.fromCharCode(buf[pos] ?? 0);
  const line = buf.toString('latin1', pos + 1, lineEnd);
  let end = lineEnd + 2;
  if (kind === '$' || kind === '=' || kind === '!') {
    const n = Number(line);
    if (n < 0) return { reply: { kind, line, items: [], bulk: null }, end };
    if (buf.length < end + n + 2) return null;
    const bulk = buf.toString('latin1', end, end + n);
    return { reply: { kind, line, items: [], bulk }, end: end + n + 2 };
  }
  if (kind === '*' || kind === '~' || kind === '>' || kind === '%') {
    let n = Number(line);
    if (n < 0) return { reply: { kind, line, items: [], bulk: null }, end };
    if (kind === '%') n *= 2;
    const items: Reply[] = [];
    for (let i = 0; i < n; i++) {
      const r = readReply(buf, end);
      if (r === null) return null;
      items.push(r.reply);
      end = r.end;
    }
    return { reply: { kind, line, items, bulk: null }, end };
  }
  return { reply: { kind, line, items: [], bulk: null }, end };
}

/** Collects bytes from a socket and hands out whole replies in order. */
export class ReplyScanner {
  private buffered: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): Reply[] {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    const out: Reply[] = [];
    let pos = 0;
    while (pos < this.buffered.length) {
      const r = readReply(this.buffered, pos);
      if (r === null) break;
      out.push(r.reply);
      pos = r.end;
    }
    this.buffered = this.buffered.subarray(pos);
    return out;
  }
}

/** Resident set size of a process in kB, or null when it is gone. */
export function rssKb(pid: number): number | null {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m === null ? null : Number(m[1]);
  } catch {
    return null;
  }
}

/** Opens a fresh connection, sends PING and resolves with null when +PONG came back within the timeout, else what went wrong. */
export function pingProbe(port: number, timeoutMs: number): Promise<string | null> {
  return new Promise((resolve) => {
    const s = new Socket();
    let got = '';
    let settled = false;
    const finish = (why: string | null): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      s.destroy();
      resolve(why);
    };
    const timer = setTimeout(() => finish(`no PONG within ${timeoutMs} ms (got ${JSON.stringify(got)})`), timeoutMs);
    s.on('error', (e) => finish(`connection failed: ${e.message}`));
    s.on('close', () => finish(`closed before PONG (got ${JSON.stringify(got)})`));
    s.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (got.includes('\r\n')) finish(got === '+PONG\r\n' ? null : `unexpected reply ${JSON.stringify(got)}`);
    });
    s.connect(port, '127.0.0.1', () => s.write('PING\r\n'));
  });
}

/** A seed from the command line, or a fresh one from the clock. */
export function seedFrom(text: string | undefined): number {
  if (text === undefined) return Date.now() % 1_000_000_000;
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`--seed must be a non-negative integer, got ${text}`);
  return n;
}

export function positiveInt(name: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`--${name} must be a positive integer, got ${text}`);
  return n;
}

/** True when this module is the script node was started with. */
export function isMain(moduleUrl: string): boolean {
  const script = process.argv[1];
  if (script === undefined) return false;
  return moduleUrl === pathToFileURL(resolve(script)).href;
}
