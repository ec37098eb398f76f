// Seeded simulation of the multiraft layer on virtual time: several nodes,
// each a real MultiRaftHost driving several Raft groups over the node's real
// log (WalStore, segment files and all) on a simulated disk (SimDisk,
// sim/disk.ts: a crash loses every unsynced write, may leave a
// torn piece of the last one, and loses directory changes not synced), and one
// in-memory transport per node, all on one MemoryHub (partitions, one-way
// cuts, loss, delay). A restart reopens the log from what the disk kept, so
// the real recovery (torn tails cut, the rest replayed) runs after every
// crash. The hosts' loop turns, ticks, disk operations and message
// deliveries are events of one virtual clock; promise continuations run
// between events, as Node runs them between callbacks.
//
// Clients increment strict keys (INCR: a proposal per request) and take ranges
// from window keys (SEQNEXT COUNT n: the leader's WindowAllocator, served from
// memory under the leader lease). Faults: partitions, an isolated leader that
// still believes it leads, crashes (some while a log fdatasync is in flight)
// and restarts, process pauses (SIGSTOP: the node's timers, disk completions,
// messages and client requests are held and run late, requests first), slow
// disks, full disks, loss bursts, slow clocks (within the lease's drift bound)
// and leader transfers.
//
// Checked, per key: no value handed out twice; real-time order (an operation
// that completed before another was invoked got smaller values); no
// acknowledged value lost (the final state is at or above every acknowledged
// value); "not applied" really not applied (on a strict counter every applied
// INCR took one value, so the final value is at most the acknowledged INCRs
// plus those whose outcome the client does not know). Per group: one leader per term, at most one replica allowed to serve
// window values at any instant, and identical state machines on every replica
// at the end. Liveness: once faults heal, every client gets an acknowledgement.
// A failing seed prints itself and replays exactly.

import { WRITE_NOT_APPLIED, type ErrorKey } from '../src/errors.js';
import type { WindowLease } from '../src/multiraft/group.js';
import { MultiRaftHost } from '../src/multiraft/host.js';
import type { RaftGroup } from '../src/multiraft/raft-group.js';
import { WindowAllocator, type Allocation } from '../src/multiraft/window.js';
import { Role } from '../src/raft/index.js';
import { snapshotState } from '../src/sequencer/codec.js';
import { isSequence, type SequenceSpec } from '../src/sequencer/sequence.js';
import type { OpResult } from '../src/sequencer/state-machine.js';
import { SEGMENT_BYTES_MIN } from '../src/storage/segments.js';
import { SimDisk, type SimCrashReport, type SimDiskOp } from './disk.js';
import { WalStore } from '../src/storage/wal-store.js';
import { MemoryHub, type MemoryTransport } from '../src/transport/memory.js';
import type { NodeId, PeerAddress } from '../src/transport/types.js';
import { NodeClock, NodeTransport, SimulationBase, type SimResult } from './base.js';

/** Virtual milliseconds between host ticks (a node with a slow clock: times SLOW_CLOCK_RATE). */
export const MR_TICK_MS = 10;
/**
 * A slow node's timers and clock run this much slower than real time: 10%
 * over an election timeout, one tick of 10, within the default lease drift
 * bound (leaseClockDriftTicks 2), so window values must stay in real-time order.
 */
const SLOW_CLOCK_RATE = 1.1;
/** Hosts' request timeout (and how long window requests wait for the lease), in local milliseconds. */
const REQUEST_TIMEOUT_MS = 1000;
/** A client gives up on a request (outcome unknown) after this long. */
const CLIENT_TIMEOUT_MS = 1500;
/** Before faults start: groups elect leaders and the window sequences are created. */
const SETUP_MS = 600;
/** Virtual milliseconds of faults per seed, by default. */
export const DEFAULT_MR_FAULT_MS = 6000;
/** Once faults heal, every client must have an acknowledgement within this long. */
const LIVENESS_MS = 3000;
/** After the liveness check clients stop; the groups get this long to converge. */
const SETTLE_MS = 1500;
/** Segment sizes drawn per seed: small ones rotate, checkpoint and delete segments often. */
const SEGMENT_BYTES_CHOICES = [SEGMENT_BYTES_MIN * 8, 64 * 1024, 1024 * 1024];
/** A crash waiting for the node's next fdatasync happens anyway after this long (virtual ms). */
const CRASH_DURING_SYNC_WAIT_MS = 100;
/** Clients, each with one request at a time; a fifth of the requests go to a random node rather than the known leader. */
const CLIENTS = 10;
const RANDOM_TARGET_CHANCE = 0.2;
const STRICT_KEYS = ['s1', 's2', 's3', 's4'];
const WINDOW_KEYS = ['w1', 'w2', 'w3', 'w4'];

