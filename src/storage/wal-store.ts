// The node's log: every Raft group of a node, and the node's metadata, in ONE
// append-only log (`DIR/wal/`), written with one write and one fdatasync per
// loop turn for all groups. A drop-in for RaftLogStore (raft-lmdb.ts): the
// same API, the same in-memory mirrors, the same failure reporting. See
// docs/storage.md, "The node's log (`wal/`)".
//
// Each group's storage (wal-group.ts) keeps an in-memory mirror of its uncompacted log, hard
// state and latest snapshot, so the Raft node reads synchronously and sees
// every write at once. Writes only mark the group dirty; `commitTurn()` encodes
// what changed since the previous call (entries appended, hard states, log
// starts, snapshot references, metadata) as records (wal-records.ts) of ONE
// frame, carved from a reused buffer, and appends it to the active segment (segments.ts):
// synchronously on the calling thread, or (`commitOffThread`) on libuv's pool
// so the event loop goes on while the disk syncs. Snapshot data does not go
// into the log: it is written to a file of its own, made durable before the
// frame that references it. When a segment is full the next frame starts a new
// one with a checkpoint of everything but entries, so that older segments are
// needed only for their entries, and are deleted once every group has compacted
// them. Turns settle in call order; after a failed turn every later turn fails.

import assert from 'node:assert/strict';
import { dirname, join, resolve } from 'node:path';
import { crc32 } from 'node:zlib';
import { type ConfState, type Snapshot } from '../raft/types.js';
import { NODE_LOG_DIR } from './files.js';
import { realLogFs, type LogFs } from './log-fs.js';
import {
  AppendError,
  FRAME_HEADER_BYTES,
  FRAME_NUMBER_BYTES,
  FRAME_PAYLOAD_BYTES_MAX,
  SEGMENT_BYTES_DEFAULT,
  SegmentLog,
  sealFrame,
  writeU64LE,
} from './segments.js';
import { DataDirectoryError, PersistError, type NodeLogStore } from './store.js';
import { WalGroupStorage, checkConf, type TurnEffects } from './wal-group.js';
import {
  FLAG_CHECKPOINT,
  FrameWriter,
  RECORDS_AT,
  REC_META_DEL,
  REC_META_PUT,
  Replay,
  SNAP_NAME,
  WAL_RECORD_FORMAT_VERSION,
  encodeSnapHeader,
  type SnapWrite,
} from './wal-records.js';

/** The directory of the node's log, in the data directory. */
export const WAL_DIR = NODE_LOG_DIR;
/** Holds the pid of the process that has the log open (one process per log), in `WAL_DIR`. */
export const WAL_LOCK_FILE = 'LOCK';
/** Longest node metadata key, in UTF-8 bytes. */
export const META_KEY_BYTES_MAX = 256;
/** Longest node metadata value. */
export const META_VALUE_BYTES_MAX = 64 * 1024 * 1024;
/** Group ids are stored as u32. */
export const GROUP_ID_MAX = 0xffff_ffff;
/** Size of a new turn buffer; buffers grow to the biggest turn and are reused. */
const TURN_BUFFER_BYTES = 64 * 1024;
// ---------------------------------------------------------------------------
// The store
// ---------------------------------------------------------------------------

/** One collected turn, waiting to be written. */
interface Turn {
  readonly writer: FrameWriter;
  readonly bytes: number;
  readonly rotate: boolean;
  readonly snaps: SnapWrite[];
  readonly effects: TurnEffects;
}

/** Turn buffers kept for reuse (one per turn in flight). */
const TURN_BUFFERS_KEPT_MAX = 4;

export type WalFsyncMode = 'always' | 'never';

export interface WalStoreOptions {
  /** 'always': commitTurn resolves after fdatasync. 'never': after the write only (benchmarks; a machine crash can lose turns). */
  readonly fsync: WalFsyncMode;
  /** Write and fdatasync on libuv's pool instead of the calling thread (default false; see `commitOffThread`). */
  readonly commitOffThread?: boolean;
  /** Size segments are preallocated to (default SEGMENT_BYTES_DEFAULT). */
  readonly segmentBytes?: number;
  /** The file system (default node:fs; the simulator passes its disk, sim/disk.ts). */
  readonly fs?: LogFs;
  /** Where lines about recovery and clean-up go (default stderr). */
  readonly log?: (line: string) => void;
}

