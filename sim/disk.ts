// A simulated disk for the node's log: the LogFs (src/storage/log-fs.ts)
// that the simulator and the tests give WalStore instead of node:fs, so that
// the real log code runs on virtual time and meets what a real disk does at a
// crash. It lives with the simulator: production code never uses it.
//
// The model, and what the log relies on:
// - A write is visible to reads at once; it is durable only once the file is
//   fdatasync'd (or fsync'd). Every file keeps an undo record of its writes
//   and truncations since its last sync, so a sync costs nothing and a crash
//   rolls the file back to what was synced.
// - At a crash every unsynced write is lost, except that the LAST unsynced
//   write of each file may leave something behind, drawn from the injected
//   PRNG: nothing, a prefix cut at an arbitrary byte, all of it (it reached
//   the platter, only its sync was missing), or garbage over a prefix.
// - Creating, renaming and removing files (and mkdir) change the directory;
//   such a change is durable only once its directory is synced. A crash keeps
//   a prefix, drawn from the PRNG, of the changes not yet synced, in the
//   order they were made (a journaling file system commits them in order).
//   A file whose name survives but whose data was never synced is empty.
// - Space: a write that grows a file needs free space (`capacityBytes`; or
//   `full`, which freezes the capacity at what the files hold when it is set:
//   space freed afterwards can be used again, nothing more); overwriting
//   bytes a file already has needs none (that is why the log preallocates).
// - Asynchronous operations take effect and settle through the injected
//   scheduler after `delayMs(op)` virtual milliseconds (slow fsyncs are a
//   long delay for 'sync'); one that would complete after a crash never
//   settles (its process is gone). Synchronous ones take effect at once.
// - Locks (the log's pid lock) are held in memory and dropped at a crash.

import assert from 'node:assert/strict';
import { posix } from 'node:path';
import type { LogFs, LogOpenFlags } from '../src/storage/log-fs.js';
import { DataDirectoryError } from '../src/storage/store.js';

/** Runs `fn` after `ms` virtual milliseconds (the simulator's clock, or a timer in tests). */
export interface SimDiskScheduler {
  after(ms: number, fn: () => void): void;
}

/** Kinds of asynchronous operation, for `delayMs` and the counters. */
export type SimDiskOp = 'open' | 'close' | 'write' | 'sync' | 'rename' | 'unlink' | 'syncDir';

/** What a crash leaves of a file's last unsynced write. */
export type TornWrite = 'lost' | 'prefix' | 'whole' | 'garbage';

export interface SimDiskOptions {
  /** The PRNG the crash draws from (uniform in [0, 1)). */
  readonly random: () => number;
  /** How asynchronous operations complete. */
  readonly scheduler: SimDiskScheduler;
  /** Virtual milliseconds an asynchronous operation takes (default 0: the next event). */
  readonly delayMs?: (op: SimDiskOp) => number;
  /** Bytes the files may hold in all (default: unbounded). */
  readonly capacityBytes?: number;
}

/** What a crash did, for traces and tests. */
export interface SimCrashReport {
  /** Files whose unsynced writes or truncations were rolled back. */
  readonly filesRolledBack: number;
  /** What was left of each torn file's last unsynced write, by path. */
  readonly torn: readonly { readonly path: string; readonly kind: TornWrite; readonly offset: number; readonly keptBytes: number }[];
  readonly nameChangesKept: number;
  readonly nameChangesLost: number;
}

/** Chances of what a crash leaves of a file's last unsynced write: nothing, a prefix, all of it; garbage otherwise. */
const TORN_LOST_CHANCE = 0.4;
const TORN_PREFIX_CHANCE = 0.3;
const TORN_WHOLE_CHANCE = 0.15;
/** A new file's buffer; buffers double as files grow. */
const FILE_BUFFER_BYTES_MIN = 4096;

/** One write or truncation since the last sync: what to put back. */
interface Undo {
  readonly offset: number;
  readonly oldBytes: Buffer;
  readonly oldLength: number;
}

class SimFile {
  data = Buffer.alloc(0);
  /** Bytes past `length` in `data` are always zero. */
  length = 0;
  undo: Undo[] = [];
  /** The last write since the last sync (a copy), which a crash may tear. */
  lastWrite: { readonly offset: number; readonly bytes: Buffer } | null = null;