export interface MultiraftSimOptions {
  readonly seed: number;
  readonly faultMs?: number;
  readonly trace?: (line: string) => void;
}

export interface MultiraftSimStats {
  events: number;
  strictAcked: number;
  windowAcked: number;
  windowValues: number;
  refused: number;
  unknown: number;
  /** Window requests answered `windowLease` (waited past the request timeout). */
  leaseTimeouts: number;
  /** Requests that reached a replica believing it leads while a later term's leader existed. */
  staleLeaderRequests: number;
  elections: number;
  crashes: number;
  pauses: number;
  transfers: number;
  /** Crashes that left a piece (torn, whole or garbage) of an unsynced write on the disk. */
  tornWrites: number;
  /** Torn tails the log's recovery found and cut on restart. */
  tornTailsCut: number;
  /** Times a node's disk filled up. */
  diskFull: number;
}

export type MultiraftSimResult = SimResult<MultiraftSimStats>;

interface Running {
  readonly clock: NodeClock;
  readonly host: MultiRaftHost;
  readonly transport: MemoryTransport;
  readonly windows: Map<number, WindowAllocator>;
}

class SimNode {
  running: Running | null = null;
  /** The clock of the node's current (or last) process: its disk completes operations on it. */
  clock: NodeClock | null = null;
  diskLatencyMsMax = 1;
  /** Set: crash (and restart) while the next fdatasync of the node's disk is in flight. */
  crashDuringSync: (() => void) | null = null;
  readonly disk: SimDisk;
  /** The data directory on the node's disk (the log is in DIR/wal/). */
  readonly dataDir: string;
  constructor(
    readonly id: NodeId,
    random: () => number,
    delayMs: (op: SimDiskOp) => number,
  ) {
    this.dataDir = `/${id}`;
    this.disk = new SimDisk({
      random,
      scheduler: { after: (ms, fn) => void this.clock?.after(ms, fn) },
      delayMs,
    });
    this.disk.mkdirSync(this.dataDir);
    this.disk.syncDirSync('/');
  }
}

/** Per key: completed operations in completion order, with the running maximum of their last values. */
export class Timeline {
  private readonly ends: number[] = [];
  private readonly maxes: bigint[] = [];

  add(end: number, last: bigint): void {
    const n = this.maxes.length;
    const prev = n > 0 ? (this.maxes[n - 1] as bigint) : last;
    this.ends.push(end);
    this.maxes.push(last > prev ? last : prev);
  }

  /** Largest value handed out by an operation that completed strictly before `time`, or null. */
  beforeMax(time: number): bigint | null {
    let lo = 0;
    let hi = this.ends.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((this.ends[mid] as number) < time) lo = mid + 1;
      else hi = mid;
    }
    return lo === 0 ? null : (this.maxes[lo - 1] as bigint);
  }

  get max(): bigint | null {
    const n = this.maxes.length;
    return n === 0 ? null : (this.maxes[n - 1] as bigint);
  }
}

/** Per key: every acknowledged range, sorted, to find overlaps. */
export class RangeSet {
  private readonly firsts: bigint[] = [];
  private readonly lasts: bigint[] = [];

  /** Adds [first, last]; returns an overlapping range already present, or null. */
  add(first: bigint, last: bigint): [bigint, bigint] | null {
    let lo = 0;
    let hi = this.firsts.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((this.firsts[mid] as bigint) < first) lo = mid + 1;
      else hi = mid;
    }
    const prev = lo - 1;
    if (prev >= 0 && (this.lasts[prev] as bigint) >= first) return [this.firsts[prev] as bigint, this.lasts[prev] as bigint];
    if (lo < this.firsts.length && (this.firsts[lo] as bigint) <= last) return [this.firsts[lo] as bigint, this.lasts[lo] as bigint];
    this.firsts.splice(lo, 0, first);
    this.lasts.splice(lo, 0, last);
    return null;
  }
}

type Reply =
  | { readonly kind: 'ok'; readonly first: bigint; readonly last: bigint }
  | { readonly kind: 'refused'; readonly leader: NodeId | null; readonly error: string }
  | { readonly kind: 'unknown'; readonly error: string };

interface ClientOp {
  readonly id: number;
  readonly key: string;
  readonly window: boolean;
  readonly count: bigint;
  readonly target: NodeId;
  readonly startMs: number;
}

class SimClient {
  current: ClientOp | null = null;
  readonly leaderGuess = new Map<number, NodeId>();
  constructor(readonly id: number) {}
}

