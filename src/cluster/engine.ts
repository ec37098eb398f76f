// One member of a cluster: its Raft groups, its bus, and where each group's
// leader is. The server asks it where a key's group is led and either runs
// the command here (this node leads), redirects a cluster-aware client
// (MOVED) or forwards the command over the bus (`forward`).
//
// At start:
// - a new data directory (with --cluster) records this node's id, the
//   bootstrap topology and its listen addresses in the node log, durable with the
//   first loop turn; a restart reads them back and refuses flags that
//   contradict them;
// - group 0 (the metadata group: every member up to METADATA_VOTERS_MAX)
//   replicates the topology: its first leader writes it, and every replica
//   checks the committed copy against its own;
// - data groups 1..G start on the members that replicate them.
// Every BALANCE_INTERVAL_MS a node hands the groups it leads to their
// preferred leader when that replica is up to date and answering, so leaders
// spread evenly and return to a node that comes back.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Config } from '../config.js';
import { ERR } from '../errors.js';
import { MultiRaftHost } from '../multiraft/host.js';
import { ArrivalOrderedGroup } from '../multiraft/ordered-group.js';
import type { RaftGroup } from '../multiraft/raft-group.js';
import { RAFT_DEFAULTS, Role } from '../raft/index.js';
import { R, type Protocol, type Reply } from '../resp/encoder.js';
import { checkDataDir } from '../storage/files.js';
import { importRaftLmdb } from '../storage/upgrade.js';
import { KeyspaceStore } from '../storage/keyspace.js';
import type { HostKeyspace } from '../multiraft/keyspace.js';
import { WalStore } from '../storage/wal-store.js';
import { DataDirectoryError, type NodeLogStore } from '../storage/store.js';
import type { MemoryHub } from '../transport/memory.js';
import { TcpTransport } from '../transport/tcp.js';
import type { LinkAwareTransport, NodeId } from '../transport/types.js';
import { BusDecodeError, BusMux, CHANNEL_PROBE, decodeReply, decodeRequest, encodeReply, encodeRequest, REPLY_EXECUTED, REPLY_NOT_HERE } from './bus.js';
import { answerProbe, nextGeneration, probePeers, type ProbeRound } from './generation.js';
import { bootstrapFromList, ClusterConfigError, clusterIdOf, findSelf, parseAddress } from './members.js';
import { realRuntime, sleepOn, type NodeRuntime } from './runtime.js';
import { decodeTopology, encodeTopology, type Member, type Topology } from './topology.js';

/** Node metadata: this node's id. */
export const META_NODE_ID = 'node-id';
/** Node metadata: the topology this member was bootstrapped with. */
export const META_BOOTSTRAP = 'cluster-bootstrap';
/** Node metadata: where this node listens ("host port busPort"). */
export const META_LISTEN = 'cluster-listen';
export const METADATA_GROUP_ID = 0;
/** Voters of group 0: the first members (in list order), at most this many. */
export const METADATA_VOTERS_MAX = 5;
/** The key under which group 0 holds the encoded topology. */
export const TOPOLOGY_KEY = 'topology';
/** How often a node considers handing its groups to their preferred leaders (and, until done, checks group 0's topology). */
export const BALANCE_INTERVAL_MS = 1000;
/** No leadership is handed over in the first milliseconds after start (peers settle first). */
export const BALANCE_GRACE_MS = 3000;
/** A preferred leader takes over only if it acknowledged the leader within this many ticks. */
export const BALANCE_ACK_TICKS_MAX = 3;
/** Forwarded requests waiting for their reply on one node; past it: overloaded. */
export const FORWARDS_IN_FLIGHT_MAX = 100_000;
/** How often a request waiting for its group's leader looks again. */
export const LEADER_POLL_MS = 20;
/** Milliseconds between Raft ticks of a cluster node. */
export const CLUSTER_TICK_MS = 50;
/** How often forwards in flight are checked for their deadline, a lost link or a new leader. */
export const FORWARD_SWEEP_MS = 100;
/** How long a stopping node waits for the groups it leads to move to another replica. */
export const HANDOFF_WAIT_MS = 1500;
/**
 * A leadership transfer this node asked for counts as in flight this long
 * (Raft abandons one not finished within an election timeout), unless the
 * node stops leading or the term changes first. One at a time per group.
 */
