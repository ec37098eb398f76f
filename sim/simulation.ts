// Seeded simulation of one Raft group running the real src/raft code on
// virtual time, under network faults, crashes that lose unflushed writes, slow
// disks, membership changes, leader transfers and snapshots, with a client
// workload incrementing counters. Every invariant is checked after every event.

import { RaftNode, Ready, Role } from '../src/raft/node.js';
import { MemoryStorage } from '../src/raft/storage.js';
import { ConfState, Entry, EntryType, Message, NodeId } from '../src/raft/types.js';
import { CounterMachine, CounterOp, encodeOps } from './counter.js';
import { Prng } from './prng.js';

/** Virtual time units per Raft tick. */
export const TICK_UNITS = 10;
/**
 * Some nodes' clocks run slow: they tick every TICK_UNITS + 1 units. Over one
 * election timeout that is at most one tick of drift, within the Raft
 * default leaseClockDriftTicks (2), so lease reads must stay linearizable.
 */
const SLOW_TICK_UNITS = TICK_UNITS + 1;
/** Election timeout used by every simulated node, in ticks. */
export const SIM_ELECTION_TIMEOUT_TICKS = 10;
/**
 * Liveness bound: once every fault is healed, within this many ticks a leader
 * has committed an entry of its term and every client has had an increment
 * that it started after the heal acknowledged.
 */
export const LIVENESS_TICKS = 200;
/** Ticks of injected faults per seed before everything heals. */
export const DEFAULT_FAULT_TICKS = 2000;
/** After the liveness check, clients stop and the cluster gets this long to converge. */
const SETTLE_TICKS = 100;
/** A client gives up on a request (outcome unknown) after this many ticks. */
const CLIENT_TIMEOUT_TICKS = 20;
const KEYS = ['a', 'b', 'c'];

export interface SimOptions {
  readonly seed: number;
  /** Ticks with faults injected before everything heals. */
  readonly faultTicks?: number;
  readonly trace?: (line: string) => void;
}

export interface SimStats {
  events: number;
  messagesDelivered: number;
  acked: number;
  reads: number;
  unknown: number;
  elections: number;
  crashes: number;
  snapshotsSent: number;
  confChanges: number;
  transfers: number;
  committed: number;
}

export interface SimResult {
  readonly seed: number;
  readonly ok: boolean;
  readonly error?: string;
  readonly atTick: number;
  readonly stats: SimStats;
}

export class SimFailure extends Error {}

interface SimEvent {
  readonly time: number;
  readonly seq: number;
  readonly run: () => void;
}

/** Events ordered by time, then by the order they were scheduled in (deterministic). */
export class EventQueue {
  private heap: SimEvent[] = [];
  private seq = 0;

  push(time: number, run: () => void): void {
    const e: SimEvent = { time, seq: this.seq++, run };
    const h = this.heap;
    h.push(e);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(e, h[p] as SimEvent)) break;
      h[i] = h[p] as SimEvent;
      i = p;
    }
    h[i] = e;
  }

  pop(): SimEvent | undefined {
    const h = this.heap;
    const top = h[0];
    if (top === undefined) return undefined;
    const last = h.pop() as SimEvent;
    if (h.length > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        let best = last;
        if (l < h.length && this.less(h[l] as SimEvent, best)) {
          m = l;
          best = h[l] as SimEvent;
        }
        if (r < h.length && this.less(h[r] as SimEvent, best)) {
          m = r;
          best = h[r] as SimEvent;
        }
        if (m === i) break;
        h[i] = h[m] as SimEvent;
        i = m;
      }
      h[i] = last;
    }
    return top;
  }

  private less(a: SimEvent, b: SimEvent): boolean {
    return a.time < b.time || (a.time === b.time && a.seq < b.seq);
  }
}

interface PendingOp {
  readonly clientId: number;
  readonly op: CounterOp;
}

class SimNode {
  raft: RaftNode | null = null;
  readonly durable: MemoryStorage;
  readonly sm = new CounterMachine();
  /** Bumped on every crash so that callbacks scheduled before it do nothing. */
  incarnation = 0;
  writing = false;
  batch: PendingOp[] = [];
  flushScheduled = false;
  readonly pending = new Map<number, PendingOp>();
  readonly reads = new Map<number, PendingRead>();
  diskLatencyUnitsMax = 3;
  removed = false;
  checkedCommit = 0;
  tickUnits = TICK_UNITS;

  constructor(
    readonly id: NodeId,
    conf: ConfState,
  ) {
    this.durable = new MemoryStorage(conf);
  }
}

interface ClientOp {
  readonly op: CounterOp;
  readonly isRead: boolean;
  readonly startTime: number;
  readonly target: NodeId;
}

/** Values seen by operations that completed, in completion order, with running maxima. */
class Timeline {
  private readonly endTimes: number[] = [];
  private readonly valuesMax: number[] = [];

  add(endTime: number, value: number): void {
    const n = this.valuesMax.length;
    const prev = n > 0 ? (this.valuesMax[n - 1] as number) : -Infinity;
    this.endTimes.push(endTime);
    this.valuesMax.push(Math.max(prev, value));
  }

  /** Largest value among operations that completed strictly before `time` (-Infinity if none). */
  beforeMax(time: number): number {
    let lo = 0;
    let hi = this.endTimes.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((this.endTimes[mid] as number) < time) lo = mid + 1;
      else hi = mid;
    }
    return lo === 0 ? -Infinity : (this.valuesMax[lo - 1] as number);
  }
}