export class MultiraftSimulation extends SimulationBase<MultiraftSimStats> {
  private readonly hub: MemoryHub;
  private readonly nodes = new Map<NodeId, SimNode>();
  private readonly nodeIds: NodeId[] = [];
  private readonly groupIds: number[] = [];
  protected readonly clients: SimClient[] = [];
  private readonly windowSize: bigint;
  private readonly heartbeatIntervalTicks: number;
  private readonly snapshotEntries: number;
  private readonly baseDelayMs: number;
  private readonly baseLossRate: number;
  private readonly segmentBytes: number;
  private nextOpId = 1;
  private readonly created = new Set<string>();
  readonly stats: MultiraftSimStats = {
    events: 0,
    strictAcked: 0,
    windowAcked: 0,
    windowValues: 0,
    refused: 0,
    unknown: 0,
    leaseTimeouts: 0,
    staleLeaderRequests: 0,
    elections: 0,
    crashes: 0,
    pauses: 0,
    transfers: 0,
    tornWrites: 0,
    tornTailsCut: 0,
    diskFull: 0,
  };

  // Checker state.
  private readonly timelines = new Map<string, Timeline>();
  /** Per strict key: INCRs acknowledged, and INCRs whose outcome the client does not know (timed out, "outcome unknown"). */
  private readonly strictOutcomes = new Map<string, { acked: number; unknown: number }>();
  private readonly ranges = new Map<string, RangeSet>();
  /** Per group: the leader of each term seen. */
  private readonly leaderOfTerm = new Map<number, Map<number, NodeId>>();

  constructor(opts: MultiraftSimOptions) {
    super(opts.seed, opts.trace, { setupMs: SETUP_MS, faultMs: opts.faultMs ?? DEFAULT_MR_FAULT_MS, livenessMs: LIVENESS_MS, settleMs: SETTLE_MS });
    const nodeCount = this.rng.pick([3, 3, 3, 5]);
    const groupCount = this.rng.pick([2, 3, 4]);
    this.windowSize = BigInt(this.rng.pick([2, 5, 20, 100]));
    this.heartbeatIntervalTicks = this.rng.pick([1, 2]);
    this.snapshotEntries = this.rng.pick([30, 200, 100000]);
    this.baseDelayMs = this.rng.pick([0.5, 2, 5]);
    this.baseLossRate = this.rng.pick([0, 0, 0.01, 0.05]);
    this.segmentBytes = this.rng.pick(SEGMENT_BYTES_CHOICES);
    const hubRng = this.rng.fork();
    this.hub = new MemoryHub({ random: () => hubRng.float(), scheduler: this.scheduler() });
    for (let i = 1; i <= nodeCount; i++) this.nodeIds.push(`n${i}`);
    for (let g = 1; g <= groupCount; g++) this.groupIds.push(g);
    this.log(
      `config nodes=${nodeCount} groups=${groupCount} window=${this.windowSize} heartbeat=${this.heartbeatIntervalTicks} ` +
        `snapshotEntries=${this.snapshotEntries} delay=${this.baseDelayMs}ms loss=${this.baseLossRate} segmentBytes=${this.segmentBytes}`,
    );
    for (const id of this.nodeIds) {
      // An fdatasync takes up to diskLatencyMsMax; other operations complete at the next event.
      const delayMs = (op: SimDiskOp): number => {
        if (op !== 'sync') return 0;
        const n = this.node(id);
        const ms = this.rng.float() * n.diskLatencyMsMax;
        const crash = n.crashDuringSync;
        if (crash !== null) {
          n.crashDuringSync = null;
          this.at(this.now + ms * this.rng.float(), crash);
        }
        return ms;
      };
      const diskRng = this.rng.fork();
      this.nodes.set(id, new SimNode(id, () => diskRng.float(), delayMs));
    }
    for (const id of this.nodeIds) this.start(this.node(id));
    this.setLinks();
    for (let c = 0; c < CLIENTS; c++) {
      const client = new SimClient(c);
      this.clients.push(client);
      this.at(this.rng.int(1, 50), () => this.clientIssue(client));
    }
    this.at(20, () => this.createWindowKeys());
  }

  // ----------------------------------------------------------------- nodes

  private node(id: NodeId): SimNode {
    const n = this.nodes.get(id);
    if (n === undefined) throw new Error(`no node ${id}`);
    return n;
  }

