// Seeded simulation of whole cluster members on virtual time: each member is
// the real ClusterEngine (bootstrap, start-up probe, group 0, forwarding,
// balancing, hand-off) with the real ClusterRouter and command table in front
// of it, on an in-memory log and keyspace that lose what was not committed
// when the member is killed. Members talk over one MemoryHub with the
// simulator's faults; simulated clients send real commands (INCR, GET) to any
// member, plain ones (served by forwarding) and cluster-aware ones (following
// MOVED), and everything runs from one seed on one virtual clock.
//
// The checker judges what clients saw, per key:
// - no value handed out twice, and real-time order (an INCR that completed
//   before another was sent got a smaller value; a GET is at least every value
//   acknowledged before it was sent);
// - nothing acknowledged lost (the final state is at or above every value);
// - "not applied" really not applied: on a strict counter every applied INCR
//   took one value, so the final value is at most the acknowledged INCRs plus
//   those whose outcome the client does not know;
// - every reply is one a client may get (no internal refusal escapes routing);
// - every request is answered within REPLY_BOUND_MS of its arrival, on the
//   clock of the member it reached, unless that member was paused or killed
//   meanwhile;
// - once faults heal, every client gets acknowledgements again.
// A failing seed prints itself and replays exactly (npm run sim -- --cluster).

import { ClusterEngine, CLUSTER_TICK_MS, FORWARD_SWEEP_MS, type NodeStorage } from '../src/cluster/engine.js';
import { memberId } from '../src/cluster/members.js';
import type { NodeRuntime } from '../src/cluster/runtime.js';
import { keySlot } from '../src/cluster/slots.js';
import { DEFAULT_CONFIG, type Config } from '../src/config.js';
import { ERR, WRITE_NOT_APPLIED, WRITE_OUTCOME_UNKNOWN, type ErrorKey } from '../src/errors.js';
import { MemoryKeyspace } from '../src/multiraft/memory-stores.js';
import { WindowAllocator } from '../src/multiraft/window.js';
import type { Reply } from '../src/resp/encoder.js';
import { isSequence } from '../src/sequencer/sequence.js';
import type { CommandTable, ServerContext } from '../src/server/command.js';
import { ClusterRouter } from '../src/server/router.js';
import { buildCommandTable } from '../src/server/server.js';
import { MemoryHub, type MemoryScheduler, type MemoryTransport } from '../src/transport/memory.js';
import type { NodeId } from '../src/transport/types.js';
import { NodeClock, NodeTransport, SimFailure, SimulationBase, type SimResult } from './base.js';
import { Timeline } from './multiraft.js';
import { MemoryNodeLog } from './node-log.js';

/** Members' request timeout (`--request-timeout-ms`), in their own milliseconds. */
const REQUEST_TIMEOUT_MS = 1000;
/**
 * The documented bound from a request's arrival to its reply: the request
 * timeout, plus one forward sweep (a forward past its deadline is answered at
 * the next sweep), plus one host tick (a group expires requests on ticks).
 */
export const REPLY_BOUND_MS = REQUEST_TIMEOUT_MS + FORWARD_SWEEP_MS + CLUSTER_TICK_MS;
/** A client gives up on a request (outcome unknown) after this long without a reply. */
const CLIENT_TIMEOUT_MS = 3 * REQUEST_TIMEOUT_MS;
/** A slow member's clock and timers run this much slower than real time (within the lease's drift bound). */
const SLOW_CLOCK_RATE = 1.1;
/** Before faults: the start-up probe, group 0 and the data groups elect leaders. */
const SETUP_MS = 2000;
export const DEFAULT_NODES_FAULT_MS = 8000;
/** Once faults heal, every client must get an acknowledgement within this long (elections, links, leaders back). */
const LIVENESS_MS = 5000;
/** After the liveness check clients stop; the groups get this long to converge. */
const SETTLE_MS = 2000;
const CLIENTS = 8;
/** In a short seed clients start this long before the faults (the healthy traffic before them is most of a seed's events). */
const SHORT_LEAD_MS = 200;
/** A client waits this long after a "not applied" reply before its next request. */
const CLIENT_BACKOFF_MS = 30;
const STRICT_KEYS = ['s1', 's2', 's3', 's4', 's5', 's6'];
/** Served from windows (`--window-keys w*`). */
const WINDOW_KEYS = ['w1', 'w2', 'w3'];
/** Milliseconds since the epoch at virtual time 0 (what token records would hold). */
const EPOCH_MS = 1_800_000_000_000;

