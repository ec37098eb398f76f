// Cluster mode: where a data command runs. Its keys give a slot, the slot a
// group; then
// - this node leads the group: the command runs here, on that group;
// - another node leads it: a cluster-aware connection (one that asked for
//   CLUSTER SLOTS|SHARDS|NODES) gets `MOVED slot host:port`, any other is
//   served by forwarding the command over the bus and relaying the reply
//   (when this node's link to the leader is down, through another member
//   whose link is up: one hop, the relay passes it to the leader);
// - no leader is known (an election): the command waits, up to the request
//   timeout, then `CLUSTERDOWN ... not applied`. Waiting commands are parked
//   in one list that one timer looks at every LEADER_POLL_MS, not one timer
//   each, and the list is bounded (ROUTE_WAITERS_MAX).
// Every command is answered within the request timeout of its arrival (plus
// one look of a sweep): parked, forwarded, relayed or run here, its deadline
// is the one it got on arrival (docs/cluster.md, "Routing").
// Keys of one command must share a group (else CROSSSLOT). The keyspace-wide
// commands (DBSIZE, KEYS, SCAN, FLUSHALL, FLUSHDB) act on the groups this node
// leads, as a Redis Cluster master's act on its own slots.

import type { ClusterEngine, ForwardExecutor, ForwardOutcome } from '../cluster/engine.js';
import { keySlot } from '../cluster/slots.js';
import { ERR, type ErrorKey, moved } from '../errors.js';
import { WindowAllocator, type WindowStats } from '../multiraft/window.js';
import type { Group, GroupStats, ReadOutcome, WindowLease } from '../multiraft/group.js';
import { encodeReply, R, type Protocol, type Reply } from '../resp/encoder.js';
import type { Op, OpResult, StateMachine, StoredValue } from '../sequencer/state-machine.js';
import { keyIndexes, type CommandSpec, type CommandTable, type ServerContext } from './command.js';
import type { NodeId } from '../transport/types.js';
import { LEADER_POLL_MS } from '../cluster/engine.js';
import assert from 'node:assert/strict';

/** Keyless data commands: they act on every group this node leads. */
const KEYSPACE_WIDE = new Set(['dbsize', 'keys', 'scan', 'flushall', 'flushdb']);
/** Commands parked on one node waiting for their group's leader; past it they are answered `overloaded`. */
export const ROUTE_WAITERS_MAX = 100_000;
/** Commands running on this node's groups whose deadline the router watches; past it, their groups' own timeouts answer them. */
export const ROUTE_RUNNING_MAX = 200_000;

interface Waiter {
  readonly groupId: number;
  readonly deadlineMs: number;
  /** Routes the command again. */
  readonly retry: () => void;
  /** Answers it: overloaded (the bound), or its own error (the deadline). */
  readonly fail: (overloaded: boolean) => void;
}

/** A command running on a group of this node: answered at its deadline if the group has not answered by then. */
interface RunningCommand {
  readonly deadlineMs: number;
  /** Answers it as timed out (outcome unknown for a write), unless answered already. */
  readonly expire: () => void;
}

/** SCAN cursors in cluster mode: inner cursor × this + group id. */
const SCAN_GROUP_RADIX = 16384;

/** INFO's view of all groups of this node together (stats and key counts); commands never propose through it. */
class NodeGroups implements Group {
  constructor(private readonly engine: ClusterEngine) {}

  propose(_op: Op, done: (result: OpResult) => void): void {
    done({ type: 'error', error: 'crossSlot' });
  }

  read<T>(_query: (sm: StateMachine) => T, done: (outcome: ReadOutcome<T>) => void): void {
    done({ ok: false, error: 'crossSlot' });
  }

  peek(_key: string): StoredValue | undefined {
    return undefined;
  }