  private ensureCapacity(bytes: number): void {
    if (bytes <= this.data.length) return;
    let size = Math.max(FILE_BUFFER_BYTES_MIN, this.data.length);
    while (size < bytes) size *= 2;
    const grown = Buffer.alloc(size);
    this.data.copy(grown, 0, 0, this.length);
    this.data = grown;
  }

  private setLength(length: number): void {
    if (length < this.length) this.data.fill(0, length, this.length);
    else this.ensureCapacity(length);
    this.length = length;
  }

  write(src: Uint8Array, position: number): void {
    const end = position + src.length;
    const keptEnd = Math.min(end, this.length);
    const oldBytes = keptEnd > position ? Buffer.from(this.data.subarray(position, keptEnd)) : Buffer.alloc(0);
    this.undo.push({ offset: position, oldBytes, oldLength: this.length });
    if (end > this.length) this.setLength(end);
    this.data.set(src, position);
    this.lastWrite = { offset: position, bytes: Buffer.from(src) };
  }

  truncate(length: number): void {
    const oldBytes = length < this.length ? Buffer.from(this.data.subarray(length, this.length)) : Buffer.alloc(0);
    this.undo.push({ offset: length, oldBytes, oldLength: this.length });
    this.setLength(length);
    this.lastWrite = null; // a truncation after the last write: nothing of it to tear
  }

  sync(): void {
    this.undo = [];
    this.lastWrite = null;
  }

  /** Rolls back to what was last synced; returns whether there was anything to roll back. */
  rollBack(): boolean {
    const had = this.undo.length > 0;
    for (let i = this.undo.length - 1; i >= 0; i--) {
      const u = this.undo[i] as Undo;
      this.setLength(Math.max(u.oldLength, u.offset + u.oldBytes.length));
      u.oldBytes.copy(this.data, u.offset);
      this.setLength(u.oldLength);
    }
    this.undo = [];
    return had;
  }

  /** Puts `bytes` at `offset` as durable (what a crash left behind). */
  place(bytes: Buffer, offset: number): void {
    if (offset + bytes.length > this.length) this.setLength(offset + bytes.length);
    bytes.copy(this.data, offset);
  }
}

type Entry = SimFile | 'dir';

/** A change of a directory not yet synced. */
interface NameChange {
  readonly dir: string;
  readonly apply: (names: Map<string, Entry>) => void;
}

interface OpenFile {
  readonly file: SimFile;
  readonly path: string;
  readonly writable: boolean;
}

function fsError(code: string, syscall: string, path?: string): NodeJS.ErrnoException {
  const text: Record<string, string> = {
    ENOENT: 'no such file or directory',
    EEXIST: 'file already exists',
    EBADF: 'bad file descriptor',
    ENOSPC: 'no space left on device',
    ENOTDIR: 'not a directory',
    EISDIR: 'illegal operation on a directory',
  };
  const where = path === undefined ? '' : ` '${path}'`;
  return Object.assign(new Error(`${code}: ${text[code] ?? 'error'}, ${syscall}${where}`), { code, syscall, ...(path === undefined ? {} : { path }) });
}

export class SimDisk implements LogFs {
  /** Operations done, by kind (synchronous and asynchronous alike), for tests. */
  readonly counts: Record<SimDiskOp | 'read', number> = { open: 0, close: 0, write: 0, sync: 0, rename: 0, unlink: 0, syncDir: 0, read: 0 };
  private readonly random: () => number;
  private readonly scheduler: SimDiskScheduler;
  private readonly delayMs: (op: SimDiskOp) => number;
  private readonly capacityBytes: number;
  /** The directory tree as the running process sees it. */
  private names = new Map<string, Entry>([['/', 'dir']]);
  /** The directory tree as of the last directory syncs. */
  private readonly durableNames = new Map<string, Entry>([['/', 'dir']]);
  private pendingNames: NameChange[] = [];
  private readonly fds = new Map<number, OpenFile>();
  private nextFd = 3;
  private readonly locks = new Set<string>();
  /** Bumped at each crash: asynchronous operations of an earlier process never settle. */
  private epoch = 0;
  /** While the disk is full: the bytes the files held when it filled up (the capacity meanwhile), else null. */
  private fullAtBytes: number | null = null;