export interface NodesSimOptions {
  readonly seed: number;
  readonly faultMs?: number;
  readonly trace?: (line: string) => void;
  /**
   * A short seed (the test suite's): clients start just before the faults
   * rather than during the set-up, and after the heal each stops once served
   * (SimPhases.stopOnceLive). Faults, checks and bounds are the same.
   */
  readonly short?: boolean;
}

export interface NodesSimStats {
  events: number;
  acked: number;
  reads: number;
  refused: number;
  unknown: number;
  moved: number;
  crashes: number;
  pauses: number;
  /** Longest arrival-to-reply time seen at a member that ran throughout, in its milliseconds. */
  replyMsMax: number;
}

export type NodesSimResult = SimResult<NodesSimStats>;

interface Running {
  readonly clock: NodeClock;
  readonly transport: MemoryTransport;
  /** Null while the member is still opening (probe, first commit). */
  engine: ClusterEngine | null;
  router: ClusterRouter | null;
}

class SimMember {
  running: Running | null = null;
  diskLatencyMsMax = 1;
  /** Virtual times [from, to] when the process ran nothing (paused or down). */
  readonly stalls: [number, number][] = [];
  downSinceMs = -1;

  constructor(
    readonly id: NodeId,
    readonly name: string,
    readonly config: Config,
    readonly log: MemoryNodeLog,
    readonly keyspace: MemoryKeyspace,
  ) {}

  /** Whether the process ran throughout virtual [from, to]. */
  ranThroughout(from: number, to: number): boolean {
    if (this.downSinceMs >= 0 && this.downSinceMs <= to) return false;
    return !this.stalls.some(([a, b]) => a <= to && b >= from);
  }
}

type Command = 'incr' | 'get';

interface ClientOp {
  readonly id: number;
  readonly command: Command;
  readonly key: string;
  readonly startMs: number;
}

class SimClient {
  current: ClientOp | null = null;
  /** Cluster-aware clients: where MOVED said each slot is. */
  readonly slots = new Map<number, SimMember>();
  constructor(
    readonly id: number,
    readonly clusterAware: boolean,
  ) {}
}

interface KeyHistory {
  readonly timeline: Timeline;
  readonly values: Set<bigint>;
  acked: number;
  unknown: number;
}

export class NodesSimulation extends SimulationBase<NodesSimStats> {
  private readonly hub: MemoryHub;
  private readonly members: SimMember[] = [];
  private readonly byId = new Map<NodeId, SimMember>();
  private readonly byAddress = new Map<string, SimMember>();
  protected readonly clients: SimClient[] = [];
  private readonly commands: CommandTable = buildCommandTable();
  private readonly groupCount: number;
  private readonly baseDelayMs: number;
  private nextOpId = 1;
  private readonly histories = new Map<string, KeyHistory>();
  readonly stats: NodesSimStats = { events: 0, acked: 0, reads: 0, refused: 0, unknown: 0, moved: 0, crashes: 0, pauses: 0, replyMsMax: 0 };

