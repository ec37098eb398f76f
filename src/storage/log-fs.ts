// The file operations the node's log (segments.ts, wal-store.ts,
// wal-records.ts) makes, behind one small interface, so that the same log code
// runs on the real file system (`realLogFs`, a thin pass-through to node:fs)
// and on the simulator's disk (sim/disk.ts: virtual time, lost unsynced
// writes, torn tails). Nothing here adds work on the real path: every method
// is one node:fs call, and the commit path stays one pwrite and one fdatasync.

import {
  close,
  closeSync,
  existsSync,
  fdatasync,
  fdatasyncSync,
  fstatSync,
  fsync,
  fsyncSync,
  mkdirSync,
  open,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  rename,
  renameSync,
  unlink,
  unlinkSync,
  write,
  writeSync,
  writev,
  writevSync,
} from 'node:fs';
import { acquirePidLock, releasePidLock } from './files.js';

/** The writes and fdatasyncs of the commit path; tests replace them on a SegmentLog to inject failures. */
export interface SegmentIo {
  writeSync(fd: number, buf: Buffer, offset: number, length: number, position: number): number;
  fdatasyncSync(fd: number): void;
  write(fd: number, buf: Buffer, offset: number, length: number, position: number): Promise<number>;
  fdatasync(fd: number): Promise<void>;
}

/** 'r': read only; 'r+': read and write an existing file; 'w': create or truncate, then write. */
export type LogOpenFlags = 'r' | 'r+' | 'w';

/**
 * Everything the node's log does to the file system. Errors are thrown (or
 * rejected) as node:fs does: Errors with an errno `code` (ENOENT, ENOSPC, ...).
 */
export interface LogFs extends SegmentIo {
  readdirSync(dir: string): string[];
  existsSync(path: string): boolean;
  /** Creates `dir` and any missing parent. */
  mkdirSync(dir: string): void;
  openSync(path: string, flags: LogOpenFlags): number;
  closeSync(fd: number): void;
  /** The file's size in bytes (fstat). */
  sizeSync(fd: number): number;
  readSync(fd: number, buf: Buffer, offset: number, length: number, position: number): number;
  readFileSync(path: string): Buffer;
  writevSync(fd: number, bufs: readonly Uint8Array[], position: number): number;
  /** fsync: the file's data and metadata. */
  fsyncSync(fd: number): void;
  renameSync(from: string, to: string): void;
  unlinkSync(path: string): void;
  /** fsyncs a directory, so that files created, renamed or removed in it stay so. */
  syncDirSync(dir: string): void;
  open(path: string, flags: LogOpenFlags): Promise<number>;
  close(fd: number): Promise<void>;
  writev(fd: number, bufs: readonly Uint8Array[], position: number): Promise<number>;
  fsync(fd: number): Promise<void>;
  rename(from: string, to: string): Promise<void>;
  unlink(path: string): Promise<void>;
  syncDir(dir: string): Promise<void>;
  /** Takes `lockPath` for this process, or throws a DataDirectoryError naming `what` (files.ts, acquirePidLock). */
  lock(lockPath: string, what: string): void;
  unlock(lockPath: string): void;
}

function settle<T>(resolve: (v: T) => void, reject: (e: unknown) => void): (e: NodeJS.ErrnoException | null, v: T) => void {
  return (e, v) => (e === null ? resolve(v) : reject(e));
}

function syncDirReal(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** node:fs, unchanged. */
export const realLogFs: LogFs = {
  writeSync: (fd, buf, offset, length, position) => writeSync(fd, buf, offset, length, position),
  fdatasyncSync: (fd) => fdatasyncSync(fd),
  write: (fd, buf, offset, length, position) =>
    new Promise((resolve, reject) => write(fd, buf, offset, length, position, (e, n) => (e === null ? resolve(n) : reject(e)))),
  fdatasync: (fd) => new Promise((resolve, reject) => fdatasync(fd, (e) => (e === null ? resolve() : reject(e)))),
  readdirSync: (dir) => readdirSync(dir),
  existsSync: (path) => existsSync(path),
  mkdirSync: (dir) => {
    mkdirSync(dir, { recursive: true });
  },
  openSync: (path, flags) => openSync(path, flags),
  closeSync: (fd) => closeSync(fd),
  sizeSync: (fd) => fstatSync(fd).size,
  readSync: (fd, buf, offset, length, position) => readSync(fd, buf, offset, length, position),
  readFileSync: (path) => readFileSync(path),
  writevSync: (fd, bufs, position) => writevSync(fd, bufs, position),
  fsyncSync: (fd) => fsyncSync(fd),
  renameSync: (from, to) => renameSync(from, to),
  unlinkSync: (path) => unlinkSync(path),
  syncDirSync: syncDirReal,
  open: (path, flags) => new Promise((resolve, reject) => open(path, flags, settle(resolve, reject))),
  close: (fd) => new Promise((resolve, reject) => close(fd, (e) => (e === null ? resolve() : reject(e)))),
  writev: (fd, bufs, position) => new Promise((resolve, reject) => writev(fd, bufs, position, (e, n) => (e === null ? resolve(n) : reject(e)))),
  fsync: (fd) => new Promise((resolve, reject) => fsync(fd, (e) => (e === null ? resolve() : reject(e)))),
  rename: (from, to) => new Promise((resolve, reject) => rename(from, to, (e) => (e === null ? resolve() : reject(e)))),
  unlink: (path) => new Promise((resolve, reject) => unlink(path, (e) => (e === null ? resolve() : reject(e)))),
  syncDir: async (dir) => {
    const fd = await realLogFs.open(dir, 'r');
    try {
      await realLogFs.fsync(fd);
    } finally {
      await realLogFs.close(fd);
    }
  },
  lock: (lockPath, what) => acquirePidLock(lockPath, what),
  unlock: (lockPath) => releasePidLock(lockPath),
};

/** Removes `path`; a file already gone is not an error. */
export function unlinkIfPresentSync(fs: LogFs, path: string): void {
  try {
    fs.unlinkSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
}
