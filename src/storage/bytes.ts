// Numbers and text in the byte layouts of ordo's LMDB files (raft.mdb and the
// keyspace): big-endian u64s that must stay safe integers, and strict UTF-8.

export const TWO_POW_32 = 0x1_0000_0000;
/** Largest high word of a u64 that still makes a safe integer. */
export const SAFE_HIGH_WORD_MAX = 0x1f_ffff;

export const utf8 = new TextEncoder();
export const utf8Strict = new TextDecoder('utf-8', { fatal: true });

/** Writes the safe integer `n` as a big-endian u64 at `at`. */
export function writeU64(buf: Buffer, n: number, at: number): void {
  buf.writeUInt32BE(Math.floor(n / TWO_POW_32), at);
  buf.writeUInt32BE(n >>> 0, at + 4);
}