  private start(n: SimNode): void {
    const rate = this.rng.chance(0.3) ? SLOW_CLOCK_RATE : 1;
    const clock = new NodeClock(this, rate);
    // The disk completes operations on this process's clock (held while it is paused, dropped once it is killed).
    n.clock = clock;
    const store = WalStore.open(n.dataDir, {
      fsync: 'always',
      commitOffThread: true, // as a node with peers does: the write and its fdatasync complete on the virtual clock
      segmentBytes: this.segmentBytes,
      fs: n.disk,
      log: (line) => {
        if (/cut a torn tail/.test(line)) this.stats.tornTailsCut++;
        this.log(`${n.id} ${line}`);
      },
    });
    const inner = this.hub.transport(n.id);
    const peers = new Map<NodeId, PeerAddress>();
    for (const id of this.nodeIds) if (id !== n.id) peers.set(id, { host: id, port: 0 });
    inner.setPeers(peers);
    const hostRng = this.rng.fork();
    const host = new MultiRaftHost({
      nodeId: n.id,
      transport: new NodeTransport(inner, clock),
      store,
      random: () => hostRng.float(),
      tickIntervalMs: MR_TICK_MS,
      raft: { heartbeatIntervalTicks: this.heartbeatIntervalTicks },
      requestTimeoutMs: REQUEST_TIMEOUT_MS,
      snapshotEntries: this.snapshotEntries,
      logKeepEntries: 10,
      now: clock.now,
      scheduler: clock,
    });
    const windows = new Map<number, WindowAllocator>();
    n.running = { clock, host, transport: inner, windows };
    for (const g of this.groupIds) {
      const group = host.addGroup(g, this.nodeIds);
      const allocator = new WindowAllocator(group, { now: clock.now, leaseWaitMs: REQUEST_TIMEOUT_MS });
      group.onLeadershipChange((isLeader, term) => {
        this.log(`${n.id} g${g} ${isLeader ? 'LEADS' : 'stops leading'} term ${term}`);
        if (!isLeader) allocator.reset(); // as the server does: another node may serve the keys now
      });
      windows.set(g, allocator);
    }
    if (rate !== 1) this.log(`${n.id} starts with a slow clock (x${rate})`);
  }

  /**
   * Kill -9 and a power cut: the process stops at once (its log store is
   * dropped, never closed); the disk loses what was not synced; connections
   * drop. The next start reopens the log from what the disk kept.
   */
  protected stopAll(): void {
    for (const n of this.nodes.values()) this.stop(n);
  }

  private stop(n: SimNode): void {
    const r = n.running;
    if (r === null) return;
    n.running = null;
    r.clock.kill();
    r.host.halt();
    this.logCrash(n, n.disk.crash());
    void r.transport.close();
  }

  private logCrash(n: SimNode, report: SimCrashReport): void {
    if (report.torn.some((t) => t.kind !== 'lost')) this.stats.tornWrites++;
    const torn = report.torn.map((t) => `${t.path}@${t.offset}: ${t.kind} ${t.keptBytes} B`).join(', ');
    this.log(
      `${n.id} disk: ${report.filesRolledBack} files lost unsynced writes, ` +
        `${report.nameChangesLost} directory changes lost, ${report.nameChangesKept} kept${torn === '' ? '' : `; left of the last writes: ${torn}`}`,
    );
  }

  private crash(n: SimNode): void {
    n.crashDuringSync = null;
    if (n.running === null) return;
    this.stats.crashes++;
    this.log(`FAULT crash ${n.id}`);
    this.stop(n);
  }

  private restart(n: SimNode): void {
    if (n.running !== null) return;
    this.log(`${n.id} RESTART`);
    this.start(n);
  }

  private replicas(groupId: number): { node: SimNode; group: RaftGroup }[] {
    const out: { node: SimNode; group: RaftGroup }[] = [];
    for (const n of this.nodes.values()) {
      const g = n.running?.host.group(groupId);
      if (g !== undefined) out.push({ node: n, group: g });
    }
    return out;
  }

  private groupOf(key: string): number {
    let h = 0;
    for (let i = 0; i < key.length; i++) h = (h * 31 + key.charCodeAt(i)) >>> 0;
    return this.groupIds[h % this.groupIds.length] as number;
  }

  // ------------------------------------------------------------ window keys

  private windowSpec(key: string): SequenceSpec {
    return { id: `sim-${key}`, mode: 'window', start: 1n, step: 1n, max: 9223372036854775807n, windowSize: this.windowSize };
  }

