// Helpers for tests of a cluster in one process: a key of a given group, what
// INFO raft says about each group, and waiting until the groups have leaders.

import type { Redis } from 'ioredis';
import { keySlot } from '../../src/cluster/slots.js';
import { slotRanges } from '../../src/cluster/topology.js';
import { sleep } from './random.js';

/** INFO raft's per-group lines: group id → { role, term, leader, commit, applied, lag }. */
export function raftLines(info: string): Map<number, Record<string, string>> {
  const out = new Map<number, Record<string, string>>();
  for (const line of info.split('\r\n')) {
    const m = /^raft_group_(\d+):(.*)$/.exec(line);
    if (m === null) continue;
    out.set(Number(m[1]), Object.fromEntries((m[2] as string).split(',').map((kv) => kv.split('=') as [string, string])));
  }
  return out;
}

/** A key (`k<tag><n>`) of data group `groupId` in a cluster of `groups` groups. */
export function keyOfGroup(groups: number, groupId: number, tag = ''): string {
  const range = slotRanges(groups)[groupId - 1];
  if (range === undefined) throw new Error(`no group ${groupId} among ${groups}`);
  for (let i = 0; ; i++) {
    const key = `k${tag}${i}`;
    const slot = keySlot(key);
    if (slot >= range.start && slot <= range.end) return key;
  }
}

/**
 * Waits until every data group 1..groups has a leader that the members behind
 * `clients` all name (INFO raft); returns group id → leader id.
 */
export async function settledLeaders(clients: readonly Redis[], groups: number, timeoutMs = 10_000): Promise<Map<number, string>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const views = await Promise.all(clients.map(async (c) => raftLines(String(await c.info('raft')))));
    const leaders = new Map<number, string>();
    let ok = true;
    for (let g = 1; g <= groups; g++) {
      const named = views.map((v) => v.get(g)?.['leader']);
      if (named.some((n) => n === undefined || n === '-' || n !== named[0])) ok = false;
      else leaders.set(g, named[0] as string);
    }
    if (ok) return leaders;
    if (Date.now() > deadline) throw new Error('groups did not settle on leaders');
    await sleep(50);
  }
}
