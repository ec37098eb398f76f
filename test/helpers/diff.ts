// Differential testing against a real redis-server: the same request bytes go
// to both servers over raw sockets and the reply bytes are compared one reply
// at a time. Nothing here knows what the commands mean.

import { Socket } from 'node:net';
import { encodeCommand } from './resp.js';

export type Arg = string | Buffer;

/** One request and what to do with its replies. */
export interface Step {
  /** Shown in failure messages. */
  readonly label: string;
  /** The request bytes (a RESP array, or an inline command line). */
  readonly bytes: Buffer;
  /** How many replies the request produces (inline lines can hold several commands). */
  readonly replies: number;
  /** Which servers get the request. */
  readonly to: 'both' | 'ordo';
  /** When set, ordo's reply must be exactly these bytes (ordo-only steps). */
  readonly ordoExpected?: Buffer;
  /** False for replies that legitimately differ; they are only checked to be non-errors. */
  readonly compare: boolean;
  /** Parts of both replies replaced by `<masked>` before comparing (client ids). */
  readonly mask?: RegExp;
}

export { encodeCommand };

/** A command compared byte for byte on both servers. */
export function cmd(...args: Arg[]): Step {
  return { label: args.map(labelArg).join(' '), bytes: encodeCommand(args), replies: 1, to: 'both', compare: true };
}

/** A command sent to both whose replies are not compared (they carry ids); neither may be an error. */
export function uncompared(...args: Arg[]): Step {
  return { ...cmd(...args), compare: false };
}

/** A command compared after the parts matching `mask` (a global RegExp over latin1 text) are blanked in both replies. */
export function masked(mask: RegExp, ...args: Arg[]): Step {
  return { ...cmd(...args), mask };
}

/** Raw bytes (inline commands), compared reply by reply. */
export function raw(bytes: string | Buffer, replies = 1): Step {
  const b = typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes;
  return { label: `raw ${escapeBytes(b)}`, bytes: b, replies, to: 'both', compare: true };
}

/** A command only ordo gets (ordo differs from Redis by design); its exact reply is asserted. */
export function ordoOnly(expected: string, ...args: Arg[]): Step {
  return { ...cmd(...args), to: 'ordo', ordoExpected: Buffer.from(expected, 'latin1') };
}

/** An argument as shown in failure messages: bare when plain ASCII, else quoted with bytes escaped. */
function labelArg(arg: Arg): string {
  const b = typeof arg === 'string' ? Buffer.from(arg, 'utf8') : arg;
  const plain = b.length > 0 && b.every((byte) => byte > 0x20 && byte < 0x7f && byte !== 0x22 && byte !== 0x5c);
  const text = plain ? b.toString('latin1') : `"${escapeBytes(b).replace(/"/g, '\\"')}"`;
  return text.length > 160 ? `${text.slice(0, 150)}...(${b.length} bytes)` : text;
}

/** Bytes as readable text: printable ASCII as is, everything else escaped. */
export function escapeBytes(b: Buffer): string {
  let out = '';
  for (const byte of b) {
    if (byte === 0x0d) out += '\\r';
    else if (byte === 0x0a) out += '\\n';
    else if (byte === 0x5c) out += '\\\\';
    else if (byte >= 0x20 && byte < 0x7f) out += String.fromCharCode(byte);
    else out += `\\x${byte.toString(16).padStart(2, '0')}`;
  }
  return out;
}

/**
 * Where the RESP2/RESP3 reply starting at `start` ends, or null while it is
 * incomplete. Throws on bytes that are not a reply.
 */
