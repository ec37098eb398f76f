// The single-node keyspace written by ordo before every node ran its groups
// through Raft: one environment per data directory (`ordo.mdb`), with a `meta`
// database (format marker), a `kv` database (one record per key) and a
// `tokens` database. A node that finds it imports it once into its Raft log
// (server.ts); `persist` remains so that tests can write such a directory.

import { existsSync, mkdirSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join, resolve } from 'node:path';
import { open, type Database, type RootDatabase } from 'lmdb';
import { CorruptRecordError, decodeTokens, decodeValue, encodeTokens, encodeValue } from '../sequencer/codec.js';
import type { ChangeSet, StateMachine } from '../sequencer/state-machine.js';
import { acquirePidLock, checkDataDir, LEGACY_LOCAL_FILES, releasePidLock, verifyLmdbHeader, type FsyncMode } from './files.js';
import { DataDirectoryError, PersistError, type LegacyKeyspaceStore } from './store.js';

export const DATA_FILE = LEGACY_LOCAL_FILES.dataFile;
/** Holds the pid of the process that has `ordo.mdb` open. */
export const LOCK_FILE = LEGACY_LOCAL_FILES.lockFile;
const FORMAT_KEY = 'format';
const FORMAT = { magic: 'ordo', version: 2 } as const;

/**
 * LMDB refuses empty keys and keys over 1978 bytes, and Redis allows both. So a
 * record's LMDB key is a tag byte and then the key itself (keys up to
 * KEY_INLINE_BYTES_MAX), or the key's SHA-256 with the whole key at the start
 * of the record (longer keys).
 */
export const KEY_INLINE_BYTES_MAX = 1024;
const TAG_INLINE = 0x00;
const TAG_HASHED = 0x01;

function storageKey(key: string): Buffer {
  const bytes = Buffer.from(key, 'latin1');
  if (bytes.length <= KEY_INLINE_BYTES_MAX) return Buffer.concat([Buffer.of(TAG_INLINE), bytes]);
  return Buffer.concat([Buffer.of(TAG_HASHED), createHash('sha256').update(bytes).digest()]);
}

/** The record as stored: for a hashed key, u32 key length and the key first. */
function storageRecord(key: string, record: Buffer): Buffer {
  if (key.length <= KEY_INLINE_BYTES_MAX) return record;
  const head = Buffer.allocUnsafe(4);
  head.writeUInt32BE(key.length, 0);
  return Buffer.concat([head, Buffer.from(key, 'latin1'), record]);
}

/** The key and the record of a stored entry. */
function splitStored(storedKey: Uint8Array, stored: Buffer): { key: string; record: Buffer } {
  const k = Buffer.from(storedKey.buffer, storedKey.byteOffset, storedKey.byteLength);
  if (k[0] === TAG_INLINE) return { key: k.toString('latin1', 1), record: stored };
  if (k[0] === TAG_HASHED && k.length === 33 && stored.length >= 4) {
    const length = stored.readUInt32BE(0);
    if (4 + length <= stored.length) return { key: stored.toString('latin1', 4, 4 + length), record: stored.subarray(4 + length) };
  }
  throw new CorruptRecordError(`unknown stored key layout (${k.length} bytes, tag ${String(k[0])})`);
}

export class LmdbStore implements LegacyKeyspaceStore {
  readonly description: string;
  private readonly root: RootDatabase;
  private readonly kv: Database<Buffer, Buffer>;
  private readonly tokens: Database<Buffer, Buffer>;
  private readonly lockPath: string;
  private closed = false;

  private constructor(dataDir: string, root: RootDatabase, kv: Database<Buffer, Buffer>, tokens: Database<Buffer, Buffer>, lockPath: string) {
    this.description = `lmdb:${join(dataDir, DATA_FILE)}`;
    this.root = root;
    this.kv = kv;
    this.tokens = tokens;
    this.lockPath = lockPath;
  }