const DISK_FULL_CODES: ReadonlySet<string> = new Set(['ENOSPC', 'EDQUOT']);
/** Most bytes of stalled turns kept while the disk is full; past it the store fails as on any write error. */
export const STALLED_TURN_BYTES_MAX = 64 * 1024 * 1024;

function errnoCode(e: unknown): string {
  const inner = e instanceof AppendError ? e.cause : e;
  return (inner as NodeJS.ErrnoException | null)?.code ?? '';
}

export class WalStore implements NodeLogStore {
  /** Where the data lives, for logs and INFO. */
  readonly description: string;
  private readonly groupsById = new Map<number, WalGroupStorage>();
  private readonly dirty = new Set<WalGroupStorage>();
  private readonly meta = new Map<string, Uint8Array>();
  /** Metadata keys changed since the last turn (value null: removed). */
  private readonly metaDirty = new Map<string, Uint8Array | null>();
  private readonly markDirty = (g: WalGroupStorage): void => {
    assert.ok(!this.closed, 'wal store is closed');
    this.dirty.add(g);
  };
  /** Per segment, per group: the highest entry index written into it. */
  private readonly entryMax: Map<number, Map<number, number>>;
  /** The next frame must start with a checkpoint (the active segment is new and empty). */
  private needCheckpoint: boolean;
  private readonly writers: FrameWriter[] = [];
  /** Snapshot files no committed record references any more. */
  private readonly unreferencedSnapFiles: string[] = [];
  /** The first write failure; every later turn fails too (the store must be reopened). */
  private failure: PersistError | null = null;
  /** Turns not written because the disk was full, oldest first: written before anything newer. */
  private readonly stalled: Turn[] = [];
  private closed = false;
  /** The last turn queued (settles, never rejects, once it and its clean-up are done), or null. */
  private inFlight: Promise<void> | null = null;
  /**
   * false: a turn's frame is written and fdatasync'd synchronously on the
   * calling thread. true: on libuv's pool, so the event loop goes on while
   * the disk syncs (a node with peers gains; a node alone loses the
   * hand-offs). May change between turns.
   */
  commitOffThread: boolean;

  private constructor(
    private readonly fs: LogFs,
    private readonly logLine: (line: string) => void,
    private readonly walDir: string,
    private readonly log: SegmentLog,
    private readonly lockPath: string,
    private readonly fsync: boolean,
    commitOffThread: boolean,
    replay: Replay,
  ) {
    this.description = `wal:${walDir}`;
    this.commitOffThread = commitOffThread;
    this.entryMax = replay.entryMax;
    const segs = log.segmentNumbers();
    const active = segs[segs.length - 1] as number;
    this.needCheckpoint = active > 1 && replay.lastFrameSeq !== active;
  }

  /**
   * Opens (or creates) the log in `DIR/wal/` and restores every group in it.
   * Refuses, with a DataDirectoryError naming the file and the offset or the
   * record, a log another live process holds, a segment missing from the
   * numbering, a damaged frame anywhere but the torn tail of the last segment,
   * and any record that does not decode or does not fit the others (a gap in a
   * log, terms going down, an unknown record kind, a snapshot file missing or
   * failing its CRC).
   */
  static open(dataDir: string, options: WalStoreOptions): WalStore {
    const dir = resolve(dataDir);
    const walDir = join(dir, WAL_DIR);
    const fsync = options.fsync === 'always';
    const fs = options.fs ?? realLogFs;
    const logLine = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
    try {
      const existed = fs.existsSync(walDir);
      fs.mkdirSync(walDir);
      if (!existed && fsync) fs.syncDirSync(dirname(walDir));
    } catch (e) {
      throw new DataDirectoryError(`cannot create log directory ${walDir}: ${(e as Error).message}`);
    }
    const lockPath = join(walDir, WAL_LOCK_FILE);
    fs.lock(lockPath, 'the node log');
    let log: SegmentLog | null = null;
    try {
      const names = fs.readdirSync(walDir);
      if (!names.some((n) => n.endsWith('.wal')) && names.some((n) => SNAP_NAME.test(n))) {
        throw new DataDirectoryError(`${walDir} holds snapshot files but no log segment; the log was lost; refusing to start`);
      }
      const replay = new Replay(walDir, (path) => fs.readFileSync(path));
      try {
        log = SegmentLog.open(walDir, {
          segmentBytes: options.segmentBytes ?? SEGMENT_BYTES_DEFAULT,
          fsync,
          onFrame: (f) => replay.frame(f),
          fs,
          log: logLine,
        });
      } catch (e) {
        if (e instanceof DataDirectoryError || e instanceof assert.AssertionError) throw e;
        throw new DataDirectoryError(`cannot open the log in ${walDir}: ${(e as Error).message}`);
      }
      const store = new WalStore(fs, logLine, walDir, log, lockPath, fsync, options.commitOffThread === true, replay);
      store.restore(replay);
      return store;
    } catch (e) {
      if (log !== null) void log.close();
      fs.unlock(lockPath);
      throw e;
    }
  }

