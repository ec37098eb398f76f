// The cluster's topology as one immutable value: the members, the data groups
// (ids 1..G), the contiguous slot range each group owns, each group's replicas
// and its preferred leader. Group 0 (metadata) replicates it as bytes
// (`encodeTopology`/`decodeTopology`). Pure code: no I/O, no clocks.

import { SLOT_COUNT, SLOT_MAX, keySlot } from './slots.js';
import { OrdoError } from '../ordo-error.js';

/** The most data groups a cluster can have: one per slot. */
export const GROUP_COUNT_MAX = SLOT_COUNT;
/** Replicas per group when there are enough members. */
export const REPLICATION_FACTOR_DEFAULT = 3;
/** The version byte `encodeTopology` writes and `decodeTopology` accepts. */
export const TOPOLOGY_ENCODING_VERSION = 1;
/** The most members a topology can list (the encoding indexes them with 16 bits). */
export const MEMBER_COUNT_MAX = 65535;
/** The most replicas one group can have (the encoding counts them with 8 bits). */
export const GROUP_REPLICAS_MAX = 255;

/** A bad topology (from a caller or from bytes); the message says what is wrong. */
export class TopologyError extends OrdoError {
  override readonly code = 'ORDO_ERR_TOPOLOGY';
}

/** Where a member is reached. */
export interface Address {
  /** The address clients connect to (an IP or a host name). */
  readonly host: string;
  /** The client (RESP) port. */
  readonly port: number;
  /** The bus (node to node) port. */
  readonly busPort: number;
}

export interface Member extends Address {
  /** 40 lowercase hex chars, like a Redis Cluster node id. */
  readonly id: string;
}

export interface SlotRange {
  /** First slot, inclusive. */
  readonly start: number;
  /** Last slot, inclusive. */
  readonly end: number;
}

export interface Group {
  /** 1..G (0 is the metadata group, which owns no slots). */
  readonly id: number;
  readonly range: SlotRange;
  /** Member ids holding a replica, in placement order. */
  readonly replicas: readonly string[];
  /** The member that should lead this group when it is healthy (one of `replicas`). */
  readonly preferredLeader: string;
}

export interface TopologyInit {
  /** Bumped by every change group 0 commits; shown as the config epoch. */
  readonly epoch: number;
  readonly members: readonly Member[];
  /** Group i (1-based) at index i - 1. */
  readonly groups: readonly Group[];
}

const NODE_ID = /^[0-9a-f]{40}$/;

function fail(message: string): never {
  throw new TopologyError(message);
}

function checkPort(what: string, port: number): void {
  if (!Number.isInteger(port) || port < 1 || port > 65535) fail(`${what} ${port} is not a port (1..65535)`);
}

/** Checks that G is an integer in 1..16384. */
export function checkGroupCount(groupCount: number): void {
  if (!Number.isInteger(groupCount) || groupCount < 1 || groupCount > GROUP_COUNT_MAX) {
    fail(`group count ${groupCount} is out of range (1..${GROUP_COUNT_MAX})`);
  }
}

/**
 * The slot ranges of G groups: contiguous, in order, covering 0..16383, sizes
 * as even as possible (the first 16384 mod G ranges hold one slot more).
 */
export function slotRanges(groupCount: number): SlotRange[] {
  checkGroupCount(groupCount);
  const base = Math.floor(SLOT_COUNT / groupCount);
  const larger = SLOT_COUNT % groupCount;
  const ranges: SlotRange[] = [];
  let start = 0;
  for (let i = 0; i < groupCount; i++) {
    const size = base + (i < larger ? 1 : 0);
    ranges.push({ start, end: start + size - 1 });
    start += size;
  }
  return ranges;
}

/**
 * Replica placement: group g (1-based) takes the next `factor` members of an
 * endless round-robin over `memberIds`, so the replicas of one group are
 * distinct and every member holds floor or ceil of G * factor / N replicas.
 * `factor` is capped at the member count.
 */
export function placeReplicas(memberIds: readonly string[], groupCount: number, factor = REPLICATION_FACTOR_DEFAULT): string[][] {
  checkGroupCount(groupCount);
  const n = memberIds.length;
  if (n === 0) fail('a topology needs at least one member');
  if (!Number.isInteger(factor) || factor < 1) fail(`replication factor ${factor} must be a positive integer`);
  const r = Math.min(factor, n);
  const placement: string[][] = [];
  for (let g = 0; g < groupCount; g++) {
    const replicas: string[] = [];
    for (let k = 0; k < r; k++) replicas.push(memberIds[(g * r + k) % n] as string);
    placement.push(replicas);
  }
  return placement;
}