  /** Creates the window sequences through whichever replica leads their group; retried until done. */
  private createWindowKeys(): void {
    for (const key of WINDOW_KEYS) {
      if (this.created.has(key)) continue;
      const leader = this.replicas(this.groupOf(key)).find((r) => r.group.isLeader());
      if (leader === undefined) continue;
      leader.group.propose({ type: 'seqcreate', key, spec: this.windowSpec(key), replace: false }, (r) => {
        if (r.type === 'ok' || (r.type === 'error' && r.error === 'seqExists')) {
          if (!this.created.has(key)) this.log(`window sequence ${key} created`);
          this.created.add(key);
        }
      });
    }
    if (this.created.size < WINDOW_KEYS.length) this.at(this.now + 20, () => this.createWindowKeys());
  }

  // --------------------------------------------------------------- clients

  private clientIssue(c: SimClient): void {
    if (!this.clientsRunning) return;
    const window = this.rng.chance(0.5);
    const key = this.rng.pick(window ? WINDOW_KEYS : STRICT_KEYS);
    const groupId = this.groupOf(key);
    let target = c.leaderGuess.get(groupId);
    if (target === undefined || this.rng.chance(RANDOM_TARGET_CHANCE)) target = this.rng.pick(this.nodeIds);
    const op: ClientOp = {
      id: this.nextOpId++,
      key,
      window,
      count: window ? BigInt(this.rng.int(1, 4)) : 1n,
      target,
      startMs: this.now,
    };
    c.current = op;
    this.log(`client${c.id} op${op.id} ${window ? `SEQNEXT ${key} COUNT ${op.count}` : `INCR ${key}`} -> ${target}`);
    this.at(this.now + this.netDelay(), () => this.nodeReceive(target, c, op));
    this.at(this.now + CLIENT_TIMEOUT_MS, () => {
      if (c.current !== op) return;
      this.stats.unknown++;
      this.noteStrict(op, 'unknown');
      this.log(`client${c.id} op${op.id} TIMEOUT (outcome unknown)`);
      c.current = null;
      c.leaderGuess.delete(groupId);
      this.clientIssue(c);
    });
  }

  private netDelay(): number {
    return this.baseDelayMs * (0.5 + this.rng.float());
  }

  private nodeReceive(target: NodeId, c: SimClient, op: ClientOp): void {
    const r = this.node(target).running;
    if (r === null) return; // connection refused: the client times out
    r.clock.io(() => {
      const groupId = this.groupOf(op.key);
      const group = r.host.group(groupId);
      if (group === undefined) throw new Error(`no group ${groupId} on ${target}`);
      if (group.isLeader() && this.newerLeaderExists(groupId, group)) this.stats.staleLeaderRequests++;
      const reply = (rep: Reply): void => this.replyToClient(r, c, op, rep);
      if (op.window) this.allocate(r, group, op, 0, reply);
      else group.propose({ type: 'incrby', key: op.key, delta: 1n }, (result) => reply(this.strictReply(group, result)));
    });
  }

  private newerLeaderExists(groupId: number, group: RaftGroup): boolean {
    const term = group.node.status().term;
    return this.replicas(groupId).some((x) => x.group !== group && x.group.isLeader() && x.group.node.status().term > term);
  }

  private strictReply(group: RaftGroup, result: OpResult): Reply {
    if (result.type === 'int') return { kind: 'ok', first: result.value, last: result.value };
    if (result.type === 'error') return this.errorReply(group, result.error);
    throw new Error(`INCR answered ${result.type}`);
  }

  private errorReply(group: RaftGroup, error: ErrorKey): Reply {
    if (WRITE_NOT_APPLIED.has(error)) return { kind: 'refused', leader: group.leaderId(), error };
    return { kind: 'unknown', error };
  }

  /** SEQNEXT key COUNT n on a window key, as the server runs it (retrying a window dropped under it). */
  private allocate(r: Running, group: RaftGroup, op: ClientOp, attempt: number, reply: (rep: Reply) => void): void {
    const value = group.peek(op.key);
    if (!isSequence(value) || value.mode !== 'window') {
      // Not created yet, or not applied on this replica yet: nothing allocated.
      reply({ kind: 'refused', leader: group.leaderId(), error: 'noSequence' });
      return;
    }
    const windows = r.windows.get(this.groupOf(op.key));
    if (windows === undefined) throw new Error('no window allocator');
    windows.allocate(op.key, value, op.count, (a: Allocation) => {
      if (a.ok) return reply({ kind: 'ok', first: a.first, last: a.last });
      if (a.error === 'retry') {
        if (attempt < 2) this.allocate(r, group, op, attempt + 1, reply);
        else reply({ kind: 'refused', leader: group.leaderId(), error: 'seqGone' });
        return;
      }
      if (a.error === 'windowLease') this.stats.leaseTimeouts++;
      reply(this.errorReply(group, a.error));
    });
  }

