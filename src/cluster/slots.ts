// Redis Cluster hash slots: CRC16-XMODEM of the key (or of its hash tag)
// modulo 16384. Pure code: no I/O, no clocks.

/** Number of hash slots, as in Redis Cluster. */
export const SLOT_COUNT = 16384;
/** The highest slot number. */
export const SLOT_MAX = SLOT_COUNT - 1;

const BRACE_OPEN = 0x7b; // '{'
const BRACE_CLOSE = 0x7d; // '}'

/** CRC16-XMODEM (polynomial 0x1021, initial value 0, no reflection), one entry per byte value. */
const CRC16_TABLE: Uint16Array = (() => {
  const table = new Uint16Array(256);
  for (let byte = 0; byte < 256; byte++) {
    let crc = byte << 8;
    for (let bit = 0; bit < 8; bit++) {
      crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    }
    table[byte] = crc;
  }
  return table;
})();

function step(crc: number, byte: number): number {
  return ((crc << 8) & 0xffff) ^ (CRC16_TABLE[((crc >>> 8) ^ byte) & 0xff] as number);
}

/** CRC16-XMODEM of `bytes[start, end)`; `crc16("123456789") === 0x31c3`. Strings count as latin1 (one byte a char). */
export function crc16(bytes: Uint8Array | string, start = 0, end: number = bytes.length): number {
  let crc = 0;
  if (typeof bytes === 'string') {
    for (let i = start; i < end; i++) crc = step(crc, bytes.charCodeAt(i) & 0xff);
  } else {
    for (let i = start; i < end; i++) crc = step(crc, bytes[i] as number);
  }
  return crc;
}

/**
 * Where the part of the key that is hashed lies: the hash tag (the bytes
 * between the first `{` and the first `}` after it) when that is non-empty,
 * otherwise the whole key. Returns [start, end).
 */
export function hashedRange(key: Uint8Array | string): readonly [number, number] {
  const length = key.length;
  let open = -1;
  let close = -1;
  if (typeof key === 'string') {
    // Chars above 0xff count as their low byte, as Buffer.from(key, 'latin1') does.
    for (let i = 0; i < length; i++) {
      const c = key.charCodeAt(i) & 0xff;
      if (open < 0) {
        if (c === BRACE_OPEN) open = i;
      } else if (c === BRACE_CLOSE) {
        close = i;
        break;
      }
    }
  } else {
    open = key.indexOf(BRACE_OPEN);
    if (open >= 0) close = key.indexOf(BRACE_CLOSE, open + 1);
  }
  if (open < 0 || close < 0 || close === open + 1) return [0, length];
  return [open + 1, close];
}

/** The hash slot of a key (a Buffer, or a string holding one byte per char, latin1), with Redis's hash-tag rule. */
export function keySlot(key: Uint8Array | string): number {
  const [start, end] = hashedRange(key);
  return crc16(key, start, end) & SLOT_MAX;
}

/** True for an integer slot number in 0..16383. */
export function isSlot(value: number): boolean {
  return Number.isInteger(value) && value >= 0 && value <= SLOT_MAX;
}
