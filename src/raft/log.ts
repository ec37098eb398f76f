// The Raft log as the node sees it: the durable part (Storage, only what
// advance() confirmed) followed by an unstable in-memory suffix that has been
// (or will be) handed to the application to persist.

import assert from 'node:assert/strict';
import { Storage } from './storage.js';
import { Entry, Snapshot, assertIndex, entrySizeBytes } from './types.js';

export class RaftLog {
  readonly storage: Storage;
  /** Snapshot received from a leader, not yet confirmed durable. */
  unstableSnapshot: Snapshot | null = null;
  /** True once unstableSnapshot has been handed out in a Ready. */
  snapshotInProgress = false;
  /** Entries not yet confirmed durable; unstableEntries[k] has index unstableOffset + k. */
  unstableEntries: Entry[] = [];
  unstableOffset: number;
  /** Unstable entries up to this index have been handed out in a Ready. */
  entriesInProgressIndex: number;
  /** Highest index known committed. */
  committed: number;
  /** Highest index handed to the application for applying. */
  applied: number;

  constructor(storage: Storage, committed: number) {
    this.storage = storage;
    const last = storage.lastIndex();
    this.unstableOffset = last + 1;
    this.entriesInProgressIndex = last;
    // The application restores its state from the snapshot, which may be newer
    // than the first entry still kept in the log.
    const snapIndex = storage.snapshot().meta.index;
    assert.ok(snapIndex >= storage.firstIndex() - 1, 'storage compacted beyond its snapshot');
    this.applied = snapIndex;
    assert.ok(committed <= last, `hard state commit ${committed} beyond last index ${last}`);
    this.committed = Math.max(committed, snapIndex);
  }

  firstIndex(): number {
    if (this.unstableSnapshot !== null) return this.unstableSnapshot.meta.index + 1;
    return this.storage.firstIndex();
  }

  lastIndex(): number {
    return this.unstableOffset + this.unstableEntries.length - 1;
  }

  /** Highest index whose entry is durable with the content this log has now. */
  persistedIndex(): number {
    return this.unstableOffset - 1;
  }

  term(i: number): number | undefined {
    if (i >= this.unstableOffset) {
      const e = this.unstableEntries[i - this.unstableOffset];
      return e === undefined ? undefined : e.term;
    }
    if (this.unstableSnapshot !== null) {
      return i === this.unstableSnapshot.meta.index ? this.unstableSnapshot.meta.term : undefined;
    }
    return this.storage.term(i);
  }

  lastTerm(): number {
    const t = this.term(this.lastIndex());
    assert.ok(t !== undefined, 'term of last index unavailable');
    return t;
  }

  matchTerm(i: number, t: number): boolean {
    return this.term(i) === t;
  }

  /** Is a candidate log (lastIndex, lastTerm) at least as up to date as ours? (Raft §5.4.1) */
  isUpToDate(lastIndex: number, lastTerm: number): boolean {
    const myTerm = this.lastTerm();
    return lastTerm > myTerm || (lastTerm === myTerm && lastIndex >= this.lastIndex());
  }

  /** Entries in [lo, hi) limited to bytesMax (at least one entry if lo < hi). */
  slice(lo: number, hi: number, bytesMax: number): Entry[] {
    if (lo < this.firstIndex()) assert.fail(`slice lo ${lo} compacted (first ${this.firstIndex()})`);
    if (hi > this.lastIndex() + 1) assert.fail(`slice hi ${hi} beyond last ${this.lastIndex()}`);
    if (lo >= hi) return [];
    let out: Entry[];
    let bytes = 0;
    if (lo < this.unstableOffset) {
      const stableHi = Math.min(hi, this.unstableOffset);
      out = this.storage.entries(lo, stableHi, bytesMax);
      if (out.length < stableHi - lo) return out;
      for (const e of out) bytes += entrySizeBytes(e);
      if (stableHi === hi) return out;
    } else {
      out = [];
    }
    const from = Math.max(lo, this.unstableOffset) - this.unstableOffset;
    const to = hi - this.unstableOffset;
    for (let k = from; k < to; k++) {
      const e = this.unstableEntries[k] as Entry;
      bytes += entrySizeBytes(e);
      if (out.length > 0 && bytes > bytesMax) break;
      out.push(e);
    }
    return out;
  }

