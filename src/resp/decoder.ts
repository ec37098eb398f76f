// Incremental decoder for what clients send: RESP multibulk requests
// (`*N\r\n$len\r\narg\r\n...`) and inline commands (`PING\r\n`).
//
// Bytes go in with `feed`, whole commands come out of `next` as argument lists.
// The decoder follows Redis 7's networking code (processMultibulkBuffer and
// processInlineBuffer) closely, including its error texts, so a client sees the
// same `-ERR Protocol error: ...` it would get from redis-server.
//
// Buffering: while nothing is pending, a fed chunk is used as it is (no copy),
// and arguments are returned as subarrays of the chunk they arrived in. When a
// command spans chunks, the unconsumed tail and the following chunks are
// gathered into a buffer the decoder owns, which grows geometrically. Bytes that
// were handed out are never written again: growing allocates a fresh buffer, so
// arguments returned earlier stay valid. Callers must not modify a chunk after
// feeding it, and must copy any argument they keep for long (a subarray keeps
// its whole chunk alive).
//
// Parsing state is kept between calls (arguments still expected, the length of
// the bulk being read, where the search for a line end stopped), so a partial
// request is not parsed again from its start (at most a header line of a few
// bytes is looked at again). Whole requests with plain lengths take a fast path.
//
// Deliberate differences from redis-server 7.0:
// - `*N` above multibulkLengthMax (default 1M) is "invalid multibulk length";
//   Redis allows up to 2^31-1.
// - An inline line longer than inlineBytesMax is refused even when its LF came
//   in the same read (Redis only checks while the LF is missing, so what it
//   accepts depends on how the bytes were read). Errors here never depend on
//   how the input is cut into chunks.
// - A NUL byte is an ordinary byte in inline lines and `$` headers; Redis's C
//   string searches stop at it, so it stalls until the "too big" limit.
// - Passing queryBufferBytesMax is a ProtocolError ("query buffer limit
//   exceeded"); Redis closes such a client without a reply.
// Like Redis, the byte after a header's CR and the two bytes after a payload
// are taken as the line end without being checked.

import { OrdoError } from '../ordo-error.js';

/** Bounds on what one connection may make the decoder hold. */
export interface DecoderLimits {
  /** Bytes buffered and not yet returned as part of a command (Redis: client-query-buffer-limit). */
  queryBufferBytesMax: number;
  /** Largest declared `$` length (Redis: proto-max-bulk-len). */
  bulkBytesMax: number;
  /** Most elements in one `*N` request. */
  multibulkLengthMax: number;
  /** Longest inline command line, or `*N` / `$N` header line, without its line end (Redis: PROTO_INLINE_MAX_SIZE). */
  inlineBytesMax: number;
}

export const DEFAULT_DECODER_LIMITS: DecoderLimits = Object.freeze({
  queryBufferBytesMax: 64 * 1024 * 1024,
  bulkBytesMax: 512 * 1024 * 1024,
  multibulkLengthMax: 1024 * 1024,
  inlineBytesMax: 64 * 1024,
});

/**
 * Malformed input or a limit passed. `message` is the text Redis puts after
 * "Protocol error: " (e.g. "invalid multibulk length"); the server replies
 * `-ERR Protocol error: <message>` and closes the connection. A byte quoted in
 * a message (in "expected '$', got 'X'") is one latin1 char.
 */
export class ProtocolError extends OrdoError {
  override readonly code = 'ORDO_ERR_RESP_PROTOCOL';
}

const CR = 0x0d;
const LF = 0x0a;
const STAR = 0x2a;
const DOLLAR = 0x24;
const MINUS = 0x2d;
const ZERO = 0x30;
const NINE = 0x39;

/** Smallest buffer the decoder allocates when it has to gather bytes. */
const GATHER_BYTES_MIN = 16 * 1024;

const EMPTY = Buffer.alloc(0);

/** Header lines up to this long (with their `*` or `$`) are parsed without a native search. */
const HEADER_QUICK_BYTES = 24;

/** Lengths with more digits than this are left to the general parser. */
const WHOLE_REQUEST_DIGITS_MAX = 15;

