// The records of the node's log (wal-store.ts): how a turn's changes are
// encoded into a frame's payload, how snapshot files are laid out, and how
// recovery replays the frames into every group's state, refusing what does
// not decode or does not fit. The file layer (segments, frames, CRCs) is
// segments.ts. See docs/storage.md, "The node's log (`wal/`)".

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { EntryType, type ConfState, type Entry, type HardState, type NodeId, type Snapshot } from '../raft/types.js';
import { FRAME_HEADER_BYTES, FRAME_NUMBER_BYTES, readU64LE, writeU64LE, type RecoveredFrame } from './segments.js';
import { DataDirectoryError } from './store.js';
import { OrdoError } from '../ordo-error.js';

/** Version of the record encodings below (frame payloads and snapshot files); another version is refused (segments carry their own). */
export const WAL_RECORD_FORMAT_VERSION = 1;

// ---------------------------------------------------------------------------
// Records. A frame's payload is: u64 frame number (segments.ts), u8 flags,
// u8 record format version, then records, each starting with a kind byte.
// Numbers little-endian; ids and keys are UTF-8 with a u16 length.
//
//   01 GROUP      u32 group, conf                        a group exists (created with this membership)
//   02 HARD       u32 group, u64 term, u64 commit, u8 has-vote, [u16 len, vote]
//   03 LOG_START  u32 group, u64 index, u64 term         entries up to index are compacted
//   04 ENTRIES    u32 group, u64 from, u64 term, u32 n,   the log from `from` on is replaced by
//                 n x (u8 type, u32 len, data)            these n entries, all of this term
//   05 SNAPSHOT   u32 group, u64 index, u64 term, u64 data bytes, u64 file frame, conf
//   06 META_PUT   u16 len, key, u32 len, value
//   07 META_DEL   u16 len, key
//
// conf: u16 voters, u16 learners, then each id. A checkpoint frame (flag bit
// 0) starts with GROUP, SNAPSHOT, LOG_START and HARD of every group and
// META_PUT of every metadata key: the whole state but entries.
// ---------------------------------------------------------------------------

export const REC_GROUP = 0x01;
export const REC_HARD = 0x02;
export const REC_LOG_START = 0x03;
export const REC_ENTRIES = 0x04;
export const REC_SNAPSHOT = 0x05;
export const REC_META_PUT = 0x06;
export const REC_META_DEL = 0x07;
const RECORD_NAMES: Record<number, string> = {
  [REC_GROUP]: 'group',
  [REC_HARD]: 'hard state',
  [REC_LOG_START]: 'log start',
  [REC_ENTRIES]: 'entries',
  [REC_SNAPSHOT]: 'snapshot',
  [REC_META_PUT]: 'metadata',
  [REC_META_DEL]: 'metadata removal',
};
export const FLAG_CHECKPOINT = 0x01;
/** Frame number, flags, record format version. */
const PAYLOAD_HEADER_BYTES = FRAME_NUMBER_BYTES + 2;
export const RECORDS_AT = FRAME_HEADER_BYTES + PAYLOAD_HEADER_BYTES;
/** u8 type + u32 length before each entry's data. */
export const ENTRY_HEADER_BYTES = 5;
export const U16_MAX = 0xffff;

// Snapshot files: `snap-<group>-<index>-<frame>.snap`, the frame being the
// one whose SNAPSHOT record references the file (so two snapshots at one
// index never share a name). Layout: magic, u32 version, u32 group, u64 index,
// u64 term, u64 frame, conf, u64 data bytes, data, u32 CRC of everything before.
const SNAP_MAGIC = Buffer.from('ordo-snp', 'latin1');
const SNAP_FORMAT_VERSION = 1;
export const SNAP_NAME = /^snap-(\d+)-(\d+)-(\d+)\.snap$/;

const utf8Strict = new TextDecoder('utf-8', { fatal: true });
const EMPTY = new Uint8Array(0);

export function snapFileName(group: number, index: number, frame: number): string {
  return `snap-${group}-${index}-${frame}.snap`;
}

/** Thrown while decoding a record; turned into a DataDirectoryError naming the file, offset and record. */
class CorruptError extends OrdoError {
  override readonly code = 'ORDO_ERR_LOG_RECORD_CORRUPT';
}

function corruptIf(cond: boolean, why: string): void {
  if (cond) throw new CorruptError(why);
}

/** A growable buffer that a turn's frame is encoded into; kept and reused. */
export class FrameWriter {
  buf: Buffer;
  at = 0;

  constructor(bytes: number) {
    this.buf = Buffer.allocUnsafeSlow(bytes);
  }

  reserve(n: number): void {
    if (this.at + n <= this.buf.length) return;
    const bigger = Buffer.allocUnsafeSlow(Math.max(this.buf.length * 2, this.at + n));
    this.buf.copy(bigger, 0, 0, this.at);
    this.buf = bigger;
  }

