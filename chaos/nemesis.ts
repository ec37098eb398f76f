// The nemesis of a fault run: a seeded schedule of faults against a
// ChaosCluster while the clients run. Each fault starts, lasts a while, and is
// undone; between faults the cluster gets a quiet spell. Families (--nemesis):
//
//   kill       SIGKILL one node (a random one or a group's leader), a majority,
//              or all of them; restart them after a while
//   pause      SIGSTOP a group's leader, or a majority; SIGCONT after a while
//   partition  isolate a leader, isolate a node, split majority/minority,
//              a one-way cut (asymmetric), a bridge (5 nodes), flapping links
//   restart    graceful restart (SIGTERM, wait, start) of one node, then another
//
// Which family and variant comes next, how long it lasts and how long the
// quiet spell is are drawn from the seed; which node is "the leader" depends on
// what the cluster reports at that moment.

import type { ChaosCluster } from './cluster.js';
import type { CutMode } from './proxy.js';
import { int, pick, shuffle, type Random } from '../testkit/random.js';
import { sleep } from '../testkit/wait.js';

export type NemesisFamily = 'kill' | 'pause' | 'partition' | 'restart';
export const NEMESIS_FAMILIES: readonly NemesisFamily[] = ['kill', 'pause', 'partition', 'restart'];

export interface FaultEvent {
  readonly family: NemesisFamily;
  /** e.g. "kill leader of g2 (node 1)", "split [0,1] | [2]". */
  readonly label: string;
  /** Nodes hit (killed, paused, isolated or on the minority side). */
  readonly nodes: readonly number[];
  /** ms since the run started. */
  readonly startMs: number;
  endMs: number;
}

export interface NemesisOptions {
  readonly families: readonly NemesisFamily[];
  readonly random: Random;
  readonly now: () => number;
  /** No new fault starts after this (ms since the run started). */
  readonly untilMs: number;
  readonly log: (line: string) => void;
  /** Quiet spell between faults, ms. */
  readonly quietMs?: readonly [number, number];
  /** How long a fault lasts, ms. */
  readonly faultMs?: readonly [number, number];
}

export class Nemesis {
  readonly events: FaultEvent[] = [];
  /** Nodes that did not come back when started again (each is an anomaly). */
  readonly restartFailures: string[] = [];
  /** Graceful stops that did not exit 0. */
  readonly uncleanStops: string[] = [];
  /** How long each graceful stop took, SIGTERM to exit, ms. */
  readonly stopMs: number[] = [];
  private stopped = false;
  private running: Promise<void> | null = null;

  constructor(
    private readonly cluster: ChaosCluster,
    private readonly o: NemesisOptions,
  ) {}

  start(): void {
    this.running = this.loop();
  }

  /** Waits for the fault under way to be undone. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.running;
  }

  private get n(): number {
    return this.cluster.nodes.length;
  }

  private majority(): number {
    return Math.floor(this.n / 2) + 1;
  }

  private async loop(): Promise<void> {
    const [quietLo, quietHi] = this.o.quietMs ?? [1000, 3000];
    const [faultLo, faultHi] = this.o.faultMs ?? [2000, 6000];
    while (!this.stopped) {
      await this.interruptibleSleep(int(this.o.random, quietLo, quietHi));
      if (this.stopped || this.o.now() >= this.o.untilMs) break;
      const family = pick(this.o.random, this.o.families);
      const lastsMs = int(this.o.random, faultLo, faultHi);
      try {
        await this.fault(family, Math.min(lastsMs, Math.max(500, this.o.untilMs - this.o.now())));
      } catch (e) {
        this.o.log(`nemesis: ${family} failed: ${e instanceof Error ? e.message : String(e)}`);
        throw e;
      }
    }
  }

  private async interruptibleSleep(ms: number): Promise<void> {
    const end = this.o.now() + ms;
    while (!this.stopped && this.o.now() < end) await sleep(Math.min(100, end - this.o.now()));
  }

  private begin(family: NemesisFamily, label: string, nodes: readonly number[]): FaultEvent {
    const event: FaultEvent = { family, label, nodes: [...nodes], startMs: this.o.now(), endMs: Number.NaN };
    this.events.push(event);
    this.o.log(`nemesis @${(event.startMs / 1000).toFixed(1)}s: ${label}`);
    return event;
  }

  private end(event: FaultEvent): void {
    event.endMs = this.o.now();
    this.o.log(`nemesis @${(event.endMs / 1000).toFixed(1)}s: healed ${event.label}`);
  }

  /** A node leading some group (the cluster's view), or a random live node when none is known. */
  private async leaderTarget(): Promise<{ node: number; why: string }> {
    const leaders = await this.cluster.leaders();
    const live = this.cluster.nodes.filter((x) => x.state === 'up').map((x) => x.index);
    const groups = [...leaders.entries()].filter(([, node]) => live.includes(node));
    if (groups.length > 0) {
      const [g, node] = pick(this.o.random, groups);
      return { node, why: `leader of g${g}` };
    }
    return { node: pick(this.o.random, live.length > 0 ? live : this.cluster.nodes.map((x) => x.index)), why: 'node' };
  }

