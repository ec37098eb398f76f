// What both LMDB stores need from the file system before they open LMDB: a
// check that a data file really is LMDB (the native addon can crash the
// process on a foreign or damaged file), and a pid lock so that one process at
// a time uses a data directory (LMDB itself would let several share it).

import { closeSync, existsSync, fstatSync, openSync, readdirSync, readFileSync, readSync, unlinkSync, writeSync } from 'node:fs';
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { open, type RootDatabase } from 'lmdb';
import { DataDirectoryError } from './store.js';

/** LMDB's magic number, in each of the two meta pages at the start of the file. */
const LMDB_META_MAGIC = 0xbeefc0de;
/** The page flag marking a meta page. */
const LMDB_META_PAGE_FLAG = 0x08;
/** Offsets within a meta page. */
const LMDB_PAGE_FLAGS_AT = 0x12;
const LMDB_MAGIC_AT = 0x18;
const LMDB_PAGE_SIZE_AT = 0x30;

/**
 * Refuses, with a DataDirectoryError, a file whose two meta pages are not
 * LMDB's. An empty file is left to LMDB, which initialises it.
 */
export function verifyLmdbHeader(dataPath: string): void {
  const refuse = (why: string): DataDirectoryError =>
    new DataDirectoryError(`${dataPath} is not a valid LMDB file (${why}); it is corrupt or foreign; refusing to start`);
  let fd: number;
  try {
    fd = openSync(dataPath, 'r');
  } catch (e) {
    throw new DataDirectoryError(`cannot read ${dataPath}: ${(e as Error).message}`);
  }
  try {
    const size = fstatSync(fd).size;
    if (size === 0) return;
    const page = Buffer.alloc(LMDB_PAGE_SIZE_AT + 4);
    const metaPageAt = (position: number): boolean =>
      readSync(fd, page, 0, page.length, position) === page.length &&
      (page.readUInt16LE(LMDB_PAGE_FLAGS_AT) & LMDB_META_PAGE_FLAG) !== 0 &&
      page.readUInt32LE(LMDB_MAGIC_AT) === LMDB_META_MAGIC;
    if (!metaPageAt(0)) throw refuse('first meta page damaged');
    const pageSize = page.readUInt32LE(LMDB_PAGE_SIZE_AT);
    if (pageSize < 512 || pageSize > 65536 || (pageSize & (pageSize - 1)) !== 0) throw refuse(`bad page size ${pageSize}`);
    if (size < 2 * pageSize || !metaPageAt(pageSize)) throw refuse('second meta page damaged');
  } finally {
    closeSync(fd);
  }
}

/** Lock files this process holds, to tell "open twice here" from a stale lock of an earlier process with our pid. */
const heldLocks = new Set<string>();

/**
 * Takes `lockPath` for this process, or refuses when a live process holds it
 * (this one included). `what` names the data in messages. A lock left by a
 * process that is gone (kill -9, power loss, a container restarted with the
 * same pid) is taken over.
 */
export function acquirePidLock(lockPath: string, what: string): void {
  if (heldLocks.has(lockPath)) throw new DataDirectoryError(`${what} is already open in this process (${lockPath})`);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(lockPath, 'wx');
      try {
        writeSync(fd, `${process.pid}\n`);
      } finally {
        closeSync(fd);
      }
      heldLocks.add(lockPath);
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new DataDirectoryError(`cannot create ${lockPath}: ${(e as Error).message}`);
      }
    }
    let holder = Number.NaN;
    try {
      holder = Number.parseInt(readFileSync(lockPath, 'utf8').trim(), 10);
    } catch {
      // removed meanwhile: try again
    }
    if (Number.isSafeInteger(holder) && holder > 0 && holder !== process.pid && isRunning(holder)) {
      throw new DataDirectoryError(`${what} is in use by process ${holder} (${lockPath})`);
    }
    try {
      unlinkSync(lockPath); // left by a process that is gone
    } catch {
      // someone else removed it
    }
  }
  throw new DataDirectoryError(`cannot take ${lockPath}`);
}

export function releasePidLock(lockPath: string): void {
  heldLocks.delete(lockPath);
  try {
    unlinkSync(lockPath);
  } catch {
    // already gone
  }
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
  // A process killed a moment ago stays a zombie until its parent reaps it.
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.charAt(stat.lastIndexOf(')') + 2);
    return state !== 'Z' && state !== 'X';
  } catch {
    return true;
  }
}

export type FsyncMode = 'always' | 'never';

/** The files of one LMDB store in a data directory. */
export interface StoreFiles {
  readonly dataFile: string;
  readonly lockFile: string;
}

/** The folder of the node's log (wal-store.ts): every group's Raft log, hard state and snapshots, and the node metadata. */
export const NODE_LOG_DIR = 'wal';