interface PendingRead {
  readonly clientId: number;
  readonly key: string;
  index: number | null;
}

class SimClient {
  current: ClientOp | null = null;
  leaderGuess: NodeId | null = null;
  constructor(readonly id: number) {}
}

export class Simulation {
  private readonly rng: Prng;
  private readonly q = new EventQueue();
  private now = 0;
  private readonly nodes = new Map<NodeId, SimNode>();
  private readonly clients: SimClient[] = [];
  private nextOpId = 1;
  private nextNodeNumber = 1;
  private readonly trace: ((line: string) => void) | null;
  readonly stats: SimStats = {
    events: 0,
    messagesDelivered: 0,
    acked: 0,
    reads: 0,
    unknown: 0,
    elections: 0,
    crashes: 0,
    snapshotsSent: 0,
    confChanges: 0,
    transfers: 0,
    committed: 0,
  };

  // Fault state.
  private readonly blocked = new Set<string>();
  private lossRate: number;
  private dupRate: number;
  private delayUnitsMax: number;
  private faultsActive = true;
  private readonly faultEndTime: number;
  private healTime = -1;

  // Raft knobs drawn per seed.
  private readonly appendBytesMax: number;
  private readonly inflightAppendsMax: number;
  private readonly snapshotChunkBytes: number;
  private readonly snapshotEveryEntries: number;
  private readonly heartbeatIntervalTicks: number;

  // Checker state.
  private readonly leaderOfTerm = new Map<number, NodeId>();
  /** Globally committed log: index → entry as first seen committed. */
  private readonly committed: (Entry | undefined)[] = [];
  private commitMax = 0;
  private readonly acked = new Map<number, { key: string; value: number; start: number; end: number }>();
  private readonly ackedValues = new Map<string, Set<number>>();
  /** Per key: values of acknowledged increments, and of completed reads. */
  private readonly incrTimeline = new Map<string, Timeline>();
  private readonly readTimeline = new Map<string, Timeline>();
  private readonly leaseReads: boolean;
  private lastLogMatchCheck = 0;
  /** Every (index, term) ever appended anywhere: its payload and the term of its predecessor. */
  private readonly appendedEntries = new Map<string, { data: Uint8Array; prevTerm: number }>();
  private clientsRunning = true;
  private readonly clientAckedAfterHeal = new Set<number>();

  constructor(private readonly opts: SimOptions) {
    this.rng = new Prng(opts.seed);
    this.trace = opts.trace ?? null;
    const voterCount = this.rng.pick([3, 3, 5]);
    const voters: NodeId[] = [];
    for (let i = 0; i < voterCount; i++) voters.push(this.newNodeId());
    this.lossRate = this.rng.pick([0, 0.01, 0.05, 0.1]);
    this.dupRate = this.rng.pick([0, 0.02, 0.05]);
    this.delayUnitsMax = this.rng.pick([4, 15, 40]);
    this.appendBytesMax = this.rng.pick([300, 1000, 4096]);
    this.inflightAppendsMax = this.rng.pick([1, 3, 8]);
    this.snapshotChunkBytes = this.rng.pick([16, 64, 1024]);
    this.snapshotEveryEntries = this.rng.pick([15, 40, 100000]);
    this.heartbeatIntervalTicks = this.rng.pick([1, 2]);
    this.leaseReads = this.rng.chance(0.5);
    const faultTicks = opts.faultTicks ?? DEFAULT_FAULT_TICKS;
    this.faultEndTime = faultTicks * TICK_UNITS;
    this.log(
      `config voters=${voters.join(',')} loss=${this.lossRate} dup=${this.dupRate} delayMax=${this.delayUnitsMax} ` +
        `appendBytes=${this.appendBytesMax} inflight=${this.inflightAppendsMax} chunk=${this.snapshotChunkBytes} ` +
        `snapshotEvery=${this.snapshotEveryEntries} heartbeat=${this.heartbeatIntervalTicks} reads=${this.leaseReads ? 'lease' : 'readIndex'}`,
    );
    const conf: ConfState = { voters, learners: [] };
    for (const id of voters) {
      const n = new SimNode(id, conf);
      this.nodes.set(id, n);
      this.startNode(n);
    }
    for (let c = 0; c < 5; c++) {
      const client = new SimClient(c);
      this.clients.push(client);
      this.at(this.rng.int(1, 50), () => this.clientIssue(client));
    }
    this.scheduleNextFault();
  }

  private newNodeId(): NodeId {
    return `n${this.nextNodeNumber++}`;
  }

  private log(line: string): void {
    if (this.trace !== null) this.trace(`t=${String(this.now).padStart(6, '0')} ${line}`);
  }

  private at(time: number, run: () => void): void {
    this.q.push(Math.max(time, this.now), run);
  }

  private fail(msg: string): never {
    throw new SimFailure(`tick ${Math.floor(this.now / TICK_UNITS)}: ${msg}`);
  }

  // ------------------------------------------------------------------ run

