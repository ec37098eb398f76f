// What the multiraft simulation (sim/multiraft.ts) and the whole-cluster one
// (sim/nodes.ts) share: one virtual clock driving one event queue, each
// node's view of it (NodeClock: its timers, its clock rate, SIGSTOP and
// SIGCONT), the node's bus seen through that clock (NodeTransport), and the
// run of a seed in phases:
//
//   setup ── faults ── heal ── liveness check ── clients stop ── settle ── final check
//
// Between two events the promise continuations the last one caused run (as
// Node runs them between callbacks), so real async code (a loop turn after
// its disk commit, a member finishing its start) keeps its order. An error a
// continuation throws where nobody awaits it (an unhandled rejection, an
// assertion in production code) fails the seed like a checker does: the
// result carries it, the trace ends with it, and the seed replays.

import type { HostScheduler } from '../src/multiraft/host.js';
import type { MemoryScheduler, MemoryTransport } from '../src/transport/memory.js';
import type { LinkAwareTransport, MessageHandler, NodeId, PeerAddress, PeerStatus, TransportStats } from '../src/transport/types.js';
import { Prng } from './prng.js';
import { EventQueue } from './simulation.js';

/** Events at one virtual instant past which a seed fails: virtual time stopped (nodes exchanging messages at zero delay forever). */
export const EVENTS_AT_ONE_INSTANT_MAX = 200_000;

/** What a checker found: its message is the whole story (no stack). */
export class SimFailure extends Error {}

/** What a NodeClock needs of its simulation: the virtual time and a way to schedule at a time. */
export interface VirtualTime {
  readonly now: number;
  at(time: number, run: () => void): void;
}

type Category = 'io' | 'immediate' | 'timer';

/**
 * One node's view of time: its timers (scaled by its clock rate), its clock,
 * and whether its process runs. While paused, everything the node would run
 * is held; on resume, I/O (messages, client requests) runs first, then
 * immediates, then the timers that came due, late, as Node would run them.
 */
export class NodeClock implements HostScheduler, MemoryScheduler {
  alive = true;
  paused = false;
  private held: { category: Category; fn: () => void }[] = [];

  constructor(
    private readonly sim: VirtualTime,
    readonly rate: number,
  ) {}

  readonly now = (): number => this.sim.now / this.rate;

  endOfTurn(fn: () => void): void {
    this.sim.at(this.sim.now, () => this.run('immediate', fn));
  }

  after(ms: number, fn: () => void): () => void {
    let cancelled = false;
    this.sim.at(this.sim.now + ms * this.rate, () => {
      if (!cancelled) this.run('timer', fn);
    });
    return () => {
      cancelled = true;
    };
  }

  every(ms: number, fn: () => void): () => void {
    let cancelled = false;
    const fire = (): void => {
      if (cancelled) return;
      fn();
      this.sim.at(this.sim.now + ms * this.rate, due);
    };
    const due = (): void => {
      if (!cancelled) this.run('timer', fire);
    };
    this.sim.at(this.sim.now + ms * this.rate, due);
    return () => {
      cancelled = true;
    };
  }

  /** Something arriving from outside (a message, a client request). */
  io(fn: () => void): void {
    this.run('io', fn);
  }

  private run(category: Category, fn: () => void): void {
    if (!this.alive) return;
    if (this.paused) {
      this.held.push({ category, fn });
      return;
    }
    fn();
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    const held = this.held;
    this.held = [];
    for (const category of ['io', 'immediate', 'timer'] as const) {
      for (const h of held) if (h.category === category) this.sim.at(this.sim.now, () => this.run(category, h.fn));
    }
  }

  kill(): void {
    this.alive = false;
    this.held = [];
  }
}

/** The node's bus as its host sees it: incoming messages go through the node's clock (held while paused). */
export class NodeTransport implements LinkAwareTransport {
  readonly nodeId: NodeId;
  readonly messageBytesMax: number;

  constructor(
    private readonly inner: MemoryTransport,
    private readonly clock: NodeClock,
  ) {
    this.nodeId = inner.nodeId;
    this.messageBytesMax = inner.messageBytesMax;
  }