/** Returned by parseLength for text that is not a canonical signed 64-bit decimal. */
const NOT_A_NUMBER = Number.NaN;

const INT64_MAX = 9223372036854775807n;
const INT64_MIN = -9223372036854775808n;

/**
 * Parses buf[from, to) like Redis's string2ll: an optional '-', then digits
 * with no leading zero ("0" alone is fine, "-0" is not), no spaces or '+',
 * within signed 64 bits. Values beyond 2^53 come back rounded, which is fine
 * as every limit is far below that. Returns NaN when invalid.
 */
function parseLength(buf: Buffer, from: number, to: number): number {
  let i = from;
  let negative = false;
  if (i < to && buf[i] === MINUS) {
    negative = true;
    i++;
  }
  const digits = to - i;
  if (digits <= 0) return NOT_A_NUMBER;
  const first = buf[i] as number;
  if (first === ZERO) return digits === 1 && !negative ? 0 : NOT_A_NUMBER;
  if (first < ZERO || first > NINE || digits > 19) return NOT_A_NUMBER;
  let value = 0;
  for (let j = i; j < to; j++) {
    const c = buf[j] as number;
    if (c < ZERO || c > NINE) return NOT_A_NUMBER;
    value = value * 10 + (c - ZERO);
  }
  if (digits >= 16) {
    // Exact range check where doubles lose precision.
    const exact = BigInt(buf.toString('latin1', from, to));
    if (exact > INT64_MAX || exact < INT64_MIN) return NOT_A_NUMBER;
  }
  return negative ? -value : value;
}

function isHexDigit(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66);
}

function hexValue(c: number): number {
  if (c <= 0x39) return c - 0x30;
  if (c <= 0x46) return c - 0x41 + 10;
  return c - 0x61 + 10;
}

/** C isspace in the "C" locale: space, \t, \n, \v, \f, \r. */
function isSpace(c: number): boolean {
  return c === 0x20 || (c >= 0x09 && c <= 0x0d);
}

/**
 * Splits an inline command line like Redis's sdssplitargs. Blanks (isspace)
 * separate arguments; an unquoted argument ends at space, tab, CR or LF;
 * "double quotes" take \n \r \t \b \a, \xHH and \<any> (that char); 'single
 * quotes' take \' only. A quote may start in the middle of an argument
 * (ab"cd" is abcd), but a closing quote must be followed by a blank or the end
 * of the line. Unlike sdssplitargs (which stops at a NUL byte), NUL is an
 * ordinary byte here. Returns null for unbalanced quotes.
 */
export function splitInlineArgs(line: Buffer, from: number, to: number): Buffer[] | null {
  const args: Buffer[] = [];
  let p = from;
  let scratch: number[] | null = null;
  for (;;) {
    while (p < to && isSpace(line[p] as number)) p++;
    if (p >= to) return args;
    // Fast path: an argument of plain bytes is a subarray of the line.
    const start = p;
    while (p < to) {
      const c = line[p] as number;
      if (c === 0x20 || c === 0x09 || c === CR || c === LF || c === 0x22 || c === 0x27) break;
      p++;
    }
    if (p >= to || (line[p] !== 0x22 && line[p] !== 0x27)) {
      args.push(line.subarray(start, p));
      if (p < to) p++; // the separator
      continue;
    }
    // Slow path: the argument has quotes; build it byte by byte.
    scratch ??= [];
    scratch.length = 0;
    for (let k = start; k < p; k++) scratch.push(line[k] as number);
    let inDouble = false;
    let inSingle = false;
    let done = false;
    while (!done) {
      if (p >= to) {
        if (inDouble || inSingle) return null;
        break;
      }
      const c = line[p] as number;
      if (inDouble) {
        if (c === 0x5c && p + 3 < to && line[p + 1] === 0x78 && isHexDigit(line[p + 2] as number) && isHexDigit(line[p + 3] as number)) {
          scratch.push(hexValue(line[p + 2] as number) * 16 + hexValue(line[p + 3] as number));
          p += 3;
        } else if (c === 0x5c && p + 1 < to) {
          p++;
          const e = line[p] as number;
          switch (e) {
            case 0x6e:
              scratch.push(LF);
              break; // n
            case 0x72:
              scratch.push(CR);
              break; // r
            case 0x74:
              scratch.push(0x09);
              break; // t
            case 0x62:
              scratch.push(0x08);
              break; // b
            case 0x61:
              scratch.push(0x07);
              break; // a
            default:
              scratch.push(e);
              break;
          }
        } else if (c === 0x22) {
          if (p + 1 < to && !isSpace(line[p + 1] as number)) return null;
          done = true;
        } else {
          scratch.push(c);
        }
      } else if (inSingle) {
        if (c === 0x5c && p + 1 < to && line[p + 1] === 0x27) {
          p++;
          scratch.push(0x27);
        } else if (c === 0x27) {
          if (p + 1 < to && !isSpace(line[p + 1] as number)) return null;
          done = true;
        } else {
          scratch.push(c);
        }
      } else if (c === 0x20 || c === 0x09 || c === CR || c === LF) {
        done = true;
      } else if (c === 0x22) {
        inDouble = true;
      } else if (c === 0x27) {
        inSingle = true;
      } else {
        scratch.push(c);
      }
      p++;
    }
    args.push(Buffer.from(scratch));
  }
}