  run(): SimResult {
    const endTime = this.faultEndTime + (LIVENESS_TICKS + SETTLE_TICKS) * TICK_UNITS;
    this.at(this.faultEndTime, () => this.healAll());
    this.at(this.faultEndTime + LIVENESS_TICKS * TICK_UNITS, () => this.checkLiveness());
    this.at(this.faultEndTime + (LIVENESS_TICKS + 5) * TICK_UNITS, () => {
      this.clientsRunning = false;
    });
    try {
      for (;;) {
        const e = this.q.pop();
        if (e === undefined || e.time > endTime) break;
        this.now = e.time;
        e.run();
        this.stats.events++;
        this.checkStep();
      }
      this.checkFinal();
      return { seed: this.opts.seed, ok: true, atTick: Math.floor(this.now / TICK_UNITS), stats: this.stats };
    } catch (err) {
      const msg = err instanceof Error ? (err.stack ?? err.message) : String(err);
      this.log(`FAILURE ${msg}`);
      return { seed: this.opts.seed, ok: false, error: msg, atTick: Math.floor(this.now / TICK_UNITS), stats: this.stats };
    }
  }

  // ---------------------------------------------------------------- nodes

  private startNode(n: SimNode): void {
    const rng = this.rng.fork();
    n.raft = new RaftNode({
      id: n.id,
      storage: n.durable,
      random: () => rng.float(),
      electionTimeoutTicks: SIM_ELECTION_TIMEOUT_TICKS,
      heartbeatIntervalTicks: this.heartbeatIntervalTicks,
      appendBytesMax: this.appendBytesMax,
      inflightAppendsMax: this.inflightAppendsMax,
      snapshotChunkBytes: this.snapshotChunkBytes,
    });
    const snap = n.durable.snapshot();
    n.sm.restore(snap.data, snap.meta.index);
    n.writing = false;
    n.checkedCommit = n.raft.log.committed;
    const inc = n.incarnation;
    n.tickUnits = this.rng.chance(0.3) ? SLOW_TICK_UNITS : TICK_UNITS;
    if (n.tickUnits !== TICK_UNITS) this.log(`${n.id} clock is slow: a tick every ${n.tickUnits} units`);
    const phase = this.rng.int(0, TICK_UNITS - 1);
    this.at(this.now + phase + 1, () => this.tickNode(n, inc));
  }

  private tickNode(n: SimNode, inc: number): void {
    if (n.incarnation !== inc || n.raft === null) return;
    n.raft.tick();
    this.maybeSnapshot(n);
    this.pump(n);
    this.at(this.now + n.tickUnits, () => this.tickNode(n, inc));
  }

  private crash(n: SimNode): void {
    if (n.raft === null) return;
    this.stats.crashes++;
    this.log(`${n.id} CRASH (unflushed writes lost; durable last=${n.durable.lastIndex()} term=${n.durable.hardState().term})`);
    n.raft = null;
    n.incarnation++;
    n.writing = false;
    n.batch = [];
    n.flushScheduled = false;
    n.pending.clear();
    n.reads.clear();
  }

  private restart(n: SimNode): void {
    if (n.raft !== null || n.removed) return;
    n.incarnation++;
    this.startNode(n);
    const r = n.raft as RaftNode | null;
    this.log(`${n.id} RESTART term=${r?.term} commit=${r?.log.committed} last=${r?.log.lastIndex()}`);
  }

  /** Handle Readies: send messages now, persist on the simulated disk, then advance and apply. */
  private pump(n: SimNode): void {
    for (;;) {
      const raft = n.raft;
      if (raft === null || n.writing || !raft.hasReady()) return;
      const rd = raft.ready();
      if (rd.entries.length > 0) this.checkAppended(n, raft, rd.entries);
      for (const m of rd.messages) this.send(n, m);
      const persists = rd.hardState !== null || rd.snapshot !== null || rd.entries.length > 0;
      if (!persists) {
        raft.advance();
        this.afterReady(n, rd);
        continue;
      }
      n.writing = true;
      const inc = n.incarnation;
      const latency = this.rng.int(0, n.diskLatencyUnitsMax);
      this.at(this.now + latency, () => {
        if (n.incarnation !== inc || n.raft === null) return; // crashed: the write never happened
        if (rd.snapshot !== null) n.durable.applySnapshot(rd.snapshot);
        if (rd.entries.length > 0) n.durable.append(rd.entries);
        if (rd.hardState !== null) n.durable.setHardState(rd.hardState);
        n.writing = false;
        n.raft.advance();
        this.afterReady(n, rd);
        this.pump(n);
      });
      return;
    }
  }

  private afterReady(n: SimNode, rd: Ready): void {
    if (rd.snapshot !== null) {
      n.sm.restore(rd.snapshot.data, rd.snapshot.meta.index);
      this.log(`${n.id} installed snapshot index=${rd.snapshot.meta.index} term=${rd.snapshot.meta.term} bytes=${rd.snapshot.data.length}`);
    }
    for (const e of rd.committedEntries) this.applyEntry(n, e);
    for (const rs of rd.readStates) {
      const r = n.reads.get(rs.requestId);
      if (r !== undefined) r.index = rs.index;
    }
    for (const id of rd.droppedReads) {
      const r = n.reads.get(id);
      if (r === undefined) continue;
      n.reads.delete(id);
      this.replyToClient(n, r.clientId, id, { ok: false, leader: null });
    }
    this.serveReads(n);
  }

