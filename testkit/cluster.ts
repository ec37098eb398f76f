// Clusters for tests, benchmarks and fault runs. Real processes come from the
// local cluster launcher (src/launcher/cluster.ts: ClusterNode, LocalCluster),
// re-exported here; on top of it: free ports for N nodes, waiting until the
// leaders stop moving or a node has caught up, and, for clusters inside one
// process, a key of a given group and waiting for every member to name the
// same leaders.

import type { Redis } from 'ioredis';
import { keySlot } from '../src/cluster/slots.js';
import { slotRanges } from '../src/cluster/topology.js';
import { LEADERS_TIMEOUT_MS, type ClusterNode, type ClusterState, type LocalCluster } from '../src/launcher/cluster.js';
import { parseRaftGroups } from '../src/launcher/info.js';
import { freePorts } from './processes.js';
import { sleep } from './wait.js';

export {
  ClusterNode,
  clusterList,
  keyInSlots,
  keysInSlots,
  LEADERS_TIMEOUT_MS,
  LocalCluster,
  NODE_START_TIMEOUT_MS,
  NODE_STOP_GRACE_MS,
  nodeArgs,
  parseClusterSlots,
  slotCoverageProblem,
  type ClusterNodeSpec,
  type ClusterOptions,
  type ClusterState,
  type SlotRangeOwner,
} from '../src/launcher/cluster.js';

/** Tries before a key of a group is given up on (a group of one slot needs about 16384). */
const KEY_SEARCH_TRIES_MAX = 50_000_000;

/** Free client ports and bus ports for `count` nodes, all distinct. */
export async function freeClusterPorts(count: number): Promise<{ ports: number[]; busPorts: number[] }> {
  const all = await freePorts(2 * count);
  return { ports: all.slice(0, count), busPorts: all.slice(count) };
}

/**
 * Waits for waitForLeaders, then until the leaders have stopped moving: the
 * same leader for every group for `quietMs`, and the groups spread over the
 * running nodes within one of each other (leader balancing moves leaders for
 * a few seconds after a start or restart, and a write caught by a move can be
 * answered TRYAGAIN). After `timeoutMs` it settles for the quiet period alone
 * and says so (`balanced: false`).
 */
export async function waitForStableLeaders(
  cluster: LocalCluster,
  quietMs = 2000,
  timeoutMs = LEADERS_TIMEOUT_MS,
): Promise<{ state: ClusterState; balanced: boolean }> {
  const deadline = Date.now() + timeoutMs;
  let state = await cluster.waitForLeaders(timeoutMs);
  const signature = (s: ClusterState): string => s.groups.map((g) => g.leader.port).join(',');
  let since = Date.now();
  for (;;) {
    const counts = new Map<ClusterNode, number>(cluster.running.map((n) => [n, 0]));
    for (const g of state.groups) counts.set(g.leader, (counts.get(g.leader) ?? 0) + 1);
    const balanced = Math.max(...counts.values()) - Math.min(...counts.values()) <= 1;
    const quiet = Date.now() - since >= quietMs;
    if (quiet && (balanced || Date.now() > deadline)) return { state, balanced };
    await sleep(200);
    const next = await cluster.waitForLeaders(Math.max(1000, deadline - Date.now()));
    if (signature(next) !== signature(state)) since = Date.now();
    state = next;
  }
}

/**
 * Waits until `node` has applied, in every group it replicates, at least the
 * commit index the group's leader reported when the wait began.
 */
export async function waitForCatchUp(cluster: LocalCluster, node: ClusterNode, timeoutMs = LEADERS_TIMEOUT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const targets = new Map<number, number>();
  for (const n of cluster.running) {
    const info = await n.raftInfo();
    for (const g of info.values()) if (g.role === 'leader') targets.set(g.group, g.commit);
  }
  let problem = '';
  for (;;) {
    try {
      const mine = await node.raftInfo();
      const behind = [...mine.values()].filter((g) => g.applied < (targets.get(g.group) ?? 0));
      if (behind.length === 0) return;
      problem = behind.map((g) => `group ${g.group} applied ${g.applied} < ${targets.get(g.group) ?? '?'}`).join(', ');
    } catch (e) {
      problem = (e as Error).message;
    }
    if (Date.now() > deadline) throw new Error(`node ${node.port} has not caught up after ${timeoutMs} ms: ${problem}`);
    await sleep(100);
  }
}

/** A key (`k<tag><n>`) of data group `groupId` in a cluster of `groups` groups. */
export function keyOfGroup(groups: number, groupId: number, tag = ''): string {
  const range = slotRanges(groups)[groupId - 1];
  if (range === undefined) throw new Error(`no group ${groupId} among ${groups}`);
  for (let i = 0; i < KEY_SEARCH_TRIES_MAX; i++) {
    const key = `k${tag}${i}`;
    const slot = keySlot(key);
    if (slot >= range.start && slot <= range.end) return key;
  }
  throw new Error(`no key found for group ${groupId} among ${groups}`);
}

/**
 * Waits until every data group 1..groups has a leader that the members behind
 * `clients` all name (INFO raft); returns group id → leader id.
 */
export async function settledLeaders(clients: readonly Redis[], groups: number, timeoutMs = 10_000): Promise<Map<number, string>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const views = await Promise.all(clients.map(async (c) => parseRaftGroups(String(await c.info('raft')))));
    const leaders = new Map<number, string>();
    let ok = true;
    for (let g = 1; g <= groups; g++) {
      const named = views.map((v) => v.get(g)?.leader ?? null);
      const first = named[0] ?? null;
      if (first === null || named.some((n) => n !== first)) ok = false;
      else leaders.set(g, first);
    }
    if (ok) return leaders;
    if (Date.now() > deadline) throw new Error('groups did not settle on leaders');
    await sleep(50);
  }
}
