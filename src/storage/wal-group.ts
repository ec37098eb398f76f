// One Raft group's storage in the node's log (wal-store.ts): the in-memory
// mirror every read of the group is served from (MemoryStorage), stricter
// checks on writes, and the record of what changed since the last turn, which
// WalStore encodes into the next frame (wal-records.ts) and settles once the
// frame is durable.

import assert from 'node:assert/strict';
import { MemoryStorage } from '../raft/storage.js';
import { type ConfState, type Entry, type HardState, type NodeId, type Snapshot } from '../raft/types.js';
import { FRAME_PAYLOAD_BYTES_MAX } from './segments.js';
import {
  ENTRY_HEADER_BYTES,
  FrameWriter,
  REC_ENTRIES,
  REC_GROUP,
  REC_HARD,
  REC_LOG_START,
  REC_SNAPSHOT,
  U16_MAX,
  snapFileName,
  type SnapWrite,
} from './wal-records.js';

/** Longest node id stored in a hard state or a membership, in UTF-8 bytes. */
export const NODE_ID_BYTES_MAX = 1024;

export function checkNodeId(id: NodeId): void {
  assert.ok(Buffer.byteLength(id, 'utf8') <= NODE_ID_BYTES_MAX, `node id longer than ${NODE_ID_BYTES_MAX} bytes`);
}

export function checkConf(conf: ConfState): void {
  assert.ok(conf.voters.length <= U16_MAX && conf.learners.length <= U16_MAX, 'membership too large');
  for (const id of conf.voters) checkNodeId(id);
  for (const id of conf.learners) checkNodeId(id);
}

/** What a turn changes in what is durable, applied once its frame is committed. */
export interface TurnEffects {
  /** Log start of each group whose log start the turn records. */
  readonly logStarts: [WalGroupStorage, number][];
  /** Snapshot file each group refers to after the turn (null: none), for groups whose snapshot changed. */
  readonly snapFiles: [WalGroupStorage, string | null][];
}

/**
 * The storage of one Raft group: MemoryStorage (the in-memory mirror every
 * read is served from), with stricter checks on writes and a record of what
 * changed, which WalStore encodes into the next turn's frame.
 */
export class WalGroupStorage extends MemoryStorage {
  private isNew: boolean;
  private hardDirty = false;
  /** The hard state as of the last turn collected. */
  private collectedHard: HardState = { term: 0, vote: null, commit: 0 };
  private snapDirty = false;
  /** Lowest index appended (or truncated from) since the last turn (Infinity: none). */
  private dirtyFrom = Infinity;
  /** Log start (index, term) as of the last turn collected. */
  private collectedStart = 0;
  private collectedStartTerm = 0;
  /** Frame whose snapshot file holds the current snapshot's data (0: no file, the data is empty). */
  private snapFrame = 0;
  /** @internal Log start and snapshot file of the last committed turn. */
  durableStart = 0;
  /** @internal */
  durableSnapFile: string | null = null;

  /** @internal Only WalStore creates these: `isNew` means nothing of the group is in the log yet. */
  constructor(
    readonly groupId: number,
    initialConf: ConfState,
    private readonly onDirty: (g: WalGroupStorage) => void,
    isNew: boolean,
  ) {
    super(initialConf);
    this.isNew = isNew;
  }

  /** @internal Restores recovered state (nothing is dirty afterwards). */
  restore(hard: HardState, snap: Snapshot, snapFrame: number, ents: Entry[], snapFile: string | null): void {
    this.hard = hard;
    this.collectedHard = hard;
    this.snap = snap;
    this.ents = ents;
    this.snapFrame = snapFrame;
    this.collectedStart = (ents[0] as Entry).index;
    this.collectedStartTerm = (ents[0] as Entry).term;
    this.durableStart = this.collectedStart;
    this.durableSnapFile = snapFile;
  }

  override setHardState(hs: HardState): void {
    if (hs.vote !== null) checkNodeId(hs.vote);
    super.setHardState(hs);
    this.hardDirty = true;
    this.onDirty(this);
  }

  override append(entries: readonly Entry[]): void {
    // Everything is checked before anything changes.
    const start = this.checkedAppendStart(entries, FRAME_PAYLOAD_BYTES_MAX);
    if (start === null) return;
    super.append(entries);
    if (start < this.dirtyFrom) this.dirtyFrom = start;
    this.onDirty(this);
  }

  override applySnapshot(snap: Snapshot): void {
    this.checkSnapshotMeta(snap);
    checkConf(snap.meta.conf);
    super.applySnapshot(snap);
    this.snapDirty = true;
    this.dirtyFrom = snap.meta.index + 1; // whatever followed in the log is gone
    this.onDirty(this);
  }

