// Shared pieces of the fault runs (fuzz.ts, crash.ts, run.ts): RSS sampling,
// a PING probe and small command-line helpers. Processes, RESP, seeds and
// waits come from the testkit.

import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { RawClient } from '../testkit/resp.js';

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
export async function pingProbe(port: number, timeoutMs: number): Promise<string | null> {
  let client: RawClient;
  try {
    client = await RawClient.connect(port);
  } catch (e) {
    return `connection failed: ${(e as Error).message}`;
  }
  try {
    client.send('PING\r\n');
    const got = (await client.until((b) => b.includes('\r\n'), timeoutMs)).toString('latin1');
    if (got.includes('\r\n')) return got === '+PONG\r\n' ? null : `unexpected reply ${JSON.stringify(got)}`;
    return client.closed ? `closed before PONG (got ${JSON.stringify(got)})` : `no PONG within ${timeoutMs} ms (got ${JSON.stringify(got)})`;
  } finally {
    client.close();
  }
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
