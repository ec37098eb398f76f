// Byte-string and bitmap arithmetic of the string commands (APPEND, SETRANGE,
// GETRANGE, SETBIT, GETBIT, BITCOUNT, BITPOS, LCS), as pure functions over
// buffers. Ranges follow Redis 7.0's rules exactly, negative indexes and
// clamping included; the state machine and the read handlers share them.

/** Redis's default proto-max-bulk-len: the bound of Redis's own range checks (bit offsets, LCS tables). */
export const REDIS_STRING_BYTES_MAX = 512 * 1024 * 1024;
/**
 * Longest string value ordo stores, the same on every replica. Redis allows
 * 512 MB; here a value must travel whole in one bus message when a snapshot
 * carries it to a lagging follower (a snapshot record is a key, at most
 * OP_BYTES_MAX, and its value, under the bus's 16 MiB frames). A write that
 * would make a value longer is refused with Redis's error for a string past
 * its limit, and changes nothing.
 */
export const STRING_BYTES_MAX = 6 * 1024 * 1024;
/** Largest SETBIT/GETBIT offset Redis accepts (a bit within 512 MB); past STRING_BYTES_MAX a SETBIT that grows the string is refused. */
export const BIT_OFFSET_MAX = REDIS_STRING_BYTES_MAX * 8 - 1;
/** LCS refuses a table of lengths larger than this, as Redis does (its transient memory bound). */
export const LCS_TABLE_BYTES_MAX = REDIS_STRING_BYTES_MAX;

const EMPTY = Buffer.alloc(0);

/** Past this size a growing string gains a fixed step of spare room instead of doubling (as Redis's sds does). */
const GROW_DOUBLING_BYTES_MAX = 1024 * 1024;

/**
 * Appends `extra` to `current` in amortized O(len(extra)): a buffer grown here
 * has spare room past its end, recorded in `grown` (the end of the bytes in
 * use, per backing store). Bytes inside a view already handed out are never
 * written again, so older views (a checkpoint in flight, a reply not yet sent)
 * keep their content; only the view whose end is the recorded end may grow in place.
 */
export function appendBytes(current: Buffer, extra: Buffer, grown: WeakMap<ArrayBuffer, number>): Buffer {
  const total = current.length + extra.length;
  const store = current.buffer as ArrayBuffer;
  const end = current.byteOffset + current.length;
  if (grown.get(store) === end && end + extra.length <= store.byteLength) {
    extra.copy(new Uint8Array(store, end, extra.length));
    grown.set(store, end + extra.length);
    return Buffer.from(store, current.byteOffset, total);
  }
  // Its own backing store (never the shared pool): the spare room belongs to this string alone.
  const next = Buffer.allocUnsafeSlow(roomFor(total));
  current.copy(next, 0);
  extra.copy(next, current.length);
  grown.set(next.buffer, total);
  return next.subarray(0, total);
}

/**
 * A zero-filled string of `length` bytes that starts with `current`, on a
 * backing store of its own with spare room past its end (zeros too), so that
 * SETRANGE and SETBIT can grow it in place, amortized O(1) as Redis's sds.
 */
export function copyWithRoom(current: Buffer, length: number): Buffer {
  const next = Buffer.alloc(roomFor(length));
  current.copy(next, 0);
  return next.subarray(0, length);
}

/** Bytes to allocate for a string of `length`: twice as many while small, a fixed step more past that. */
function roomFor(length: number): number {
  const room = length < GROW_DOUBLING_BYTES_MAX ? Math.max(64, length * 2) : length + GROW_DOUBLING_BYTES_MAX;
  return Math.max(length, Math.min(STRING_BYTES_MAX, room));
}

/** The bit at `offset` (bit 0 is the most significant bit of byte 0); 0 past the end. */
export function getBit(bytes: Buffer, offset: number): 0 | 1 {
  const byte = Math.floor(offset / 8);
  if (byte >= bytes.length) return 0;
  return ((bytes[byte] as number) >> (7 - (offset % 8))) & 1 ? 1 : 0;
}

/** GETRANGE/SUBSTR: the bytes from `start` to `end` inclusive; negative indexes count from the end. */
export function getRange(bytes: Buffer, start: bigint, end: bigint): Buffer {
  const len = BigInt(bytes.length);
  if (start < 0n && end < 0n && start > end) return EMPTY;
  let s = start < 0n ? len + start : start;
  let e = end < 0n ? len + end : end;
  if (s < 0n) s = 0n;
  if (e < 0n) e = 0n;
  if (e >= len) e = len - 1n;
  if (s > e || len === 0n) return EMPTY;
  return bytes.subarray(Number(s), Number(e) + 1);
}

/** A BITCOUNT/BITPOS range: start and end in bytes, or in bits with BIT. */
export interface BitRange {
  readonly start: bigint;
  /** null: BITPOS without an end (to the end of the string). */
  readonly end: bigint | null;
  readonly unit: 'byte' | 'bit';
}

/**
 * The range as bit indexes [first, last], after Redis's conversion of negative
 * indexes and clamping to the string; null when it is empty. `bitcountRule`:
 * BITCOUNT's shortcut, a range with both ends negative and start > end is empty.
 */