  private restore(replay: Replay): void {
    const referenced = new Set<string>();
    for (const { group: r, data, file } of replay.finish()) {
      const g = new WalGroupStorage(r.id, r.snap.conf, this.markDirty, false);
      const snap: Snapshot = { meta: { index: r.snap.index, term: r.snap.term, conf: r.snap.conf }, data };
      g.restore(r.hard, snap, r.snap.frame, r.ents, file);
      this.groupsById.set(r.id, g);
      if (file !== null) referenced.add(file);
    }
    for (const [k, v] of replay.meta) this.meta.set(k, v);
    // Snapshot files of turns that never committed, or whose removal a crash interrupted.
    for (const name of this.fs.readdirSync(this.walDir)) {
      if (SNAP_NAME.test(name) && !referenced.has(name)) this.fs.unlinkSync(join(this.walDir, name));
    }
  }

  /** The storage of group `groupId`, created (empty, with `initialConf`) if the node has none yet. */
  group(groupId: number, initialConf: ConfState): WalGroupStorage {
    assert.ok(Number.isInteger(groupId) && groupId >= 0 && groupId <= GROUP_ID_MAX, `group id ${groupId} is not a u32`);
    assert.ok(!this.closed, 'wal store is closed');
    let g = this.groupsById.get(groupId);
    if (g === undefined) {
      checkConf(initialConf);
      g = new WalGroupStorage(groupId, initialConf, this.markDirty, true);
      this.groupsById.set(groupId, g);
      this.dirty.add(g);
    }
    return g;
  }

  /** Ids of every group this node stores (recovered or created), ascending. */
  groups(): number[] {
    return [...this.groupsById.keys()].sort((a, b) => a - b);
  }

  hasGroup(groupId: number): boolean {
    return this.groupsById.has(groupId);
  }

  /** A node metadata value (as last put, committed or not). */
  getMeta(key: string): Uint8Array | undefined {
    return this.meta.get(key);
  }

  /** Sets a node metadata value; written with the next turn. The store keeps `value` until then: do not change it. */
  putMeta(key: string, value: Uint8Array): void {
    assert.ok(!this.closed, 'wal store is closed');
    const bytes = Buffer.byteLength(key, 'utf8');
    assert.ok(bytes > 0 && bytes <= META_KEY_BYTES_MAX, `metadata key must have 1 to ${META_KEY_BYTES_MAX} bytes`);
    assert.ok(value.length <= META_VALUE_BYTES_MAX, `metadata value longer than ${META_VALUE_BYTES_MAX} bytes`);
    this.meta.set(key, value);
    this.metaDirty.set(key, value);
  }

  /** Removes a node metadata value; written with the next turn. */
  deleteMeta(key: string): void {
    assert.ok(!this.closed, 'wal store is closed');
    if (!this.meta.delete(key)) return;
    this.metaDirty.set(key, null);
  }

  /** Metadata keys in ascending order. */
  metaKeys(): string[] {
    return [...this.meta.keys()].sort();
  }

