// The durable side of one Raft group: what the node reads back, and the
// in-memory implementation used by tests, the simulator and the benchmark.
//
// Persistence contract (see docs/raft.md): the application writes what a
// Ready asks for (snapshot, then entries, then hard state) into its Storage,
// makes it durable, and only then calls RaftNode.advance(). The node reads
// from Storage only what advance() confirmed; everything newer it keeps in its
// own unstable buffer.

import assert from 'node:assert/strict';
import { ConfState, Entry, EntryType, HardState, Snapshot, assertIndex, entrySizeBytes } from './types.js';

/** Read side, used by the Raft node. */
export interface Storage {
  /** Hard state and the membership recorded in the snapshot (entries after it are scanned by the node). */
  initialState(): { hardState: HardState; snapshotConf: ConfState };
  /** Entries in [lo, hi), at most bytesMax in total but always at least one if lo < hi. */
  entries(lo: number, hi: number, bytesMax: number): Entry[];
  /** Term of entry i; valid for firstIndex()-1 <= i <= lastIndex(); undefined outside. */
  term(i: number): number | undefined;
  /** Index of the first entry still in the log (snapshot index + 1). */
  firstIndex(): number;
  lastIndex(): number;
  /** Most recent snapshot (index 0 with empty data when there is none). */
  snapshot(): Snapshot;
}

/** Write side, used by the application that drives the node. */
export interface WritableStorage extends Storage {
  setHardState(hs: HardState): void;
  /** Append entries, dropping any existing entries at or after entries[0].index. */
  append(entries: readonly Entry[]): void;
  /** Replace the whole log with a snapshot received from the leader. */
  applySnapshot(snap: Snapshot): void;
  /** Record an application snapshot at `index` (must be <= the applied index). */
  createSnapshot(index: number, conf: ConfState, data: Uint8Array): Snapshot;
  /** Drop entries before `index` (index must be covered by the snapshot). */
  compact(index: number): void;
}

const EMPTY = new Uint8Array(0);

export function emptySnapshot(conf: ConfState): Snapshot {
  return { meta: { index: 0, term: 0, conf }, data: EMPTY };
}

export class MemoryStorage implements WritableStorage {
  protected hard: HardState = { term: 0, vote: null, commit: 0 };
  protected snap: Snapshot;
  /** ents[0] is a dummy entry at the snapshot index carrying the snapshot term. */
  protected ents: Entry[];

  constructor(initialConf: ConfState) {
    this.snap = emptySnapshot(initialConf);
    this.ents = [{ term: 0, index: 0, type: EntryType.Normal, data: EMPTY }];
  }

  initialState(): { hardState: HardState; snapshotConf: ConfState } {
    return { hardState: this.hard, snapshotConf: this.snap.meta.conf };
  }

  hardState(): HardState {
    return this.hard;
  }

  protected offset(): number {
    return (this.ents[0] as Entry).index;
  }

  firstIndex(): number {
    return this.offset() + 1;
  }

  lastIndex(): number {
    return this.offset() + this.ents.length - 1;
  }

  term(i: number): number | undefined {
    const off = this.offset();
    if (i < off || i > off + this.ents.length - 1) return undefined;
    return (this.ents[i - off] as Entry).term;
  }

  entries(lo: number, hi: number, bytesMax: number): Entry[] {
    const off = this.offset();
    if (lo <= off) assert.fail(`entries(${lo}) compacted (first ${off + 1})`);
    if (hi > this.lastIndex() + 1) assert.fail(`entries hi ${hi} beyond last ${this.lastIndex()}`);
    const out: Entry[] = [];
    let bytes = 0;
    for (let i = lo; i < hi; i++) {
      const e = this.ents[i - off] as Entry;
      bytes += entrySizeBytes(e);
      if (out.length > 0 && bytes > bytesMax) break;
      out.push(e);
    }
    return out;
  }

  /** The entry at i, or undefined if not present (for inspection by tests and the simulator). */
  entry(i: number): Entry | undefined {
    const off = this.offset();
    if (i <= off || i > this.lastIndex()) return undefined;
    return this.ents[i - off];
  }

  snapshot(): Snapshot {
    return this.snap;
  }