  constructor(opts: NodesSimOptions) {
    super(opts.seed, opts.trace, {
      setupMs: SETUP_MS,
      faultMs: opts.faultMs ?? DEFAULT_NODES_FAULT_MS,
      livenessMs: LIVENESS_MS,
      settleMs: SETTLE_MS,
      stopOnceLive: opts.short === true,
    });
    const memberCount = this.rng.pick([3, 3, 5]);
    this.groupCount = this.rng.pick([2, 3, 4]);
    this.baseDelayMs = this.rng.pick([0.5, 2, 5]);
    const hubRng = this.rng.fork();
    this.hub = new MemoryHub({ random: () => hubRng.float(), scheduler: this.scheduler() });
    const list = Array.from({ length: memberCount }, (_, i) => `10.0.0.${i + 1}:6379`).join(',');
    for (let i = 1; i <= memberCount; i++) {
      const config: Config = {
        ...DEFAULT_CONFIG,
        host: `10.0.0.${i}`,
        dataDir: `sim/n${i}`,
        cluster: list,
        groups: this.groupCount,
        requestTimeoutMs: REQUEST_TIMEOUT_MS,
        windowKeys: ['w*'],
        windowSize: BigInt(this.rng.pick([2, 5, 20])),
        explicit: new Set<string>(),
      };
      const latencyMs = (): number => this.rng.float() * member.diskLatencyMsMax;
      const memberTimers = this.memberTimers(() => member);
      const member: SimMember = new SimMember(
        memberId(config.host, config.port),
        `n${i}`,
        config,
        new MemoryNodeLog(`sim log of n${i}`, latencyMs, memberTimers),
        new MemoryKeyspace(0, memberTimers),
      );
      this.members.push(member);
      this.byId.set(member.id, member);
      this.byAddress.set(`${config.host}:${config.port}`, member);
    }
    this.log(`config members=${memberCount} groups=${this.groupCount} delay=${this.baseDelayMs}ms`);
    for (const m of this.members) this.start(m);
    for (let c = 0; c < CLIENTS; c++) {
      const client = new SimClient(c, c % 2 === 1);
      this.clients.push(client);
      this.at((opts.short === true ? SETUP_MS - SHORT_LEAD_MS : SETUP_MS / 2) + this.rng.int(1, 50), () => this.issue(client));
    }
  }

  // ------------------------------------------------------------------ time

  /** A member's disk completes its work on the member's clock (held while paused, never after a kill). */
  private memberTimers(member: () => SimMember): MemoryScheduler {
    const clock = (): NodeClock | null => member().running?.clock ?? null;
    return {
      endOfTurn: (fn) => clock()?.endOfTurn(fn),
      after: (ms, fn) => clock()?.after(ms, fn) ?? (() => undefined),
    };
  }

  // --------------------------------------------------------------- members

  private start(m: SimMember): void {
    const rate = this.rng.chance(0.3) ? SLOW_CLOCK_RATE : 1;
    const clock = new NodeClock(this, rate);
    const random = this.rng.fork();
    const runtime: NodeRuntime = {
      now: clock.now,
      wallClockMs: () => EPOCH_MS + clock.now(),
      scheduler: clock,
      random: () => random.float(),
    };
    const transport = this.hub.transport(m.id);
    const running: Running = { clock, transport, engine: null, router: null };
    m.running = running;
    m.downSinceMs = -1;
    const storage: NodeStorage = { log: m.log, keyspace: m.keyspace, close: () => Promise.resolve() };
    const trace = (line: string): void => this.log(`${m.name}: ${line}`);
    ClusterEngine.open(m.config, storage, { transport: new NodeTransport(transport, clock), runtime, log: trace }).then(
      (engine) => {
        if (m.running !== running) return; // killed while starting: its clock runs nothing more
        running.engine = engine;
        running.router = this.serve(m, engine, runtime);
        for (const [groupId, replica] of engine.replicas) {
          replica.raft.onLeadershipChange((isLeader, term) => this.log(`${m.name} g${groupId} ${isLeader ? 'LEADS' : 'stops leading'} term ${term}`));
        }
        this.log(`${m.name} serves${rate !== 1 ? ` (slow clock x${rate})` : ''}`);
      },
      (e: unknown) => {
        if (m.running !== running) return;
        this.asyncError = new SimFailure(`${m.name} failed to start: ${(e as Error).message}`);
      },
    );
  }