  /**
   * Writes everything changed since the previous call (all groups, metadata)
   * as one frame, with one write and (fsync 'always') one fdatasync, on this
   * thread or on libuv's pool (see `commitOffThread`); resolves when that is
   * done. The frame is encoded at the call, so a turn asked for while another
   * is in flight is written once the earlier one has settled: turns settle in
   * call order. Rejects with a PersistError: applied 'no' when nothing of the
   * turn can be found on reopening (a snapshot file, the new segment or the
   * frame could not be written; an earlier turn failed; the store is closed);
   * 'unknown' when the fdatasync failed (the frame may or may not be on disk).
   * After any failure every later turn fails too: close and reopen the store.
   */
  commitTurn(): Promise<void> {
    if (this.closed) return Promise.reject(new PersistError('wal store is closed; turn not written', 'no'));
    let turn: Turn | null;
    try {
      turn = this.collect();
    } catch (e) {
      if (!(e instanceof PersistError)) throw e;
      return Promise.reject(this.fail(e));
    }
    if (this.inFlight === null && (turn === null || !this.commitOffThread)) {
      try {
        this.writeSync(turn);
      } catch (e) {
        return Promise.reject(e);
      }
      return Promise.resolve();
    }
    const offThread = this.commitOffThread;
    const previous = this.inFlight ?? Promise.resolve();
    let resolveTurn: () => void = () => undefined;
    let rejectTurn: (e: unknown) => void = () => undefined;
    const result = new Promise<void>((resolve, reject) => {
      resolveTurn = resolve;
      rejectTurn = reject;
    });
    const chained = previous.then(async () => {
      try {
        if (offThread) await this.writeAsync(turn);
        else this.writeSync(turn);
      } catch (e) {
        rejectTurn(e);
        return;
      }
      resolveTurn();
      await this.cleanUpAsync();
    });
    this.inFlight = chained;
    void chained.then(() => {
      if (this.inFlight === chained) this.inFlight = null;
    });
    return result;
  }

  private takeWriter(): FrameWriter {
    const w = this.writers.pop() ?? new FrameWriter(TURN_BUFFER_BYTES);
    w.at = RECORDS_AT;
    return w;
  }

  private releaseWriter(w: FrameWriter): void {
    if (this.writers.length < TURN_BUFFERS_KEPT_MAX) this.writers.push(w);
  }

  /** Encodes this turn's frame (null: nothing changed). */
  private collect(): Turn | null {
    if (this.dirty.size === 0 && this.metaDirty.size === 0) return null;
    const frame = this.log.frameNumber;
    let w = this.takeWriter();
    const snaps: SnapWrite[] = [];
    const effects: TurnEffects = { logStarts: [], snapFiles: [] };
    const entryMax = new Map<number, number>();
    const groups = [...this.dirty].sort((a, b) => a.groupId - b.groupId);
    this.dirty.clear();
    for (const g of groups) g.collect(w, frame, snaps, effects, entryMax);
    for (const [key, value] of this.metaDirty) {
      if (value === null) {
        w.u8(REC_META_DEL);
        w.text(key);
      } else {
        w.u8(REC_META_PUT);
        w.text(key);
        w.u32(value.length);
        w.bytes(value);
      }
    }
    this.metaDirty.clear();
    const rotate = this.log.wouldRotate(w.at);
    const checkpoint = rotate || this.needCheckpoint;
    if (checkpoint) {
      // The first frame of a segment: the whole state but entries first, then the turn's own records.
      const records = w;
      w = this.takeWriter();
      for (const g of [...this.groupsById.values()].sort((a, b) => a.groupId - b.groupId)) g.checkpoint(w);
      for (const [key, value] of [...this.meta].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
        w.u8(REC_META_PUT);
        w.text(key);
        w.u32(value.length);
        w.bytes(value);
      }
      w.reserve(records.at - RECORDS_AT);
      records.buf.copy(w.buf, w.at, RECORDS_AT, records.at);
      w.at += records.at - RECORDS_AT;
      this.releaseWriter(records);
    }
    const payloadBytes = w.at - FRAME_HEADER_BYTES;
    if (payloadBytes > FRAME_PAYLOAD_BYTES_MAX) {
      this.releaseWriter(w);
      throw new PersistError(`turn of ${payloadBytes} bytes is larger than ${FRAME_PAYLOAD_BYTES_MAX}; not written`, 'no');
    }
    writeU64LE(w.buf, frame, FRAME_HEADER_BYTES);
    w.buf[FRAME_HEADER_BYTES + FRAME_NUMBER_BYTES] = checkpoint ? FLAG_CHECKPOINT : 0;
    w.buf[FRAME_HEADER_BYTES + FRAME_NUMBER_BYTES + 1] = WAL_RECORD_FORMAT_VERSION;
    sealFrame(w.buf, w.at);
    const seq = this.log.plan(w.at, rotate);
    this.needCheckpoint = false;
    if (entryMax.size > 0) {
      let perGroup = this.entryMax.get(seq);
      if (perGroup === undefined) this.entryMax.set(seq, (perGroup = new Map<number, number>()));
      for (const [g, max] of entryMax) perGroup.set(g, Math.max(perGroup.get(g) ?? 0, max));
    }
    return { writer: w, bytes: w.at, rotate, snaps, effects };
  }

