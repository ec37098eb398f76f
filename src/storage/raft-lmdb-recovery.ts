// Reading `raft.mdb` back when RaftLogStore opens it (raft-lmdb.ts): every
// record decoded (raft-lmdb-format.ts) and checked against the others, so a
// damaged or misplaced record refuses the file instead of being read back as
// valid state; a new environment gets its format marker.

import type { RootDatabase } from 'lmdb';
import { EntryType, type Entry, type Snapshot } from '../raft/types.js';
import {
  RAFT_FORMAT_VERSION,
  META_KEY_BYTES_MAX,
  KIND_FORMAT,
  KIND_META,
  KIND_GROUP,
  KIND_SNAPSHOT,
  KIND_CHUNK,
  KIND_ENTRY,
  FORMAT_MAGIC,
  FORMAT_KEY,
  GROUP_COUNT_KEY,
  GROUP_KEY_BYTES,
  CHUNK_KEY_BYTES,
  ENTRY_KEY_BYTES,
  ENTRY_HEADER_BYTES,
  CRC_BYTES,
  EMPTY,
  readU64,
  unseal,
  CorruptError,
  corruptIf,
  encodeFormat,
  type GroupStateRecord,
  decodeGroupState,
  decodeUtf8,
  type SnapshotMetaRecord,
  decodeSnapshotMeta,
} from './raft-lmdb-format.js';
import { DataDirectoryError } from './store.js';

/** Where readRaftData puts what it read. */
export interface RaftDataSink {
  /** One node metadata value. */
  meta(name: string, value: Uint8Array): void;
  /** One group, checked: its state record, its snapshot (`chunks` chunks on disk) and its log from the log start. */
  group(group: number, state: GroupStateRecord, snap: Snapshot, chunks: number, log: Entry[]): void;
}

/**
 * Reads a whole environment back, checking every record against the others,
 * and hands `into` the node metadata and, group by group, what it restores;
 * writes the format marker into a new environment. Throws a
 * DataDirectoryError naming the first record that is damaged or does not fit.
 */
