// CLUSTER SLOTS / SHARDS / NODES / INFO / MYID / KEYSLOT / COUNTKEYSINSLOT
// replies built from a Topology and who leads each group right now. Reply
// types, field names and field order are Redis 7.0's. Pure code: the caller
// supplies everything that changes (leaders, failed nodes, offsets).
//
// How ordo's groups look to a Redis Cluster client:
// - Each data group is one Redis "shard": its slot range, its leader as the
//   master, its other replicas as replicas.
// - A group whose leader is unknown (election under way) is still listed, with
//   its preferred leader as the master, so SLOTS always covers 0..16383.
// - CLUSTER NODES lists every member once, always with the `master` flag (a
//   member can lead some groups and follow others, which Redis's one-role-per-
//   node format cannot say). Its slot ranges are those of the groups it leads;
//   a member leading nothing is a master without slots. Replicas show only in
//   SLOTS and SHARDS.

import { R, type Reply } from '../resp/encoder.js';
import { SLOT_COUNT, SLOT_MAX, keySlot } from './slots.js';
import type { Group, Member, Topology } from './topology.js';

/** What a node knows right now, from which every CLUSTER reply is built. */
export interface ClusterView {
  readonly topology: Topology;
  /** The id of the node answering. */
  readonly myId: string;
  /** The current leader of a group, or null when this node does not know one. */
  readonly leaderOf: (groupId: number) => string | null;
  /** Members this node considers down (shown as `fail`); default none. */
  readonly failedNodes?: ReadonlySet<string>;
  /** A replica's replication offset for SHARDS (its applied index, say); default 0. */
  readonly replicationOffset?: (groupId: number, nodeId: string) => number;
}

/** The group's known leader when it is one of the group's replicas, else null. */
export function knownLeader(view: ClusterView, group: Group): string | null {
  const leader = view.leaderOf(group.id);
  return leader !== null && group.replicas.includes(leader) ? leader : null;
}

/** The member shown as the group's master: its known leader, else its preferred leader. */
export function shownLeader(view: ClusterView, group: Group): string {
  return knownLeader(view, group) ?? group.preferredLeader;
}

function memberOf(view: ClusterView, id: string): Member {
  const member = view.topology.member(id);
  if (member === undefined) throw new Error(`node ${id} is not a member of the topology`);
  return member;
}

function isFailed(view: ClusterView, id: string): boolean {
  return id !== view.myId && (view.failedNodes?.has(id) ?? false);
}

/** The group's master first, then its other replicas in placement order. */
function shardNodes(view: ClusterView, group: Group): string[] {
  const leader = shownLeader(view, group);
  return [leader, ...group.replicas.filter((id) => id !== leader)];
}

/** `CLUSTER SLOTS`: one entry per group, in slot order: [start, end, master, replicas...], each node [ip, port, id, {}]. */
export function clusterSlotsReply(view: ClusterView): Reply {
  const groups = [...view.topology.groups].sort((x, y) => x.range.start - y.range.start);
  return R.array(
    groups.map((group) => {
      const nodes = shardNodes(view, group).filter((id, i) => i === 0 || !isFailed(view, id));
      const items: Reply[] = [R.int(group.range.start), R.int(group.range.end)];
      for (const id of nodes) {
        const m = memberOf(view, id);
        items.push(R.array([R.bulk(m.host), R.int(m.port), R.bulk(m.id), R.map([])]));
      }
      return R.array(items);
    }),
  );
}

/** `CLUSTER SHARDS`: one map per group: {slots: [start, end], nodes: [{id, port, ip, endpoint, role, replication-offset, health}]}. */
export function clusterShardsReply(view: ClusterView): Reply {
  const shards: Reply[] = [];
  for (const group of view.topology.groups) {
    const nodes = shardNodes(view, group).map((id, i) => {
      const m = memberOf(view, id);
      const offset = view.replicationOffset?.(group.id, id) ?? 0;
      return R.map([
        [R.bulk('id'), R.bulk(m.id)],
        [R.bulk('port'), R.int(m.port)],
        [R.bulk('ip'), R.bulk(m.host)],
        [R.bulk('endpoint'), R.bulk(m.host)],
        [R.bulk('role'), R.bulk(i === 0 ? 'master' : 'replica')],
        [R.bulk('replication-offset'), R.int(offset)],
        [R.bulk('health'), R.bulk(isFailed(view, id) ? 'fail' : 'online')],
      ]);
    });
    shards.push(
      R.map([
        [R.bulk('slots'), R.array([R.int(group.range.start), R.int(group.range.end)])],
        [R.bulk('nodes'), R.array(nodes)],
      ]),
    );
  }
  return R.array(shards);
}

/** Slot ranges as NODES writes them (`5`, `0-100`), adjacent ranges merged. */
function rangeText(ranges: readonly { start: number; end: number }[]): string[] {
  const sorted = [...ranges].sort((a, b) => a.start - b.start);
  const merged: { start: number; end: number }[] = [];
  for (const r of sorted) {
    const last = merged[merged.length - 1];
    if (last !== undefined && last.end + 1 === r.start) last.end = r.end;
    else merged.push({ start: r.start, end: r.end });
  }
  return merged.map((r) => (r.start === r.end ? `${r.start}` : `${r.start}-${r.end}`));
}