  /**
   * Append entries (contiguous, entries[0].index <= lastIndex + 1), truncating
   * any conflicting suffix. Never truncates committed entries.
   */
  append(entries: readonly Entry[]): void {
    if (entries.length === 0) return;
    const first = (entries[0] as Entry).index;
    if (first <= this.committed) assert.fail(`append at ${first} would overwrite committed ${this.committed}`);
    if (first > this.lastIndex() + 1) assert.fail(`append gap at ${first}, last ${this.lastIndex()}`);
    const end = this.unstableOffset + this.unstableEntries.length;
    if (first === end) {
      for (const e of entries) this.unstableEntries.push(e);
    } else if (first <= this.unstableOffset) {
      // Replaces part of the durable log: the application truncates it when persisting.
      this.unstableEntries = entries.slice();
      this.unstableOffset = first;
      this.entriesInProgressIndex = Math.min(this.entriesInProgressIndex, first - 1);
    } else {
      this.unstableEntries.length = first - this.unstableOffset;
      for (const e of entries) this.unstableEntries.push(e);
      this.entriesInProgressIndex = Math.min(this.entriesInProgressIndex, first - 1);
    }
    const last = this.lastIndex();
    assertIndex(last, 'last index');
  }

  /**
   * First index among `entries` whose term differs from ours or that we do not
   * have; 0 if all of them are already present.
   */
  findConflict(entries: readonly Entry[]): number {
    for (const e of entries) {
      if (!this.matchTerm(e.index, e.term)) return e.index;
    }
    return 0;
  }

  /**
   * Largest index <= index whose term is <= term (or the first index whose term
   * is unknown because it was compacted). Used for fast back-off on rejects.
   */
  findConflictByTerm(index: number, term: number): { index: number; term: number } {
    let i = Math.min(index, this.lastIndex());
    for (;;) {
      const t = this.term(i);
      if (t === undefined) return { index: i, term: 0 };
      if (t <= term) return { index: i, term: t };
      i--;
    }
  }

  commitTo(i: number): void {
    if (i <= this.committed) return;
    if (i > this.lastIndex()) assert.fail(`commit ${i} beyond last index ${this.lastIndex()}`);
    assertIndex(i, 'commit');
    this.committed = i;
  }

  /** Entries not yet handed out for persistence (and marks them handed out). */
  takeUnstableEntries(): Entry[] {
    const from = Math.max(this.entriesInProgressIndex + 1, this.unstableOffset);
    const k = from - this.unstableOffset;
    if (k >= this.unstableEntries.length) return [];
    const out = this.unstableEntries.slice(k);
    this.entriesInProgressIndex = this.lastIndex();
    return out;
  }

  hasUnstableEntries(): boolean {
    return this.lastIndex() > Math.max(this.entriesInProgressIndex, this.unstableOffset - 1);
  }

  /** The application confirmed entries up to (index, term) durable. */
  stableTo(index: number, term: number): void {
    if (index < this.unstableOffset) return;
    if (this.term(index) !== term) return; // replaced since; will be persisted again
    const k = index + 1 - this.unstableOffset;
    this.unstableEntries = this.unstableEntries.slice(k);
    this.unstableOffset = index + 1;
  }

  stableSnapshotTo(index: number): void {
    if (this.unstableSnapshot !== null && this.unstableSnapshot.meta.index === index) {
      this.unstableSnapshot = null;
      this.snapshotInProgress = false;
    }
  }

  /** Install a snapshot received from the leader: the whole log is replaced. */
  restore(snap: Snapshot): void {
    assert.ok(snap.meta.index > this.committed, 'restore of a snapshot not newer than commit');
    this.unstableSnapshot = snap;
    this.snapshotInProgress = false;
    this.unstableEntries = [];
    this.unstableOffset = snap.meta.index + 1;
    this.entriesInProgressIndex = snap.meta.index;
    this.committed = snap.meta.index;
    this.applied = snap.meta.index;
  }

  /** Highest index that may be handed to the application for applying. */
  applicableIndex(): number {
    return Math.min(this.committed, this.persistedIndex());
  }

  hasCommittedToApply(): boolean {
    return this.applicableIndex() > this.applied;
  }

  takeCommittedEntries(bytesMax: number): Entry[] {
    const hi = this.applicableIndex();
    if (hi <= this.applied) return [];
    const out = this.slice(this.applied + 1, hi + 1, bytesMax);
    this.applied += out.length;
    return out;
  }
}