export const HANDOFF_TRANSFER_MS = RAFT_DEFAULTS.electionTimeoutTicks * CLUSTER_TICK_MS;

export interface Replica {
  readonly raft: RaftGroup;
  /** What commands use: the group in arrival order. */
  readonly ordered: ArrivalOrderedGroup;
}

/**
 * Runs a forwarded command on this node: `done` gets the encoded reply, or,
 * when this node does not lead the key's group, the leader it knows. With
 * `relay`, a node that does not lead the group passes the command on to the
 * leader it reaches.
 */
export type ForwardExecutor = (
  args: Buffer[],
  protocol: Protocol,
  relay: boolean,
  done: (result: { readonly bytes: Buffer } | { readonly leader: NodeId | null }) => void,
) => void;

/** A leadership transfer this node asked for: over once the term changes or HANDOFF_TRANSFER_MS pass. */
interface HandOff {
  readonly term: number;
  readonly untilMs: number;
}

interface PendingForward {
  readonly groupId: number;
  /** The node it was sent to. */
  readonly to: NodeId;
  readonly done: (outcome: ForwardOutcome) => void;
  /** Past it, the sweep answers the forward as timed out. */
  readonly deadlineMs: number;
  /** Sent to `to` to pass on to the group's leader (so `to` leading no group is no reason to give up). */
  readonly relay: boolean;
  /** Set once `done` ran (settleForward). */
  answered: boolean;
}

export type ForwardOutcome =
  | { readonly kind: 'reply'; readonly reply: Reply }
  /** Not run there: it names the leader it knows (maybe null); route again. */
  | { readonly kind: 'notHere' }
  /** Not sent (peer not connected, too many in flight, request too large): certainly not run. */
  | { readonly kind: 'notSent'; readonly error: keyof typeof ERR }
  /** No reply in time: it may or may not have run. */
  | { readonly kind: 'timeout' };

export interface ClusterOpenOptions {
  /** Tests: members talk over this in-memory hub instead of TCP. */
  readonly bus?: MemoryHub;
  /** The simulator: this member's end of its in-memory bus (instead of TCP or `bus`). */
  readonly transport?: LinkAwareTransport;
  /** Clock, timers and randomness; default Node's (the simulator gives a virtual one). */
  readonly runtime?: NodeRuntime;
  /** Where progress lines of the start go; default stderr. */
  readonly log?: (line: string) => void;
}

export class ClusterEngine {
  readonly replicas = new Map<number, Replica>();
  private readonly leaderHints = new Map<number, NodeId>();
  private readonly pending = new Map<number, PendingForward>();
  /** Per group: the leadership transfer this node asked for, while it may be running. */
  private readonly handOffs = new Map<number, HandOff>();
  private nextForwardId = 1;
  private executor: ForwardExecutor | null = null;
  private readonly stopBalancer: () => void;
  private readonly stopSweeper: () => void;
  private readonly startedAtMs: number;
  private closed = false;
  /** Set when group 0's committed topology differs from this node's: the node stops serving. */
  topologyConflict: string | null = null;
  private topologyChecked = false;

  private constructor(
    readonly config: Config,
    readonly self: Member,
    readonly topology: Topology,
    readonly listen: { readonly host: string; readonly port: number; readonly busPort: number },
    private readonly storage: NodeStorage,
    private readonly transport: LinkAwareTransport,
    private readonly mux: BusMux,
    readonly host: MultiRaftHost,
    readonly runtime: NodeRuntime,
  ) {
    this.startedAtMs = runtime.now();
    this.stopBalancer = runtime.scheduler.every(BALANCE_INTERVAL_MS, () => this.balance());
    this.stopSweeper = runtime.scheduler.every(FORWARD_SWEEP_MS, () => this.sweepForwards());
  }

  get myId(): string {
    return this.self.id;
  }