  constructor(options: SimDiskOptions) {
    this.random = options.random;
    this.scheduler = options.scheduler;
    this.delayMs = options.delayMs ?? (() => 0);
    this.capacityBytes = options.capacityBytes ?? Number.POSITIVE_INFINITY;
  }

  // ------------------------------------------------------------ crash

  /**
   * The machine loses power: every file goes back to what was synced (the
   * last unsynced write of each may leave a torn piece: `torn` forces what,
   * otherwise it is drawn), directory changes not synced are lost but for a
   * drawn prefix, open files and locks are gone, and asynchronous operations
   * in flight never complete.
   */
  crash(torn?: TornWrite): SimCrashReport {
    this.epoch++;
    this.fds.clear();
    this.locks.clear();
    const kept = this.pendingNames.length === 0 ? 0 : Math.floor(this.random() * (this.pendingNames.length + 1));
    const lost = this.pendingNames.length - kept;
    for (const change of this.pendingNames.slice(0, kept)) change.apply(this.durableNames);
    this.pendingNames = [];
    const report: SimCrashReport = { filesRolledBack: 0, torn: [], nameChangesKept: kept, nameChangesLost: lost };
    const files = new Set<SimFile>();
    for (const e of this.names.values()) if (e !== 'dir') files.add(e);
    for (const e of this.durableNames.values()) if (e !== 'dir') files.add(e);
    const pathOf = new Map<SimFile, string>();
    for (const [p, e] of this.durableNames) if (e !== 'dir') pathOf.set(e, p);
    // In path order, so that the draws do not depend on the order files were made in.
    const key = (f: SimFile): string => pathOf.get(f) ?? '';
    const ordered = [...files].sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
    for (const f of ordered) {
      const last = f.lastWrite;
      if (f.rollBack()) (report as { filesRolledBack: number }).filesRolledBack++;
      f.lastWrite = null;
      const path = pathOf.get(f);
      if (last === null || path === undefined) continue;
      const kind = torn ?? this.drawTorn();
      const piece = this.tear(last.bytes, kind);
      if (piece === null) continue;
      f.place(piece, last.offset);
      f.sync();
      (report.torn as SimCrashReport['torn'][number][]).push({ path, kind, offset: last.offset, keptBytes: piece.length });
    }
    this.names = new Map(this.durableNames);
    return report;
  }

  private drawTorn(): TornWrite {
    const r = this.random();
    if (r < TORN_LOST_CHANCE) return 'lost';
    if (r < TORN_LOST_CHANCE + TORN_PREFIX_CHANCE) return 'prefix';
    if (r < TORN_LOST_CHANCE + TORN_PREFIX_CHANCE + TORN_WHOLE_CHANCE) return 'whole';
    return 'garbage';
  }