  /** Answer reads whose read index has been applied. */
  private serveReads(n: SimNode): void {
    for (const [id, r] of n.reads) {
      if (r.index === null || n.sm.appliedIndex < r.index) continue;
      n.reads.delete(id);
      this.replyToClient(n, r.clientId, id, { ok: true, value: n.sm.value(r.key) });
    }
  }

  private applyEntry(n: SimNode, e: Entry): void {
    const ref = this.committed[e.index];
    if (ref === undefined) this.fail(`${n.id} applies ${e.index} which no one saw committed`);
    if (ref.term !== e.term || !sameBytes(ref.data, e.data)) {
      this.fail(`${n.id} applies at ${e.index} term ${e.term}, committed was term ${ref.term}`);
    }
    if (e.index !== n.sm.appliedIndex + 1) this.fail(`${n.id} applies ${e.index} after ${n.sm.appliedIndex}`);
    if (e.type !== EntryType.Normal) {
      n.sm.appliedIndex = e.index;
      return;
    }
    const results = n.sm.apply(e.index, e.data);
    for (const [opId, value] of results) {
      const p = n.pending.get(opId);
      if (p === undefined) continue;
      n.pending.delete(opId);
      this.replyToClient(n, p.clientId, opId, { ok: true, value });
    }
    this.serveReads(n);
  }

  private maybeSnapshot(n: SimNode): void {
    const raft = n.raft;
    if (raft === null) return;
    const applied = n.sm.appliedIndex;
    const snapIndex = n.durable.snapshot().meta.index;
    if (applied - snapIndex < this.snapshotEveryEntries) return;
    if (!this.rng.chance(0.3)) return;
    n.durable.createSnapshot(applied, raft.confStateAt(applied), n.sm.snapshot());
    const keep = this.rng.int(0, 5);
    n.durable.compact(Math.max(snapIndex + 1, applied - keep));
    this.log(`${n.id} snapshot at ${applied}, log now ${n.durable.firstIndex()}..${n.durable.lastIndex()}`);
  }

  // --------------------------------------------------------------- network

  private send(from: SimNode, m: Message): void {
    this.checkPersistenceContract(from, m);
    if (m.type === 'snapshot' && m.offset === 0) this.stats.snapshotsSent++;
    if (this.blocked.has(`${m.from}>${m.to}`)) return;
    if (this.faultsActive && this.rng.chance(this.lossRate)) return;
    const copies = this.faultsActive && this.rng.chance(this.dupRate) ? 2 : 1;
    for (let c = 0; c < copies; c++) {
      const delay = 1 + this.rng.int(0, this.delayUnitsMax) + (this.rng.chance(0.02) ? this.rng.int(0, 100) : 0);
      this.at(this.now + delay, () => this.deliver(m));
    }
  }

  private deliver(m: Message): void {
    if (this.blocked.has(`${m.from}>${m.to}`)) return;
    const n = this.nodes.get(m.to);
    if (n === undefined || n.raft === null || n.removed) return;
    this.stats.messagesDelivered++;
    if (this.trace !== null && m.type !== 'heartbeat' && m.type !== 'heartbeatResp') {
      this.log(`${m.from}->${m.to} ${describe(m)}`);
    }
    n.raft.step(m);
    this.pump(n);
  }

  /** Messages that claim durable state may only leave once that state is durable. */
  private checkPersistenceContract(n: SimNode, m: Message): void {
    const hs = n.durable.hardState();
    if (m.type === 'appendResp' && !m.reject && m.index > 0) {
      // Either the acked entries are durable, or a later term's leader (durably) overwrote
      // them after the ack was generated, which Raft allows for an in-memory ack too.
      if (n.durable.lastIndex() < m.index && hs.term <= m.term) this.fail(`${n.id} acked ${m.index} but only ${n.durable.lastIndex()} is durable`);
    } else if (m.type === 'voteResp' && !m.reject) {
      // Durable term above m.term also suffices: this node can no longer vote again in m.term.
      if (hs.term < m.term || (hs.term === m.term && hs.vote !== m.to)) this.fail(`${n.id} granted a vote in term ${m.term} before it was durable`);
    } else if (m.type === 'vote') {
      if (hs.term < m.term || (hs.term === m.term && hs.vote !== m.from))
        this.fail(`${n.id} asked for votes in term ${m.term} before voting for itself durably`);
    } else if (m.type === 'snapshotResp' && m.offset >= m.totalBytes && m.index > 0) {
      if (n.durable.snapshot().meta.index < m.index && n.durable.lastIndex() < m.index) {
        this.fail(`${n.id} acked snapshot ${m.index} before it was durable`);
      }
    }
  }

  // ---------------------------------------------------------------- clients

  private liveMembers(): SimNode[] {
    const out: SimNode[] = [];
    for (const n of this.nodes.values()) if (n.raft !== null && !n.removed) out.push(n);
    return out;
  }