  /** What the server does for a cluster member: the router over the engine, with a context of its own. */
  private serve(m: SimMember, engine: ClusterEngine, runtime: NodeRuntime): ClusterRouter {
    const router = new ClusterRouter(engine, this.commands);
    const context: ServerContext = {
      config: m.config,
      group: router.nodeGroup,
      windows: new WindowAllocator(router.nodeGroup, { now: runtime.now }),
      windowStats: () => router.windowStats(),
      startedAtMs: runtime.wallClockMs(),
      wallClockMs: runtime.wallClockMs,
      version: 'sim',
      runId: m.name,
      stats: { connectionsReceived: 0, commandsProcessed: 0, rejectedConnections: 0, protocolErrors: 0, errorReplies: 0 },
      connections: new Set(),
      port: m.config.port,
      commands: this.commands,
      cluster: engine,
      host: engine.host,
    };
    router.attach(context);
    return router;
  }

  /** Kill -9: the process stops at once, what its disk had not committed is lost, its links drop. */
  protected stopAll(): void {
    for (const m of this.members) this.kill(m);
  }

  private kill(m: SimMember): void {
    const r = m.running;
    if (r === null) return;
    m.running = null;
    m.downSinceMs = this.now;
    r.clock.kill();
    r.engine?.host.halt();
    m.log.crash();
    m.keyspace.crash();
    void r.transport.close();
  }

  private restart(m: SimMember): void {
    if (m.running !== null) return;
    this.log(`${m.name} RESTART`);
    m.stalls.push([m.downSinceMs, this.now]);
    this.start(m);
  }

  private pause(m: SimMember, pauseMs: number): void {
    const r = m.running;
    if (r !== null) this.pauseProcess(r.clock, m.name, pauseMs, (fromMs) => this.resume(m, r, fromMs));
  }

  /** SIGCONT, unless the heal resumed the member already. */
  private resume(m: SimMember, r: Running, fromMs: number): void {
    if (!r.clock.paused) return;
    m.stalls.push([fromMs, this.now]);
    this.resumeProcess(r.clock, m.name);
  }

  /** The member leading `groupId` in the highest term, if any. */
  private leaderOf(groupId: number): SimMember | null {
    let best: { member: SimMember; term: number } | null = null;
    for (const m of this.members) {
      const raft = m.running?.engine?.replicas.get(groupId)?.raft;
      if (raft === undefined || !raft.isLeader()) continue;
      const term = raft.node.status().term;
      if (best === null || term > best.term) best = { member: m, term };
    }
    return best?.member ?? null;
  }

  // --------------------------------------------------------------- clients

  private issue(c: SimClient): void {
    if (!this.clientRuns(c.id)) return;
    const read = this.rng.chance(0.2);
    const key = read ? this.rng.pick(STRICT_KEYS) : this.rng.pick(this.rng.chance(0.7) ? STRICT_KEYS : WINDOW_KEYS);
    const op: ClientOp = { id: this.nextOpId++, command: read ? 'get' : 'incr', key, startMs: this.now };
    c.current = op;
    const slot = keySlot(Buffer.from(key));
    const target = (c.clusterAware ? c.slots.get(slot) : undefined) ?? this.rng.pick(this.members);
    this.send(c, op, target);
    this.at(this.now + CLIENT_TIMEOUT_MS, () => {
      if (c.current !== op) return;
      this.log(`client${c.id} op${op.id} no reply (outcome unknown)`);
      this.settle(c, op, { kind: 'unknown' });
    });
  }