  /** What is left of a write of `bytes`: null for nothing. */
  private tear(bytes: Buffer, kind: TornWrite): Buffer | null {
    if (bytes.length === 0 || kind === 'lost') return null;
    if (kind === 'whole') return bytes;
    if (kind === 'prefix') {
      if (bytes.length === 1) return null;
      return bytes.subarray(0, 1 + Math.floor(this.random() * (bytes.length - 1)));
    }
    const n = 1 + Math.floor(this.random() * bytes.length);
    const garbage = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) garbage[i] = Math.floor(this.random() * 256);
    return garbage;
  }

  /** A full disk: no room beyond what the files hold now (ENOSPC for any write that needs more), until set false. */
  get full(): boolean {
    return this.fullAtBytes !== null;
  }

  set full(full: boolean) {
    if (full === this.full) return;
    this.fullAtBytes = full ? this.usedBytes() : null;
  }

  // ---------------------------------------------------------- helpers

  private static norm(path: string): string {
    return posix.resolve('/', path);
  }

  private static parent(path: string): string {
    return posix.dirname(path);
  }

  private changeNames(dir: string, apply: (names: Map<string, Entry>) => void): void {
    apply(this.names);
    this.pendingNames.push({ dir, apply });
  }

  private fileAt(path: string, syscall: string): SimFile {
    const e = this.names.get(path);
    if (e === undefined) throw fsError('ENOENT', syscall, path);
    if (e === 'dir') throw fsError('EISDIR', syscall, path);
    return e;
  }

  private open_(fd: number): OpenFile {
    const f = this.fds.get(fd);
    if (f === undefined) throw fsError('EBADF', 'fd');
    return f;
  }

  private usedBytes(): number {
    const files = new Set<SimFile>();
    for (const e of this.names.values()) if (e !== 'dir') files.add(e);
    for (const o of this.fds.values()) files.add(o.file);
    let bytes = 0;
    for (const f of files) bytes += f.length;
    return bytes;
  }

  /** Runs `effect` after the operation's delay, settling the promise; never settles if the disk crashed meanwhile. */
  private later<T>(op: SimDiskOp, effect: () => T): Promise<T> {
    const epoch = this.epoch;
    const ms = this.delayMs(op);
    assert.ok(ms >= 0 && Number.isFinite(ms), `delay of ${op}: ${ms} ms`);
    return new Promise<T>((resolve, reject) => {
      this.scheduler.after(ms, () => {
        if (epoch !== this.epoch) return;
        try {
          resolve(effect());
        } catch (e) {
          reject(e);
        }
      });
    });
  }

  // -------------------------------------------------- synchronous calls

  readdirSync(dir: string): string[] {
    const d = SimDisk.norm(dir);
    if (this.names.get(d) !== 'dir') throw fsError(this.names.has(d) ? 'ENOTDIR' : 'ENOENT', 'scandir', d);
    const out: string[] = [];
    for (const p of this.names.keys()) if (p !== '/' && SimDisk.parent(p) === d) out.push(posix.basename(p));
    return out.sort();
  }

  existsSync(path: string): boolean {
    return this.names.has(SimDisk.norm(path));
  }

  mkdirSync(dir: string): void {
    const d = SimDisk.norm(dir);
    const e = this.names.get(d);
    if (e === 'dir') return;
    if (e !== undefined) throw fsError('EEXIST', 'mkdir', d);
    this.mkdirSync(SimDisk.parent(d));
    this.changeNames(SimDisk.parent(d), (names) => names.set(d, 'dir'));
  }

  openSync(path: string, flags: LogOpenFlags): number {
    this.counts.open++;
    const p = SimDisk.norm(path);
    let file: SimFile;
    if (flags === 'w') {
      if (this.names.get(SimDisk.parent(p)) !== 'dir') throw fsError('ENOENT', 'open', p);
      const e = this.names.get(p);
      if (e === 'dir') throw fsError('EISDIR', 'open', p);
      if (e === undefined) {
        file = new SimFile();
        const created = file;
        this.changeNames(SimDisk.parent(p), (names) => names.set(p, created));
      } else {
        file = e;
        if (file.length > 0) file.truncate(0);
      }
    } else {
      file = this.fileAt(p, 'open');
    }
    const fd = this.nextFd++;
    this.fds.set(fd, { file, path: p, writable: flags !== 'r' });
    return fd;
  }

  closeSync(fd: number): void {
    this.counts.close++;
    this.open_(fd);
    this.fds.delete(fd);
  }

  sizeSync(fd: number): number {
    return this.open_(fd).file.length;
  }

  readSync(fd: number, buf: Buffer, offset: number, length: number, position: number): number {
    this.counts.read++;
    const { file } = this.open_(fd);
    if (position >= file.length) return 0;
    const n = Math.min(length, file.length - position);
    file.data.copy(buf, offset, position, position + n);
    return n;
  }

  readFileSync(path: string): Buffer {
    this.counts.read++;
    const file = this.fileAt(SimDisk.norm(path), 'open');
    return Buffer.from(file.data.subarray(0, file.length));
  }

  writeSync(fd: number, buf: Buffer, offset: number, length: number, position: number): number {
    this.counts.write++;
    const o = this.open_(fd);
    if (!o.writable) throw fsError('EBADF', 'write');
    const grow = position + length - o.file.length;
    let n = length;
    if (grow > 0) {
      const free = Math.min(this.capacityBytes, this.fullAtBytes ?? Number.POSITIVE_INFINITY) - this.usedBytes();
      if (free < grow) {
        // POSIX: as much as fits, then ENOSPC on the next call.
        n = Math.max(0, o.file.length + free - position);
        if (n <= 0) throw fsError('ENOSPC', 'write');
      }
    }
    o.file.write(buf.subarray(offset, offset + n), position);
    return n;
  }

  writevSync(fd: number, bufs: readonly Uint8Array[], position: number): number {
    const all = Buffer.concat(bufs);
    return this.writeSync(fd, all, 0, all.length, position);
  }

  fdatasyncSync(fd: number): void {
    this.counts.sync++;
    this.open_(fd).file.sync();
  }

  fsyncSync(fd: number): void {
    this.fdatasyncSync(fd);
  }

  renameSync(from: string, to: string): void {
    this.counts.rename++;
    const a = SimDisk.norm(from);
    const b = SimDisk.norm(to);
    const file = this.fileAt(a, 'rename');
    if (this.names.get(SimDisk.parent(b)) !== 'dir') throw fsError('ENOENT', 'rename', b);
    if (this.names.get(b) === 'dir') throw fsError('EISDIR', 'rename', b);
    assert.equal(SimDisk.parent(a), SimDisk.parent(b), 'the simulated disk renames within one directory only');
    this.changeNames(SimDisk.parent(b), (names) => {
      names.delete(a);
      names.set(b, file);
    });
  }

  unlinkSync(path: string): void {
    this.counts.unlink++;
    const p = SimDisk.norm(path);
    this.fileAt(p, 'unlink');
    this.changeNames(SimDisk.parent(p), (names) => names.delete(p));
  }

  syncDirSync(dir: string): void {
    this.counts.syncDir++;
    const d = SimDisk.norm(dir);
    if (this.names.get(d) !== 'dir') throw fsError('ENOENT', 'open', d);
    const rest: NameChange[] = [];
    for (const change of this.pendingNames) {
      if (change.dir === d) change.apply(this.durableNames);
      else rest.push(change);
    }
    this.pendingNames = rest;
  }

  lock(lockPath: string, what: string): void {
    const p = SimDisk.norm(lockPath);
    if (this.locks.has(p)) throw new DataDirectoryError(`${what} is already open in this process (${p})`);
    this.locks.add(p);
  }

  unlock(lockPath: string): void {
    this.locks.delete(SimDisk.norm(lockPath));
  }

  // ------------------------------------------------- asynchronous calls

  open(path: string, flags: LogOpenFlags): Promise<number> {
    return this.later('open', () => this.openSync(path, flags));
  }

  close(fd: number): Promise<void> {
    return this.later('close', () => this.closeSync(fd));
  }

  write(fd: number, buf: Buffer, offset: number, length: number, position: number): Promise<number> {
    return this.later('write', () => this.writeSync(fd, buf, offset, length, position));
  }

  writev(fd: number, bufs: readonly Uint8Array[], position: number): Promise<number> {
    const all = Buffer.concat(bufs); // taken at the call, as the kernel would
    return this.later('write', () => this.writeSync(fd, all, 0, all.length, position));
  }

  fdatasync(fd: number): Promise<void> {
    return this.later('sync', () => this.fdatasyncSync(fd));
  }

  fsync(fd: number): Promise<void> {
    return this.later('sync', () => this.fdatasyncSync(fd));
  }

  rename(from: string, to: string): Promise<void> {
    return this.later('rename', () => this.renameSync(from, to));
  }

  unlink(path: string): Promise<void> {
    return this.later('unlink', () => this.unlinkSync(path));
  }

  syncDir(dir: string): Promise<void> {
    return this.later('syncDir', () => this.syncDirSync(dir));
  }

  // ------------------------------------------------------- inspection

  /** The bytes of `path` as a read would see them now (tests). */
  contents(path: string): Buffer {
    const file = this.fileAt(SimDisk.norm(path), 'open');
    return Buffer.from(file.data.subarray(0, file.length));
  }

  /** Bytes every file of the running view holds. */
  bytesUsed(): number {
    return this.usedBytes();
  }
}