  u8(n: number): void {
    this.reserve(1);
    this.buf[this.at++] = n;
  }

  u16(n: number): void {
    this.reserve(2);
    this.buf.writeUInt16LE(n, this.at);
    this.at += 2;
  }

  u32(n: number): void {
    this.reserve(4);
    this.buf.writeUInt32LE(n, this.at);
    this.at += 4;
  }

  u64(n: number): void {
    this.reserve(8);
    writeU64LE(this.buf, n, this.at);
    this.at += 8;
  }

  bytes(b: Uint8Array): void {
    this.reserve(b.length);
    this.buf.set(b, this.at);
    this.at += b.length;
  }

  /** u16 length, then the UTF-8 bytes. */
  text(s: string): void {
    const n = Buffer.byteLength(s, 'utf8');
    assert.ok(n <= U16_MAX, 'text too long');
    this.reserve(2 + n);
    this.buf.writeUInt16LE(n, this.at);
    this.buf.write(s, this.at + 2, 'utf8');
    this.at += 2 + n;
  }

  conf(c: ConfState): void {
    this.u16(c.voters.length);
    this.u16(c.learners.length);
    for (const id of c.voters) this.text(id);
    for (const id of c.learners) this.text(id);
  }
}

/** Reads the records of one payload; every read past the end is a CorruptError. */
class RecordReader {
  at: number;
  constructor(
    readonly buf: Buffer,
    at: number,
  ) {
    this.at = at;
  }

  get done(): boolean {
    return this.at >= this.buf.length;
  }

  private need(n: number): void {
    corruptIf(this.at + n > this.buf.length, 'record truncated');
  }

  u8(): number {
    this.need(1);
    return this.buf[this.at++] as number;
  }

  u16(): number {
    this.need(2);
    const n = this.buf.readUInt16LE(this.at);
    this.at += 2;
    return n;
  }

  u32(): number {
    this.need(4);
    const n = this.buf.readUInt32LE(this.at);
    this.at += 4;
    return n;
  }

  u64(): number {
    this.need(8);
    const n = readU64LE(this.buf, this.at);
    if (n === undefined) throw new CorruptError('number out of range');
    this.at += 8;
    return n;
  }

  bytes(n: number): Buffer {
    this.need(n);
    const b = this.buf.subarray(this.at, this.at + n);
    this.at += n;
    return b;
  }

  text(): string {
    const b = this.bytes(this.u16());
    try {
      return utf8Strict.decode(b);
    } catch {
      throw new CorruptError('invalid UTF-8 text');
    }
  }

  conf(): ConfState {
    const voters = this.u16();
    const learners = this.u16();
    const v: NodeId[] = [];
    const l: NodeId[] = [];
    for (let i = 0; i < voters; i++) v.push(this.text());
    for (let i = 0; i < learners; i++) l.push(this.text());
    return { voters: v, learners: l };
  }
}

/** A snapshot file to write before the frame that references it. */
export interface SnapWrite {
  readonly group: number;
  readonly file: string;
  readonly snap: Snapshot;
  readonly frame: number;
}

// ---------------------------------------------------------------------------
// Recovery: rebuilding the groups from the frames
// ---------------------------------------------------------------------------

export interface ReplayGroup {
  readonly id: number;
  hard: HardState;
  snap: { index: number; term: number; conf: ConfState; dataBytes: number; frame: number; where: string };
  /** ents[0] is the log start (index, term), as in MemoryStorage. */
  ents: Entry[];
  /** Where a gap was accepted (older segments deleted); it must be compacted by a later log start. */
  hole: string | null;
}

export class Replay {
  readonly groups = new Map<number, ReplayGroup>();
  readonly meta = new Map<string, Uint8Array>();
  /** Per segment, per group: the highest entry index the segment holds. */
  readonly entryMax = new Map<number, Map<number, number>>();
  oldestSeq = 0;
  lastFrameSeq = 0;

  constructor(
    private readonly walDir: string,
    /** Reads a snapshot file whole (node:fs readFileSync, or the simulator's disk). */
    private readonly readFile: (path: string) => Buffer = readFileSync,
  ) {}