  private fail(e: PersistError): PersistError {
    if (this.failure === null) this.failure = e;
    return e;
  }

  private earlierFailure(): PersistError {
    return new PersistError(`turn not written: an earlier turn failed (${(this.failure as PersistError).message}); reopen the store`, 'no');
  }

  private failed(e: unknown): PersistError {
    if (e instanceof AppendError && e.stage === 'sync') {
      return this.fail(new PersistError(`log fdatasync failed, outcome unknown: ${e.message}`, 'unknown'));
    }
    const what = e instanceof AppendError ? (e.stage === 'write' ? 'log write' : 'new log segment') : 'snapshot file write';
    const retryable = !(e instanceof AppendError && e.stage === 'write') && DISK_FULL_CODES.has(errnoCode(e)) && this.stalledBytes() <= STALLED_TURN_BYTES_MAX;
    if (retryable) return new PersistError(`${what} failed, not written yet: ${(e as Error).message}`, 'no', true);
    for (const t of this.stalled) this.releaseWriter(t.writer);
    this.stalled.length = 0;
    return this.fail(new PersistError(`${what} failed, not applied: ${(e as Error).message}`, 'no'));
  }

  private stalledBytes(): number {
    let bytes = 0;
    for (const t of this.stalled) bytes += t.bytes;
    return bytes;
  }

  /**
   * Writes the stalled turns, then `turn`, in order. A failure that wrote
   * nothing because the disk is full keeps them stalled (the error is
   * retryable; the next turn writes them first); any other fails the store.
   */
  private writeSync(turn: Turn | null): void {
    if (this.failure !== null) throw this.earlierFailure();
    if (turn !== null) this.stalled.push(turn);
    while (this.stalled.length > 0) {
      const t = this.stalled[0] as Turn;
      try {
        for (const s of t.snaps) this.writeSnapFileSync(s);
        if (t.snaps.length > 0 && this.fsync) this.fs.syncDirSync(this.walDir);
        this.log.appendSync(t.writer.buf, t.bytes, t.rotate);
      } catch (e) {
        throw this.failed(e);
      }
      this.stalled.shift();
      this.releaseWriter(t.writer);
      this.committed(t);
    }
    if (this.inFlight === null) this.cleanUpSync();
  }

  private async writeAsync(turn: Turn | null): Promise<void> {
    if (this.failure !== null) throw this.earlierFailure();
    if (turn !== null) this.stalled.push(turn);
    while (this.stalled.length > 0) {
      const t = this.stalled[0] as Turn;
      try {
        for (const s of t.snaps) await this.writeSnapFile(s);
        if (t.snaps.length > 0 && this.fsync) await this.fs.syncDir(this.walDir);
        await this.log.append(t.writer.buf, t.bytes, t.rotate);
      } catch (e) {
        throw this.failed(e);
      }
      this.stalled.shift();
      this.releaseWriter(t.writer);
      this.committed(t);
    }
  }

  private snapHeader(s: SnapWrite): Buffer {
    const w = new FrameWriter(256);
    w.at = 0;
    encodeSnapHeader(w, s);
    return w.buf.subarray(0, w.at);
  }