  /**
   * Opens (or bootstraps) this member from `store`, which the caller opened
   * on config.dataDir. Once open, the engine owns the store (close() closes
   * it); when opening fails, the caller closes it. With `options.bus` the
   * bus is that in-memory hub instead of TCP (nothing listens on the bus port).
   */
  static async open(config: Config, storage: NodeStorage, options: ClusterOpenOptions = {}): Promise<ClusterEngine> {
    const store = storage.log;
    const runtime = options.runtime ?? realRuntime;
    const log = options.log ?? ((line: string) => process.stderr.write(`ordo: ${line}\n`));
    const explicit = config.explicit ?? new Set<string>();
    const recorded = store.getMeta(META_BOOTSTRAP);
    let topology: Topology;
    let self: Member;
    let listen: { host: string; port: number; busPort: number };
    if (recorded !== undefined) {
      topology = decodeTopology(recorded);
      const id = Buffer.from(store.getMeta(META_NODE_ID) ?? new Uint8Array()).toString('utf8');
      const me = topology.member(id);
      if (me === undefined)
        throw new DataDirectoryError(`${store.description}: node id ${JSON.stringify(id)} is not in the recorded topology; refusing to start`);
      self = me;
      const [host, port, busPort] = Buffer.from(store.getMeta(META_LISTEN) ?? new Uint8Array())
        .toString('utf8')
        .split(' ');
      listen = { host: host ?? config.host, port: Number(port ?? self.port), busPort: Number(busPort ?? self.busPort) };
      if (config.cluster !== null) {
        const groups = explicit.has('groups') ? config.groups : topology.groupCount;
        let given: Topology;
        try {
          given = bootstrapFromList(config.cluster, groups);
        } catch (e) {
          throw new DataDirectoryError(`--cluster: ${(e as Error).message}`);
        }
        if (!encodeTopology(given).equals(Buffer.from(recorded))) {
          throw new DataDirectoryError(
            `${config.dataDir} belongs to a cluster bootstrapped with ${describe(topology)}, but --cluster/--groups say ${describe(given)}; ` +
              'restart with only --data (the data directory holds the membership), or use an empty data directory for a new cluster',
          );
        }
      } else if (explicit.has('groups') && config.groups !== topology.groupCount) {
        throw new DataDirectoryError(`${config.dataDir} belongs to a cluster of ${topology.groupCount} groups; --groups ${config.groups} contradicts it`);
      }
      if (explicit.has('port') && config.port !== listen.port) {
        throw new DataDirectoryError(`${config.dataDir} belongs to the member listening on port ${listen.port}; --port ${config.port} contradicts it`);
      }
      if (explicit.has('host')) listen.host = config.host;
      if (explicit.has('bus-port') && config.busPort !== null) listen.busPort = config.busPort;
    } else {
      if (config.cluster === null) throw new DataDirectoryError(`${store.description}: not a cluster member's data directory`);
      try {
        topology = bootstrapFromList(config.cluster, config.groups);
        const announced = config.announce === null ? { host: config.host, port: config.port } : parseAddress(config.announce);
        self = findSelf(topology, announced.host, announced.port);
      } catch (e) {
        if (e instanceof ClusterConfigError || (e as Error).name === 'TopologyError') throw new DataDirectoryError((e as Error).message);
        throw e;
      }
      listen = { host: config.host, port: config.announce === null ? self.port : config.port, busPort: config.busPort ?? self.busPort };
      store.putMeta(META_NODE_ID, Buffer.from(self.id, 'utf8'));
      store.putMeta(META_BOOTSTRAP, encodeTopology(topology));
      store.putMeta(META_LISTEN, Buffer.from(`${listen.host} ${listen.port} ${listen.busPort}`, 'utf8'));
    }
    // Durable before any peer hears of this start (src/cluster/generation.ts).
    const generation = await nextGeneration(store);
    let transport: LinkAwareTransport | null = null;
    let engine: ClusterEngine | null = null;
    let round: ProbeRound | null = null;
    try {
      transport =
        options.transport !== undefined
          ? options.transport
          : options.bus !== undefined
            ? options.bus.transport(self.id)
            : await TcpTransport.start({
                nodeId: self.id,
                host: listen.host,
                port: listen.busPort,
                clusterId: clusterIdOf(topology),
                secret: config.clusterSecret,
              });
      const openedTransport = transport;
      const peers = new Map(topology.members.filter((m) => m.id !== self.id).map((m) => [m.id, { host: m.host, port: m.busPort }] as const));
      let onRequest: (from: NodeId, payload: Uint8Array) => void = () => {};
      let onReply: (from: NodeId, payload: Uint8Array) => void = () => {};
      const mux: BusMux = new BusMux(
        openedTransport,
        (from, p) => onRequest(from, p),
        (from, p) => onReply(from, p),
        (from, p) => (p[0] === CHANNEL_PROBE ? answerProbe(store, mux, from, p) : round?.receive(from, p)),
      );
      openedTransport.setPeers(peers);
      round = probePeers(store, mux, (p) => openedTransport.isConnected(p), [...peers.keys()], generation, runtime, log);
      await round.done;
      // With peers, the event loop has work while the disk syncs (docs/storage.md).
      store.commitOffThread = topology.members.length > 1;
      const host = new MultiRaftHost({
        nodeId: self.id,
        transport: mux.raft,
        store,
        keyspace: storage.keyspace,
        random: runtime.random,
        now: runtime.now,
        scheduler: runtime.scheduler,
        tickIntervalMs: CLUSTER_TICK_MS,
        requestTimeoutMs: config.requestTimeoutMs,
      });
      engine = new ClusterEngine(config, self, topology, listen, storage, openedTransport, mux, host, runtime);
      const opened = engine;
      onRequest = (from, p) => opened.receiveRequest(from, p);
      onReply = (from, p) => opened.receiveReply(from, p);
      engine.startGroups();
      return engine;
    } catch (e) {
      round?.cancel();
      if (engine !== null) await engine.close();
      else await transport?.close();
      throw e;
    }
  }