  private send(c: SimClient, op: ClientOp, target: SimMember): void {
    this.log(`client${c.id} op${op.id} ${op.command.toUpperCase()} ${op.key} -> ${target.name}${c.clusterAware ? ' (cluster-aware)' : ''}`);
    this.at(this.now + this.netDelay(), () => {
      const r = target.running;
      if (r === null) return; // connection refused: the client times out
      r.clock.io(() => {
        const router = r.router;
        if (router === null) return; // not serving yet: as a refused connection
        const spec = this.commands.get(op.command);
        if (spec === undefined) throw new Error(`no command ${op.command}`);
        const arrivedMs = this.now;
        const arrivedLocalMs = r.clock.now();
        let answered = false;
        router.route(spec, [Buffer.from(op.command), Buffer.from(op.key)], 2, c.clusterAware, (reply) => {
          if (answered) this.fail(`op${op.id} answered twice by ${target.name}`);
          answered = true;
          if (target.running === r && target.ranThroughout(arrivedMs, this.now)) {
            const tookMs = r.clock.now() - arrivedLocalMs;
            this.stats.replyMsMax = Math.max(this.stats.replyMsMax, tookMs);
            if (tookMs > REPLY_BOUND_MS)
              this.fail(`op${op.id} ${op.command} ${op.key} answered by ${target.name} after ${tookMs.toFixed(1)} ms, past the bound ${REPLY_BOUND_MS} ms`);
          }
          this.at(this.now + this.netDelay(), () => {
            if (c.current === op) this.receive(c, op, target, reply);
          });
        });
      });
    });
  }

  private receive(c: SimClient, op: ClientOp, from: SimMember, reply: Reply): void {
    const r = simpleReply(reply);
    if (r.kind === 'integer' || r.kind === 'null')
      return this.settle(c, op, r.kind === 'integer' ? { kind: 'value', value: r.value } : { kind: 'value', value: 0n });
    if (r.kind !== 'error') this.fail(`op${op.id}: unexpected reply ${JSON.stringify(r)}`);
    const text = r.value;
    if (text.startsWith('MOVED ')) {
      if (!c.clusterAware) this.fail(`op${op.id}: MOVED to a plain client`);
      const [, slotText, address] = text.split(' ');
      const to = this.byAddress.get(address ?? '');
      if (to === undefined) this.fail(`op${op.id}: MOVED to unknown ${address}`);
      this.stats.moved++;
      c.slots.set(Number(slotText), to);
      this.log(`client${c.id} op${op.id} MOVED ${from.name} -> ${to.name}`);
      return this.send(c, op, to);
    }
    const key = errorKeyOf(text);
    if (key === 'notLeader') this.fail(`op${op.id}: "${text}" reached a client: routing retries a write refused for lost leadership`);
    if (key !== null && WRITE_OUTCOME_UNKNOWN.has(key)) return this.settle(c, op, { kind: 'unknown' });
    if (key !== null && (WRITE_NOT_APPLIED.has(key) || key === 'readTimeout')) return this.settle(c, op, { kind: 'refused', text });
    this.fail(`op${op.id} ${op.command} ${op.key}: unexpected error "${text}" from ${from.name}`);
  }

  private settle(c: SimClient, op: ClientOp, outcome: { kind: 'value'; value: bigint } | { kind: 'unknown' } | { kind: 'refused'; text: string }): void {
    c.current = null;
    const h = this.history(op.key);
    if (outcome.kind === 'value') {
      if (op.command === 'get') {
        this.stats.reads++;
        const before = h.timeline.beforeMax(op.startMs);
        if (before !== null && outcome.value < before)
          this.fail(`${op.key}: GET (op${op.id}) read ${outcome.value}, below ${before} acknowledged before it was sent`);
      } else {
        this.stats.acked++;
        h.acked++;
        if (h.values.has(outcome.value)) this.fail(`${op.key}: ${outcome.value} handed out twice (op${op.id})`);
        h.values.add(outcome.value);
        const before = h.timeline.beforeMax(op.startMs);
        if (before !== null && outcome.value <= before)
          this.fail(`${op.key}: ${outcome.value} (op${op.id}) is not above ${before}, handed out before it was sent`);
        h.timeline.add(this.now, outcome.value);
      }
      this.acknowledged(c.id, op.startMs);
      this.log(`client${c.id} op${op.id} -> ${outcome.value}`);
      this.issue(c);
      return;
    }
    if (outcome.kind === 'unknown') {
      this.stats.unknown++;
      if (op.command === 'incr') h.unknown++;
      this.log(`client${c.id} op${op.id} outcome unknown`);
    } else {
      this.stats.refused++;
      this.log(`client${c.id} op${op.id} refused: ${outcome.text}`);
    }
    c.slots.clear();
    this.at(this.now + CLIENT_BACKOFF_MS, () => this.issue(c));
  }