export function readRaftData(root: RootDatabase<Buffer, Buffer>, dataPath: string, into: RaftDataSink): void {
  const refuse = (where: string, why: string): DataDirectoryError =>
    new DataDirectoryError(`${dataPath}: ${where}: ${why}; refusing to start on corrupt or foreign Raft data`);
  let sawFormat = false;
  let keys = 0;
  let groupCount: number | null = null;
  const states = new Map<number, GroupStateRecord>();
  const snaps = new Map<number, SnapshotMetaRecord>();
  const chunkLists = new Map<number, Uint8Array[]>();
  const logs = new Map<number, Entry[]>();
  // Keys come in byte order: the marker, the group count, metadata, then
  // each kind of group record, every group's records of one kind in a row.
  for (const { key: k, value } of root.getRange({})) {
    keys++;
    const kind = k[0];
    if (!sawFormat) {
      if (!k.equals(FORMAT_KEY)) {
        throw new DataDirectoryError(`${dataPath} is not an ordo Raft data file (no format marker); refusing to use it`);
      }
      if (value.length !== FORMAT_MAGIC.length + 4 || !value.subarray(0, FORMAT_MAGIC.length).equals(FORMAT_MAGIC)) {
        throw new DataDirectoryError(`${dataPath} is not an ordo Raft data file (foreign format marker); refusing to use it`);
      }
      const version = value.readUInt32BE(FORMAT_MAGIC.length);
      if (version !== RAFT_FORMAT_VERSION) {
        throw new DataDirectoryError(`${dataPath} has Raft data format ${version}, this ordo reads format ${RAFT_FORMAT_VERSION}; refusing to start`);
      }
      sawFormat = true;
      continue;
    }
    const group = k.length >= GROUP_KEY_BYTES ? k.readUInt32BE(1) : -1;
    let label = `record with key ${k.toString('hex').slice(0, 40)}`;
    try {
      switch (kind) {
        case KIND_FORMAT: {
          corruptIf(!k.equals(GROUP_COUNT_KEY), 'unknown node record');
          label = 'group count';
          const body = unseal(k, value);
          corruptIf(body.length !== 4, `group count of ${body.length} bytes`);
          groupCount = body.readUInt32BE(0);
          break;
        }
        case KIND_META: {
          label = 'metadata record';
          corruptIf(k.length < 2 || k.length > 1 + META_KEY_BYTES_MAX, `key of ${k.length} bytes`);
          const name = decodeUtf8(k.subarray(1));
          label = `metadata ${JSON.stringify(name)}`;
          into.meta(name, new Uint8Array(unseal(k, value)));
          break;
        }
        case KIND_GROUP:
          corruptIf(k.length !== GROUP_KEY_BYTES, `group key of ${k.length} bytes`);
          label = `state of group ${group}`;
          states.set(group, decodeGroupState(unseal(k, value)));
          break;
        case KIND_SNAPSHOT:
          corruptIf(k.length !== GROUP_KEY_BYTES, `snapshot key of ${k.length} bytes`);
          label = `snapshot of group ${group}`;
          corruptIf(!states.has(group), 'no state record for this group');
          snaps.set(group, decodeSnapshotMeta(unseal(k, value)));
          break;
        case KIND_CHUNK: {
          corruptIf(k.length !== CHUNK_KEY_BYTES, `chunk key of ${k.length} bytes`);
          const n = k.readUInt32BE(5);
          label = `snapshot chunk ${n} of group ${group}`;
          const meta = snaps.get(group);
          if (meta === undefined) throw new CorruptError('no snapshot record for this group');
          let list = chunkLists.get(group);
          if (list === undefined) chunkLists.set(group, (list = []));
          corruptIf(n !== list.length, `chunk ${list.length} was expected`);
          corruptIf(n >= meta.chunks, `the snapshot has ${meta.chunks} chunks`);
          list.push(new Uint8Array(unseal(k, value)));
          break;
        }
        case KIND_ENTRY: {
          corruptIf(k.length !== ENTRY_KEY_BYTES, `entry key of ${k.length} bytes`);
          const index = readU64(k, 5);
          label = `entry ${String(index)} of group ${group}`;
          const state = states.get(group);
          if (state === undefined) throw new CorruptError('no state record for this group');
          let log = logs.get(group);
          if (log === undefined) {
            log = [{ term: state.logStartTerm, index: state.logStart, type: EntryType.Normal, data: EMPTY }];
            logs.set(group, log);
          }
          const prev = log[log.length - 1] as Entry;
          corruptIf(index !== prev.index + 1, `entry ${prev.index + 1} was expected`);
          corruptIf(value.length < ENTRY_HEADER_BYTES + CRC_BYTES, `${value.length} bytes`);
          const body = unseal(k, value);
          const type = body[0];
          corruptIf(type !== EntryType.Normal && type !== EntryType.ConfChange, `unknown entry type ${String(type)}`);
          const term = readU64(body, 1);
          if (term === undefined || term < prev.term) throw new CorruptError(`term below the preceding term ${prev.term}`);
          log.push({ term, index: index as number, type: type as EntryType, data: new Uint8Array(body.subarray(ENTRY_HEADER_BYTES)) });
          break;
        }
        default:
          throw new CorruptError(`unknown record kind ${String(kind)}`);
      }
    } catch (e) {
      if (e instanceof CorruptError) throw refuse(label, e.message);
      throw e;
    }
  }
  if (keys === 0) {
    // A new environment (or one created by a process that died before writing anything).
    root.putSync(FORMAT_KEY, encodeFormat());
    return;
  }
  if ((groupCount ?? 0) !== states.size) {
    throw refuse('groups', `${states.size} groups found, ${groupCount ?? 0} recorded`);
  }
  for (const [group, state] of states) {
    const where = `group ${group}`;
    const meta = snaps.get(group);
    if (meta === undefined) throw refuse(where, 'no snapshot record');
    const chunks = chunkLists.get(group) ?? [];
    if (chunks.length !== meta.chunks) throw refuse(where, `snapshot has ${chunks.length} of ${meta.chunks} chunks`);
    let total = 0;
    for (const c of chunks) total += c.length;
    if (total !== meta.dataBytes) throw refuse(where, `snapshot has ${total} of ${meta.dataBytes} bytes`);
    let data: Uint8Array = EMPTY;
    if (chunks.length === 1) data = chunks[0] as Uint8Array;
    else if (chunks.length > 1) {
      data = new Uint8Array(total);
      let at = 0;
      for (const c of chunks) {
        data.set(c, at);
        at += c.length;
      }
    }
    if (meta.index < state.logStart) throw refuse(where, `snapshot at ${meta.index} below log start ${state.logStart}`);
    const log = logs.get(group) ?? [{ term: state.logStartTerm, index: state.logStart, type: EntryType.Normal, data: EMPTY }];
    const last = (log[log.length - 1] as Entry).index;
    if (last !== state.lastIndex) throw refuse(where, `log ends at ${last}, its last index is ${state.lastIndex}`);
    into.group(group, state, { meta: { index: meta.index, term: meta.term, conf: meta.conf }, data }, meta.chunks, log);
  }
}