/**
 * Preferred leaders, one per group, spread as evenly as the placement allows:
 * first greedily (each group in order takes the replica leading the fewest
 * groups so far, ties to the earlier member in `memberIds`), then while some
 * member leads two or more groups more than another, leadership moves along a
 * chain of groups (X leads a group Y also replicates; Y gives up one it leads
 * to Z; ...) from a most-loaded member to one with at least two fewer. Each
 * move lowers the sum of squared counts, so it ends; the result is
 * deterministic, and within 1 whenever such a chain exists.
 */
export function preferredLeaders(memberIds: readonly string[], placement: readonly (readonly string[])[]): string[] {
  const order = new Map<string, number>();
  memberIds.forEach((id, i) => order.set(id, i));
  const rank = (id: string): number => {
    const i = order.get(id);
    if (i === undefined) fail(`replica ${id} is not a member`);
    return i;
  };
  const n = memberIds.length;
  const counts = new Array<number>(n).fill(0);
  const leaders: number[] = [];
  const replicaRanks = placement.map((replicas) => replicas.map(rank));
  for (const replicas of replicaRanks) {
    let best = -1;
    for (const m of replicas) {
      if (best < 0 || (counts[m] as number) < (counts[best] as number) || ((counts[m] as number) === (counts[best] as number) && m < best)) best = m;
    }
    if (best < 0) fail('a group needs at least one replica');
    counts[best] = (counts[best] as number) + 1;
    leaders.push(best);
  }
  // ledBy[m]: the groups member m leads, kept in sync with `leaders`.
  const ledBy: Set<number>[] = Array.from({ length: n }, () => new Set<number>());
  leaders.forEach((m, g) => ledBy[m]?.add(g));
  for (;;) {
    const max = Math.max(...counts);
    let moved = false;
    for (let hi = 0; hi < n && !moved; hi++) {
      if (counts[hi] !== max) continue;
      // Breadth-first over members: from X to Y through a group X leads and Y replicates.
      const via = new Map<number, { from: number; group: number }>();
      const queue = [hi];
      via.set(hi, { from: -1, group: -1 });
      let target = -1;
      for (let q = 0; q < queue.length && target < 0; q++) {
        const x = queue[q] as number;
        for (const g of [...(ledBy[x] as Set<number>)].sort((a, b) => a - b)) {
          for (const y of replicaRanks[g] as number[]) {
            if (via.has(y)) continue;
            via.set(y, { from: x, group: g });
            if ((counts[y] as number) <= max - 2) {
              target = y;
              break;
            }
            queue.push(y);
          }
          if (target >= 0) break;
        }
      }
      if (target < 0) continue;
      for (let y = target; y !== hi;) {
        const step = via.get(y) as { from: number; group: number };
        ledBy[step.from]?.delete(step.group);
        ledBy[y]?.add(step.group);
        leaders[step.group] = y;
        y = step.from;
      }
      counts[hi] = (counts[hi] as number) - 1;
      counts[target] = (counts[target] as number) + 1;
      moved = true;
    }
    if (!moved) break;
  }
  return leaders.map((m) => memberIds[m] as string);
}

export interface BootstrapOptions {
  readonly members: readonly Member[];
  /** G, the number of data groups (1..16384). */
  readonly groupCount: number;
  /** Replicas per group, capped at the member count (default 3). */
  readonly replicationFactor?: number;
  /** Default 1. */
  readonly epoch?: number;
}

/** The topology a new cluster starts with: even slot ranges, round-robin replicas, balanced preferred leaders. */
export function bootstrapTopology(options: BootstrapOptions): Topology {
  const ids = options.members.map((m) => m.id);
  const ranges = slotRanges(options.groupCount);
  const placement = placeReplicas(ids, options.groupCount, options.replicationFactor ?? REPLICATION_FACTOR_DEFAULT);
  const leaders = preferredLeaders(ids, placement);
  const groups: Group[] = ranges.map((range, i) => ({
    id: i + 1,
    range,
    replicas: placement[i] as string[],
    preferredLeader: leaders[i] as string,
  }));
  return new Topology({ epoch: options.epoch ?? 1, members: options.members, groups });
}

/** An immutable, validated topology with O(1) slot → group lookups. */
export class Topology {
  readonly epoch: number;
  readonly members: readonly Member[];
  readonly groups: readonly Group[];
  /** slot → group id. */
  private readonly slotTable: Uint16Array;
  private readonly memberById: ReadonlyMap<string, Member>;