  private clientIssue(c: SimClient): void {
    if (!this.clientsRunning) return;
    const isRead = this.rng.chance(0.25);
    const op: CounterOp = { opId: this.nextOpId++, key: this.rng.pick(KEYS), delta: isRead ? 0 : this.rng.int(1, 3) };
    let target = c.leaderGuess;
    if (target === null || this.nodes.get(target)?.removed !== false || this.rng.chance(0.1)) {
      const all = [...this.nodes.values()].filter((n) => !n.removed);
      target = this.rng.pick(all).id;
    }
    const cur: ClientOp = { op, isRead, startTime: this.now, target };
    c.current = cur;
    this.log(`client${c.id} op${op.opId} ${isRead ? 'read' : 'incr'} ${op.key}${isRead ? '' : ` +${op.delta}`} -> ${target}`);
    const delay = 1 + this.rng.int(0, this.delayUnitsMax);
    this.at(this.now + delay, () => (isRead ? this.nodeReceiveRead(target, c.id, op) : this.nodeReceiveRequest(target, c.id, op)));
    this.at(this.now + CLIENT_TIMEOUT_TICKS * TICK_UNITS, () => {
      if (c.current !== cur) return;
      this.stats.unknown++;
      this.log(`client${c.id} op${op.opId} TIMEOUT (outcome unknown)`);
      c.current = null;
      c.leaderGuess = null;
      this.clientIssue(c);
    });
  }

  private nodeReceiveRequest(target: NodeId, clientId: number, op: CounterOp): void {
    const n = this.nodes.get(target);
    if (n === undefined || n.raft === null || n.removed) return; // lost; the client times out
    if (n.raft.role !== Role.Leader) {
      this.replyToClient(n, clientId, op.opId, { ok: false, leader: n.raft.leader });
      return;
    }
    n.batch.push({ clientId, op });
    if (!n.flushScheduled) {
      n.flushScheduled = true;
      const inc = n.incarnation;
      this.at(this.now + 1, () => this.flushBatch(n, inc));
    }
  }

  private nodeReceiveRead(target: NodeId, clientId: number, op: CounterOp): void {
    const n = this.nodes.get(target);
    if (n === undefined || n.raft === null || n.removed) return;
    const isLeader = n.raft.role === Role.Leader;
    // Followers that know a leader serve half of the reads themselves (ReadIndex forwarded to the leader).
    if (!isLeader && (n.raft.leader === null || !this.rng.chance(0.5))) {
      this.replyToClient(n, clientId, op.opId, { ok: false, leader: n.raft.leader });
      return;
    }
    const res = n.raft.read(op.opId, this.leaseReads ? 'lease' : 'safe');
    if (res !== 'ok') {
      this.replyToClient(n, clientId, op.opId, { ok: false, leader: n.raft.leader });
      return;
    }
    n.reads.set(op.opId, { clientId, key: op.key, index: null });
    this.pump(n);
  }

  /** Propose everything that arrived in this instant as one entry. */
  private flushBatch(n: SimNode, inc: number): void {
    if (n.incarnation !== inc || n.raft === null) return;
    n.flushScheduled = false;
    const batch = n.batch;
    n.batch = [];
    if (batch.length === 0) return;
    const res = n.raft.propose(encodeOps(batch.map((p) => p.op)));
    if (!res.ok) {
      for (const p of batch) this.replyToClient(n, p.clientId, p.op.opId, { ok: false, leader: res.leader });
      return;
    }
    this.log(`${n.id} proposed ${batch.length} ops at index ${res.index} term ${res.term}`);
    for (const p of batch) n.pending.set(p.op.opId, p);
    this.pump(n);
  }

  private replyToClient(from: SimNode, clientId: number, opId: number, r: { ok: true; value: number } | { ok: false; leader: NodeId | null }): void {
    const c = this.clients[clientId] as SimClient;
    const delay = 1 + this.rng.int(0, this.delayUnitsMax);
    this.at(this.now + delay, () => {
      const cur = c.current;
      if (cur === null || cur.op.opId !== opId) return;
      c.current = null;
      if (r.ok) {
        if (cur.isRead) this.recordRead(c, cur, r.value);
        else this.recordAck(c, cur, r.value);
        c.leaderGuess = cur.target;
        this.at(this.now + this.rng.int(0, 20), () => this.clientIssue(c));
      } else {
        // Not proposed at all: a clean failure; retry where the node pointed.
        this.log(`client${c.id} op${opId} refused by ${from.id} (leader hint ${r.leader ?? 'none'})`);
        c.leaderGuess = r.leader;
        this.at(this.now + this.rng.int(1, 15), () => this.clientIssue(c));
      }
    });
  }

  private recordAck(c: SimClient, cur: ClientOp, value: number): void {
    this.stats.acked++;
    const key = cur.op.key;
    this.log(`client${c.id} op${cur.op.opId} OK ${key}=${value}`);
    let set = this.ackedValues.get(key);
    if (set === undefined) {
      set = new Set();
      this.ackedValues.set(key, set);
    }
    if (set.has(value)) this.fail(`value ${key}=${value} handed out twice`);
    set.add(value);
    // Real-time order: every increment or read that completed before this one started saw a smaller value.
    const incr = this.timeline(this.incrTimeline, key);
    const reads = this.timeline(this.readTimeline, key);
    const before = Math.max(incr.beforeMax(cur.startTime), reads.beforeMax(cur.startTime));
    if (before >= value) this.fail(`${key}=${value} (op${cur.op.opId}) is not above ${before} seen before it started`);
    incr.add(this.now, value);
    this.acked.set(cur.op.opId, { key, value, start: cur.startTime, end: this.now });
    if (this.healTime >= 0 && cur.startTime >= this.healTime) this.clientAckedAfterHeal.add(c.id);
  }

  private timeline(m: Map<string, Timeline>, key: string): Timeline {
    let t = m.get(key);
    if (t === undefined) {
      t = new Timeline();
      m.set(key, t);
    }
    return t;
  }

