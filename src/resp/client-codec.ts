// RESP from the client's side: a command encoded as every real client sends
// it, and an incremental decoder for what servers answer (RESP2 and RESP3,
// attributes included). The server never needs either; the local cluster
// launcher and the testkit talk to ordo and redis-server through them. Pure:
// buffers in, replies out, no sockets.

import { OrdoError } from '../ordo-error.js';

/** Deepest nesting of aggregates a reply may have before it is refused as garbage. */
export const REPLY_DEPTH_MAX = 64;
/** Largest `$`/`=`/`!` length accepted (as the server's bulk limit). */
export const REPLY_BULK_BYTES_MAX = 512 * 1024 * 1024;

/** A RESP array of bulk strings: what every real client sends (strings as UTF-8). */
export function encodeCommand(args: readonly (string | Buffer)[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`, 'latin1')];
  for (const arg of args) {
    const b = typeof arg === 'string' ? Buffer.from(arg, 'utf8') : arg;
    parts.push(Buffer.from(`$${b.length}\r\n`, 'latin1'), b, Buffer.from('\r\n', 'latin1'));
  }
  return Buffer.concat(parts);
}

/**
 * One reply as it came over the wire: its type byte ('+', '-', ':', '$', '*',
 * '%', '|', ...), the rest of its first line, the nested replies of an
 * aggregate (a map's keys and values alternate; an attribute's entries are
 * followed by the reply they describe), and a bulk payload as latin1 text
 * (null for a nil bulk and for every other type).
 */
export interface WireReply {
  readonly kind: string;
  readonly line: string;
  readonly items: readonly WireReply[];
  readonly bulk: string | null;
}

/** The bytes are not a RESP reply. */
export class ReplyProtocolError extends OrdoError {
  readonly code = 'ORDO_ERR_RESP_REPLY_PROTOCOL';
}

function lengthOf(header: string, kind: string): number {
  const n = Number(header);
  if (header === '' || !Number.isSafeInteger(n) || n < -1) throw new ReplyProtocolError(`bad length ${JSON.stringify(header)} after '${kind}'`);
  return n;
}

function readAt(buf: Buffer, start: number, depth: number): { reply: WireReply; end: number } | null {
  if (depth > REPLY_DEPTH_MAX) throw new ReplyProtocolError(`replies nested deeper than ${REPLY_DEPTH_MAX}`);
  if (start >= buf.length) return null;
  const lineEnd = buf.indexOf('\r\n', start, 'latin1');
  if (lineEnd < 0) return null;
  const kind = String.fromCharCode(buf[start] ?? 0);
  const line = buf.toString('latin1', start + 1, lineEnd);
  let end = lineEnd + 2;
  switch (kind) {
    case '+':
    case '-':
    case ':':
    case '_':
    case ',':
    case '#':
    case '(':
      return { reply: { kind, line, items: [], bulk: null }, end };
    case '$':
    case '=':
    case '!': {
      const n = lengthOf(line, kind);
      if (n < 0) return { reply: { kind, line, items: [], bulk: null }, end };
      if (n > REPLY_BULK_BYTES_MAX) throw new ReplyProtocolError(`bulk of ${n} bytes is over ${REPLY_BULK_BYTES_MAX}`);
      if (buf.length < end + n + 2) return null;
      return { reply: { kind, line, items: [], bulk: buf.toString('latin1', end, end + n) }, end: end + n + 2 };
    }
    case '*':
    case '~':
    case '>':
    case '%':
    case '|': {
      const n = lengthOf(line, kind);
      if (n < 0) return { reply: { kind, line, items: [], bulk: null }, end };
      // A map's and an attribute's entries are pairs; an attribute is followed by the reply it describes.
      const count = (kind === '%' || kind === '|' ? 2 * n : n) + (kind === '|' ? 1 : 0);
      const items: WireReply[] = [];
      for (let i = 0; i < count; i++) {
        const r = readAt(buf, end, depth + 1);
        if (r === null) return null;
        items.push(r.reply);
        end = r.end;
      }
      return { reply: { kind, line, items, bulk: null }, end };
    }
    default:
      throw new ReplyProtocolError(`not a RESP reply at byte ${start}: ${JSON.stringify(buf.toString('latin1', start, Math.min(buf.length, start + 60)))}`);
  }
}

/**
 * The reply that starts at `start` and the position after it, or null while
 * its bytes are not all there. Throws ReplyProtocolError on bytes that are not a reply.
 */
export function readReply(buf: Buffer, start = 0): { reply: WireReply; end: number } | null {
  return readAt(buf, start, 0);
}

/** Collects bytes from a connection and hands out whole replies in order. */
export class ReplyDecoder {
  private buffered: Buffer = Buffer.alloc(0);

  /** Bytes received and not yet part of a whole reply. */
  get pendingBytes(): number {
    return this.buffered.length;
  }

  /** Feeds a chunk; returns every reply it completed. Throws ReplyProtocolError on garbage. */
  push(chunk: Buffer): WireReply[] {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    const out: WireReply[] = [];
    let pos = 0;
    for (;;) {
      const r = readReply(this.buffered, pos);
      if (r === null) break;
      out.push(r.reply);
      pos = r.end;
    }
    this.buffered = this.buffered.subarray(pos);
    return out;
  }
}

function utf8(latin1: string): string {
  return Buffer.from(latin1, 'latin1').toString('utf8');
}

/** A reply simplified: strings (simple; bulk and verbatim as UTF-8), numbers as their text, arrays; nil as null. */
export type PlainReply = string | null | PlainReply[];

/**
 * The reply the way the launcher and tests read it: numbers, doubles and
 * booleans as their text, every aggregate as an array (a map's keys and values
 * alternate), an error nested in an aggregate as `(error) message`. A top-level
 * error is the caller's to raise; here it reads like a nested one.
 */
export function plainReply(reply: WireReply): PlainReply {
  switch (reply.kind) {
    case '$':
      return reply.bulk === null ? null : utf8(reply.bulk);
    case '=':
      return reply.bulk === null ? null : utf8(reply.bulk.slice(4));
    case '!':
      return `(error) ${reply.bulk ?? ''}`;
    case '_':
      return null;
    case '-':
      return `(error) ${reply.line}`;
    case '*':
    case '~':
    case '>':
    case '%':
      return reply.line.startsWith('-') ? null : reply.items.map(plainReply);
    case '|': {
      const described = reply.items[reply.items.length - 1];
      return described === undefined ? null : plainReply(described);
    }
    default:
      return reply.line;
  }
}