  frame(f: RecoveredFrame): void {
    if (this.oldestSeq === 0) this.oldestSeq = f.seq;
    this.lastFrameSeq = f.seq;
    const where = `${f.file}: frame ${f.frameNumber} at byte ${f.offset}`;
    const r = new RecordReader(f.payload, FRAME_NUMBER_BYTES);
    let n = 0;
    let label = 'frame header';
    try {
      const flags = r.u8();
      const version = r.u8();
      corruptIf(version !== WAL_RECORD_FORMAT_VERSION, `record format ${version}, this ordo reads format ${WAL_RECORD_FORMAT_VERSION}`);
      corruptIf((flags & ~FLAG_CHECKPOINT) !== 0, `unknown frame flags ${flags}`);
      corruptIf(f.first && f.seq > 1 && (flags & FLAG_CHECKPOINT) === 0, 'the first frame of a segment after the first must be a checkpoint');
      if ((flags & FLAG_CHECKPOINT) !== 0) this.meta.clear();
      while (!r.done) {
        n++;
        const kind = r.u8();
        label = `record ${n} (${RECORD_NAMES[kind] ?? `kind ${kind}`})`;
        this.record(kind, r, f.seq, `${where}, record ${n}`);
      }
    } catch (e) {
      if (e instanceof CorruptError) {
        throw new DataDirectoryError(`${where}: ${label}: ${e.message}; refusing to start on a damaged log`);
      }
      throw e;
    }
  }

  private group(r: RecordReader): ReplayGroup {
    const id = r.u32();
    const g = this.groups.get(id);
    if (g === undefined) throw new CorruptError(`group ${id} has no group record`);
    return g;
  }

  private record(kind: number, r: RecordReader, seq: number, where: string): void {
    switch (kind) {
      case REC_GROUP: {
        const id = r.u32();
        const conf = r.conf();
        if (!this.groups.has(id)) {
          this.groups.set(id, {
            id,
            hard: { term: 0, vote: null, commit: 0 },
            snap: { index: 0, term: 0, conf, dataBytes: 0, frame: 0, where },
            ents: [{ term: 0, index: 0, type: EntryType.Normal, data: EMPTY }],
            hole: null,
          });
        }
        return;
      }
      case REC_HARD: {
        const g = this.group(r);
        const term = r.u64();
        const commit = r.u64();
        const has = r.u8();
        corruptIf(has > 1, `vote flag ${has}`);
        g.hard = { term, vote: has === 1 ? r.text() : null, commit };
        return;
      }
      case REC_LOG_START: {
        const g = this.group(r);
        const index = r.u64();
        const term = r.u64();
        this.logStart(g, index, term);
        return;
      }
      case REC_ENTRIES: {
        const g = this.group(r);
        const from = r.u64();
        const term = r.u64();
        const count = r.u32();
        this.entries(g, from, term, count, r, seq);
        return;
      }
      case REC_SNAPSHOT: {
        const g = this.group(r);
        const index = r.u64();
        const term = r.u64();
        const dataBytes = r.u64();
        const frame = r.u64();
        const conf = r.conf();
        corruptIf(index === 0 && (term !== 0 || dataBytes !== 0), 'empty snapshot with a term or data');
        corruptIf((dataBytes === 0) !== (frame === 0), 'snapshot file reference does not match its size');
        g.snap = { index, term, conf, dataBytes, frame, where };
        return;
      }
      case REC_META_PUT: {
        const key = r.text();
        const len = r.u32();
        this.meta.set(key, new Uint8Array(r.bytes(len)));
        return;
      }
      case REC_META_DEL:
        this.meta.delete(r.text());
        return;
      default:
        throw new CorruptError('unknown record kind');
    }
  }

  private logStart(g: ReplayGroup, index: number, term: number): void {
    const off = (g.ents[0] as Entry).index;
    const last = off + g.ents.length - 1;
    if (index < off) {
      // Below a gap accepted earlier: the gap stays until a log start covers it.
      corruptIf(g.hole === null, `log start ${index} below the log start ${off} before it`);
      return;
    }
    const hadHole = g.hole !== null;
    g.hole = null;
    const dummy: Entry = { term, index, type: EntryType.Normal, data: EMPTY };
    if (index > last) {
      g.ents = [dummy];
      return;
    }
    const kept = g.ents.slice(index - off);
    // An entry of another term at the log start: what followed it was rewritten (the same frame says how).
    // (At the edge of a gap the term was unknown: the entries after it stay.)
    if (!(hadHole && index === off) && (kept[0] as Entry).term !== term) kept.length = 1;
    kept[0] = dummy;
    g.ents = kept;
  }