  private history(key: string): KeyHistory {
    let h = this.histories.get(key);
    if (h === undefined) {
      h = { timeline: new Timeline(), values: new Set(), acked: 0, unknown: 0 };
      this.histories.set(key, h);
    }
    return h;
  }

  private netDelay(): number {
    return this.baseDelayMs * (0.5 + this.rng.float());
  }

  // ----------------------------------------------------------------- faults

  private setLinks(): void {
    for (const a of this.members) {
      for (const b of this.members) {
        if (a !== b) this.hub.setDelay(a.id, b.id, this.baseDelayMs * (0.5 + this.rng.float()));
      }
    }
  }

  protected scheduleNextFault(): void {
    this.at(this.now + 100 + this.rng.float() * 600, () => {
      if (!this.faultsActive) return;
      this.injectFault();
      this.scheduleNextFault();
    });
  }

  private injectFault(): void {
    const someGroup = (): number => this.rng.int(0, this.groupCount);
    switch (this.rng.int(0, 9)) {
      case 0: {
        this.hub.healAll();
        const side = this.members.filter(() => this.rng.chance(0.5));
        for (const a of side) for (const b of this.members) if (!side.includes(b)) this.hub.partition(a.id, b.id);
        this.log(`FAULT partition [${side.map((m) => m.name).join(',')}] | rest`);
        break;
      }
      case 1: {
        const l = this.leaderOf(someGroup());
        if (l === null) break;
        this.hub.healAll();
        this.hub.isolate(l.id);
        this.log(`FAULT isolate leader ${l.name}`);
        break;
      }
      case 2: {
        const [a, b] = [this.rng.pick(this.members), this.rng.pick(this.members)];
        if (a === b) break;
        this.hub.partition(a.id, b.id);
        this.log(`FAULT cut link ${a.name} <-> ${b.name}`);
        break;
      }
      case 3:
        this.hub.healAll();
        this.log('FAULT heal network');
        break;
      case 4:
      case 5: {
        const l = this.leaderOf(someGroup());
        const m = l !== null && this.rng.chance(0.5) ? l : this.rng.pick(this.members);
        if (m.running === null) break;
        this.stats.crashes++;
        this.log(`FAULT kill ${m.name}`);
        this.kill(m);
        this.at(this.now + 100 + this.rng.float() * 1500, () => {
          if (this.faultsActive) this.restart(m);
        });
        break;
      }
      case 6: {
        const l = this.leaderOf(someGroup());
        const m = l !== null && this.rng.chance(0.7) ? l : this.rng.pick(this.members);
        this.pause(m, this.rng.pick([50, 300, 1200]) * (0.5 + this.rng.float()));
        break;
      }
      case 7: {
        const m = this.rng.pick(this.members);
        m.diskLatencyMsMax = this.rng.pick([1, 10, 40]);
        this.log(`FAULT disk of ${m.name}: commits take up to ${m.diskLatencyMsMax} ms`);
        break;
      }
      default: {
        for (const a of this.members) for (const b of this.members) if (a !== b) this.hub.setLossRate(a.id, b.id, 0.2);
        this.log('FAULT loss burst');
        this.at(this.now + 50 + this.rng.float() * 200, () => {
          for (const a of this.members) for (const b of this.members) if (a !== b) this.hub.setLossRate(a.id, b.id, 0);
        });
        break;
      }
    }
  }