  override createSnapshot(index: number, conf: ConfState, data: Uint8Array): Snapshot {
    checkConf(conf);
    const snap = super.createSnapshot(index, conf, data);
    this.snapDirty = true;
    this.onDirty(this);
    return snap;
  }

  override compact(index: number): void {
    const before = this.offset();
    super.compact(index);
    if (this.offset() === before) return;
    this.onDirty(this);
  }

  /** @internal Encodes this turn's records into `w`; snapshot files to write go to `snaps`. */
  collect(w: FrameWriter, frame: number, snaps: SnapWrite[], effects: TurnEffects, entryMax: Map<number, number>): void {
    const g = this.groupId;
    if (this.isNew) {
      w.u8(REC_GROUP);
      w.u32(g);
      w.conf(this.snap.meta.conf);
      this.isNew = false;
    }
    if (this.snapDirty) {
      const snap = this.snap;
      let file: string | null = null;
      this.snapFrame = 0;
      if (snap.data.length > 0) {
        this.snapFrame = frame;
        file = snapFileName(g, snap.meta.index, frame);
        snaps.push({ group: g, file, snap, frame });
      }
      this.encodeSnapshot(w);
      effects.snapFiles.push([this, file]);
      this.snapDirty = false;
    }
    const off = this.offset();
    const offTerm = (this.ents[0] as Entry).term;
    if (off !== this.collectedStart || offTerm !== this.collectedStartTerm) {
      w.u8(REC_LOG_START);
      w.u32(g);
      w.u64(off);
      w.u64(offTerm);
      this.collectedStart = off;
      this.collectedStartTerm = offTerm;
      effects.logStarts.push([this, off]);
    }
    const last = this.lastIndex();
    if (this.dirtyFrom !== Infinity) {
      // From the lowest index appended (or truncated from) this turn; one record per run of one term.
      let i = Math.max(this.dirtyFrom, off + 1);
      if (i > last) {
        this.entriesRecord(w, g, i, 0, 0, 0);
      } else {
        entryMax.set(g, Math.max(entryMax.get(g) ?? 0, last));
        while (i <= last) {
          const term = (this.ents[i - off] as Entry).term;
          let j = i;
          while (j < last && (this.ents[j + 1 - off] as Entry).term === term) j++;
          this.entriesRecord(w, g, i, j, term, off);
          i = j + 1;
        }
      }
      this.dirtyFrom = Infinity;
    }
    if (this.hardDirty) {
      const hs = this.hard;
      const was = this.collectedHard;
      if (hs.term !== was.term || hs.vote !== was.vote || hs.commit !== was.commit) {
        this.encodeHard(w);
        this.collectedHard = hs;
      }
      this.hardDirty = false;
    }
  }

  private entriesRecord(w: FrameWriter, g: number, from: number, to: number, term: number, off: number): void {
    const count = to >= from ? to - from + 1 : 0;
    w.u8(REC_ENTRIES);
    w.u32(g);
    w.u64(from);
    w.u64(term);
    w.u32(count);
    for (let i = from; i < from + count; i++) {
      const e = this.ents[i - off] as Entry;
      w.reserve(ENTRY_HEADER_BYTES + e.data.length);
      w.buf[w.at] = e.type;
      w.buf.writeUInt32LE(e.data.length, w.at + 1);
      w.buf.set(e.data, w.at + ENTRY_HEADER_BYTES);
      w.at += ENTRY_HEADER_BYTES + e.data.length;
    }
  }

  private encodeSnapshot(w: FrameWriter): void {
    const snap = this.snap;
    w.u8(REC_SNAPSHOT);
    w.u32(this.groupId);
    w.u64(snap.meta.index);
    w.u64(snap.meta.term);
    w.u64(snap.data.length);
    w.u64(this.snapFrame);
    w.conf(snap.meta.conf);
  }

  private encodeHard(w: FrameWriter): void {
    const hs = this.hard;
    w.u8(REC_HARD);
    w.u32(this.groupId);
    w.u64(hs.term);
    w.u64(hs.commit);
    if (hs.vote === null) {
      w.u8(0);
    } else {
      w.u8(1);
      w.text(hs.vote);
    }
  }

  /** @internal The group's whole state but entries, for a checkpoint (as of the turn being collected). */
  checkpoint(w: FrameWriter): void {
    w.u8(REC_GROUP);
    w.u32(this.groupId);
    w.conf(this.snap.meta.conf);
    this.encodeSnapshot(w);
    w.u8(REC_LOG_START);
    w.u32(this.groupId);
    w.u64(this.offset());
    w.u64((this.ents[0] as Entry).term);
    this.encodeHard(w);
  }
}