  private startGroups(): void {
    const metaVoters = this.topology.members.slice(0, METADATA_VOTERS_MAX).map((m) => m.id);
    if (metaVoters.includes(this.self.id)) {
      const meta = this.host.addGroup(METADATA_GROUP_ID, metaVoters);
      meta.onLeadershipChange((isLeader) => {
        if (isLeader) this.publishTopology(meta);
      });
      this.replicas.set(METADATA_GROUP_ID, { raft: meta, ordered: new ArrivalOrderedGroup(meta, this.config.requestTimeoutMs, this.runtime.now) });
    }
    for (const g of this.topology.groups) {
      if (!g.replicas.includes(this.self.id)) continue;
      const raft = this.host.addGroup(g.id, g.replicas);
      this.replicas.set(g.id, { raft, ordered: new ArrivalOrderedGroup(raft, this.config.requestTimeoutMs, this.runtime.now) });
    }
  }

  /** Once group 0 has applied the topology: compares it with this node's (a replica of group 0 only). */
  private checkTopology(): void {
    const value = this.replicas.get(METADATA_GROUP_ID)?.raft.stateMachine.getValue(TOPOLOGY_KEY);
    if (value === undefined) return; // not applied yet, or not a replica of group 0
    this.topologyChecked = true;
    if (!Buffer.isBuffer(value) || !value.equals(encodeTopology(this.topology))) {
      this.topologyConflict = "the topology committed in group 0 differs from this node's; it serves no requests";
      process.emitWarning(`ordo: ${this.topologyConflict}`);
    }
  }

  /** Group 0's new leader writes the topology unless it is committed already. */
  private publishTopology(meta: RaftGroup): void {
    meta.read(
      (sm) => sm.getValue(TOPOLOGY_KEY) !== undefined,
      (outcome) => {
        if (!outcome.ok || outcome.value) return; // written already, or leadership lost: the next leader does it
        meta.propose({ type: 'set', key: TOPOLOGY_KEY, value: encodeTopology(this.topology), condition: 'nx', get: false }, () => {});
      },
    );
  }

  setExecutor(executor: ForwardExecutor): void {
    this.executor = executor;
  }