/** The char Redis prints for a byte in "expected '$', got '%c'" (it turns CR and LF into spaces). */
function quoteByte(c: number): string {
  return c === CR || c === LF ? ' ' : String.fromCharCode(c);
}

/**
 * Redis's tighter bounds for a client that has not authenticated yet (when a
 * password is required): at most this many arguments, each at most this long.
 */
export const UNAUTHENTICATED_MULTIBULK_LENGTH_MAX = 10;
export const UNAUTHENTICATED_BULK_BYTES_MAX = 16384;
const INT_MAX = 2 ** 31 - 1;

/** Incremental request decoder for one connection. */
export class RequestDecoder {
  private readonly limits: DecoderLimits;
  /** Whether the unauthenticated bounds apply (see setAuthenticated). */
  private unauthenticated = false;
  /** The bounds the fast path checks: the limits, or the unauthenticated bounds below them. */
  private multibulkLengthMax: number;
  private bulkBytesMax: number;

  /**
   * The bytes held, exactly: [start, buf.length) are pending. Either a chunk as
   * it was fed, or a view of the front of `store`.
   */
  private buf: Buffer = EMPTY;
  /** A gather buffer allocated here, of which `buf` is the front; bytes past buf.length may be written. */
  private store: Buffer | null = null;
  private start = 0;
  /** Where the search for the current line's end resumes (start <= scanFrom <= buf.length). */
  private scanFrom = 0;

  /** Arguments still expected in the current multibulk request; 0 between requests. */
  private argsLeft = 0;
  /** Declared length of the bulk being read, or -1 while its `$` header is awaited. */
  private bulkLength = -1;
  /** Arguments of the current request read so far. */
  private args: Buffer[] = [];
  /**
   * Bytes of the current request already consumed (headers, payloads and line
   * ends): still pending, as the request has not been returned yet.
   */
  private requestBytesRead = 0;

  /** The number on the header line found last by findHeaderEnd. */
  private headerValue = 0;

  /** Set once input was malformed; every later call throws it again. */
  private failure: ProtocolError | null = null;

  constructor(limits?: Partial<DecoderLimits>) {
    const merged: DecoderLimits = { ...DEFAULT_DECODER_LIMITS };
    if (limits !== undefined) {
      for (const key of Object.keys(merged) as (keyof DecoderLimits)[]) {
        const value = limits[key];
        if (value !== undefined) merged[key] = value;
      }
    }
    for (const [key, value] of Object.entries(merged)) {
      if (!Number.isSafeInteger(value) || value < 1) {
        throw new RangeError(`decoder limit ${key} must be a positive safe integer, got ${String(value)}`);
      }
    }
    this.limits = merged;
    this.multibulkLengthMax = merged.multibulkLengthMax;
    this.bulkBytesMax = merged.bulkBytesMax;
  }