  setHardState(hs: HardState): void {
    assertIndex(hs.term, 'term');
    assertIndex(hs.commit, 'commit');
    this.hard = hs;
  }

  append(entries: readonly Entry[]): void {
    if (entries.length === 0) return;
    const first = (entries[0] as Entry).index;
    const off = this.offset();
    assert.ok(first <= this.lastIndex() + 1, `append gap: first ${first}, last ${this.lastIndex()}`);
    let skip = 0;
    if (first <= off) skip = off + 1 - first; // already covered by the snapshot
    if (skip >= entries.length) return;
    const start = first + skip;
    this.ents.length = start - off;
    for (let k = skip; k < entries.length; k++) {
      const e = entries[k] as Entry;
      assert.equal(e.index, this.offset() + this.ents.length, 'append: non-contiguous entries');
      this.ents.push(e);
    }
  }

  /**
   * For stores that persist what they are given: checks every entry of an
   * append before anything changes (contiguous from a place the log has,
   * valid terms never going down, known types, data of at most
   * `dataBytesMax`, nothing at or below the snapshot replaced). Returns the
   * index the append starts to change the log at, or null when the log start
   * already covers all of it.
   */
  protected checkedAppendStart(entries: readonly Entry[], dataBytesMax = Number.POSITIVE_INFINITY): number | null {
    if (entries.length === 0) return null;
    const first = (entries[0] as Entry).index;
    const off = this.offset();
    const last = this.lastIndex();
    assert.ok(first <= last + 1, `append gap: first ${first}, last ${last}`);
    const skip = first <= off ? off + 1 - first : 0; // already covered by the log start
    if (skip >= entries.length) return null;
    const start = first + skip;
    // Entries up to the snapshot are committed: never replaced.
    assert.ok(start > this.snap.meta.index, `append at ${start} would replace entries up to the snapshot at ${this.snap.meta.index}`);
    let prevTerm = this.term(start - 1) as number;
    for (let k = skip; k < entries.length; k++) {
      const e = entries[k] as Entry;
      assert.equal(e.index, start + k - skip, 'append: non-contiguous entries');
      assertIndex(e.term, 'entry term');
      assert.ok(e.term >= prevTerm, `append: term ${e.term} at ${e.index} below the preceding term ${prevTerm}`);
      assert.ok(e.type === EntryType.Normal || e.type === EntryType.ConfChange, `append: unknown entry type ${String(e.type)}`);
      assert.ok(e.data.length <= dataBytesMax, 'append: entry too large');
      prevTerm = e.term;
    }
    return start;
  }

  /** For stores that persist what they are given: a snapshot's index, term and emptiness are consistent. */
  protected checkSnapshotMeta(snap: Snapshot): void {
    assertIndex(snap.meta.index, 'snapshot index');
    assertIndex(snap.meta.term, 'snapshot term');
    assert.ok(snap.meta.index > 0 || (snap.meta.term === 0 && snap.data.length === 0), 'applySnapshot: empty snapshot with a term or data');
  }

  applySnapshot(snap: Snapshot): void {
    assert.ok(snap.meta.index >= this.snap.meta.index, 'applySnapshot: older than current snapshot');
    this.snap = snap;
    this.ents = [{ term: snap.meta.term, index: snap.meta.index, type: EntryType.Normal, data: EMPTY }];
  }

  createSnapshot(index: number, conf: ConfState, data: Uint8Array): Snapshot {
    assert.ok(index > this.snap.meta.index, `createSnapshot: ${index} not newer than ${this.snap.meta.index}`);
    assert.ok(index <= this.lastIndex(), `createSnapshot: ${index} beyond last ${this.lastIndex()}`);
    const term = this.term(index);
    assert.ok(term !== undefined);
    this.snap = { meta: { index, term, conf }, data };
    return this.snap;
  }

  compact(index: number): void {
    const off = this.offset();
    if (index <= off) return;
    assert.ok(index <= this.snap.meta.index, `compact ${index} beyond snapshot ${this.snap.meta.index}`);
    const e = this.ents[index - off] as Entry;
    const keep = this.ents.slice(index - off);
    keep[0] = { term: e.term, index: e.index, type: EntryType.Normal, data: EMPTY };
    this.ents = keep;
  }
}