  /** The leader of group `groupId` as this node knows it, or null. */
  leaderOf(groupId: number): NodeId | null {
    const replica = this.replicas.get(groupId);
    if (replica !== undefined) {
      const leader = replica.raft.leaderId();
      if (leader !== null) return leader;
    }
    return this.leaderHints.get(groupId) ?? null;
  }

  /** Whether the bus link to `id` is up. */
  reachable(id: NodeId): boolean {
    return this.transport.isConnected(id);
  }

  /** Another member (not `target`) whose bus link is up: a command for `target` goes through it while this node's own link to `target` is down. */
  relayFor(target: NodeId): NodeId | null {
    for (const m of this.topology.members) {
      if (m.id !== this.self.id && m.id !== target && this.transport.isConnected(m.id)) return m.id;
    }
    return null;
  }

  member(id: NodeId): Member | undefined {
    return this.topology.member(id);
  }

  /**
   * Sends one command to `to` and reports what became of it (see
   * ForwardOutcome), at the latest at the first sweep at or past `deadlineMs`
   * (the request's own deadline: its timeout counts from its arrival).
   */
  forward(
    to: NodeId,
    groupId: number,
    args: readonly Buffer[],
    protocol: Protocol,
    deadlineMs: number,
    done: (outcome: ForwardOutcome) => void,
    relay = false,
  ): void {
    // Every forward is answered by the first sweep at or past its deadline: the deadline is never beyond a request's.
    assert.ok(deadlineMs <= this.runtime.now() + this.config.requestTimeoutMs, 'a forward outlives its request timeout');
    if (this.closed || !this.transport.isConnected(to)) {
      done({ kind: 'notSent', error: 'noLeader' });
      return;
    }
    if (this.pending.size >= FORWARDS_IN_FLIGHT_MAX) {
      done({ kind: 'notSent', error: 'overloaded' });
      return;
    }
    const id = this.nextForwardId;
    this.nextForwardId = this.nextForwardId >= 0xffffffff ? 1 : this.nextForwardId + 1;
    const payload = encodeRequest({ id, protocol, args: args as Buffer[], relay });
    if (payload.length > this.transport.messageBytesMax || !this.mux.send(to, payload)) {
      done({ kind: 'notSent', error: payload.length > this.transport.messageBytesMax ? 'forwardTooLarge' : 'overloaded' });
      return;
    }
    // No timer per request: the sweep (every FORWARD_SWEEP_MS) answers it past its deadline.
    assert.ok(!this.pending.has(id), 'forward ids wrapped onto one in flight');
    this.pending.set(id, { groupId, to, done, deadlineMs, relay, answered: false });
  }

  /**
   * A forward past its deadline, or whose link went down, or whose group has
   * another leader now, will not be answered by the node it went to in time
   * (paused, or leading no more): it is answered as timed out (it may have run).
   */
  private sweepForwards(): void {
    const nowMs = this.runtime.now();
    for (const [id, p] of this.pending) {
      const leader = this.leaderOf(p.groupId);
      if (nowMs < p.deadlineMs && this.transport.isConnected(p.to) && (p.relay || leader === null || leader === p.to)) continue;
      this.settleForward(id, p, { kind: 'timeout' });
    }
  }

  /** The one way a forward is answered: by its reply, the sweep or close, whichever comes first; never twice. */
  private settleForward(id: number, p: PendingForward, outcome: ForwardOutcome): void {
    assert.ok(!p.answered && this.pending.get(id) === p, 'a forward is answered twice');
    p.answered = true;
    this.pending.delete(id);
    p.done(outcome);
  }

  /** Remembers the leader a peer named for a group this node does not replicate. */
  private hint(groupId: number, leader: NodeId | null): void {
    if (leader === null || this.topology.member(leader) === undefined) this.leaderHints.delete(groupId);
    else this.leaderHints.set(groupId, leader);
  }