export function replyEnd(buf: Buffer, start: number): number | null {
  if (start >= buf.length) return null;
  const lineEnd = buf.indexOf('\r\n', start, 'latin1');
  if (lineEnd < 0) return null;
  const type = String.fromCharCode(buf[start] as number);
  const header = buf.toString('latin1', start + 1, lineEnd);
  let pos = lineEnd + 2;
  switch (type) {
    case '+': case '-': case ':': case '_': case ',': case '#': case '(':
      return pos;
    case '$': case '!': case '=': {
      const n = Number(header);
      if (!Number.isInteger(n)) throw new Error(`bad length in ${escapeBytes(buf.subarray(start, lineEnd + 2))}`);
      if (n < 0) return pos;
      return buf.length < pos + n + 2 ? null : pos + n + 2;
    }
    case '*': case '~': case '>': case '%': case '|': {
      let n = Number(header);
      if (!Number.isInteger(n)) throw new Error(`bad length in ${escapeBytes(buf.subarray(start, lineEnd + 2))}`);
      if (n < 0) return pos;
      if (type === '%' || type === '|') n *= 2;
      for (let i = 0; i < n; i++) {
        const end = replyEnd(buf, pos);
        if (end === null) return null;
        pos = end;
      }
      // An attribute is followed by the reply it describes.
      return type === '|' ? replyEnd(buf, pos) : pos;
    }
    default:
      throw new Error(`not a RESP reply at byte ${start}: ${escapeBytes(buf.subarray(start, start + 60))}`);
  }
}

/** A raw connection that hands out whole replies. */
export class ReplyReader {
  private buffer: Buffer = Buffer.alloc(0);
  private waiter: (() => void) | null = null;
  closed = false;