  private async fault(family: NemesisFamily, lastsMs: number): Promise<void> {
    const r = this.o.random;
    const all = this.cluster.nodes.map((x) => x.index);
    switch (family) {
      case 'kill': {
        const v = r();
        let victims: number[];
        let label: string;
        if (v < 0.5) {
          const t = r() < 0.6 ? await this.leaderTarget() : { node: pick(r, all), why: 'node' };
          victims = [t.node];
          label = `kill -9 ${t.why} (node ${t.node})`;
        } else if (v < 0.8) {
          victims = shuffle(r, all).slice(0, this.majority());
          label = `kill -9 majority [${victims.join(',')}]`;
        } else {
          victims = all;
          label = 'kill -9 all';
        }
        const event = this.begin('kill', label, victims);
        await Promise.all(victims.map((i) => this.cluster.kill(i)));
        await sleep(Math.min(lastsMs, 4000));
        // Restart in a random order, a little apart, without waiting for one to be ready before starting
        // the next: after losing its majority a node may wait for the others before it takes clients.
        let delayMs = 0;
        const starting: Promise<void>[] = [];
        for (const i of shuffle(r, victims)) {
          const at = delayMs;
          starting.push(sleep(at).then(() => this.restart(i)));
          delayMs += int(r, 0, 300);
        }
        await Promise.all(starting);
        this.end(event);
        return;
      }
      case 'pause': {
        let victims: number[];
        let label: string;
        if (r() < 0.65) {
          const t = await this.leaderTarget();
          victims = [t.node];
          label = `pause ${t.why} (node ${t.node})`;
        } else {
          victims = shuffle(r, all).slice(0, this.majority());
          label = `pause majority [${victims.join(',')}]`;
        }
        victims = victims.filter((i) => this.cluster.isUp(i));
        const event = this.begin('pause', label, victims);
        for (const i of victims) this.cluster.pause(i);
        await sleep(lastsMs);
        for (const i of victims) this.cluster.resume(i);
        this.end(event);
        return;
      }
      case 'partition': {
        const proxy = this.cluster.proxy;
        const mode: CutMode = r() < 0.8 ? 'blackhole' : 'reset';
        const v = r();
        let event: FaultEvent;
        if (v < 0.25) {
          const t = await this.leaderTarget();
          event = this.begin('partition', `isolate ${t.why} (node ${t.node}) [${mode}]`, [t.node]);
          proxy.isolate(t.node, mode);
        } else if (v < 0.45) {
          const order = shuffle(r, all);
          const minority = order.slice(this.majority());
          const majority = order.slice(0, this.majority());
          event = this.begin('partition', `split [${majority.join(',')}] | [${minority.join(',')}] [${mode}]`, minority);
          proxy.partition([majority, minority], mode);
        } else if (v < 0.65) {
          // One way: the leader's messages stop reaching the others (it still hears them), or the reverse.
          const t = await this.leaderTarget();
          const others = all.filter((i) => i !== t.node);
          const outbound = r() < 0.5;
          event = this.begin('partition', `one-way: ${outbound ? `${t.why} (node ${t.node}) -> others cut` : `others -> ${t.why} (node ${t.node}) cut`}`, [
            t.node,
          ]);
          proxy.setCuts(others.map((o) => (outbound ? ([t.node, o] as const) : ([o, t.node] as const))));
        } else if (v < 0.8 && this.n >= 5) {
          // A bridge: two sides that cannot talk, and one node that talks to both.
          const order = shuffle(r, all);
          const bridge = order[0] as number;
          const half = Math.floor((this.n - 1) / 2);
          const a = order.slice(1, 1 + half);
          const b = order.slice(1 + half);
          event = this.begin('partition', `bridge: [${a.join(',')}] | [${b.join(',')}] via node ${bridge}`, b);
          proxy.partition([a, b], mode);
        } else if (v < 0.8) {
          // Three nodes: a ring cut, each node hears only one of the others.
          event = this.begin('partition', `ring: 0->1, 1->2, 2->0 cut`, []);
          proxy.setCuts(all.map((i) => [i, (i + 1) % this.n] as const));
        } else {
          event = this.begin('partition', `flapping links (${mode})`, []);
          const end = this.o.now() + lastsMs;
          while (this.o.now() < end) {
            const order = shuffle(r, all);
            const k = int(r, 1, Math.floor((this.n - 1) / 2) || 1);
            proxy.partition([order.slice(k), order.slice(0, k)], mode);
            await sleep(int(r, 100, 600));
            proxy.heal();
            await sleep(int(r, 100, 600));
          }
          this.end(event);
          return;
        }
        await sleep(lastsMs);
        proxy.heal();
        this.end(event);
        return;
      }
      case 'restart': {
        // One node after the other, each its own event.
        const victims = shuffle(r, all).slice(0, r() < 0.5 ? 1 : 2);
        for (const i of victims) {
          const event = this.begin('restart', `graceful restart of node ${i}`, [i]);
          const stopStart = this.o.now();
          const how = await this.cluster.stop(i);
          this.stopMs.push(this.o.now() - stopStart);
          if (how !== 'exit code 0') {
            this.o.log(`nemesis: node ${i} stopped with ${how}`);
            this.uncleanStops.push(`node ${i} at ${(this.o.now() / 1000).toFixed(1)}s: ${how}`);
          }
          await sleep(int(r, 100, 1000));
          await this.restart(i);
          this.end(event);
          await sleep(int(r, 200, 1500));
        }
        return;
      }
    }
  }

