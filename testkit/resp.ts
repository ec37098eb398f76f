// RESP for tests, benchmarks and fault runs. One reply parser and one request
// client, the local cluster launcher's (src/resp/client-codec.ts,
// src/launcher/client.ts), and here on top of them a raw connection for tests
// that need exact bytes: send any bytes, read whole replies (as bytes) or
// wait for a condition on everything received. redis-parser (the reply parser
// ioredis uses) is typed here only for where it is the independent oracle or
// the thing measured (the encoder test, the decoder benchmark).

import { createRequire } from 'node:module';
import type { Socket } from 'node:net';
import { readReply } from '../src/resp/client-codec.js';
import { connectLoopback } from '../src/launcher/client.js';

export { encodeCommand, plainReply, readReply, ReplyDecoder, ReplyProtocolError, type PlainReply, type WireReply } from '../src/resp/client-codec.js';
export { command, connectLoopback, request, REQUEST_TIMEOUT_MS, RespClient, RespErrorReply, RespNoReply } from '../src/launcher/client.js';

/** Bound on opening a RawClient's connection. */
export const RAW_CONNECT_TIMEOUT_MS = 5_000;
/** Bytes a RawClient keeps received and unread; past it the connection is closed (a test reading too little). */
export const RAW_RECEIVED_BYTES_MAX = 256 * 1024 * 1024;

/**
 * Where the RESP2/RESP3 reply starting at `start` ends, or null while it is
 * incomplete. Throws on bytes that are not a reply.
 */
export function replyEnd(buf: Buffer, start = 0): number | null {
  return readReply(buf, start)?.end ?? null;
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
 * A raw connection: send any bytes; read back whole replies as bytes, or
 * wait until what arrived satisfies a condition.
 */
export class RawClient {
  private received: Buffer = Buffer.alloc(0);
  private waiters: (() => void)[] = [];
  closed = false;

  private constructor(readonly socket: Socket) {
    socket.setNoDelay(true);
    socket.on('data', (d: Buffer) => {
      this.received = this.received.length === 0 ? d : Buffer.concat([this.received, d]);
      if (this.received.length > RAW_RECEIVED_BYTES_MAX) socket.destroy();
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => undefined);
  }

  /** Connects on loopback; rejects on an error or after `timeoutMs`. */
  static async connect(port: number, timeoutMs = RAW_CONNECT_TIMEOUT_MS): Promise<RawClient> {
    return new RawClient(await connectLoopback(port, timeoutMs));
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Waits until something arrives, the connection closes, or `ms` pass. */
  private nudge(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, Math.max(1, ms));
      this.waiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  send(data: string | Buffer): void {
    this.socket.write(data);
  }

  /**
   * Writes and resolves once the bytes were handed to the kernel. A write to a
   * connection the server closed is dropped: the missing replies show that.
   */
  write(bytes: Buffer): Promise<void> {
    if (this.closed || this.socket.writableEnded || this.socket.destroyed) return Promise.resolve();
    return new Promise((resolve) => this.socket.write(bytes, () => resolve()));
  }

  /** Everything received and not taken or read yet. */
  get bytes(): Buffer {
    return this.received;
  }

  /** Waits until `done(received)` holds, the socket closes, or the timeout passes; returns what arrived. */
  async until(done: (received: Buffer) => boolean, timeoutMs = 5000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (!done(this.received) && !this.closed) {
      const left = deadline - Date.now();
      if (left <= 0) break;
      await this.nudge(left);
    }
    return this.received;
  }

  /** Returns everything received so far and forgets it. */
  take(): Buffer {
    const r = this.received;
    this.received = Buffer.alloc(0);
    return r;
  }

  /**
   * Reads `count` whole replies (their bytes) and forgets them. A reply that
   * never came (closed connection or timeout) is returned as a marker text,
   * so that it shows in a comparison.
   */
  async read(count: number, timeoutMs = 5000): Promise<Buffer[]> {
    const out: Buffer[] = [];
    const deadline = Date.now() + timeoutMs;
    while (out.length < count) {
      const end = replyEnd(this.received, 0);
      if (end !== null) {
        out.push(this.received.subarray(0, end));
        this.received = this.received.subarray(end);
        continue;
      }
      const left = deadline - Date.now();
      if (this.closed || left <= 0) {
        const why = this.closed ? 'connection closed' : `no reply within ${timeoutMs} ms`;
        out.push(Buffer.from(`<${why}; partial: ${escapeBytes(this.received)}>`, 'latin1'));
        this.received = Buffer.alloc(0);
        continue;
      }
      await this.nudge(left);
    }
    return out;
  }

  /** Waits for the server to close the connection; true when it did. */
  async waitClosed(timeoutMs = 2000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed && Date.now() < deadline) await this.nudge(deadline - Date.now());
    return this.closed;
  }

  close(): void {
    this.socket.destroy();
  }
}

export interface RedisParserOptions {
  returnReply: (reply: unknown) => void;
  returnError: (error: Error) => void;
  returnFatalError?: (error: Error) => void;
  returnBuffers?: boolean;
  stringNumbers?: boolean;
}

export interface RedisParser {
  execute(chunk: Buffer): void;
  reset(): void;
}

/** redis-parser's constructor (it ships without type declarations). */
export const RedisParser = createRequire(import.meta.url)('redis-parser') as new (options: RedisParserOptions) => RedisParser;