/** The node's keyspace (keyspace.ts): every group's applied state, checkpointed off the reply path. */
export const KEYSPACE_FILES: StoreFiles = { dataFile: 'keyspace.mdb', lockFile: 'keyspace.pid' };

/**
 * Every group's Raft log in LMDB (raft-lmdb.ts), as earlier versions kept it.
 * Imported once into the node's log at start (upgrade.ts), then renamed to
 * RAFT_IMPORTED_FILE.
 */
export const RAFT_FILES: StoreFiles = { dataFile: 'raft.mdb', lockFile: 'raft.pid' };
/** What RAFT_FILES.dataFile is renamed to once imported. */
export const RAFT_IMPORTED_FILE = 'raft.mdb.imported';

/**
 * The keyspace of a single node written by ordo before every node ran its
 * groups through Raft (lmdb.ts). Read once, at start, and imported into the
 * node's log (upgrade.ts); then renamed to LEGACY_IMPORTED_FILE.
 */
export const LEGACY_LOCAL_FILES: StoreFiles = { dataFile: 'ordo.mdb', lockFile: 'ordo.pid' };
/** What LEGACY_LOCAL_FILES.dataFile is renamed to once imported. */
export const LEGACY_IMPORTED_FILE = 'ordo.mdb.imported';

/** Entries of a data directory that mark it as ordo's. */
const ORDO_DATA_ENTRIES: readonly string[] = [
  NODE_LOG_DIR,
  KEYSPACE_FILES.dataFile,
  RAFT_FILES.dataFile,
  RAFT_IMPORTED_FILE,
  LEGACY_LOCAL_FILES.dataFile,
  LEGACY_IMPORTED_FILE,
];

/**
 * Refuses, with a DataDirectoryError, a directory that holds other files and
 * no ordo data (a wrong --data). An empty or missing directory passes.
 */
export function checkDataDir(dir: string): void {
  if (!existsSync(dir)) return;
  let files: string[];
  try {
    files = readdirSync(dir);
  } catch (e) {
    throw new DataDirectoryError(`cannot read data directory ${dir}: ${(e as Error).message}`);
  }
  if (files.length === 0 || files.some((f) => ORDO_DATA_ENTRIES.includes(f))) return;
  const lockFiles = [KEYSPACE_FILES.lockFile, RAFT_FILES.lockFile, LEGACY_LOCAL_FILES.lockFile];
  const others = files.filter((f) => !lockFiles.includes(f));
  if (others.length > 0) {
    throw new DataDirectoryError(`data directory ${dir} holds other files (${others.slice(0, 3).join(', ')}) and no ordo data; refusing to use it`);
  }
}

/**
 * Opens the LMDB store `files` of `dataDir` for this process alone: creates
 * the directory, takes the pid lock (`what` names the data in messages),
 * checks that an existing file is LMDB before the native library reads it,
 * opens it with binary keys and values (overlappingSync off, so a commit
 * includes its fsync unless `fsync` is 'never'), and hands it to `make`,
 * which reads it back. An error reading it that is not a DataDirectoryError
 * is reported as a file that may be corrupt (LMDB keeps no checksums: a
 * damaged page shows up as an error reading it). On any failure the file is
 * closed and the lock released.
 */
export function openLmdbStore<T>(
  dataDir: string,
  files: StoreFiles,
  what: string,
  fsync: FsyncMode,
  make: (root: RootDatabase<Buffer, Buffer>, dataPath: string, lockPath: string) => T,
): T {
  const dir = resolve(dataDir);
  try {
    mkdirSync(dir, { recursive: true });
  } catch (e) {
    throw new DataDirectoryError(`cannot create data directory ${dir}: ${(e as Error).message}`);
  }
  const dataPath = join(dir, files.dataFile);
  const lockPath = join(dir, files.lockFile);
  acquirePidLock(lockPath, what);
  const opened: { root: RootDatabase<Buffer, Buffer> | null } = { root: null };
  try {
    if (existsSync(dataPath)) verifyLmdbHeader(dataPath);
    let root: RootDatabase<Buffer, Buffer>;
    try {
      root = open<Buffer, Buffer>({ path: dataPath, overlappingSync: false, noSync: fsync === 'never', keyEncoding: 'binary', encoding: 'binary' });
    } catch (e) {
      throw new DataDirectoryError(`cannot open ${dataPath}: ${(e as Error).message}; the file may be corrupt`);
    }
    opened.root = root;
    try {
      return make(root, dataPath, lockPath);
    } catch (e) {
      if (e instanceof DataDirectoryError) throw e;
      throw new DataDirectoryError(`cannot read ${dataPath}: ${(e as Error).message}; the file may be corrupt; refusing to start`);
    }
  } catch (e) {
    if (opened.root !== null) void opened.root.close();
    releasePidLock(lockPath);
    throw e;
  }
}