  /** Validates `init` and throws a TopologyError saying what is wrong. */
  constructor(init: TopologyInit) {
    if (!Number.isSafeInteger(init.epoch) || init.epoch < 0) fail(`epoch ${init.epoch} must be a non-negative safe integer`);
    if (init.members.length === 0) fail('a topology needs at least one member');
    if (init.members.length > MEMBER_COUNT_MAX) fail(`${init.members.length} members are more than ${MEMBER_COUNT_MAX}`);
    const byId = new Map<string, Member>();
    const clientAddresses = new Set<string>();
    const busAddresses = new Set<string>();
    for (const m of init.members) {
      if (!NODE_ID.test(m.id)) fail(`member id "${m.id}" is not 40 lowercase hex chars`);
      if (byId.has(m.id)) fail(`duplicate member id ${m.id}`);
      if (m.host.length === 0 || Buffer.byteLength(m.host) > 255 || /[\s@,]/.test(m.host)) fail(`member ${m.id} has a bad host "${m.host}"`);
      checkPort(`member ${m.id} client port`, m.port);
      checkPort(`member ${m.id} bus port`, m.busPort);
      const client = `${m.host}:${m.port}`;
      const bus = `${m.host}:${m.busPort}`;
      if (clientAddresses.has(client) || busAddresses.has(client)) fail(`duplicate address ${client} (member ${m.id})`);
      clientAddresses.add(client);
      if (clientAddresses.has(bus) || busAddresses.has(bus)) fail(`duplicate address ${bus} (member ${m.id})`);
      busAddresses.add(bus);
      byId.set(m.id, Object.freeze({ id: m.id, host: m.host, port: m.port, busPort: m.busPort }));
    }
    checkGroupCount(init.groups.length);
    const table = new Uint16Array(SLOT_COUNT);
    const groups: Group[] = [];
    init.groups.forEach((g, i) => {
      if (g.id !== i + 1) fail(`group at position ${i + 1} has id ${g.id}; ids must be 1..G in order`);
      const { start, end } = g.range;
      if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end > SLOT_MAX || start > end) {
        fail(`group ${g.id} has a bad slot range ${start}-${end}`);
      }
      for (let s = start; s <= end; s++) {
        const owner = table[s] as number;
        if (owner !== 0) fail(`slot ranges overlap at slot ${s} (groups ${owner} and ${g.id})`);
        table[s] = g.id;
      }
      if (g.replicas.length === 0) fail(`group ${g.id} has no replicas`);
      if (g.replicas.length > GROUP_REPLICAS_MAX) fail(`group ${g.id} has more than ${GROUP_REPLICAS_MAX} replicas`);
      const seen = new Set<string>();
      for (const r of g.replicas) {
        if (!byId.has(r)) fail(`group ${g.id} has replica ${r}, which is not a member`);
        if (seen.has(r)) fail(`group ${g.id} lists replica ${r} twice`);
        seen.add(r);
      }
      if (!seen.has(g.preferredLeader)) fail(`group ${g.id} prefers leader ${g.preferredLeader}, which is not one of its replicas`);
      groups.push(
        Object.freeze({
          id: g.id,
          range: Object.freeze({ start, end }),
          replicas: Object.freeze([...g.replicas]),
          preferredLeader: g.preferredLeader,
        }),
      );
    });
    const hole = table.indexOf(0);
    if (hole >= 0) {
      let holeEnd = hole;
      while (holeEnd < SLOT_MAX && table[holeEnd + 1] === 0) holeEnd++;
      fail(`slots ${hole}-${holeEnd} belong to no group`);
    }
    this.epoch = init.epoch;
    this.members = Object.freeze([...byId.values()]);
    this.groups = Object.freeze(groups);
    this.slotTable = table;
    this.memberById = byId;
    Object.freeze(this);
  }

  /** G, the number of data groups. */
  get groupCount(): number {
    return this.groups.length;
  }

  /** The group owning `slot` (0..16383). */
  groupOfSlot(slot: number): number {
    const group = this.slotTable[slot];
    if (group === undefined || !Number.isInteger(slot)) throw new RangeError(`slot ${slot} is out of range (0..${SLOT_MAX})`);
    return group;
  }

  /** The group owning the key's slot (hash tags included). */
  groupOfKey(key: Uint8Array | string): number {
    return this.slotTable[keySlot(key)] as number;
  }

  /** Group `id` (1..G), or undefined. */
  group(id: number): Group | undefined {
    return this.groups[id - 1];
  }

  member(id: string): Member | undefined {
    return this.memberById.get(id);
  }

  /** The groups whose replicas include `memberId`. */
  groupsOf(memberId: string): Group[] {
    return this.groups.filter((g) => g.replicas.includes(memberId));
  }
}