  private receiveRequest(from: NodeId, payload: Uint8Array): void {
    let request;
    try {
      request = decodeRequest(payload);
    } catch (e) {
      if (e instanceof BusDecodeError) return; // a broken peer: nothing to answer
      throw e;
    }
    let replied = false;
    const reply = (body: { readonly bytes: Buffer } | { readonly leader: NodeId | null }): void => {
      assert.ok(!replied, 'a forwarded command is answered twice');
      replied = true;
      if (this.closed) return;
      const bytes =
        'bytes' in body
          ? encodeReply({ id: request.id, status: REPLY_EXECUTED, bytes: body.bytes })
          : encodeReply({ id: request.id, status: REPLY_NOT_HERE, leader: body.leader });
      this.mux.send(from, bytes); // lost: the origin reports the outcome as unknown
    };
    if (this.executor === null || this.closed) {
      reply({ leader: null });
      return;
    }
    this.executor(request.args, request.protocol, request.relay === true, reply);
  }

  private receiveReply(_from: NodeId, payload: Uint8Array): void {
    let reply;
    try {
      reply = decodeReply(payload);
    } catch (e) {
      if (e instanceof BusDecodeError) return;
      throw e;
    }
    const waiting = this.pending.get(reply.id);
    if (waiting === undefined) return; // answered by its timeout already
    if (reply.status === REPLY_EXECUTED) {
      this.settleForward(reply.id, waiting, { kind: 'reply', reply: R.encoded(reply.bytes) });
    } else {
      this.hint(waiting.groupId, reply.leader);
      this.settleForward(reply.id, waiting, { kind: 'notHere' });
    }
  }

  /** Hands each group this node leads to its preferred leader when that replica is caught up and answering. */
  private balance(): void {
    if (this.closed) return;
    if (!this.topologyChecked) this.checkTopology();
    if (this.runtime.now() - this.startedAtMs < BALANCE_GRACE_MS) return;
    for (const g of this.topology.groups) {
      if (g.preferredLeader === this.self.id) continue;
      const replica = this.replicas.get(g.id);
      if (replica === undefined || !replica.raft.isLeader() || this.handingOver(g.id, replica.raft)) continue;
      const status = replica.raft.node.status();
      const target = replica.raft.node.followers().find((f) => f.id === g.preferredLeader);
      if (target === undefined || target.ticksSinceAck > BALANCE_ACK_TICKS_MAX || target.match < status.commit) continue;
      this.handOver(g.id, replica.raft, g.preferredLeader);
    }
  }

  /** Asks Raft to hand group `groupId` to `target` (balancing, or a stop): at most one such transfer in flight per group. */
  private handOver(groupId: number, raft: RaftGroup, target: NodeId): boolean {
    assert.ok(!this.handingOver(groupId, raft), `group ${groupId}: a second leadership hand-off while one is in flight`);
    if (!raft.transferLeadership(target)) return false;
    this.handOffs.set(groupId, { term: raft.node.status().term, untilMs: this.runtime.now() + HANDOFF_TRANSFER_MS });
    return true;
  }

  /** Whether the transfer this node last asked for in group `groupId` may still be running (it leads in that term, within HANDOFF_TRANSFER_MS). */
  private handingOver(groupId: number, raft: RaftGroup): boolean {
    const h = this.handOffs.get(groupId);
    if (h === undefined) return false;
    if (this.runtime.now() < h.untilMs && raft.isLeader() && raft.node.status().term === h.term) return true;
    this.handOffs.delete(groupId);
    return false;
  }

  /** Members whose bus link is down right now (shown as `fail` in CLUSTER NODES). */
  unreachable(): Set<string> {
    const out = new Set<string>();
    for (const m of this.topology.members) if (m.id !== this.self.id && !this.transport.isConnected(m.id)) out.add(m.id);
    return out;
  }

  /** A replica's replication offset as this node knows it: its own applied index, or (leading) a follower's match index. */
  replicationOffset(groupId: number, nodeId: string): number {
    const replica = this.replicas.get(groupId);
    if (replica === undefined) return 0;
    if (nodeId === this.self.id) return replica.raft.appliedIndex;
    return replica.raft.node.followers().find((f) => f.id === nodeId)?.match ?? 0;
  }