  /**
   * Opens (or creates) the store in `dataDir`. Refuses, with a DataDirectoryError
   * that says why, a directory used by a live process, one holding other files
   * and no ordo data, and one whose data is not ordo's or cannot be read.
   */
  static open(dataDir: string, fsync: FsyncMode): LmdbStore {
    const dir = resolve(dataDir);
    try {
      mkdirSync(dir, { recursive: true });
    } catch (e) {
      throw new DataDirectoryError(`cannot create data directory ${dir}: ${(e as Error).message}`);
    }
    const lockPath = join(dir, LOCK_FILE);
    acquirePidLock(lockPath, 'data directory');
    try {
      const dataPath = join(dir, DATA_FILE);
      const fresh = !existsSync(dataPath);
      checkDataDir(dir);
      if (!fresh) verifyLmdbHeader(dataPath);
      let root: RootDatabase;
      try {
        root = open({ path: dataPath, overlappingSync: false, noSync: fsync === 'never', maxDbs: 4 });
      } catch (e) {
        throw new DataDirectoryError(`cannot open ${dataPath}: ${(e as Error).message}; the file may be corrupt`);
      }
      let meta: Database<unknown, string>;
      let kv: Database<Buffer, Buffer>;
      let tokens: Database<Buffer, Buffer>;
      let format: unknown;
      try {
        meta = root.openDB<unknown, string>({ name: 'meta' });
        kv = root.openDB<Buffer, Buffer>({ name: 'kv', keyEncoding: 'binary', encoding: 'binary' });
        tokens = root.openDB<Buffer, Buffer>({ name: 'tokens', keyEncoding: 'binary', encoding: 'binary' });
        format = meta.get(FORMAT_KEY);
      } catch (e) {
        // LMDB has no checksums: a damaged page shows up as an error reading it (MDB_PAGE_NOTFOUND, MDB_CORRUPTED).
        void root.close();
        throw new DataDirectoryError(`cannot read ${dataPath}: ${(e as Error).message}; the file may be corrupt; refusing to start`);
      }
      if (fresh) {
        meta.putSync(FORMAT_KEY, FORMAT);
      } else if (!isFormat(format)) {
        void root.close();
        throw new DataDirectoryError(`${dataPath} is not an ordo data file (no ordo format record); refusing to use it`);
      } else if (format.version !== FORMAT.version) {
        void root.close();
        throw new DataDirectoryError(`${dataPath} has data format ${format.version}, this ordo reads format ${FORMAT.version}; refusing to start`);
      }
      return new LmdbStore(dir, root, kv, tokens, lockPath);
    } catch (e) {
      releasePidLock(lockPath);
      throw e;
    }
  }

  recover(sm: StateMachine): void {
    const load = (db: Database<Buffer, Buffer>, into: (key: string, record: Buffer) => void): void => {
      try {
        for (const { key, value } of db.getRange()) {
          try {
            const entry = splitStored(key, value);
            into(entry.key, entry.record);
          } catch (e) {
            if (e instanceof CorruptRecordError) {
              throw new DataDirectoryError(`corrupt record for key ${JSON.stringify(Buffer.from(key).toString('latin1'))}: ${e.message}`);
            }
            throw e;
          }
        }
      } catch (e) {
        if (e instanceof DataDirectoryError) throw e;
        // A damaged page shows up as an LMDB error while reading (MDB_PAGE_NOTFOUND, MDB_CORRUPTED).
        throw new DataDirectoryError(
          `cannot read ${this.description.replace(/^lmdb:/, '')}: ${(e as Error).message}; the file may be corrupt; refusing to start`,
        );
      }
    };
    load(this.kv, (key, record) => sm.load(key, decodeValue(record)));
    load(this.tokens, (key, record) => sm.loadTokens(key, decodeTokens(record)));
  }

  /**
   * One synchronous LMDB transaction on the event loop's thread, committed
   * with its fsync (overlappingSync off), as Redis fsyncs its AOF in its main
   * thread: measured here, this beats lmdb-js's asynchronous write path,
   * whose hand-offs to and from its worker thread cost more than the fsync.
   */
  persist(changes: ChangeSet): Promise<void> {
    let writing = true;
    try {
      this.root.transactionSync(() => {
        if (changes.cleared) {
          this.kv.clearSync();
          this.tokens.clearSync();
        }
        for (const [key, value] of changes.values) {
          const k = storageKey(key);
          if (value === null) this.kv.removeSync(k);
          else this.kv.putSync(k, storageRecord(key, encodeValue(value)));
        }
        for (const [key, table] of changes.tokens) {
          const k = storageKey(key);
          if (table === null) this.tokens.removeSync(k);
          else this.tokens.putSync(k, storageRecord(key, encodeTokens(table)));
        }
        writing = false;
      });
    } catch (e) {
      // A write refused inside the transaction aborts it: nothing applied. A failed
      // commit may have written pages before its sync failed: outcome unknown.
      return Promise.reject(
        writing ? new PersistError(`write failed: ${(e as Error).message}`, 'no') : new PersistError(`commit failed: ${(e as Error).message}`, 'unknown'),
      );
    }
    return Promise.resolve();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.root.flushed;
    await this.root.close();
    releasePidLock(this.lockPath);
  }
}

function isFormat(value: unknown): value is { magic: string; version: number } {
  return (
    typeof value === 'object' &&
    value !== null &&
    (value as { magic?: unknown }).magic === FORMAT.magic &&
    typeof (value as { version?: unknown }).version === 'number'
  );
}