  /** A linearizable read returns at least what any operation completed before it started saw. */
  private recordRead(c: SimClient, cur: ClientOp, value: number): void {
    this.stats.reads++;
    const key = cur.op.key;
    this.log(`client${c.id} op${cur.op.opId} READ ${key}=${value}`);
    const incr = this.timeline(this.incrTimeline, key);
    const reads = this.timeline(this.readTimeline, key);
    const before = Math.max(incr.beforeMax(cur.startTime), reads.beforeMax(cur.startTime));
    if (value < before) this.fail(`stale read: ${key}=${value} (op${cur.op.opId}) below ${before} seen before it started`);
    reads.add(this.now, value);
  }

  // ----------------------------------------------------------------- faults

  private scheduleNextFault(): void {
    const delay = this.rng.int(3, 30) * TICK_UNITS;
    this.at(this.now + delay, () => {
      if (!this.faultsActive) return;
      this.injectFault();
      this.scheduleNextFault();
    });
  }

  private currentLeader(): SimNode | null {
    let best: SimNode | null = null;
    for (const n of this.liveMembers()) {
      const r = n.raft as RaftNode;
      if (r.role === Role.Leader && (best === null || r.term > (best.raft as RaftNode).term)) best = n;
    }
    return best;
  }

  private injectFault(): void {
    const live = this.liveMembers();
    const all = [...this.nodes.values()].filter((n) => !n.removed);
    const kind = this.rng.int(0, 10);
    switch (kind) {
      case 0: {
        // Symmetric partition into two random sides.
        this.blocked.clear();
        const side = all.filter(() => this.rng.chance(0.5)).map((n) => n.id);
        for (const a of all) for (const b of all) if (side.includes(a.id) !== side.includes(b.id)) this.blocked.add(`${a.id}>${b.id}`);
        this.log(`FAULT partition [${side.join(',')}] | rest`);
        break;
      }
      case 1: {
        // Asymmetric: a few one-way links fail.
        for (let k = 0; k < 2; k++) {
          const a = this.rng.pick(all).id;
          const b = this.rng.pick(all).id;
          if (a !== b) this.blocked.add(`${a}>${b}`);
          this.log(`FAULT one-way ${a} -x-> ${b}`);
        }
        break;
      }
      case 2: {
        const l = this.currentLeader();
        if (l === null) break;
        this.blocked.clear();
        for (const b of all)
          if (b !== l) {
            this.blocked.add(`${l.id}>${b.id}`);
            this.blocked.add(`${b.id}>${l.id}`);
          }
        this.log(`FAULT isolate leader ${l.id}`);
        break;
      }
      case 3: {
        // Flapping: one node's links go up and down every few ticks for a while.
        const victim = this.rng.pick(all).id;
        this.log(`FAULT flapping ${victim}`);
        const flips = this.rng.int(3, 8);
        for (let k = 0; k < flips; k++) {
          this.at(this.now + k * this.rng.int(1, 4) * TICK_UNITS, () => {
            if (!this.faultsActive) return;
            for (const b of all) {
              if (b.id === victim) continue;
              const ab = `${victim}>${b.id}`;
              const ba = `${b.id}>${victim}`;
              if (this.blocked.has(ab)) {
                this.blocked.delete(ab);
                this.blocked.delete(ba);
              } else {
                this.blocked.add(ab);
                this.blocked.add(ba);
              }
            }
          });
        }
        break;
      }
      case 4:
        this.blocked.clear();
        this.log(`FAULT heal network`);
        break;
      case 5: {
        if (live.length === 0) break;
        // Half of the crashes hit the leader, often in the middle of its own (parallel) log write.
        const leader = this.currentLeader();
        const n = leader !== null && this.rng.chance(0.5) ? leader : this.rng.pick(live);
        this.crash(n);
        // Quick restarts (inside a leader's lease) or long outages.
        const downTicks = this.rng.chance(0.3) ? this.rng.int(0, 3) : this.rng.int(5, 60);
        this.at(this.now + downTicks * TICK_UNITS + this.rng.int(1, TICK_UNITS), () => {
          if (this.faultsActive) this.restart(n);
        });
        break;
      }
      case 6: {
        const n = this.rng.pick(all);
        n.diskLatencyUnitsMax = this.rng.pick([3, 30, 150]);
        this.log(`FAULT disk of ${n.id} max latency ${n.diskLatencyUnitsMax}`);
        break;
      }
      case 7: {
        const l = this.currentLeader();
        if (l === null) break;
        const voters = (l.raft as RaftNode).status().conf.voters.filter((v) => v !== l.id);
        if (voters.length === 0) break;
        const target = this.rng.pick(voters);
        if ((l.raft as RaftNode).transferLeadership(target)) {
          this.stats.transfers++;
          this.log(`ADMIN transfer leadership ${l.id} -> ${target}`);
          this.pump(l);
        }
        break;
      }
      case 8:
      case 9:
        this.membershipChange();
        break;
      default: {
        // A burst of loss for a while.
        const old = this.lossRate;
        this.lossRate = 0.3;
        this.log(`FAULT loss burst`);
        this.at(this.now + this.rng.int(2, 10) * TICK_UNITS, () => {
          this.lossRate = old;
        });
        break;
      }
    }
  }