  /**
   * Until a client authenticates (when the server requires a password), Redis
   * refuses requests of more than 10 arguments or arguments over 16 KiB, so a
   * stranger cannot make the server buffer much: "unauthenticated multibulk
   * length" / "unauthenticated bulk length".
   */
  setAuthenticated(authenticated: boolean): void {
    this.unauthenticated = !authenticated;
    this.multibulkLengthMax = authenticated ? this.limits.multibulkLengthMax : Math.min(this.limits.multibulkLengthMax, UNAUTHENTICATED_MULTIBULK_LENGTH_MAX);
    this.bulkBytesMax = authenticated ? this.limits.bulkBytesMax : Math.min(this.limits.bulkBytesMax, UNAUTHENTICATED_BULK_BYTES_MAX);
  }

  /** Bytes fed and not yet returned by `next` as part of a command (or skipped). */
  get pendingBytes(): number {
    return this.buf.length - this.start + this.requestBytesRead;
  }

  /**
   * Appends bytes from the socket. The decoder may keep `chunk` (no copy):
   * do not modify it afterwards. Throws ProtocolError("query buffer limit
   * exceeded") when the pending bytes would pass queryBufferBytesMax.
   */
  feed(chunk: Buffer): void {
    if (this.failure !== null) throw this.failure;
    if (chunk.length === 0) return;
    if (this.pendingBytes + chunk.length > this.limits.queryBufferBytesMax) {
      this.fail('query buffer limit exceeded');
    }
    const held = this.buf.length;
    if (this.start === held) {
      // Nothing pending: parse straight from the caller's chunk.
      this.buf = chunk;
      this.store = null;
      this.start = 0;
      this.scanFrom = 0;
      return;
    }
    const store = this.store;
    if (store !== null && store.length - held >= chunk.length) {
      chunk.copy(store, held);
      this.buf = store.subarray(0, held + chunk.length);
      return;
    }
    // Gather the pending tail and the chunk into a fresh buffer. The old one is
    // left untouched: arguments returned earlier may still point into it.
    const tail = held - this.start;
    const needed = tail + chunk.length;
    const capacity = Math.max(needed, Math.min(Math.max(2 * needed, GATHER_BYTES_MIN), this.limits.queryBufferBytesMax));
    const fresh = Buffer.allocUnsafe(capacity);
    this.buf.copy(fresh, 0, this.start, held);
    chunk.copy(fresh, tail);
    this.scanFrom -= this.start;
    this.start = 0;
    this.store = fresh;
    this.buf = fresh.subarray(0, needed);
  }

  /**
   * The next complete command as its argument list, or null when more bytes
   * are needed. Empty inline lines and `*0` / `*-N` requests yield nothing.
   * Throws ProtocolError on malformed input; the decoder is unusable after.
   */
  next(): Buffer[] | null {
    if (this.failure !== null) throw this.failure;
    for (;;) {
      if (this.argsLeft === 0) {
        if (this.start === this.buf.length) {
          this.release();
          return null;
        }
        if (this.buf[this.start] !== STAR) {
          const command = this.nextInline();
          if (command === undefined) return null;
          if (command.length > 0) return command;
          continue;
        }
        const whole = this.nextWholeRequest();
        if (whole !== null) return whole;
        if (this.argsLeft === 0) {
          const lineEnd = this.findHeaderEnd('too big mbulk count string');
          if (lineEnd < 0) return null;
          const count = this.headerValue;
          // Redis's order: a count that is no number or past INT_MAX first, then the unauthenticated bound.
          if (Number.isNaN(count) || count > INT_MAX) this.fail('invalid multibulk length');
          if (this.unauthenticated && count > UNAUTHENTICATED_MULTIBULK_LENGTH_MAX) {
            this.fail('unauthenticated multibulk length');
          }
          if (count > this.limits.multibulkLengthMax) this.fail('invalid multibulk length');
          if (count <= 0) {
            this.consumeTo(lineEnd + 2); // *0 and *-1 are skipped, as in Redis
            continue;
          }
          this.readTo(lineEnd + 2);
          this.argsLeft = count;
          this.bulkLength = -1;
        }
      }
      // Inside a multibulk request: read `$len` headers and payloads.
      if (this.bulkLength < 0) {
        const lineEnd = this.findHeaderEnd('too big bulk count string');
        if (lineEnd < 0) return null;
        const first = this.buf[this.start] as number;
        if (first !== DOLLAR) this.fail(`expected '$', got '${quoteByte(first)}'`);
        const length = this.headerValue;
        if (Number.isNaN(length) || length < 0 || length > this.limits.bulkBytesMax) {
          this.fail('invalid bulk length');
        }
        if (this.unauthenticated && length > UNAUTHENTICATED_BULK_BYTES_MAX) {
          this.fail('unauthenticated bulk length');
        }
        this.readTo(lineEnd + 2);
        this.bulkLength = length;
      }
      // Like Redis, the two bytes after the payload are skipped, not checked.
      if (this.buf.length - this.start < this.bulkLength + 2) return null;
      const arg = this.buf.subarray(this.start, this.start + this.bulkLength);
      this.bulkLength = -1;
      this.args.push(arg);
      this.argsLeft--;
      if (this.argsLeft === 0) {
        this.consumeTo(this.start + arg.length + 2);
        const command = this.args;
        this.args = [];
        return command;
      }
      this.readTo(this.start + arg.length + 2);
    }
  }