  private replyToClient(r: Running, c: SimClient, op: ClientOp, rep: Reply): void {
    if (!r.clock.alive) return; // the process died before the reply left
    this.at(this.now + this.netDelay(), () => {
      if (c.current !== op) return; // the client gave up on it
      c.current = null;
      const groupId = this.groupOf(op.key);
      switch (rep.kind) {
        case 'ok':
          this.recordAck(c, op, rep.first, rep.last);
          c.leaderGuess.set(groupId, op.target);
          this.at(this.now + this.rng.float() * 5, () => this.clientIssue(c));
          return;
        case 'refused':
          this.stats.refused++;
          this.log(`client${c.id} op${op.id} refused by ${op.target}: ${rep.error} (leader ${rep.leader ?? 'unknown'})`);
          if (rep.leader !== null && rep.leader !== op.target) c.leaderGuess.set(groupId, rep.leader);
          else c.leaderGuess.delete(groupId);
          this.at(this.now + 1 + this.rng.float() * 10, () => this.clientIssue(c));
          return;
        case 'unknown':
          this.stats.unknown++;
          this.noteStrict(op, 'unknown');
          this.log(`client${c.id} op${op.id} outcome unknown from ${op.target}: ${rep.error}`);
          c.leaderGuess.delete(groupId);
          this.at(this.now + 1 + this.rng.float() * 10, () => this.clientIssue(c));
          return;
      }
    });
  }

  private recordAck(c: SimClient, op: ClientOp, first: bigint, last: bigint): void {
    const key = op.key;
    this.log(`client${c.id} op${op.id} OK ${key}=${first === last ? `${first}` : `[${first},${last}]`}`);
    if (op.window) {
      this.stats.windowAcked++;
      if (last - first + 1n !== op.count) this.fail(`op${op.id} asked ${op.count} values of ${key}, got [${first}, ${last}]`);
      this.stats.windowValues += Number(op.count);
    } else {
      this.stats.strictAcked++;
      this.noteStrict(op, 'acked');
    }
    let set = this.ranges.get(key);
    if (set === undefined) {
      set = new RangeSet();
      this.ranges.set(key, set);
    }
    const clash = set.add(first, last);
    if (clash !== null) this.fail(`${key}: [${first}, ${last}] (op${op.id}) overlaps [${clash[0]}, ${clash[1]}] handed out before`);
    let t = this.timelines.get(key);
    if (t === undefined) {
      t = new Timeline();
      this.timelines.set(key, t);
    }
    const before = t.beforeMax(op.startMs);
    if (before !== null && first <= before) {
      this.fail(`${key}: ${first} (op${op.id}, started at ${op.startMs.toFixed(2)}) is not above ${before}, handed out before it started`);
    }
    t.add(this.now, last);
    this.acknowledged(c.id, op.startMs);
  }

  // ----------------------------------------------------------------- faults

  private setLinks(): void {
    for (const a of this.nodeIds) {
      for (const b of this.nodeIds) {
        if (a === b) continue;
        this.hub.setDelay(a, b, this.baseDelayMs * (0.5 + this.rng.float()));
        this.hub.setLossRate(a, b, this.baseLossRate);
      }
    }
  }

  protected scheduleNextFault(): void {
    this.at(this.now + 30 + this.rng.float() * 300, () => {
      if (!this.faultsActive) return;
      this.injectFault();
      this.scheduleNextFault();
    });
  }

  /** The node leading `groupId` in the highest term, if any. */
  private leaderOf(groupId: number): SimNode | null {
    let best: { node: SimNode; term: number } | null = null;
    for (const { node, group } of this.replicas(groupId)) {
      const st = group.node.status();
      if (st.role === Role.Leader && (best === null || st.term > best.term)) best = { node, term: st.term };
    }
    return best?.node ?? null;
  }