  private entries(g: ReplayGroup, from: number, term: number, count: number, r: RecordReader, seq: number): void {
    const off = (g.ents[0] as Entry).index;
    const last = off + g.ents.length - 1;
    if (g.hole !== null && (from <= off || from > last + 1)) {
      // Inside a gap accepted earlier: what precedes `from` is unknown until a log start covers it.
      g.ents = [{ term: 0, index: from - 1, type: EntryType.Normal, data: EMPTY }];
    } else if (from > last + 1) {
      // Only where older segments were deleted: their entries were compacted, and a later log start must say so.
      corruptIf(this.oldestSeq <= 1, `entry ${last + 1} was expected, not ${from}`);
      g.ents = [{ term: 0, index: from - 1, type: EntryType.Normal, data: EMPTY }];
      g.hole = `a gap before entry ${from} of group ${g.id}`;
    } else {
      corruptIf(from <= off, `entries from ${from}, at or below the log start ${off}`);
      g.ents.length = from - off;
    }
    const afterHole = g.hole !== null && g.ents.length === 1;
    const prevTerm = (g.ents[g.ents.length - 1] as Entry).term;
    corruptIf(count > 0 && !afterHole && term < prevTerm, `term ${term} below the preceding term ${prevTerm}`);
    for (let i = 0; i < count; i++) {
      const type = r.u8();
      corruptIf(type !== EntryType.Normal && type !== EntryType.ConfChange, `unknown entry type ${type}`);
      const len = r.u32();
      g.ents.push({ term, index: from + i, type: type as EntryType, data: new Uint8Array(r.bytes(len)) });
    }
    if (count > 0) {
      let perGroup = this.entryMax.get(seq);
      if (perGroup === undefined) this.entryMax.set(seq, (perGroup = new Map<number, number>()));
      perGroup.set(g.id, Math.max(perGroup.get(g.id) ?? 0, from + count - 1));
    }
  }

  /** Checks what the frames left and reads the snapshot files; returns each group's state. */
  finish(): { group: ReplayGroup; data: Uint8Array; file: string | null }[] {
    const out: { group: ReplayGroup; data: Uint8Array; file: string | null }[] = [];
    for (const g of [...this.groups.values()].sort((a, b) => a.id - b.id)) {
      const refuse = (why: string): DataDirectoryError => new DataDirectoryError(`${this.walDir}: group ${g.id}: ${why}; refusing to start on a damaged log`);
      if (g.hole !== null) throw refuse(`${g.hole} that no log start covers (entries are missing)`);
      const start = (g.ents[0] as Entry).index;
      if (g.snap.index < start) throw refuse(`snapshot at ${g.snap.index} below the log start ${start}`);
      for (let i = 1; i < g.ents.length; i++) {
        const prev = (g.ents[i - 1] as Entry).term;
        const e = g.ents[i] as Entry;
        if (e.term < prev) throw refuse(`term ${e.term} at entry ${e.index} below the preceding term ${prev}`);
      }
      let data: Uint8Array = EMPTY;
      let file: string | null = null;
      if (g.snap.dataBytes > 0) {
        file = snapFileName(g.id, g.snap.index, g.snap.frame);
        data = readSnapFile(this.readFile, join(this.walDir, file), g.id, g.snap, g.snap.where);
      }
      out.push({ group: g, data, file });
    }
    return out;
  }
}

export function encodeSnapHeader(w: FrameWriter, s: SnapWrite): void {
  w.bytes(SNAP_MAGIC);
  w.u32(SNAP_FORMAT_VERSION);
  w.u32(s.group);
  w.u64(s.snap.meta.index);
  w.u64(s.snap.meta.term);
  w.u64(s.frame);
  w.conf(s.snap.meta.conf);
  w.u64(s.snap.data.length);
}

function readSnapFile(readFile: (path: string) => Buffer, path: string, group: number, meta: ReplayGroup['snap'], where: string): Uint8Array {
  const refuse = (why: string): DataDirectoryError =>
    new DataDirectoryError(`${path} (snapshot of group ${group} referenced by ${where}): ${why}; refusing to start`);
  let buf: Buffer;
  try {
    buf = readFile(path);
  } catch (e) {
    throw refuse((e as NodeJS.ErrnoException).code === 'ENOENT' ? 'file missing' : (e as Error).message);
  }
  if (buf.length < SNAP_MAGIC.length + 4 + 4 || !buf.subarray(0, SNAP_MAGIC.length).equals(SNAP_MAGIC)) throw refuse('not a snapshot file');
  const end = buf.length - 4;
  if (buf.readUInt32LE(end) !== crc32(buf.subarray(0, end))) throw refuse('checksum mismatch');
  try {
    const r = new RecordReader(buf.subarray(0, end), SNAP_MAGIC.length);
    corruptIf(r.u32() !== SNAP_FORMAT_VERSION, 'unknown snapshot file version');
    corruptIf(r.u32() !== group, 'written for another group');
    corruptIf(r.u64() !== meta.index, 'another index');
    corruptIf(r.u64() !== meta.term, 'another term');
    corruptIf(r.u64() !== meta.frame, 'another frame');
    const conf = r.conf();
    corruptIf(JSON.stringify(conf) !== JSON.stringify(meta.conf), 'another membership');
    const dataBytes = r.u64();
    corruptIf(dataBytes !== meta.dataBytes || r.at + dataBytes !== end, `${dataBytes} bytes of data, ${meta.dataBytes} expected`);
    return new Uint8Array(r.bytes(dataBytes));
  } catch (e) {
    if (e instanceof CorruptError) throw refuse(e.message);
    throw e;
  }
}