  /**
   * Fast path for the common case: a well-formed multibulk request with plain
   * lengths, parsed with local state. Returns the request when it is wholly
   * buffered. Otherwise returns null, having either changed nothing (the `*N`
   * line was not plain) or recorded how far it got in the state the general
   * parser below continues from (so no byte is parsed twice, however the
   * request is cut).
   */
  private nextWholeRequest(): Buffer[] | null {
    const buf = this.buf;
    const held = buf.length;
    const requestStart = this.start;
    let p = requestStart + 1;
    let c = buf[p] as number; // undefined past the end: every comparison below is then false
    if (!(c > ZERO && c <= NINE)) return null;
    let count = c - ZERO;
    let digitsEnd = Math.min(held, p + WHOLE_REQUEST_DIGITS_MAX);
    for (c = buf[++p] as number; p < digitsEnd && c >= ZERO && c <= NINE; c = buf[++p] as number) {
      count = count * 10 + (c - ZERO);
    }
    if (c !== CR || p + 1 >= held || count > this.multibulkLengthMax) return null;
    p += 2;
    const bulkBytesMax = this.bulkBytesMax;
    const args: Buffer[] = [];
    for (let k = 0; k < count; k++) {
      const lineStart = p;
      if (buf[p] === DOLLAR) {
        c = buf[++p] as number;
        if (c > ZERO && c <= NINE) {
          let length = c - ZERO;
          digitsEnd = Math.min(held, p + WHOLE_REQUEST_DIGITS_MAX);
          for (c = buf[++p] as number; p < digitsEnd && c >= ZERO && c <= NINE; c = buf[++p] as number) {
            length = length * 10 + (c - ZERO);
          }
          if (c === CR && p + 1 < held && length <= bulkBytesMax) {
            p += 2;
            if (p + length + 2 <= held) {
              args.push(buf.subarray(p, p + length));
              p += length + 2;
              continue;
            }
            // Header read, payload not all here yet.
            this.suspendRequest(requestStart, args, count - k, length, p);
            return null;
          }
        } else if (c === ZERO && buf[p + 1] === CR && p + 2 < held) {
          // "$0": an empty argument.
          p += 3;
          if (p + 2 <= held) {
            args.push(EMPTY);
            p += 2;
            continue;
          }
          this.suspendRequest(requestStart, args, count - k, 0, p);
          return null;
        }
      }
      // Anything else (incomplete, unusual or malformed): the general parser
      // takes over at this `$` line.
      this.suspendRequest(requestStart, args, count - k, -1, lineStart);
      return null;
    }
    this.start = p;
    this.scanFrom = p;
    return args;
  }

  /** Records a partly read multibulk request so the general parser carries on from `at`. */
  private suspendRequest(requestStart: number, args: Buffer[], argsLeft: number, bulkLength: number, at: number): void {
    this.args = args;
    this.argsLeft = argsLeft;
    this.bulkLength = bulkLength;
    this.requestBytesRead = at - requestStart;
    this.start = at;
    this.scanFrom = at;
  }