  get stats(): GroupStats {
    let batchesPersisted = 0;
    let opsPersisted = 0;
    let batchesInFlight = 0;
    let persistFailures = 0;
    for (const r of this.engine.replicas.values()) {
      const s = r.raft.stats;
      batchesPersisted += s.batchesPersisted;
      opsPersisted += s.opsPersisted;
      batchesInFlight += s.batchesInFlight;
      persistFailures += s.persistFailures;
    }
    return { batchesPersisted, opsPersisted, batchesInFlight, persistFailures };
  }

  /** Keys of the data groups this node leads. */
  get keyCount(): number {
    let n = 0;
    for (const [id, r] of this.engine.replicas) if (id !== 0 && r.raft.isLeader()) n += r.raft.keyCount;
    return n;
  }

  isLeader(): boolean {
    return false;
  }

  leaderId(): string | null {
    return null;
  }

  windowLease(): WindowLease {
    return 'crossSlot';
  }

  onWindowLeaseChange(_listener: () => void): () => void {
    return () => {};
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

export class ClusterRouter {
  /** The command context of each data group this node replicates. */
  private readonly contexts = new Map<number, ServerContext>();
  /** The node-wide context (INFO, CLUSTER, keyless commands). */
  readonly nodeGroup: Group;
  /** Commands waiting for their group's leader, a link to it, or a leadership move to finish. */
  private waiters: Waiter[] = [];
  /** Commands running on this node's groups, each to be answered by its deadline. */
  private readonly running = new Set<RunningCommand>();
  private stopPolling: (() => void) | null = null;

  constructor(
    private readonly engine: ClusterEngine,
    private readonly commands: CommandTable,
  ) {
    this.nodeGroup = new NodeGroups(engine);
  }

  /** Builds each group's context from the node's; call once the node's context exists. */
  attach(base: ServerContext): void {
    for (const [id, replica] of this.engine.replicas) {
      if (id === 0) continue;
      const windows = new WindowAllocator(replica.ordered, { leaseWaitMs: this.engine.config.requestTimeoutMs, now: this.engine.runtime.now });
      replica.raft.onLeadershipChange((isLeader) => {
        if (!isLeader) windows.reset(); // another node may serve the key's values now
      });
      this.contexts.set(id, { ...base, group: replica.ordered, windows });
    }
    this.engine.setExecutor(this.executeForwarded);
  }

  /** Window counters summed over the groups' allocators. */
  windowStats(): WindowStats {
    let keys = 0;
    let reservations = 0;
    let served = 0;
    for (const ctx of this.contexts.values()) {
      const s = ctx.windows.stats;
      keys += s.keys;
      reservations += s.reservations;
      served += s.served;
    }
    return { keys, reservations, served };
  }

  /** Runs (or redirects, or forwards) one data command from a client connection. */
  route(spec: CommandSpec, args: readonly Buffer[], protocol: Protocol, clusterAware: boolean, respond: (reply: Reply) => void): void {
    if (this.engine.topologyConflict !== null) return respond(R.error(ERR.topologyConflict));
    if (KEYSPACE_WIDE.has(spec.name)) return this.nodeWide(spec, args, respond);
    const target = this.groupOfKeys(spec, args);
    if ('error' in target) return respond(R.error(ERR[target.error]));
    const deadlineMs = this.engine.runtime.now() + this.engine.config.requestTimeoutMs;
    this.toGroup(spec, args, target.slot, target.groupId, protocol, clusterAware, respond, deadlineMs);
  }

  private groupOfKeys(spec: CommandSpec, args: readonly Buffer[]): { readonly slot: number; readonly groupId: number } | { readonly error: ErrorKey } {
    const indexes = keyIndexes(spec, args.length);
    const first = indexes[0];
    if (first === undefined) return { error: 'crossSlot' }; // a data command without keys is keyspace-wide
    const slot = keySlot(args[first] as Buffer);
    const groupId = this.engine.topology.groupOfSlot(slot);
    for (let i = 1; i < indexes.length; i++) {
      if (this.engine.topology.groupOfSlot(keySlot(args[indexes[i] as number] as Buffer)) !== groupId) return { error: 'crossSlot' };
    }
    return { slot, groupId };
  }

  private toGroup(
    spec: CommandSpec,
    args: readonly Buffer[],
    slot: number,
    groupId: number,
    protocol: Protocol,
    clusterAware: boolean,
    respond: (reply: Reply) => void,
    deadlineMs: number,
  ): void {
    const isWrite = spec.flags.includes('write');
    const retryOr = (error: ErrorKey): void =>
      this.park({
        groupId,
        deadlineMs,
        retry: () => this.toGroup(spec, args, slot, groupId, protocol, clusterAware, respond, deadlineMs),
        fail: (overloaded) => respond(R.error(ERR[overloaded ? 'overloaded' : error])),
      });
    const known = this.engine.leaderOf(groupId);
    const local = this.contexts.get(groupId);
    if (known === this.engine.myId && local !== undefined) {
      // The group's own timeouts count from when it got the command (after
      // any wait here, behind other phases, for a window): held to the
      // command's deadline here instead.
      const once = this.answeredBy(deadlineMs, respond, R.error(isWrite ? ERR.outcomeUnknown : ERR.readTimeout));
      // Leadership can move (balancing, an election) between this check and
      // the proposal; such a write was certainly not applied: route it again.
      const data = spec.data as NonNullable<CommandSpec['data']>;
      data(local, args, (reply) =>
        this.refusedForLostLeadership(reply) ? once.release(() => retryOr(isWrite ? 'noLeader' : 'readTimeout')) : once.respond(reply),
      );
      return;
    }
    // A group this node does not replicate: ask its preferred leader, which names the leader it knows.
    const leader = known ?? (local === undefined ? (this.engine.topology.group(groupId)?.preferredLeader ?? null) : null);
    if (leader === null || leader === this.engine.myId) return retryOr(isWrite ? 'noLeader' : 'readTimeout');
    if (clusterAware) {
      const m = this.engine.member(leader);
      if (m !== undefined) return respond(R.error(moved(slot, m.host, m.port)));
    }
    // This node's link to the leader is down: another member that reaches it relays the command.
    const via = this.engine.reachable(leader) ? null : this.engine.relayFor(leader);
    const forwarded = (outcome: ForwardOutcome): void => {
      switch (outcome.kind) {
        case 'reply':
          return respond(outcome.reply);
        case 'notHere':
          return retryOr(isWrite ? 'noLeader' : 'readTimeout');
        case 'notSent':
          if (outcome.error === 'forwardTooLarge') return respond(R.error(ERR.forwardTooLarge)); // will never fit
          return retryOr(isWrite ? outcome.error : 'readTimeout');
        case 'timeout':
          return respond(R.error(isWrite ? ERR.outcomeUnknown : ERR.readTimeout));
      }
    };
    this.engine.forward(via ?? leader, groupId, args, protocol, deadlineMs, forwarded, via !== null);
  }

  /** Parks a command until its group can take it (see poll), or fails it past its deadline or the bound. */
  private park(w: Waiter): void {
    if (this.waiters.length >= ROUTE_WAITERS_MAX) return w.fail(true);
    this.waiters.push(w);
    this.startPolling();
  }

  private startPolling(): void {
    this.stopPolling ??= this.engine.runtime.scheduler.every(LEADER_POLL_MS, () => this.poll());
  }

  /**
   * A command runs on a group of this node: its reply goes through here, and
   * if the group has not answered by `deadlineMs` the poll answers `timedOut`
   * (the group's later reply is dropped). `release` hands the command back to
   * routing (not applied here) without answering it.
   */
  private answeredBy(
    deadlineMs: number,
    respond: (reply: Reply) => void,
    timedOut: Reply,
  ): { respond: (reply: Reply) => void; release: (then: () => void) => void } {
    if (this.running.size >= ROUTE_RUNNING_MAX) {
      // Past the bound the command is still answered, by its group's own timeout (a little later).
      return { respond, release: (then) => then() };
    }
    let answered = false;
    const entry: RunningCommand = {
      deadlineMs,
      expire: () => {
        assert.ok(!answered, 'an overdue command is expired once');
        answered = true;
        respond(timedOut);
      },
    };
    this.running.add(entry);
    this.startPolling();
    const settle = (): boolean => {
      if (answered) return false;
      answered = true;
      this.running.delete(entry);
      return true;
    };
    return {
      respond: (reply) => {
        if (settle()) respond(reply);
      },
      release: (then) => {
        if (settle()) then(); // routing answers it now
      },
    };
  }

  /**
   * One look for all parked commands: those whose group has a leader this
   * node can reach (or that this node does not replicate: it asks around)
   * are routed again, the rest wait until their deadline.
   */
  private poll(): void {
    const nowMs = this.engine.runtime.now();
    for (const o of this.running) {
      if (o.deadlineMs > nowMs) continue;
      this.running.delete(o);
      o.expire();
    }
    const ready = new Map<number, boolean>();
    const parked = this.waiters;
    this.waiters = [];
    for (const w of parked) {
      let go = ready.get(w.groupId);
      if (go === undefined) {
        const leader = this.engine.leaderOf(w.groupId);
        go =
          !this.contexts.has(w.groupId) ||
          (leader !== null && (leader === this.engine.myId || this.engine.reachable(leader) || this.engine.relayFor(leader) !== null));
        ready.set(w.groupId, go);
      }
      // Past its deadline a command is answered, even if it could go now (it was not sent anywhere yet).
      if (w.deadlineMs <= nowMs) w.fail(false);
      else if (go) w.retry();
      else if (w.deadlineMs <= nowMs + LEADER_POLL_MS) w.fail(false);
      else this.keep(w, nowMs);
    }
    if (this.waiters.length === 0 && this.running.size === 0 && this.stopPolling !== null) {
      this.stopPolling();
      this.stopPolling = null;
    }
    // A command left waiting is looked at again by the next poll, before its deadline.
    assert.ok(this.stopPolling !== null || this.waiters.length === 0, 'commands parked with no poll to answer them');
  }

  /** Parks `w` again until the next poll: only a command whose deadline comes after that poll. */
  private keep(w: Waiter, nowMs: number): void {
    assert.ok(w.deadlineMs > nowMs + LEADER_POLL_MS, 'a parked command kept past its deadline');
    this.waiters.push(w);
  }

  /** A command another node forwarded: run it if this node leads its group, else name the leader. */
  private readonly executeForwarded: ForwardExecutor = (args, protocol, relay, done) => {
    const spec = this.commands.get((args[0] as Buffer).toString('latin1').toLowerCase());
    if (spec?.data === undefined) {
      done({ bytes: encodeReply(R.error(ERR.crossSlot), protocol) });
      return;
    }
    const target = this.groupOfKeys(spec, args);
    if ('error' in target) {
      done({ bytes: encodeReply(R.error(ERR[target.error]), protocol) });
      return;
    }
    const local = this.contexts.get(target.groupId);
    const leader = this.engine.leaderOf(target.groupId);
    if (local === undefined || leader !== this.engine.myId) {
      if (relay && leader !== null && leader !== this.engine.myId && this.engine.reachable(leader))
        return this.relay(spec, args, protocol, target.groupId, leader, done);
      done({ leader });
      return;
    }
    spec.data(local, args, (reply) =>
      // Not applied because leadership moved meanwhile: the origin sends it on.
      done(this.refusedForLostLeadership(reply) ? { leader: this.engine.leaderOf(target.groupId) } : { bytes: encodeReply(reply, protocol) }),
    );
  };

  /** The group refused the command because this node no longer leads it (certainly not applied): it is routed again. */
  protected refusedForLostLeadership(reply: Reply): boolean {
    return reply.kind === 'error' && reply.value === ERR.notLeader;
  }

  /** Passes a command from a node cut off from `leader` on to it (one hop: the leader never relays again) and relays the outcome back. */
  private relay(spec: CommandSpec, args: Buffer[], protocol: Protocol, groupId: number, leader: NodeId, done: Parameters<ForwardExecutor>[3]): void {
    const isWrite = spec.flags.includes('write');
    const deadlineMs = this.engine.runtime.now() + this.engine.config.requestTimeoutMs; // the origin holds the command to its own deadline
    this.engine.forward(leader, groupId, args, protocol, deadlineMs, (outcome) => {
      switch (outcome.kind) {
        case 'reply':
          return done({ bytes: encodeReply(outcome.reply, protocol) });
        case 'notHere':
        case 'notSent':
          return done({ leader: this.engine.leaderOf(groupId) }); // not run: the origin routes it again
        case 'timeout':
          return done({ bytes: encodeReply(R.error(isWrite ? ERR.outcomeUnknown : ERR.readTimeout), protocol) });
      }
    });
  }

  /** DBSIZE, KEYS, SCAN, FLUSHALL, FLUSHDB over the groups this node leads, replies merged. */
  private nodeWide(spec: CommandSpec, args: readonly Buffer[], respond: (reply: Reply) => void): void {
    const data = spec.data as NonNullable<CommandSpec['data']>;
    const led = [...this.contexts.entries()].filter(([id]) => this.engine.replicas.get(id)?.raft.isLeader() === true).sort((a, b) => a[0] - b[0]);
    if (spec.name === 'scan') return this.scan(data, args, led, respond);
    const replies: Reply[] = new Array<Reply>(led.length);
    let left = led.length;
    if (left === 0) return respond(mergeNodeWide(spec.name, []));
    led.forEach(([, ctx], i) =>
      data(ctx, args, (reply) => {
        replies[i] = reply;
        if (--left === 0) respond(mergeNodeWide(spec.name, replies));
      }),
    );
  }

  /** SCAN over the led groups in id order; the cursor carries the group id and that group's own cursor. */
  private scan(data: NonNullable<CommandSpec['data']>, args: readonly Buffer[], led: [number, ServerContext][], respond: (reply: Reply) => void): void {
    const text = args[1]?.toString('latin1') ?? '';
    if (!/^\d+$/.test(text) || BigInt(text) > BigInt(Number.MAX_SAFE_INTEGER)) {
      data(led[0]?.[1] ?? ([...this.contexts.values()][0] as ServerContext), args, respond); // its own error text
      return;
    }
    const cursor = Number(text);
    const groupId = cursor === 0 ? 0 : cursor % SCAN_GROUP_RADIX;
    const inner = Math.floor(cursor / SCAN_GROUP_RADIX);
    const at = led.find(([id]) => id >= groupId && (cursor === 0 || id === groupId)) ?? led.find(([id]) => id > groupId);
    if (at === undefined) return respond(R.array([R.bulk('0'), R.array([])]));
    const [id, ctx] = at;
    const innerArgs = [...args];
    innerArgs[1] = Buffer.from(String(id === groupId ? inner : 0), 'latin1');
    data(ctx, innerArgs, (reply) => {
      if (reply.kind !== 'array') return respond(reply);
      const [nextReply, keys] = reply.items;
      const next = nextReply?.kind === 'bulk' ? Number(nextReply.value.toString('latin1')) : 0;
      let cursorOut = 0;
      if (next !== 0) cursorOut = next * SCAN_GROUP_RADIX + id;
      else {
        const following = led.find(([other]) => other > id);
        if (following !== undefined) cursorOut = following[0];
      }
      respond(R.array([R.bulk(String(cursorOut)), keys ?? R.array([])]));
    });
  }
}

function mergeNodeWide(name: string, replies: readonly Reply[]): Reply {
  const failed = replies.find((r) => r.kind === 'error');
  if (failed !== undefined) return failed;
  if (name === 'dbsize') return R.int(replies.reduce((n, r) => n + (r.kind === 'integer' ? Number(r.value) : 0), 0));
  if (name === 'keys') return R.array(replies.flatMap((r) => (r.kind === 'array' ? r.items : [])));
  return R.ok; // FLUSHALL, FLUSHDB
}