  private injectFault(): void {
    const kind = this.rng.int(0, 13);
    switch (kind) {
      case 0: {
        this.hub.healAll();
        const side = this.nodeIds.filter(() => this.rng.chance(0.5));
        for (const a of side) for (const b of this.nodeIds) if (!side.includes(b)) this.hub.partition(a, b);
        this.log(`FAULT partition [${side.join(',')}] | rest`);
        break;
      }
      case 1:
      case 2: {
        // A leader cut off from every other node while clients still reach it: it believes it leads for a while.
        const l = this.leaderOf(this.rng.pick(this.groupIds));
        if (l === null) break;
        this.hub.healAll();
        this.hub.isolate(l.id);
        this.log(`FAULT isolate leader ${l.id}`);
        break;
      }
      case 3: {
        const a = this.rng.pick(this.nodeIds);
        const b = this.rng.pick(this.nodeIds);
        if (a === b) break;
        this.hub.partitionOneWay(a, b);
        this.log(`FAULT one-way ${a} -x-> ${b}`);
        break;
      }
      case 4:
        this.hub.healAll();
        this.log('FAULT heal network');
        break;
      case 5: {
        const l = this.leaderOf(this.rng.pick(this.groupIds));
        const n = l !== null && this.rng.chance(0.5) ? l : this.node(this.rng.pick(this.nodeIds));
        const downMs = this.rng.chance(0.3) ? this.rng.float() * 50 : 50 + this.rng.float() * 500;
        const crashAndRestart = (): void => {
          if (!this.faultsActive) return; // healed meanwhile
          this.crash(n);
          this.at(this.now + downMs, () => {
            if (this.faultsActive) this.restart(n);
          });
        };
        if (n.running === null || this.rng.chance(0.5)) {
          crashAndRestart();
          break;
        }
        // While a turn's frame is written but not yet synced (a torn tail to cut on restart), or soon anyway.
        this.log(`FAULT ${n.id} will crash during its next log fdatasync`);
        n.crashDuringSync = crashAndRestart;
        this.at(this.now + CRASH_DURING_SYNC_WAIT_MS, () => {
          if (n.crashDuringSync !== crashAndRestart) return;
          n.crashDuringSync = null;
          crashAndRestart();
        });
        break;
      }
      case 6:
      case 7: {
        // SIGSTOP, then SIGCONT: often the leader, for less or more than an election timeout.
        const l = this.leaderOf(this.rng.pick(this.groupIds));
        const n = l !== null && this.rng.chance(0.7) ? l : this.node(this.rng.pick(this.nodeIds));
        this.pause(n, this.rng.pick([20, 60, 150, 400]) * (0.5 + this.rng.float()));
        break;
      }
      case 12: {
        // A leader that is cut off and stalls long enough for a new leader to serve meanwhile; clients still reach it.
        const l = this.leaderOf(this.rng.pick(this.groupIds));
        if (l === null) break;
        this.hub.healAll();
        this.hub.isolate(l.id);
        this.log(`FAULT isolate leader ${l.id}`);
        this.pause(l, 300 + this.rng.float() * 300);
        break;
      }
      case 8: {
        const n = this.node(this.rng.pick(this.nodeIds));
        n.diskLatencyMsMax = this.rng.pick([1, 5, 30]);
        this.log(`FAULT disk of ${n.id}: commits take up to ${n.diskLatencyMsMax} ms`);
        break;
      }
      case 9: {
        const groupId = this.rng.pick(this.groupIds);
        const l = this.leaderOf(groupId);
        const group = l?.running?.host.group(groupId);
        if (l === null || group === undefined || l.running?.clock.paused !== false) break;
        const target = this.rng.pick(this.nodeIds.filter((id) => id !== l.id));
        if (group.node.transferLeadership(target)) {
          this.stats.transfers++;
          this.log(`ADMIN g${groupId} transfer leadership ${l.id} -> ${target}`);
        }
        break;
      }
      case 13: {
        // The disk fills up for a while: the log's preallocated segment takes frames, but a new segment or a
        // snapshot file finds no room; the host refuses writes (MISCONF) and retries until space returns.
        const n = this.node(this.rng.pick(this.nodeIds));
        if (n.disk.full) break;
        n.disk.full = true;
        this.stats.diskFull++;
        const fullMs = 100 + this.rng.float() * 900;
        this.log(`FAULT disk of ${n.id} full for ${fullMs.toFixed(0)} ms`);
        this.at(this.now + fullMs, () => {
          if (!n.disk.full) return;
          n.disk.full = false;
          this.log(`${n.id} disk has room again`);
        });
        break;
      }
      case 10: {
        for (const a of this.nodeIds) for (const b of this.nodeIds) if (a !== b) this.hub.setLossRate(a, b, 0.3);
        this.log('FAULT loss burst');
        this.at(this.now + 20 + this.rng.float() * 100, () => {
          for (const a of this.nodeIds) for (const b of this.nodeIds) if (a !== b) this.hub.setLossRate(a, b, this.baseLossRate);
        });
        break;
      }
      default: {
        const a = this.rng.pick(this.nodeIds);
        const b = this.rng.pick(this.nodeIds);
        if (a === b) break;
        const ms = this.rng.pick([1, 10, 40]);
        this.hub.setDelay(a, b, ms);
        this.log(`FAULT link ${a} -> ${b} delay ${ms} ms`);
        break;
      }
    }
  }

