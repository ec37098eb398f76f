// RESP from the client's side, for tests, benchmarks and fault runs: a
// command encoded as real clients send it, and redis-parser (the reply parser
// ioredis uses), which ships without type declarations, with the part of its
// API we use described.

import { createRequire } from 'node:module';

/** A RESP array of bulk strings: what every real client sends (strings as UTF-8). */
export function encodeCommand(args: readonly (string | Buffer)[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`, 'latin1')];
  for (const arg of args) {
    const b = typeof arg === 'string' ? Buffer.from(arg, 'utf8') : arg;
    parts.push(Buffer.from(`$${b.length}\r\n`, 'latin1'), b, Buffer.from('\r\n', 'latin1'));
  }
  return Buffer.concat(parts);
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

/** redis-parser's constructor. */
export const RedisParser = createRequire(import.meta.url)('redis-parser') as new (options: RedisParserOptions) => RedisParser;