  protected healAll(): void {
    this.faultsActive = false;
    this.healMs = this.now;
    this.hub.healAll();
    this.setLinks();
    for (const m of this.members) {
      m.diskLatencyMsMax = 1;
      if (m.running === null) this.restart(m);
      else if (m.running.clock.paused) this.resume(m, m.running, this.now);
    }
    this.log(`HEAL all faults; liveness bound ${LIVENESS_MS} ms`);
  }

  // ---------------------------------------------------------------- checks

  protected checkFinal(): void {
    for (const key of [...STRICT_KEYS, ...WINDOW_KEYS]) {
      const h = this.histories.get(key);
      if (h === undefined) continue;
      const topology = this.members[0]?.running?.engine?.topology;
      if (topology === undefined) this.fail(`n1 is not serving at the end`);
      const group = topology.group(topology.groupOfSlot(keySlot(Buffer.from(key))));
      if (group === undefined) this.fail(`${key}: no group for its slot`);
      const stored = new Set<string>();
      let value: bigint | null = null;
      for (const id of group.replicas) {
        const m = this.byId.get(id);
        const raft = m?.running?.engine?.replicas.get(group.id)?.raft;
        if (raft === undefined) this.fail(`${key}: replica ${m?.name ?? id} of group ${group.id} is not running at the end`);
        const v = raft.peek(key);
        value = typeof v === 'bigint' ? v : isSequence(v) ? v.reservedHigh : 0n;
        stored.add(String(value));
      }
      if (stored.size !== 1) this.fail(`${key}: replicas disagree at the end: ${[...stored].join(', ')}`);
      const max = h.timeline.max;
      if (value === null || (max !== null && value < max)) this.fail(`${key}: final value ${value} below ${max}, acknowledged`);
      if (STRICT_KEYS.includes(key) && value !== null && value > BigInt(h.acked + h.unknown)) {
        this.fail(
          `${key}: final value ${value}, but only ${h.acked} INCRs were acknowledged and ${h.unknown} had an unknown outcome: a write answered "not applied" was applied`,
        );
      }
    }
  }
}

/** Replies as a client reads them: relayed (encoded) replies decoded for the kinds INCR and GET have. */
function simpleReply(reply: Reply): { kind: 'integer'; value: bigint } | { kind: 'error'; value: string } | { kind: 'null' } | { kind: 'other'; text: string } {
  if (reply.kind === 'integer') return { kind: 'integer', value: BigInt(reply.value) };
  if (reply.kind === 'error') return { kind: 'error', value: reply.value };
  if (reply.kind === 'null') return { kind: 'null' };
  if (reply.kind === 'bulk') return { kind: 'integer', value: BigInt(reply.value.toString('latin1')) };
  if (reply.kind !== 'encoded') return { kind: 'other', text: reply.kind };
  const text = reply.bytes.toString('latin1');
  const body = text.slice(1, text.indexOf('\r\n'));
  switch (text[0]) {
    case ':':
      return { kind: 'integer', value: BigInt(body) };
    case '-':
      return { kind: 'error', value: body };
    case '$':
      if (body === '-1') return { kind: 'null' };
      return { kind: 'integer', value: BigInt(text.slice(text.indexOf('\r\n') + 2, text.length - 2)) };
    case '_':
      return { kind: 'null' };
    default:
      return { kind: 'other', text };
  }
}

const ERROR_KEYS = new Map<string, ErrorKey>(Object.entries(ERR).map(([k, v]) => [v, k as ErrorKey]));

function errorKeyOf(text: string): ErrorKey | null {
  return ERROR_KEYS.get(text) ?? null;
}

export async function runNodesSeed(seed: number, trace?: (line: string) => void, faultMs?: number): Promise<NodesSimResult> {
  const opts: NodesSimOptions = { seed, ...(trace === undefined ? {} : { trace }), ...(faultMs === undefined ? {} : { faultMs }) };
  return new NodesSimulation(opts).run();
}