  /** Starts a node again; a node that does not come back is recorded, not thrown (the run goes on without it). */
  private async restart(i: number): Promise<void> {
    try {
      await this.cluster.startNode(i);
    } catch (e) {
      const why = e instanceof Error ? e.message : String(e);
      this.restartFailures.push(`node ${i} at ${(this.o.now() / 1000).toFixed(1)}s: ${why.slice(0, 2000)}`);
      this.o.log(`nemesis: node ${i} did not restart: ${why}`);
    }
  }

  /** Undoes everything: links healed, paused nodes continued, dead ones started. Resolves when all are up (or failed to start). */
  async healAll(): Promise<void> {
    this.cluster.proxy.heal();
    for (const node of this.cluster.nodes) if (node.state === 'paused') this.cluster.resume(node.index);
    await Promise.all(this.cluster.nodes.filter((x) => x.state === 'down').map((x) => this.restart(x.index)));
  }
}

/** Parses --nemesis (comma-separated families; "all" or "none"). */
export function parseFamilies(text: string | undefined): NemesisFamily[] {
  if (text === undefined || text === 'all') return [...NEMESIS_FAMILIES];
  if (text === 'none' || text === '') return [];
  const out: NemesisFamily[] = [];
  for (const part of text.split(',')) {
    const f = part.trim() as NemesisFamily;
    if (!NEMESIS_FAMILIES.includes(f))
      throw new Error(`--nemesis: unknown fault family ${JSON.stringify(part)} (known: ${NEMESIS_FAMILIES.join(', ')}, all, none)`);
    if (!out.includes(f)) out.push(f);
  }
  return out;
}