  private writeSnapFileSync(s: SnapWrite): void {
    const header = this.snapHeader(s);
    const crc = Buffer.allocUnsafe(4);
    crc.writeUInt32LE(crc32(s.snap.data, crc32(header)), 0);
    const fd = this.fs.openSync(join(this.walDir, s.file), 'w');
    try {
      const parts = [header, s.snap.data, crc];
      const total = header.length + s.snap.data.length + 4;
      let done = this.fs.writevSync(fd, parts, 0);
      if (done < total) {
        // A short write (rare on files): the rest piece by piece.
        const all = Buffer.concat(parts);
        while (done < total) done += this.fs.writevSync(fd, [all.subarray(done)], done);
      }
      if (this.fsync) this.fs.fsyncSync(fd);
    } finally {
      this.fs.closeSync(fd);
    }
  }

  private async writeSnapFile(s: SnapWrite): Promise<void> {
    const header = this.snapHeader(s);
    const crc = Buffer.allocUnsafe(4);
    crc.writeUInt32LE(crc32(s.snap.data, crc32(header)), 0);
    const fd = await this.fs.open(join(this.walDir, s.file), 'w');
    try {
      const parts = [header, s.snap.data, crc];
      const total = header.length + s.snap.data.length + 4;
      let done = await this.fs.writev(fd, parts, 0);
      if (done < total) {
        const all = Buffer.concat(parts);
        while (done < total) done += await this.fs.write(fd, all, done, total - done, done);
      }
      if (this.fsync) await this.fs.fsync(fd);
    } finally {
      await this.fs.close(fd);
    }
  }

  /** Records what the committed turn made durable. */
  private committed(turn: Turn): void {
    for (const [g, start] of turn.effects.logStarts) g.durableStart = start;
    for (const [g, file] of turn.effects.snapFiles) {
      if (g.durableSnapFile !== null && g.durableSnapFile !== file) this.unreferencedSnapFiles.push(g.durableSnapFile);
      g.durableSnapFile = file;
    }
  }

  /** Segments below the returned number hold only entries every group has compacted (durably). */
  private deletableBelow(): number {
    const segs = this.log.segmentNumbers();
    let below = segs[0] as number;
    for (let i = 0; i < segs.length - 1; i++) {
      const seq = segs[i] as number;
      const perGroup = this.entryMax.get(seq);
      if (perGroup !== undefined) {
        for (const [id, max] of perGroup) {
          const g = this.groupsById.get(id);
          assert.ok(g !== undefined, `segment ${seq} holds entries of unknown group ${id}`);
          if (max > g.durableStart) return below;
        }
      }
      below = seq + 1;
    }
    return below;
  }

  private forgetSegmentsBelow(seq: number): void {
    for (const s of [...this.entryMax.keys()]) if (s < seq) this.entryMax.delete(s);
  }

  private cleanUpSync(): void {
    try {
      while (this.unreferencedSnapFiles.length > 0) this.fs.unlinkSync(join(this.walDir, this.unreferencedSnapFiles.shift() as string));
      const below = this.deletableBelow();
      if (below > (this.log.segmentNumbers()[0] as number)) {
        this.log.deleteBelowSync(below);
        this.forgetSegmentsBelow(below);
      }
    } catch (e) {
      // Space not given back is no reason to stop: the next clean-up tries again, recovery removes stray snapshot files.
      this.logLine(`ordo: ${this.walDir}: clean-up failed: ${(e as Error).message}`);
    }
  }

  private async cleanUpAsync(): Promise<void> {
    try {
      while (this.unreferencedSnapFiles.length > 0) await this.fs.unlink(join(this.walDir, this.unreferencedSnapFiles.shift() as string));
      const below = this.deletableBelow();
      if (below > (this.log.segmentNumbers()[0] as number)) {
        await this.log.deleteBelow(below);
        this.forgetSegmentsBelow(below);
      }
    } catch (e) {
      this.logLine(`ordo: ${this.walDir}: clean-up failed: ${(e as Error).message}`);
    }
  }

  /** Segment numbers on disk (for tests and INFO). */
  segmentNumbers(): readonly number[] {
    return this.log.segmentNumbers();
  }

  /**
   * Closes the log. Writes made since the last commitTurn() are dropped, as a
   * crash would drop them; turns asked for before are written first.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.dirty.clear();
    this.metaDirty.clear();
    try {
      while (this.inFlight !== null) await this.inFlight;
      await this.log.close();
    } finally {
      this.fs.unlock(this.lockPath);
    }
  }
}