// Encoding, version 1 (all integers big-endian):
//   u8 version, f64 epoch,
//   u16 member count, per member: 20 bytes id, u16 host length, host (utf8), u16 port, u16 bus port,
//   u16 group count minus one, per group: u16 start, u16 end, u8 replica count,
//     u16 member index per replica, u8 index of the preferred leader among the replicas.

/** The topology as bytes, for group 0's log and snapshots. */
export function encodeTopology(topology: Topology): Buffer {
  const index = new Map<string, number>();
  const parts: Buffer[] = [];
  const head = Buffer.alloc(11);
  head.writeUInt8(TOPOLOGY_ENCODING_VERSION, 0);
  head.writeDoubleBE(topology.epoch, 1);
  head.writeUInt16BE(topology.members.length, 9);
  parts.push(head);
  topology.members.forEach((m, i) => {
    index.set(m.id, i);
    const host = Buffer.from(m.host, 'utf8');
    const b = Buffer.alloc(20 + 2 + host.length + 4);
    Buffer.from(m.id, 'hex').copy(b, 0);
    b.writeUInt16BE(host.length, 20);
    host.copy(b, 22);
    b.writeUInt16BE(m.port, 22 + host.length);
    b.writeUInt16BE(m.busPort, 24 + host.length);
    parts.push(b);
  });
  const count = Buffer.alloc(2);
  count.writeUInt16BE(topology.groups.length - 1, 0);
  parts.push(count);
  for (const g of topology.groups) {
    const b = Buffer.alloc(5 + 2 * g.replicas.length + 1);
    b.writeUInt16BE(g.range.start, 0);
    b.writeUInt16BE(g.range.end, 2);
    b.writeUInt8(g.replicas.length, 4);
    g.replicas.forEach((r, i) => b.writeUInt16BE(index.get(r) as number, 5 + 2 * i));
    b.writeUInt8(g.replicas.indexOf(g.preferredLeader), 5 + 2 * g.replicas.length);
    parts.push(b);
  }
  return Buffer.concat(parts);
}

/** Reads bytes written by `encodeTopology`; throws a TopologyError on bytes that are not a valid topology. */
export function decodeTopology(bytes: Uint8Array): Topology {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = 0;
  const need = (n: number): void => {
    if (pos + n > buf.length) fail(`topology bytes end early (at byte ${pos}, need ${n} more)`);
  };
  need(1);
  const version = buf.readUInt8(pos);
  pos += 1;
  if (version !== TOPOLOGY_ENCODING_VERSION) fail(`unknown topology encoding version ${version}`);
  need(10);
  const epoch = buf.readDoubleBE(pos);
  const memberCount = buf.readUInt16BE(pos + 8);
  pos += 10;
  const members: Member[] = [];
  for (let i = 0; i < memberCount; i++) {
    need(22);
    const id = buf.toString('hex', pos, pos + 20);
    const hostLength = buf.readUInt16BE(pos + 20);
    pos += 22;
    need(hostLength + 4);
    const host = buf.toString('utf8', pos, pos + hostLength);
    pos += hostLength;
    members.push({ id, host, port: buf.readUInt16BE(pos), busPort: buf.readUInt16BE(pos + 2) });
    pos += 4;
  }
  need(2);
  const groupCount = buf.readUInt16BE(pos) + 1;
  pos += 2;
  const groups: Group[] = [];
  for (let g = 1; g <= groupCount; g++) {
    need(5);
    const start = buf.readUInt16BE(pos);
    const end = buf.readUInt16BE(pos + 2);
    const replicaCount = buf.readUInt8(pos + 4);
    pos += 5;
    need(2 * replicaCount + 1);
    const replicas: string[] = [];
    for (let k = 0; k < replicaCount; k++) {
      const m = members[buf.readUInt16BE(pos)];
      if (m === undefined) fail(`group ${g} names member index ${buf.readUInt16BE(pos)}, beyond the ${memberCount} members`);
      replicas.push(m.id);
      pos += 2;
    }
    const leaderIndex = buf.readUInt8(pos);
    pos += 1;
    const preferredLeader = replicas[leaderIndex];
    if (preferredLeader === undefined) fail(`group ${g} names preferred leader ${leaderIndex}, beyond its ${replicaCount} replicas`);
    groups.push({ id: g, range: { start, end }, replicas, preferredLeader });
  }
  if (pos !== buf.length) fail(`${buf.length - pos} unexpected bytes after the topology`);
  return new Topology({ epoch, members, groups });
}
