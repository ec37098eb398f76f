// Watches who leads each group during a fault run: every POLL_MS it asks every
// node that is up for `INFO raft` (a paused or cut-off node simply does not
// answer in time) and records, per data group, the leader that the answers
// name in the highest term. From that record and the fault events come the
// failover durations: how long after a fault hit a group's leader another
// node led the group.

import type { ChaosCluster } from './cluster.js';
import type { FaultEvent } from './nemesis.js';

export const POLL_MS = 200;
const INFO_TIMEOUT_MS = 400;

export interface LeaderSample {
  readonly tMs: number;
  readonly group: number;
  /** Node index of the leader, or null when no answering node names one. */
  readonly leader: number | null;
  readonly term: number;
}

export class LeaderMonitor {
  /** Changes only: one sample each time a group's leader or term changes. */
  readonly samples: LeaderSample[] = [];
  private readonly last = new Map<number, { leader: number | null; term: number }>();
  private stopped = false;
  private running: Promise<void> | null = null;

  constructor(
    private readonly cluster: ChaosCluster,
    private readonly groups: number,
    private readonly now: () => number,
  ) {}

  start(): void {
    this.running = this.loop();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.running;
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      const started = this.now();
      await this.poll();
      const left = POLL_MS - (this.now() - started);
      if (left > 0) await new Promise((r) => setTimeout(r, left));
    }
  }

  async poll(): Promise<void> {
    const infos = await Promise.all(this.cluster.nodes.map((n) => this.cluster.raftInfo(n.index, INFO_TIMEOUT_MS)));
    const t = this.now();
    for (let g = 1; g <= this.groups; g++) {
      let best: { leader: number | null; term: number } = { leader: null, term: -1 };
      infos.forEach((groups, i) => {
        const s = groups?.find((x) => x.group === g);
        if (s === undefined) return;
        const leader = s.role === 'leader' ? i : s.leader === null ? null : this.cluster.indexOfId(s.leader);
        if (s.term > best.term || (s.term === best.term && leader !== null && best.leader === null)) best = { leader, term: s.term };
      });
      if (best.term < 0) best = { leader: null, term: this.last.get(g)?.term ?? 0 };
      const prev = this.last.get(g);
      if (prev === undefined || prev.leader !== best.leader || prev.term !== best.term) {
        this.last.set(g, best);
        this.samples.push({ tMs: t, group: g, leader: best.leader, term: best.term });
      }
    }
  }
}

/** The leader of a group at time t according to the samples (null when unknown). */
export function leaderAt(samples: readonly LeaderSample[], group: number, tMs: number): LeaderSample | null {
  let found: LeaderSample | null = null;
  for (const s of samples) {
    if (s.group !== group) continue;
    if (s.tMs > tMs) break;
    found = s;
  }
  return found;
}

export interface Failover {
  readonly event: FaultEvent;
  readonly group: number;
  /** The fault hit a majority of the group's replicas: no other node could be elected. */
  readonly majorityHit: boolean;
  readonly oldLeader: number;
  /** ms from the fault's start until another node led the group; null when none did before the fault ended. */
  readonly ms: number | null;
  readonly newLeader: number | null;
}

/**
 * For every fault that hit the node leading a group, how long until another
 * node led it. `replicasOf(g)` names the group's replicas (default: every node
 * of the events counts against a majority of `nodes`).
 */
export function failoversFrom(
  samples: readonly LeaderSample[],
  events: readonly FaultEvent[],
  groups: number,
  replicasOf?: (group: number) => readonly number[] | undefined,
): Failover[] {
  const out: Failover[] = [];
  for (const e of events) {
    if (e.nodes.length === 0) continue;
    for (let g = 1; g <= groups; g++) {
      const before = leaderAt(samples, g, e.startMs);
      if (before === null || before.leader === null || !e.nodes.includes(before.leader)) continue;
      const end = Number.isNaN(e.endMs) ? Infinity : e.endMs;
      const next = samples.find(
        (s) => s.group === g && s.tMs > e.startMs && s.tMs <= end && s.leader !== null && !e.nodes.includes(s.leader) && s.term > before.term,
      );
      const replicas = replicasOf?.(g);
      const majorityHit = replicas === undefined ? false : e.nodes.filter((n) => replicas.includes(n)).length * 2 > replicas.length;
      out.push({
        event: e,
        group: g,
        majorityHit,
        oldLeader: before.leader,
        ms: next === undefined ? null : next.tMs - e.startMs,
        newLeader: next?.leader ?? null,
      });
    }
  }
  return out;
}