  private constructor(readonly socket: Socket) {
    socket.setNoDelay(true);
    socket.on('data', (d: Buffer) => {
      this.buffer = this.buffer.length === 0 ? d : Buffer.concat([this.buffer, d]);
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => undefined);
  }

  static connect(port: number): Promise<ReplyReader> {
    return new Promise((resolve, reject) => {
      const s = new Socket();
      s.once('error', reject);
      s.connect(port, '127.0.0.1', () => {
        s.off('error', reject);
        resolve(new ReplyReader(s));
      });
    });
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  /**
   * Writes and resolves once the bytes were handed to the kernel. A write to a
   * connection the server closed is dropped: the missing replies show that.
   */
  write(bytes: Buffer): Promise<void> {
    if (this.closed || this.socket.writableEnded || this.socket.destroyed) return Promise.resolve();
    return new Promise((resolve) => this.socket.write(bytes, () => resolve()));
  }

  /**
   * Reads `count` whole replies. A reply that never came (closed connection or
   * timeout) is returned as a marker text so that it shows in the comparison.
   */
  async read(count: number, timeoutMs = 5000): Promise<Buffer[]> {
    const out: Buffer[] = [];
    const deadline = Date.now() + timeoutMs;
    while (out.length < count) {
      const end = replyEnd(this.buffer, 0);
      if (end !== null) {
        out.push(this.buffer.subarray(0, end));
        this.buffer = this.buffer.subarray(end);
        continue;
      }
      const left = deadline - Date.now();
      if (this.closed || left <= 0) {
        const why = this.closed ? 'connection closed' : `no reply within ${timeoutMs} ms`;
        out.push(Buffer.from(`<${why}; partial: ${escapeBytes(this.buffer)}>`, 'latin1'));
        this.buffer = Buffer.alloc(0);
        continue;
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    return out;
  }

  /** Waits for the server to close the connection; true when it did. */
  async waitClosed(timeoutMs = 2000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    return this.closed;
  }

  /** Bytes received beyond the replies read so far. */
  get leftover(): Buffer {
    return this.buffer;
  }

  close(): void {
    this.socket.destroy();
  }
}

export type SendMode = 'one-by-one' | 'pipelined' | 'byte-by-byte';

export interface DiffOptions {
  readonly protocol: 2 | 3;
  readonly mode: SendMode;
  /** Both servers must close the connection after the last reply. */
  readonly expectClose?: boolean;
  /** Start without FLUSHALL (for connections that are not authenticated yet). */
  readonly keepKeyspace?: boolean;
}

/** Sends the steps to fresh connections of both servers and returns every problem found, as readable text. */
export async function diffSteps(redisPort: number, ordoPort: number, steps: readonly Step[], options: DiffOptions): Promise<string[]> {
  const redis = await ReplyReader.connect(redisPort);
  const ordo = await ReplyReader.connect(ordoPort);
  const problems: string[] = [];
  try {
    // A clean keyspace and the protocol under test; these replies are not compared.
    const setupCommands = [...(options.keepKeyspace === true ? [] : [['FLUSHALL']]), ...(options.protocol === 3 ? [['HELLO', '3']] : [])];
    const setup = Buffer.concat(setupCommands.map(encodeCommand));
    const setupCount = setupCommands.length;
    await Promise.all([redis.write(setup), ordo.write(setup)]);
    const [redisSetup, ordoSetup] = await Promise.all([redis.read(setupCount), ordo.read(setupCount)]);
    for (const r of [...redisSetup, ...ordoSetup]) {
      if (r[0] === 0x2d || r[0] === 0x3c) problems.push(`setup failed: ${escapeBytes(r)}`);
    }
    if (problems.length > 0) return problems;

    const bytesFor = (to: 'redis' | 'ordo', s: Step): Buffer => (s.to === 'both' || to === 'ordo' ? s.bytes : Buffer.alloc(0));
    const countFor = (to: 'redis' | 'ordo', s: Step): number => (s.to === 'both' || to === 'ordo' ? s.replies : 0);
    const check = (s: Step, redisReplies: Buffer[], ordoReplies: Buffer[]): void => {
      if (s.ordoExpected !== undefined) {
        const got = Buffer.concat(ordoReplies);
        if (!got.equals(s.ordoExpected)) {
          problems.push(`command: ${s.label}\n  expected ordo: ${escapeBytes(s.ordoExpected)}\n  ordo:          ${escapeBytes(got)}`);
        }
        return;
      }
      if (!s.compare) {
        for (const [who, replies] of [['redis', redisReplies], ['ordo', ordoReplies]] as const) {
          for (const r of replies) {
            if (r[0] === 0x2d || r[0] === 0x3c) problems.push(`command: ${s.label}\n  ${who} failed: ${escapeBytes(r)}`);
          }
        }
        return;
      }
      const blank = (replies: Buffer[]): Buffer => {
        const all = Buffer.concat(replies);
        return s.mask === undefined ? all : Buffer.from(all.toString('latin1').replace(s.mask, '<masked>'), 'latin1');
      };
      const a = blank(redisReplies);
      const b = blank(ordoReplies);
      if (!a.equals(b)) problems.push(`command: ${s.label}\n  redis: ${escapeBytes(a)}\n  ordo:  ${escapeBytes(b)}`);
    };

    if (options.mode === 'one-by-one') {
      for (const s of steps) {
        await Promise.all([redis.write(bytesFor('redis', s)), ordo.write(bytesFor('ordo', s))]);
        const [r, o] = await Promise.all([redis.read(countFor('redis', s)), ordo.read(countFor('ordo', s))]);
        check(s, r, o);
      }
    } else {
      const send = async (reader: ReplyReader, bytes: Buffer): Promise<void> => {
        if (options.mode === 'pipelined') return reader.write(bytes);
        for (let i = 0; i < bytes.length; i++) {
          await reader.write(bytes.subarray(i, i + 1));
          // Let the segment leave before the next byte so the server sees it alone.
          if (i % 4 === 0) await new Promise((r) => setImmediate(r));
        }
      };
      const all = (to: 'redis' | 'ordo'): Buffer => Buffer.concat(steps.map((s) => bytesFor(to, s)));
      const total = (to: 'redis' | 'ordo'): number => steps.reduce((n, s) => n + countFor(to, s), 0);
      await Promise.all([send(redis, all('redis')), send(ordo, all('ordo'))]);
      const [r, o] = await Promise.all([redis.read(total('redis'), 10_000), ordo.read(total('ordo'), 10_000)]);
      let ri = 0;
      let oi = 0;
      for (const s of steps) {
        const rc = countFor('redis', s);
        const oc = countFor('ordo', s);
        check(s, r.slice(ri, ri + rc), o.slice(oi, oi + oc));
        ri += rc;
        oi += oc;
      }
    }

    if (options.expectClose === true) {
      const [rc, oc] = await Promise.all([redis.waitClosed(), ordo.waitClosed()]);
      if (rc !== oc) problems.push(`connection closed after the last reply: redis ${rc}, ordo ${oc}`);
    }
    for (const [who, reader] of [['redis', redis], ['ordo', ordo]] as const) {
      if (reader.leftover.length > 0) problems.push(`${who} sent more than expected: ${escapeBytes(reader.leftover)}`);
    }
    return problems;
  } finally {
    redis.close();
    ordo.close();
  }
}