function bitSpan(length: number, range: BitRange | null, bitcountRule: boolean): { first: number; last: number } | null {
  if (range === null) return length === 0 ? null : { first: 0, last: length * 8 - 1 };
  const total = BigInt(length) * (range.unit === 'bit' ? 8n : 1n);
  let start = range.start;
  let end = range.end ?? total - 1n;
  if (bitcountRule && start < 0n && end < 0n && start > end) return null;
  if (start < 0n) start += total;
  if (end < 0n) end += total;
  if (start < 0n) start = 0n;
  if (end < 0n) end = 0n;
  if (end >= total) end = total - 1n;
  if (start > end) return null;
  return range.unit === 'bit' ? { first: Number(start), last: Number(end) } : { first: Number(start) * 8, last: Number(end) * 8 + 7 };
}

const POPCOUNT = new Uint8Array(256).map((_, i) => {
  let n = 0;
  for (let v = i; v !== 0; v >>= 1) n += v & 1;
  return n;
});

/** BITCOUNT: the set bits of the whole string, or of a range. */
export function bitCount(bytes: Buffer, range: BitRange | null): number {
  const span = bitSpan(bytes.length, range, true);
  if (span === null) return 0;
  const firstByte = Math.floor(span.first / 8);
  const lastByte = Math.floor(span.last / 8);
  let count = 0;
  for (let i = firstByte; i <= lastByte; i++) count += POPCOUNT[bytes[i] as number] as number;
  // Take away the bits of the edge bytes that lie outside the range.
  const headBits = span.first % 8;
  if (headBits > 0) count -= POPCOUNT[(bytes[firstByte] as number) >> (8 - headBits)] as number;
  const tailBits = 7 - (span.last % 8);
  if (tailBits > 0) count -= POPCOUNT[(bytes[lastByte] as number) & ((1 << tailBits) - 1)] as number;
  return count;
}

/**
 * BITPOS: the index of the first bit equal to `bit` in the range, or -1.
 * Looking for a 0 without an explicit end, the bits past the string count as
 * zeros: a string of all ones answers the first bit after it.
 */
export function bitPos(bytes: Buffer, bit: 0 | 1, range: BitRange | null): number {
  const span = bitSpan(bytes.length, range, false);
  if (span === null) return -1;
  const skip = bit === 1 ? 0x00 : 0xff;
  let i = span.first;
  while (i <= span.last) {
    const byte = bytes[i >> 3] as number;
    if (i % 8 === 0 && i + 7 <= span.last && byte === skip) {
      i += 8;
      continue;
    }
    if (((byte >> (7 - (i % 8))) & 1) === bit) return i;
    i++;
  }
  if (bit === 1 || (range !== null && range.end !== null)) return -1;
  return span.last + 1;
}

/** LCS with IDX: one matching run, its byte ranges in each string (inclusive). */
export interface LcsMatch {
  readonly a: readonly [number, number];
  readonly b: readonly [number, number];
  readonly length: number;
}

export type LcsResult = { readonly ok: true; readonly lcs: Buffer; readonly matches: readonly LcsMatch[] } | { readonly ok: false };

/**
 * The longest common subsequence of two strings by the classic table of
 * lengths, traced back from the end as Redis does, so that among equally long
 * answers it picks Redis's, and the matching runs come last to first. Refuses
 * (ok: false) when the table would pass LCS_TABLE_BYTES_MAX.
 */
export function longestCommonSubsequence(a: Buffer, b: Buffer, matchLengthMin: number): LcsResult {
  const alen = a.length;
  const blen = b.length;
  const width = blen + 1;
  if ((alen + 1) * width * 4 > LCS_TABLE_BYTES_MAX) return { ok: false };
  const table = new Uint32Array((alen + 1) * width);
  for (let i = 1; i <= alen; i++) {
    const ai = a[i - 1];
    const row = i * width;
    const above = row - width;
    for (let j = 1; j <= blen; j++) {
      if (ai === b[j - 1]) table[row + j] = (table[above + j - 1] as number) + 1;
      else {
        const up = table[above + j] as number;
        const left = table[row + j - 1] as number;
        table[row + j] = up > left ? up : left;
      }
    }
  }
  let length = table[alen * width + blen] as number;
  const lcs = Buffer.alloc(length);
  const matches: LcsMatch[] = [];
  // The run being traced: a[aStart..aEnd] matches b[bStart..bEnd]; aStart === -1 when none.
  let aStart = -1;
  let aEnd = 0;
  let bStart = 0;
  let bEnd = 0;
  let i = alen;
  let j = blen;
  while (i > 0 && j > 0) {
    let emit = false;
    if (a[i - 1] === b[j - 1]) {
      lcs[length - 1] = a[i - 1] as number;
      if (aStart === -1) {
        aStart = aEnd = i - 1;
        bStart = bEnd = j - 1;
      } else if (aStart === i && bStart === j) {
        aStart--;
        bStart--;
      } else emit = true;
      if (aStart === 0 || bStart === 0) emit = true;
      length--;
      i--;
      j--;
    } else {
      if ((table[(i - 1) * width + j] as number) > (table[i * width + j - 1] as number)) i--;
      else j--;
      if (aStart !== -1) emit = true;
    }
    if (emit) {
      const runLength = aEnd - aStart + 1;
      if (matchLengthMin === 0 || runLength >= matchLengthMin) matches.push({ a: [aStart, aEnd], b: [bStart, bEnd], length: runLength });
      aStart = -1;
    }
  }
  return { ok: true, lcs, matches };
}