  private membershipChange(): void {
    const l = this.currentLeader();
    if (l === null) return;
    const raft = l.raft as RaftNode;
    const conf = raft.status().conf;
    let res;
    let what: string;
    const learner = conf.learners[0];
    if (learner !== undefined) {
      what = `promote ${learner}`;
      res = raft.proposeConfChange({ op: 'promote', nodeId: learner });
    } else if (conf.voters.length < 5 && (conf.voters.length < 4 || this.rng.chance(0.5))) {
      const id = this.newNodeId();
      const fresh = new SimNode(id, { voters: [], learners: [] });
      this.nodes.set(id, fresh);
      this.startNode(fresh);
      what = `add learner ${id}`;
      res = raft.proposeConfChange({ op: 'addLearner', nodeId: id });
    } else {
      const victim = this.rng.chance(0.3) ? l.id : this.rng.pick(conf.voters);
      what = `remove ${victim}`;
      res = raft.proposeConfChange({ op: 'remove', nodeId: victim });
      if (res.ok) {
        const index = res.index;
        const term = res.term;
        // Shut the removed node down once its removal is committed.
        const waitRemoval = (): void => {
          const ref = this.committed[index];
          if (ref !== undefined) {
            if (ref.term === term) {
              const v = this.nodes.get(victim);
              if (v !== undefined && !v.removed) {
                this.log(`${victim} decommissioned`);
                this.crash(v);
                v.removed = true;
              }
            }
            return;
          }
          this.at(this.now + TICK_UNITS, waitRemoval);
        };
        this.at(this.now + TICK_UNITS, waitRemoval);
      }
    }
    this.log(`ADMIN ${what} via ${l.id}: ${res.ok ? `proposed at ${res.index}` : `refused (${res.reason})`}`);
    if (res.ok) {
      this.stats.confChanges++;
      this.pump(l);
    }
  }

  private healAll(): void {
    this.faultsActive = false;
    this.healTime = this.now;
    this.blocked.clear();
    for (const n of this.nodes.values()) {
      n.diskLatencyUnitsMax = 3;
      if (n.raft === null && !n.removed) this.restart(n);
    }
    this.log(`HEAL all faults; liveness bound ${LIVENESS_TICKS} ticks`);
  }

  // ---------------------------------------------------------------- checks

  private checkStep(): void {
    for (const n of this.nodes.values()) {
      const r = n.raft;
      if (r === null) continue;
      if (r.role === Role.Leader) {
        const other = this.leaderOfTerm.get(r.term);
        if (other === undefined) {
          this.leaderOfTerm.set(r.term, n.id);
          this.stats.elections++;
          this.log(`${n.id} LEADER term=${r.term} last=${r.log.lastIndex()} commit=${r.log.committed}`);
          this.checkLeaderCompleteness(n, r);
        } else if (other !== n.id) {
          this.fail(`two leaders in term ${r.term}: ${other} and ${n.id}`);
        }
      }
      const c = r.log.committed;
      if (c > n.checkedCommit) {
        const first = r.log.firstIndex();
        for (let i = Math.max(n.checkedCommit + 1, first); i <= c; i++) this.recordCommitted(n, r, i);
        n.checkedCommit = c;
      }
    }
    if (this.stats.events - this.lastLogMatchCheck >= 2000) {
      this.lastLogMatchCheck = this.stats.events;
      this.checkLogMatching();
    }
  }

  private recordCommitted(n: SimNode, r: RaftNode, i: number): void {
    const e = r.log.slice(i, i + 1, Number.MAX_SAFE_INTEGER)[0];
    if (e === undefined) this.fail(`${n.id} committed ${i} but has no entry`);
    const ref = this.committed[i];
    if (ref === undefined) {
      if (i > this.commitMax + 1) this.fail(`${n.id} committed ${i} but ${this.commitMax + 1} was never seen committed`);
      this.committed[i] = e;
      this.commitMax = Math.max(this.commitMax, i);
      this.stats.committed = this.commitMax;
    } else if (ref.term !== e.term || !sameBytes(ref.data, e.data)) {
      this.fail(`committed entry ${i} changed: was term ${ref.term}, ${n.id} has term ${e.term}`);
    }
  }

  private checkLeaderCompleteness(n: SimNode, r: RaftNode): void {
    const first = r.log.firstIndex();
    for (let i = Math.max(1, first - 1); i <= this.commitMax; i++) {
      const ref = this.committed[i];
      const t = r.log.term(i);
      if (ref === undefined) continue;
      if (t !== ref.term) this.fail(`leader ${n.id} term ${r.term} lacks committed entry ${i} (has term ${t})`);
    }
  }

  /**
   * Log matching, incrementally: the entry with a given index and term is the
   * same everywhere, and so is the term of the entry before it. By induction
   * two logs holding the same (index, term) agree on every entry up to it.
   */
  private checkAppended(n: SimNode, r: RaftNode, entries: readonly Entry[]): void {
    let prevTerm = r.log.term((entries[0] as Entry).index - 1);
    if (prevTerm === undefined) this.fail(`${n.id} appended at ${(entries[0] as Entry).index} without a predecessor`);
    for (const e of entries) {
      const key = `${e.index}:${e.term}`;
      const seen = this.appendedEntries.get(key);
      if (seen === undefined) {
        this.appendedEntries.set(key, { data: e.data, prevTerm });
      } else if (seen.prevTerm !== prevTerm || !sameBytes(seen.data, e.data)) {
        this.fail(`log matching violated at ${n.id}: entry ${key} differs from the one appended elsewhere`);
      }
      if (e.term < prevTerm) this.fail(`${n.id}: term goes down in the log at ${e.index}`);
      prevTerm = e.term;
    }
  }