  /**
   * Finds the CR ending the header line at `start` and parses the number after
   * its `*` or `$` into `headerValue` (NaN when invalid). Returns the CR's
   * index when the CR and one byte after it are buffered (Redis takes that
   * byte as the LF without checking it), else -1. Throws `tooBig` when the
   * line, without its line end, is longer than inlineBytesMax.
   */
  private findHeaderEnd(tooBig: string): number {
    const buf = this.buf;
    const held = buf.length;
    const start = this.start;
    const limit = this.limits.inlineBytesMax;
    // Fast path: a short line, parsed while looking for its CR. A partial line
    // is scanned again when more bytes come, but never more than these few.
    const quickEnd = Math.min(held, start + HEADER_QUICK_BYTES);
    let value = 0;
    let plainDigits = true;
    // The first byte is `*` or `$` when the input is well formed, but a `$`
    // line may start with anything, even the CR that ends it.
    let i = buf[start] === CR ? start : start + 1;
    for (; i < quickEnd; i++) {
      const c = buf[i] as number;
      if (c === CR) break;
      if (c < ZERO || c > NINE) plainDigits = false;
      value = value * 10 + (c - ZERO);
    }
    let cr: number;
    if (i < quickEnd) {
      cr = i;
      const digits = Math.max(0, cr - start - 1);
      this.headerValue = plainDigits && digits > 0 && digits <= 15 && (digits === 1 || buf[start + 1] !== ZERO) ? value : parseLength(buf, start + 1, cr);
    } else if (quickEnd === held) {
      if (held - start > limit) this.fail(tooBig);
      return -1;
    } else {
      // A long line, so not a valid number: find its end to tell which error.
      cr = buf.indexOf(CR, Math.max(this.scanFrom, quickEnd));
      if (cr < 0) {
        if (held - start > limit) this.fail(tooBig);
        this.scanFrom = held;
        return -1;
      }
      this.headerValue = parseLength(buf, start + 1, cr);
    }
    if (cr - start > limit) this.fail(tooBig);
    if (cr + 1 >= held) {
      this.scanFrom = cr;
      return -1;
    }
    return cr;
  }

  /** Reads one inline line: its arguments (maybe none), or undefined when the line is incomplete. */
  private nextInline(): Buffer[] | undefined {
    const limit = this.limits.inlineBytesMax;
    const held = this.buf.length;
    const lf = this.buf.indexOf(LF, this.scanFrom);
    if (lf < 0) {
      // A CR at the very end may belong to the line end, which does not count.
      const lineBytes = held - this.start - (this.buf[held - 1] === CR ? 1 : 0);
      if (lineBytes > limit) this.fail('too big inline request');
      this.scanFrom = held;
      return undefined;
    }
    let lineEnd = lf;
    if (lineEnd > this.start && this.buf[lineEnd - 1] === CR) lineEnd--;
    if (lineEnd - this.start > limit) this.fail('too big inline request');
    const args = splitInlineArgs(this.buf, this.start, lineEnd);
    if (args === null) this.fail('unbalanced quotes in request');
    this.consumeTo(lf + 1);
    return args;
  }

  /** Moves past bytes of the request being read, which stay counted as pending. */
  private readTo(position: number): void {
    this.requestBytesRead += position - this.start;
    this.start = position;
    this.scanFrom = position;
  }

  /** Moves past the end of a request (returned or skipped): its bytes are no longer pending. */
  private consumeTo(position: number): void {
    this.requestBytesRead = 0;
    this.start = position;
    this.scanFrom = position;
  }

  /** Drops the reference to a fully consumed buffer so its memory can go. */
  private release(): void {
    if (this.buf.length !== 0) {
      this.buf = EMPTY;
      this.store = null;
      this.start = 0;
      this.scanFrom = 0;
    }
  }

  private fail(message: string): never {
    this.failure = new ProtocolError(message);
    this.buf = EMPTY;
    this.store = null;
    this.start = 0;
    this.scanFrom = 0;
    this.args = [];
    this.requestBytesRead = 0;
    this.argsLeft = 0;
    throw this.failure;
  }
}