/** The text of `CLUSTER NODES`: one line per member, each ending in "\n". */
export function clusterNodesText(view: ClusterView): string {
  const led = new Map<string, { start: number; end: number }[]>();
  for (const group of view.topology.groups) {
    const leader = shownLeader(view, group);
    const list = led.get(leader) ?? [];
    list.push(group.range);
    led.set(leader, list);
  }
  let text = '';
  for (const m of view.topology.members) {
    const failed = isFailed(view, m.id);
    const flags = `${m.id === view.myId ? 'myself,' : ''}master${failed ? ',fail' : ''}`;
    const fields = [
      m.id,
      `${m.host}:${m.port}@${m.busPort}`,
      flags,
      '-',
      '0',
      '0',
      String(view.topology.epoch),
      failed ? 'disconnected' : 'connected',
      ...rangeText(led.get(m.id) ?? []),
    ];
    text += `${fields.join(' ')}\n`;
  }
  return text;
}

/** `CLUSTER NODES`: a bulk string (RESP2) / verbatim text (RESP3), as Redis sends it. */
export function clusterNodesReply(view: ClusterView): Reply {
  return R.verbatim(clusterNodesText(view));
}

export interface ClusterInfoCounts {
  readonly state: 'ok' | 'fail';
  readonly slotsAssigned: number;
  readonly slotsOk: number;
  readonly slotsFail: number;
  readonly knownNodes: number;
  /** Members shown as master of at least one group. */
  readonly size: number;
}

/**
 * The numbers of `CLUSTER INFO`. Every slot is assigned (the topology covers
 * all). A group with a known leader has its slots ok; one without has them
 * failed, and then the state is `fail`.
 */
export function clusterInfoCounts(view: ClusterView): ClusterInfoCounts {
  let slotsOk = 0;
  const masters = new Set<string>();
  for (const group of view.topology.groups) {
    masters.add(shownLeader(view, group));
    if (knownLeader(view, group) !== null) slotsOk += group.range.end - group.range.start + 1;
  }
  return {
    state: slotsOk === SLOT_COUNT ? 'ok' : 'fail',
    slotsAssigned: SLOT_COUNT,
    slotsOk,
    slotsFail: SLOT_COUNT - slotsOk,
    knownNodes: view.topology.members.length,
    size: masters.size,
  };
}

/** The text of `CLUSTER INFO`: `field:value` lines ending in CRLF, Redis 7.0's fields in Redis's order. */
export function clusterInfoText(view: ClusterView): string {
  const c = clusterInfoCounts(view);
  const epoch = view.topology.epoch;
  const lines = [
    `cluster_state:${c.state}`,
    `cluster_slots_assigned:${c.slotsAssigned}`,
    `cluster_slots_ok:${c.slotsOk}`,
    'cluster_slots_pfail:0',
    `cluster_slots_fail:${c.slotsFail}`,
    `cluster_known_nodes:${c.knownNodes}`,
    `cluster_size:${c.size}`,
    `cluster_current_epoch:${epoch}`,
    `cluster_my_epoch:${epoch}`,
    'cluster_stats_messages_sent:0',
    'cluster_stats_messages_received:0',
    'total_cluster_links_buffer_limit_exceeded:0',
  ];
  return lines.map((l) => `${l}\r\n`).join('');
}

/** `CLUSTER INFO`: a bulk string (RESP2) / verbatim text (RESP3). */
export function clusterInfoReply(view: ClusterView): Reply {
  return R.verbatim(clusterInfoText(view));
}

/** `CLUSTER MYID`: the node id as a bulk string. */
export function clusterMyIdReply(view: ClusterView): Reply {
  return R.bulk(view.myId);
}

/** `CLUSTER KEYSLOT key`: the key's slot as an integer. */
export function clusterKeySlotReply(key: Uint8Array | string): Reply {
  return R.int(keySlot(key));
}

/** Why a slot argument was refused: Redis answers `ERR value is not an integer or out of range` or `ERR Invalid slot`. */
export type SlotArgumentError = 'notInteger' | 'invalidSlot';

const LONG_LONG_MIN = -(2n ** 63n);
const LONG_LONG_MAX = 2n ** 63n - 1n;

/** Parses a slot argument as Redis does (a strict 64-bit integer, then 0..16383). */
export function parseSlotArgument(arg: Uint8Array | string): { readonly slot: number } | { readonly error: SlotArgumentError } {
  const text = typeof arg === 'string' ? arg : Buffer.from(arg.buffer, arg.byteOffset, arg.byteLength).toString('latin1');
  if (!/^(0|-?[1-9][0-9]*)$/.test(text) || text.length > 20) return { error: 'notInteger' };
  const value = BigInt(text);
  if (value < LONG_LONG_MIN || value > LONG_LONG_MAX) return { error: 'notInteger' };
  if (value < 0n || value > BigInt(SLOT_MAX)) return { error: 'invalidSlot' };
  return { slot: Number(value) };
}

/** `CLUSTER COUNTKEYSINSLOT slot`: the caller counts the keys of the (already parsed) slot. */
export function clusterCountKeysInSlotReply(slot: number, count: number): Reply {
  if (!Number.isInteger(slot) || slot < 0 || slot > SLOT_MAX) throw new RangeError(`slot ${slot} is out of range`);
  return R.int(count);
}