  private pause(n: SimNode, pauseMs: number): void {
    const clock = n.running?.clock;
    if (clock !== undefined) this.pauseProcess(clock, n.id, pauseMs, () => this.resumeProcess(clock, n.id));
  }

  protected healAll(): void {
    this.faultsActive = false;
    this.healMs = this.now;
    this.hub.healAll();
    this.setLinks();
    for (const n of this.nodes.values()) {
      n.diskLatencyMsMax = 1;
      n.crashDuringSync = null;
      n.disk.full = false;
      if (n.running === null) this.restart(n);
      else n.running.clock.resume();
    }
    this.log(`HEAL all faults; liveness bound ${LIVENESS_MS} ms`);
  }

  // ---------------------------------------------------------------- checks

  protected override checkStep(): void {
    for (const g of this.groupIds) {
      let serving: NodeId | null = null;
      let terms = this.leaderOfTerm.get(g);
      if (terms === undefined) {
        terms = new Map();
        this.leaderOfTerm.set(g, terms);
      }
      for (const { node, group } of this.replicas(g)) {
        const st = group.node.status();
        if (st.role === Role.Leader) {
          const other = terms.get(st.term);
          if (other === undefined) {
            terms.set(st.term, node.id);
            this.stats.elections++;
          } else if (other !== node.id) {
            this.fail(`group ${g}: two leaders in term ${st.term}: ${other} and ${node.id}`);
          }
        }
        // A paused process runs nothing; what it would decide once it runs again is checked then.
        if (node.running?.clock.paused !== false) continue;
        const lease: WindowLease = group.windowLease();
        if (lease !== 'serve') continue;
        if (serving !== null) this.fail(`group ${g}: ${serving} and ${node.id} may both serve window values`);
        serving = node.id;
      }
    }
  }

  private noteStrict(op: ClientOp, outcome: 'acked' | 'unknown'): void {
    if (op.window) return;
    let o = this.strictOutcomes.get(op.key);
    if (o === undefined) this.strictOutcomes.set(op.key, (o = { acked: 0, unknown: 0 }));
    o[outcome]++;
  }

  protected checkFinal(): void {
    for (const g of this.groupIds) {
      const reps = this.replicas(g);
      if (reps.length !== this.nodeIds.length) this.fail(`group ${g}: only ${reps.length} replicas running at the end`);
      const leaders = reps.filter((r) => r.group.isLeader());
      if (leaders.length !== 1) this.fail(`group ${g}: ${leaders.length} leaders at the end`);
      const commit = (leaders[0] as { group: RaftGroup }).group.node.status().commit;
      for (const r of reps) {
        if (r.group.appliedIndex !== commit) this.fail(`group ${g}: ${r.node.id} applied ${r.group.appliedIndex}, leader committed ${commit}`);
      }
      const first = snapshotState((reps[0] as { group: RaftGroup }).group.stateMachine);
      for (const r of reps) {
        if (!snapshotState(r.group.stateMachine).equals(first)) this.fail(`group ${g}: ${r.node.id}'s state differs from ${reps[0]?.node.id}'s`);
      }
    }
    // No acknowledged value lost: the replicated state is at or above every value handed out.
    for (const key of [...STRICT_KEYS, ...WINDOW_KEYS]) {
      const max = this.timelines.get(key)?.max ?? null;
      if (max === null) continue;
      const rep = this.replicas(this.groupOf(key))[0];
      const value = rep?.group.peek(key);
      let stored: bigint | null = null;
      if (typeof value === 'bigint') stored = value;
      else if (isSequence(value)) stored = value.reservedHigh;
      if (stored === null || stored < max) this.fail(`${key}: final state ${stored} below ${max} handed out`);
    }
    // "Not applied" really not applied: requests still in flight count as unknown.
    for (const c of this.clients) if (c.current !== null) this.noteStrict(c.current, 'unknown');
    for (const key of STRICT_KEYS) {
      const value = this.replicas(this.groupOf(key))[0]?.group.peek(key);
      const o = this.strictOutcomes.get(key) ?? { acked: 0, unknown: 0 };
      if (typeof value === 'bigint' && value > BigInt(o.acked + o.unknown)) {
        this.fail(
          `${key}: final value ${value}, but only ${o.acked} INCRs were acknowledged and ${o.unknown} had an unknown outcome: a write answered "not applied" was applied`,
        );
      }
    }
  }
}

export async function runMultiraftSeed(seed: number, trace?: (line: string) => void, faultMs?: number): Promise<MultiraftSimResult> {
  const opts: MultiraftSimOptions = { seed, ...(trace === undefined ? {} : { trace }), ...(faultMs === undefined ? {} : { faultMs }) };
  return new MultiraftSimulation(opts).run();
}