  send(to: NodeId, payload: Uint8Array): boolean {
    return this.inner.send(to, payload);
  }
  isConnected(peer: NodeId): boolean {
    return this.inner.isConnected(peer);
  }
  onMessage(handler: MessageHandler): () => void {
    return this.inner.onMessage((from, payload) => this.clock.io(() => handler(from, payload)));
  }
  setPeers(peers: ReadonlyMap<NodeId, PeerAddress>): void {
    this.inner.setPeers(peers);
  }
  peerStatus(): Map<NodeId, PeerStatus> {
    return this.inner.peerStatus();
  }
  stats(): TransportStats {
    return this.inner.stats();
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

/** What every simulation counts, besides its own counters. */
export interface BaseSimStats {
  events: number;
  pauses: number;
}

export interface SimResult<S> {
  readonly seed: number;
  readonly ok: boolean;
  readonly error?: string;
  readonly atMs: number;
  readonly stats: S;
}

/** Virtual milliseconds of each phase of a seed. */
export interface SimPhases {
  /** Before faults start (elections, start-up). */
  readonly setupMs: number;
  readonly faultMs: number;
  /** Once faults heal, every client must get an acknowledgement within this long. */
  readonly livenessMs: number;
  /** After the liveness check clients stop; the nodes get this long to converge before the final check. */
  readonly settleMs: number;
  /**
   * After the heal each client stops once it has an acknowledgement, and the
   * liveness check passes as soon as every client has one (the same bound,
   * checked early): a shorter seed, without the healthy traffic that follows.
   */
  readonly stopOnceLive?: boolean;
}

/**
 * One seed's run on virtual time. A simulation supplies its faults, heal,
 * checks and how to stop its nodes; the base runs the events in order and
 * turns whatever fails (a checker, an assertion, an unhandled rejection) into
 * a failed result.
 */
export abstract class SimulationBase<S extends BaseSimStats> implements VirtualTime {
  now = 0;
  protected readonly rng: Prng;
  protected readonly trace: ((line: string) => void) | null;
  protected readonly faultEndMs: number;
  protected faultsActive = false;
  protected clientsRunning = true;
  /** When faults healed; -1 before. */
  protected healMs = -1;
  /** Clients with an operation started after the heal acknowledged. */
  private readonly ackedAfterHeal = new Set<number>();
  /** Set once the liveness check passed. */
  private live = false;
  /** Virtual time at which the run ends (earlier with stopOnceLive). */
  private endMs: number;
  /** An error raised off the event loop (a member failing to start, an unhandled rejection): it fails the seed after the event. */
  protected asyncError: Error | null = null;
  private readonly q = new EventQueue();
  abstract readonly stats: S;
  protected abstract readonly clients: readonly { readonly id: number }[];

  constructor(
    readonly seed: number,
    trace: ((line: string) => void) | undefined,
    private readonly phases: SimPhases,
  ) {
    this.rng = new Prng(seed);
    this.trace = trace ?? null;
    this.faultEndMs = phases.setupMs + phases.faultMs;
    this.endMs = this.faultEndMs + phases.livenessMs + phases.settleMs;
  }

  at(time: number, run: () => void): void {
    this.q.push(Math.max(time, this.now), run);
  }

  /** Timers on the virtual clock itself (the hub's deliveries): never held, never scaled. */
  protected scheduler(): MemoryScheduler {
    return {
      endOfTurn: (fn) => this.at(this.now, fn),
      after: (ms, fn) => {
        let cancelled = false;
        this.at(this.now + ms, () => {
          if (!cancelled) fn();
        });
        return () => {
          cancelled = true;
        };
      },
    };
  }

  protected log(line: string): void {
    if (this.trace !== null) this.trace(`t=${this.now.toFixed(2).padStart(9, '0')} ${line}`);
  }

  protected fail(msg: string): never {
    throw new SimFailure(`at ${this.now.toFixed(2)} ms: ${msg}`);
  }

  /** Schedules the next fault while faults are active (and the one after it, in turn). */
  protected abstract scheduleNextFault(): void;
  /** Ends every fault: links, disks, paused and stopped nodes. */
  protected abstract healAll(): void;
  /** After every event: invariants that hold at every instant. */
  protected checkStep(): void {}
  /** At the end: the nodes converged and the history is explained by what they hold. */
  protected abstract checkFinal(): void;
  /** Kills every node (the run is over, passed or failed). */
  protected abstract stopAll(): void;

  async run(): Promise<SimResult<S>> {
    const { setupMs, livenessMs } = this.phases;
    this.at(setupMs, () => {
      this.faultsActive = true;
      this.scheduleNextFault();
    });
    this.at(this.faultEndMs, () => this.healAll());
    this.at(this.faultEndMs + livenessMs, () => this.checkLiveness());
    this.at(this.faultEndMs + livenessMs + 1, () => {
      this.clientsRunning = false;
    });
    const onRejection = (reason: unknown): void => {
      if (this.asyncError === null) this.asyncError = reason instanceof Error ? reason : new Error(String(reason));
    };
    process.on('unhandledRejection', onRejection);
    let sameInstant = 0;
    try {
      for (;;) {
        const e = this.q.pop();
        if (e === undefined || e.time > this.endMs) break;
        sameInstant = e.time === this.now ? sameInstant + 1 : 0;
        if (sameInstant > EVENTS_AT_ONE_INSTANT_MAX) this.fail(`virtual time stalled: ${sameInstant} events at one instant`);
        this.now = e.time;
        e.run();
        this.stats.events++;
        // Promise continuations (a turn after its commit, a member finishing its start) run before the next event.
        await new Promise<void>((resolve) => setImmediate(resolve));
        if (this.asyncError !== null) throw this.asyncError;
        this.checkStep();
      }
      this.now = this.endMs;
      this.checkFinal();
      return { seed: this.seed, ok: true, atMs: this.now, stats: this.stats };
    } catch (err) {
      const msg = err instanceof SimFailure ? err.message : err instanceof Error ? (err.stack ?? err.message) : String(err);
      this.log(`FAILURE ${msg}`);
      return { seed: this.seed, ok: false, error: msg, atMs: this.now, stats: this.stats };
    } finally {
      process.off('unhandledRejection', onRejection);
      this.stopAll();
    }
  }

  /** SIGSTOP now, SIGCONT after `pauseMs` (`resume` gets the time of the stop): the process runs nothing meanwhile. */
  protected pauseProcess(clock: NodeClock, name: string, pauseMs: number, resume: (fromMs: number) => void): void {
    if (clock.paused) return;
    this.stats.pauses++;
    clock.paused = true;
    const fromMs = this.now;
    this.log(`FAULT pause ${name} for ${pauseMs.toFixed(1)} ms`);
    this.at(this.now + pauseMs, () => resume(fromMs));
  }

  /** SIGCONT: what the process held runs now, late. */
  protected resumeProcess(clock: NodeClock, name: string): void {
    this.log(`${name} resumes`);
    clock.resume();
  }

  /** Whether client `clientId` sends another request. */
  protected clientRuns(clientId: number): boolean {
    return this.clientsRunning && (this.phases.stopOnceLive !== true || !this.ackedAfterHeal.has(clientId));
  }

  /** A client's operation started at `startMs` was acknowledged (now). */
  protected acknowledged(clientId: number, startMs: number): void {
    if (this.healMs < 0 || startMs < this.healMs) return;
    this.ackedAfterHeal.add(clientId);
    if (this.phases.stopOnceLive !== true || this.live || this.ackedAfterHeal.size < this.clients.length) return;
    this.checkLiveness();
    this.clientsRunning = false;
    this.endMs = this.now + this.phases.settleMs;
  }

  private checkLiveness(): void {
    if (this.live) return;
    this.live = true;
    for (const c of this.clients) {
      if (!this.ackedAfterHeal.has(c.id)) this.fail(`client${c.id} got no acknowledgement within ${this.phases.livenessMs} ms after faults healed`);
    }
    this.log('LIVENESS ok');
  }
}