  /** Log matching: if two logs hold an entry with the same index and term, they agree up to it. */
  private checkLogMatching(): void {
    const live = [...this.nodes.values()].filter((n) => n.raft !== null);
    for (let x = 0; x < live.length; x++) {
      for (let y = x + 1; y < live.length; y++) {
        const a = (live[x] as SimNode).raft as RaftNode;
        const b = (live[y] as SimNode).raft as RaftNode;
        const lo = Math.max(a.log.firstIndex(), b.log.firstIndex());
        let i = Math.min(a.log.lastIndex(), b.log.lastIndex());
        for (; i >= lo; i--) if (a.log.term(i) === b.log.term(i)) break;
        if (i < lo) continue;
        const ea = a.log.slice(lo, i + 1, Number.MAX_SAFE_INTEGER);
        const eb = b.log.slice(lo, i + 1, Number.MAX_SAFE_INTEGER);
        for (let k = 0; k < ea.length; k++) {
          const p = ea[k] as Entry;
          const q = eb[k] as Entry;
          if (p.term !== q.term || !sameBytes(p.data, q.data)) {
            this.fail(`log matching violated between ${a.id} and ${b.id} at ${p.index} (match at ${i})`);
          }
        }
      }
    }
  }

  private checkLiveness(): void {
    const l = this.currentLeader();
    if (l === null) this.fail(`no leader ${LIVENESS_TICKS} ticks after faults healed`);
    const r = l.raft as RaftNode;
    if (r.log.term(r.log.committed) !== r.term) this.fail(`leader ${l.id} has not committed in term ${r.term} ${LIVENESS_TICKS} ticks after heal`);
    for (const c of this.clients) {
      if (!this.clientAckedAfterHeal.has(c.id)) this.fail(`client${c.id} got no increment acknowledged within ${LIVENESS_TICKS} ticks after heal`);
    }
    this.log(`LIVENESS ok: leader ${l.id} term ${r.term}`);
  }

  private checkFinal(): void {
    this.checkLogMatching();
    const l = this.currentLeader();
    if (l === null) this.fail('no leader at the end');
    const lr = l.raft as RaftNode;
    const conf = lr.status().conf;
    // Every member caught up and applied the same prefix.
    for (const id of [...conf.voters, ...conf.learners]) {
      const n = this.nodes.get(id);
      if (n === undefined || n.raft === null) this.fail(`member ${id} not running at the end`);
      if (n.sm.appliedIndex !== lr.log.committed) {
        this.fail(`${id} applied ${n.sm.appliedIndex}, leader committed ${lr.log.committed}`);
      }
    }
    // Replay the committed history: every acknowledged increment is in it, with the value the client got.
    const ref = new CounterMachine();
    const values = new Map<number, number>();
    for (let i = 1; i <= this.commitMax; i++) {
      const e = this.committed[i];
      if (e === undefined) this.fail(`committed history has a hole at ${i}`);
      if (e.type !== EntryType.Normal) {
        ref.appliedIndex = i;
        continue;
      }
      for (const [opId, v] of ref.apply(i, e.data)) values.set(opId, v);
    }
    for (const [opId, a] of this.acked) {
      const v = values.get(opId);
      if (v === undefined) this.fail(`acknowledged op${opId} (${a.key}=${a.value}) is not in the committed history`);
      if (v !== a.value) this.fail(`op${opId} acknowledged ${a.key}=${a.value} but history gives ${v}`);
      if (ref.value(a.key) < a.value) this.fail(`final ${a.key}=${ref.value(a.key)} below acknowledged ${a.value}`);
    }
    for (const key of KEYS) {
      const leaderValue = l.sm.value(key);
      if (leaderValue !== ref.value(key)) this.fail(`leader's ${key}=${leaderValue} differs from history ${ref.value(key)}`);
    }
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function describe(m: Message): string {
  switch (m.type) {
    case 'append':
      return `append t${m.term} prev=${m.index}/${m.logTerm} n=${m.entries.length} commit=${m.commit}`;
    case 'appendResp':
      return m.reject ? `appendResp t${m.term} REJECT ${m.index} hint=${m.hintIndex}/${m.hintTerm}` : `appendResp t${m.term} ack=${m.index}`;
    case 'vote':
    case 'preVote':
      return `${m.type} t${m.term} last=${m.index}/${m.logTerm}${m.transfer ? ' transfer' : ''}`;
    case 'voteResp':
    case 'preVoteResp':
      return `${m.type} t${m.term} ${m.reject ? 'REJECT' : 'GRANT'}`;
    case 'snapshot':
      return `snapshot t${m.term} index=${m.snapshotMeta?.index} bytes ${m.offset}+${m.chunk?.length}/${m.totalBytes}`;
    case 'snapshotResp':
      return `snapshotResp t${m.term} index=${m.index} next=${m.offset}/${m.totalBytes}`;
    default:
      return `${m.type} t${m.term}`;
  }
}

export function runSeed(seed: number, trace?: (line: string) => void): SimResult {
  const sim = new Simulation(trace === undefined ? { seed } : { seed, trace });
  return sim.run();
}