  private async handOff(): Promise<void> {
    const deadline = this.runtime.now() + HANDOFF_WAIT_MS;
    const leading = (): [number, Replica][] => [...this.replicas].filter(([, r]) => r.raft.isLeader() && r.raft.node.followers().length > 0);
    while (this.runtime.now() < deadline) {
      const led = leading();
      if (led.length === 0) return;
      for (const [groupId, r] of led) {
        if (this.handingOver(groupId, r.raft)) continue; // give the transfer time
        const best = r.raft.node
          .followers()
          .filter((f) => f.ticksSinceAck <= BALANCE_ACK_TICKS_MAX)
          .sort((a, b) => b.match - a.match)[0];
        if (best !== undefined) this.handOver(groupId, r.raft, best.id);
      }
      await sleepOn(this.runtime, CLUSTER_TICK_MS);
    }
  }

  /** `INFO raft` lines: per group, role, term, leader, commit, applied, and the largest follower lag (on a leader). */
  infoLines(): [string, string | number][] {
    const lines: [string, string | number][] = [
      ['raft_node_id', this.self.id],
      ['raft_groups', this.replicas.size],
      ['raft_groups_led', [...this.replicas.values()].filter((r) => r.raft.isLeader()).length],
    ];
    const host = this.host.stats();
    lines.push(
      ['raft_loop_turns', host.turns],
      ['raft_storage_commits', host.storageCommits],
      ['raft_bus_frames_sent', host.framesSent],
      ['raft_bus_frames_received', host.framesReceived],
    );
    for (const [id, r] of [...this.replicas.entries()].sort((a, b) => a[0] - b[0])) {
      const st = r.raft.node.status();
      let lag = 0;
      if (st.role === Role.Leader) for (const f of r.raft.node.followers()) lag = Math.max(lag, st.lastIndex - f.match);
      lines.push([
        `raft_group_${id}`,
        `role=${st.role},term=${st.term},leader=${st.leader ?? '-'},commit=${st.commit},applied=${r.raft.appliedIndex},lag=${lag}`,
      ]);
    }
    return lines;
  }

  /**
   * Hands every group this node leads to an up-to-date replica (so a stop
   * costs no election timeout), answers in-flight forwards as timed out
   * (outcome unknown), stops the groups, the bus and storage.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.stopBalancer();
    await this.handOff(); // forwards are still swept meanwhile: each is answered by its deadline
    this.stopSweeper();
    await this.host.close();
    this.closed = true;
    for (const [id, p] of this.pending) this.settleForward(id, p, { kind: 'timeout' });
    this.mux.close();
    await this.transport.close();
    await this.storage.close();
  }
}

function describe(t: Topology): string {
  return `${t.members.map((m) => `${m.host}:${m.port}@${m.busPort}`).join(',')} with ${t.groupCount} groups`;
}

/** What a node keeps on disk: its log (every group's Raft state, the metadata) and its keyspace. */
export interface NodeStorage {
  readonly log: NodeLogStore;
  readonly keyspace: HostKeyspace;
  /** Closes the keyspace (waiting for a checkpoint in flight), then the log. */
  close(): Promise<void>;
}

/**
 * Opens the node's storage in config.dataDir, after checking the directory is
 * ordo's (or empty): the log, into which a raft.mdb of earlier versions is
 * imported once, and the keyspace.
 */
export async function openNodeStorage(config: Config): Promise<NodeStorage> {
  const dir = resolve(config.dataDir);
  checkDataDir(dir);
  try {
    mkdirSync(dir, { recursive: true });
  } catch (e) {
    throw new DataDirectoryError(`cannot create data directory ${dir}: ${(e as Error).message}`);
  }
  const log = WalStore.open(config.dataDir, { fsync: config.fsync, segmentBytes: config.logSegmentBytes });
  let keyspace: KeyspaceStore | null = null;
  try {
    await importRaftLmdb(config.dataDir, log, config.fsync);
    keyspace = KeyspaceStore.open(config.dataDir, { fsync: config.fsync });
  } catch (e) {
    await log.close();
    throw e;
  }
  const opened = keyspace;
  return {
    log,
    keyspace: opened,
    close: async () => {
      await opened.close();
      await log.close();
    },
  };
}
