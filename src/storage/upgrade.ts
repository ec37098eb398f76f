// Data directories written by earlier versions, brought into the node's log
// once, at start (docs/storage.md, "Upgrading a data directory"):
// - `raft.mdb` (every group's Raft log in LMDB, a cluster member's or a node
//   alone's): every group's snapshot, entries and hard state, and the node
//   metadata, are copied into the node's log in one turn;
// - `ordo.mdb` (the single-node keyspace store): its whole keyspace becomes
//   the data group's first snapshot.
// Each import commits a metadata mark with its data, then renames the old
// file to `*.imported` (kept for the operator to delete). A crash between the
// commit and the rename finds the mark on the next start and only renames.

import { existsSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { snapshotState } from '../sequencer/codec.js';
import { StateMachine } from '../sequencer/state-machine.js';
import { LEGACY_IMPORTED_FILE, LEGACY_LOCAL_FILES, RAFT_FILES, RAFT_IMPORTED_FILE } from './files.js';
import { LmdbStore } from './lmdb.js';
import { RaftLogStore } from './raft-lmdb.js';
import { DataDirectoryError, type NodeLogStore } from './store.js';

/** Metadata key set in the turn that imported raft.mdb (its value: the number of groups). */
export const META_RAFT_LMDB_IMPORTED = 'raft-lmdb-imported';
/** Metadata key set in the turn that imported a legacy ordo.mdb (its value: the number of keys). */
export const META_LEGACY_IMPORTED = 'legacy-keyspace-imported';

/** Renames `from` to `to` and drops LMDB's lock file beside it. */
function retire(from: string, to: string): void {
  renameSync(from, to);
  rmSync(`${from}-lock`, { force: true });
}

/** Commits the import turn; a failure leaves the old file in place and refuses to start. */
async function commitImport(store: NodeLogStore, what: string): Promise<void> {
  try {
    await store.commitTurn();
  } catch (e) {
    throw new DataDirectoryError(`importing ${what}: ${(e as Error).message}`);
  }
}

/**
 * Copies DIR/raft.mdb (the Raft log of earlier versions) into `store`, once.
 * Returns the number of groups imported (0: nothing to import). The target
 * must hold no group yet.
 */
export async function importRaftLmdb(dataDir: string, store: NodeLogStore, fsync: 'always' | 'never'): Promise<number> {
  const oldPath = join(dataDir, RAFT_FILES.dataFile);
  if (!existsSync(oldPath)) return 0;
  const importedPath = join(dataDir, RAFT_IMPORTED_FILE);
  if (store.getMeta(META_RAFT_LMDB_IMPORTED) !== undefined) {
    retire(oldPath, importedPath);
    return 0;
  }
  if (store.groups().length > 0) {
    throw new DataDirectoryError(`${oldPath} was not imported, but ${store.description} already holds groups; refusing to start (move one of them away)`);
  }
  const old = RaftLogStore.open(dataDir, { fsync });
  let groups: number[];
  try {
    groups = old.groups();
    for (const id of groups) {
      const from = old.group(id, { voters: [], learners: [] });
      const snap = from.snapshot();
      const to = store.group(id, snap.meta.conf);
      if (snap.meta.index > 0) to.applySnapshot(snap);
      const first = from.firstIndex();
      const last = from.lastIndex();
      if (last >= first) to.append(from.entries(first, last + 1, Number.MAX_SAFE_INTEGER));
      to.setHardState(from.initialState().hardState);
    }
    for (const key of old.metaKeys()) {
      const value = old.getMeta(key);
      if (value !== undefined) store.putMeta(key, Uint8Array.from(value));
    }
  } finally {
    await old.close();
  }
  store.putMeta(META_RAFT_LMDB_IMPORTED, Buffer.from(String(groups.length), 'utf8'));
  await commitImport(store, oldPath);
  retire(oldPath, importedPath);
  process.stdout.write(`ordo: imported ${groups.length} Raft groups from ${oldPath} (earlier versions' log); it is kept as ${importedPath}\n`);
  return groups.length;
}

/**
 * Imports DIR/ordo.mdb (the single-node keyspace store of earlier versions)
 * into group `groupId` of `store`, once: its whole state becomes the group's
 * first snapshot (index 1, term 1, `nodeId` its only voter). The group must
 * be new: a log of its own and an unimported ordo.mdb side by side are refused.
 */
export async function importLegacyKeyspace(dataDir: string, store: NodeLogStore, nodeId: string, groupId: number): Promise<void> {
  const legacyPath = join(dataDir, LEGACY_LOCAL_FILES.dataFile);
  if (!existsSync(legacyPath)) return;
  const importedPath = join(dataDir, LEGACY_IMPORTED_FILE);
  if (store.getMeta(META_LEGACY_IMPORTED) !== undefined) {
    retire(legacyPath, importedPath);
    return;
  }
  const conf = { voters: [nodeId], learners: [] };
  if (store.hasGroup(groupId) && store.group(groupId, conf).lastIndex() > 0) {
    throw new DataDirectoryError(`${legacyPath} was not imported, but ${store.description} already holds a log; refusing to start (move one of them away)`);
  }
  const legacy = LmdbStore.open(dataDir, 'always');
  const sm = new StateMachine();
  try {
    legacy.recover(sm);
  } finally {
    await legacy.close();
  }
  const storage = store.group(groupId, conf);
  storage.applySnapshot({ meta: { index: 1, term: 1, conf }, data: snapshotState(sm) });
  storage.setHardState({ term: 1, vote: nodeId, commit: 1 });
  store.putMeta(META_LEGACY_IMPORTED, Buffer.from(String(sm.size), 'utf8'));
  await commitImport(store, legacyPath);
  retire(legacyPath, importedPath);
  process.stdout.write(`ordo: imported ${sm.size} keys from ${legacyPath} (the single-node store of earlier versions); it is kept as ${importedPath}\n`);
}
