// One Raft group as the server sees it (the `Group` seam), on one node. The
// MultiRaftHost owns the event loop and the disk; a RaftGroup owns what is
// specific to its group: the RaftNode, the state machine, the ops proposed
// in the current loop turn, the proposals waiting for their entry to apply,
// and the reads waiting for their ReadIndex.
//
// Writes: every op proposed during one loop turn goes into one entry (more
// only past ENTRY_BYTES_MAX), proposed once at the start of the host's next
// turn. Each op's `done` runs with that op's own result once the entry is
// committed, applied and durable on this node.
//
// While this replica knows no leader (an election is in progress), a write
// waits, bounded in time (`leaderWaitMs`) and in count (it counts toward
// `proposalsInFlightMax`), for the election: it is proposed if this node
// wins, answered `notLeader` (with `leaderId()` naming the winner) if another
// node does, and `noLeader` if no leader appears in time. Only the step from
// queued to proposed hands a write to the raft node, and a proposed write
// never goes back: it is proposed at most once, and never answered "not
// applied" once it was (except `superseded`, when its entry was replaced).
//
// With a keyspace (docs/multiraft.md, "With a keyspace") the state machine
// reads through to LMDB and the host checkpoints it (beginCheckpoint,
// checkpointDone) instead of the group snapshotting it into the log store.
//
// Snapshots travel in chunks (snapshot-transfer.ts): a leader's group opens
// a source (the keyspace's last checkpoint in one read transaction, or the
// log's snapshot in memory); a follower's group stages received chunks (in the
// keyspace's staging range, or in memory) and, once Raft restored the
// snapshot, installs them before the turn that records it in the log commits.
//
// Errors tell the truth (docs/multiraft.md, "Errors"):
// - not proposed (this node is not the leader, no leader appeared in time,
//   too many writes in flight, the entry was replaced by another leader's
//   entry at the same index): the write was not applied, the caller may retry
//   it anywhere;
// - proposed and then leadership was lost, the term changed, a snapshot
//   replaced the log, or the request timed out: the outcome is unknown.

import assert from 'node:assert/strict';
import type { ErrorKey } from '../errors.js';
import type { Entry, NodeId, Ready, Snapshot, SnapshotMeta, WritableStorage } from '../raft/index.js';
import { EntryType, Role, newMessage, type RaftNode } from '../raft/index.js';
import { restoreState, snapshotState } from '../sequencer/codec.js';
import { BlobItemReader, ChunkWriter, itemsToSnapshot, readItems, type SnapshotItem } from '../sequencer/snapshot-items.js';
import { decodeOps, encodeOps } from '../sequencer/op-codec.js';
import type { Op, OpResult, StateMachine, StoredValue } from '../sequencer/state-machine.js';
import type { Group, GroupStats, ReadOutcome, WindowLease } from './group.js';
import { checkpointUsable, type HostKeyspace, type KeyspaceCheckpointItem } from './keyspace.js';
import type { SnapshotSource, TransferGroup } from './snapshot-transfer.js';

/** How a proposal or read can fail at this layer; errors.ts says which are "not applied" and which "outcome unknown". */
export type RaftGroupFailure =
  'notLeader' | 'noLeader' | 'overloaded' | 'superseded' | 'outcomeUnknown' | 'readTimeout' | 'hostFailed' | 'diskFull' | 'opTooLarge';

/** Registry key reported for each failure (each has its own text in src/errors.ts). */
export const ERROR_KEY_OF: Readonly<Record<RaftGroupFailure, ErrorKey>> = {
  notLeader: 'notLeader',
  noLeader: 'noLeader',
  overloaded: 'overloaded',
  superseded: 'superseded',
  outcomeUnknown: 'outcomeUnknown',
  readTimeout: 'readTimeout',
  hostFailed: 'hostFailed',
  diskFull: 'diskFull',
  opTooLarge: 'opTooLarge',
};

/**
 * Largest op a group takes, by its estimated encoded size. An entry travels
 * whole in one bus message (16 MiB frames) to every follower, and a value it
 * stores whole in one snapshot record; a larger op could never be replicated
 * and would stall the group behind it, so it is refused before it is proposed.
 */
export const OP_BYTES_MAX = 8 * 1024 * 1024;

/** Ops accepted but not yet answered per group (waiting for a leader, queued in this turn, in proposed entries). */
export const DEFAULT_PROPOSALS_IN_FLIGHT_MAX = 20_000;
/** Reads waiting per group (for a leader, a ReadIndex round or the apply of their index). */
export const DEFAULT_READ_WAITERS_MAX = 20_000;
/**
 * A write not answered after this long is answered "outcome unknown"; a read,
 * "read timed out". Also the default of how long a write waits for an
 * election while no leader is known (`leaderWaitMs`), then "no leader".
 */
export const DEFAULT_REQUEST_TIMEOUT_MS = 5000;
/** Estimated bytes of ops per entry; ops past it go into another entry of the same turn. */
export const ENTRY_BYTES_MAX = 512 * 1024;
/**
 * Snapshot the state machine (and compact the log) once this many entries were
 * applied since the last snapshot. With a keyspace: a group this many entries
 * past its last checkpoint makes the host checkpoint every group at once.
 */
export const DEFAULT_SNAPSHOT_ENTRIES = 10_000;
/** ... or once this many entry payload bytes were applied since the last snapshot. */
export const DEFAULT_SNAPSHOT_BYTES = 64 * 1024 * 1024;
/** Entries kept in the log below a new snapshot, so slightly lagging followers catch up without a snapshot. */
export const DEFAULT_LOG_KEEP_ENTRIES = 1000;

export type ReadMode = 'safe' | 'lease';

export interface RaftGroupLimits {
  readonly proposalsInFlightMax: number;
  readonly readWaitersMax: number;
  readonly requestTimeoutMs: number;
  /** How long a write waits for an election while no leader is known (0: no wait). */
  readonly leaderWaitMs: number;
  readonly snapshotEntries: number;
  readonly snapshotBytes: number;
  readonly logKeepEntries: number;
  readonly readMode: ReadMode;
}

export interface RaftGroupDeps {
  readonly groupId: number;
  readonly node: RaftNode;
  readonly storage: WritableStorage;
  readonly sm: StateMachine;
  readonly limits: RaftGroupLimits;
  /**
   * The node's keyspace, when it has one: `sm` reads through to it, `storage`
   * is a CheckpointedStorage over `logStorage`, and the group checkpoints
   * (through the host) instead of snapshotting its state machine.
   */
  readonly keyspace?: { readonly store: HostKeyspace; readonly logStorage: WritableStorage };
  /** Ask the host for a loop turn (idempotent within a turn). */
  readonly scheduleTurn: () => void;
  /** Tell the host that storage holds writes not yet made durable (snapshot, compaction). */
  readonly storageWritten: () => void;
  /**
   * The lowest snapshot index this node is sending a follower of the group
   * (Infinity: none): the log is not compacted past it, so the follower
   * continues from the log once it installed that snapshot.
   */
  readonly snapshotSendFloor?: () => number;
  /** Whether the host can write to disk now (false while the disk is full: new writes are refused). */
  readonly writable: () => boolean;
  readonly now: () => number;
  /**
   * Whether the host's tick count is keeping up with real time: false while a
   * tick is overdue, and for a while after a late one (the event loop or the
   * process was paused). Leases are counted in ticks, so while it is false this
   * replica acts on no lease: lease reads go through ReadIndex and window values
   * wait.
   */
  readonly clockTrusted: () => boolean;
}

export interface RaftGroupStats extends GroupStats {
  /** Entries this node proposed (each carrying the ops of one turn, or part of them). */
  readonly entriesProposed: number;
  readonly opsProposed: number;
  /** Most ops carried by one proposed entry. */
  readonly opsPerEntryMax: number;
  readonly entriesApplied: number;
  readonly opsApplied: number;
  readonly snapshotsCreated: number;
  readonly snapshotsRestored: number;
  readonly readsServed: number;
  /** Checkpoints of this group made durable in the keyspace. */
  readonly checkpoints: number;
  /** Applied index of the last durable checkpoint (0: none, or no keyspace). */
  readonly checkpointIndex: number;
  /** State machine entries held in memory: every key without a keyspace, only those changed since the last checkpoint with one. */
  readonly keysInMemory: number;
  readonly failures: Readonly<Record<RaftGroupFailure, number>>;
}

type Done = (result: OpResult) => void;

interface Proposed {
  readonly term: number;
  /** The entry's payload as proposed, and the ops it encodes: applying that very payload needs no decoding. */
  readonly payload: Uint8Array;
  readonly ops: readonly Op[];
  readonly dones: Done[];
  readonly proposedAtMs: number;
}

interface QueuedOp {
  readonly op: Op;
  readonly done: Done;
  /** Until when the op may wait for a leader (set when it arrived; used only while no leader is known). */
  readonly leaderWaitDeadlineMs: number;
  /** opBytesEstimate(op), reckoned once at arrival (the size bound, then cutting entries). */
  readonly bytes: number;
}

interface ReadWaiter {
  readonly run: () => void;
  readonly fail: (f: RaftGroupFailure) => void;
  readonly deadlineMs: number;
  /** Read index once known (-1 before). */
  index: number;
}

export type LeadershipListener = (isLeader: boolean, term: number) => void;

export class RaftGroup implements Group, TransferGroup {
  readonly groupId: number;
  readonly node: RaftNode;
  private readonly storage: WritableStorage;
  private readonly sm: StateMachine;
  private readonly limits: RaftGroupLimits;
  private readonly scheduleTurn: () => void;
  private readonly storageWritten: () => void;
  private readonly snapshotSendFloor: () => number;
  private readonly writable: () => boolean;
  private readonly now: () => number;
  private readonly clockTrusted: () => boolean;

  private queued: QueuedOp[] = [];
  /** Ops that arrived while no leader was known, oldest first; never proposed yet. */
  private awaitingLeader: QueuedOp[] = [];
  /** Entries proposed by this node as leader, by index (insertion order is index order). */
  private readonly proposed = new Map<number, Proposed>();
  private proposedOps = 0;
  private nextReadId = 1;
  private readonly reads = new Map<number, ReadWaiter>();
  /** Reads to hand to the node at the next turn (new, or retried after a drop / no leader). */
  private readsToIssue: number[] = [];
  /** Reads the node could not take yet (no leader, leader not ready); retried each turn. */
  private readsToRetry: number[] = [];
  /** Reads whose index is known but not yet applied. */
  private readsAwaitingApply: number[] = [];

  private applied: number;
  /** Index of the log store's snapshot. */
  private snapshotIndex: number;
  /** Entry payload bytes applied since the last snapshot (with a keyspace: since the last checkpoint was taken). */
  private bytesSinceSnapshot = 0;
  private readonly keyspace: { readonly store: HostKeyspace; readonly logStorage: WritableStorage } | null;
  /** Applied index of the last durable checkpoint. */
  private checkpointIndex = 0;
  /** The checkpoint taken and not yet durable. */
  private checkpointInFlight: KeyspaceCheckpointItem | null = null;
  private leaderTerm = -1;
  private readonly listeners = new Set<LeadershipListener>();
  private readonly windowListeners = new Set<() => void>();
  /** windowLease() as the window listeners last heard it. */
  private lastWindowLease: WindowLease = 'wait';
  private closing: Promise<void> | null = null;
  private failedHost = false;
  /** Without a keyspace: the chunks of the snapshot being received (the state machine is in memory too). */
  private stagedChunks: Uint8Array[] = [];
  /** Without a keyspace: the staged snapshot being installed (from persistReady to finishReady). */
  private installingBlob: Buffer | null = null;
  /** With a keyspace: the staged snapshot being installed into it (from persistReady to finishReady). */
  private installingMeta: SnapshotMeta | null = null;

  private readonly counters = {
    batchesPersisted: 0,
    opsPersisted: 0,
    entriesProposed: 0,
    opsProposed: 0,
    opsPerEntryMax: 0,
    entriesApplied: 0,
    opsApplied: 0,
    snapshotsCreated: 0,
    snapshotsRestored: 0,
    readsServed: 0,
    checkpoints: 0,
  };
  private readonly failureCounts: Record<RaftGroupFailure, number> = {
    notLeader: 0,
    noLeader: 0,
    overloaded: 0,
    superseded: 0,
    outcomeUnknown: 0,
    readTimeout: 0,
    hostFailed: 0,
    diskFull: 0,
    opTooLarge: 0,
  };

  /** Term and vote as last handed to storage (durable once the turn that wrote them is). */
  private durableTerm: number;
  private durableVote: string | null;

  constructor(deps: RaftGroupDeps) {
    this.groupId = deps.groupId;
    this.node = deps.node;
    this.storage = deps.storage;
    this.sm = deps.sm;
    assert.ok(!this.sm.recordsChanges, "a replica's state machine must not record its changes (nothing would take them)");
    this.limits = deps.limits;
    this.scheduleTurn = deps.scheduleTurn;
    this.storageWritten = deps.storageWritten;
    this.snapshotSendFloor = deps.snapshotSendFloor ?? (() => Infinity);
    this.writable = deps.writable;
    this.now = deps.now;
    this.clockTrusted = deps.clockTrusted;
    this.keyspace = deps.keyspace ?? null;
    // The state machine starts from the latest snapshot; the node hands the
    // committed entries after it back in its first Readys.
    if (this.keyspace === null) {
      const snap = this.storage.snapshot();
      if (snap.meta.index > 0) restoreState(this.sm, toBuffer(snap.data));
      this.applied = snap.meta.index;
      this.snapshotIndex = snap.meta.index;
    } else {
      this.applied = this.startFromKeyspace(this.keyspace.store, this.keyspace.logStorage);
      this.snapshotIndex = this.keyspace.logStorage.snapshot().meta.index;
    }
    assert.equal(this.node.status().applied, this.applied, 'node and state machine start at different indexes');
    const initial = deps.storage.initialState().hardState;
    this.durableTerm = initial.term;
    this.durableVote = initial.vote;
  }

  /**
   * With a keyspace: the state machine (backed by it) starts at the group's
   * checkpoint when that is at or past the log's snapshot (the log holds every
   * entry after it: it is compacted only behind a durable checkpoint);
   * otherwise (a snapshot received from the leader and not yet checkpointed)
   * from the log's snapshot, loaded into memory and written by the next
   * checkpoint. Returns the applied index.
   */
  private startFromKeyspace(keyspace: HostKeyspace, log: WritableStorage): number {
    assert.ok(this.sm.backed, 'a group with a keyspace needs a state machine backed by it');
    const ck = keyspace.groupState(this.groupId);
    const checkpointedAt = ck?.appliedIndex ?? 0;
    if (checkpointUsable(ck, log)) {
      this.checkpointIndex = ck.appliedIndex;
      return ck.appliedIndex;
    }
    // The keyspace holds nothing of this group's log (none, or left by an earlier replica of the group here): it does not count.
    this.sm.clear();
    const snap = log.snapshot();
    if (snap.meta.index === 0) return 0;
    if (snap.data.length === 0) {
      throw new Error(
        `group ${this.groupId}: the log was compacted behind a checkpoint at ${snap.meta.index} that the keyspace does not hold ` +
          `(it is at ${checkpointedAt}): keyspace.mdb was lost or replaced; refusing to start`,
      );
    }
    restoreState(this.sm, toBuffer(snap.data));
    return snap.meta.index;
  }

  // ------------------------------------------------------------ Group seam

  propose(op: Op, done: Done): void {
    if (this.closing !== null) {
      done({ type: 'error', error: 'shuttingDown' });
      return;
    }
    if (this.failedHost) return this.fail(done, 'hostFailed');
    if (!this.writable()) return this.fail(done, 'diskFull');
    const bytes = opBytesEstimate(op);
    if (bytes > OP_BYTES_MAX) return this.fail(done, 'opTooLarge');
    const leading = this.node.role === Role.Leader;
    if (!leading && this.node.leader !== null) return this.fail(done, 'notLeader');
    if (this.opsInFlight() >= this.limits.proposalsInFlightMax) return this.fail(done, 'overloaded');
    const q: QueuedOp = { op, done, leaderWaitDeadlineMs: this.now() + this.limits.leaderWaitMs, bytes };
    if (!leading) {
      // An election is in progress (as far as this replica knows): wait for it.
      if (this.limits.leaderWaitMs === 0) return this.fail(done, 'noLeader');
      this.awaitingLeader.push(q);
      return;
    }
    this.queued.push(q);
    this.scheduleTurn();
  }

  read<T>(query: (sm: StateMachine) => T, done: (outcome: ReadOutcome<T>) => void): void {
    if (this.closing !== null) {
      done({ ok: false, error: 'shuttingDown' });
      return;
    }
    const fail = (f: RaftGroupFailure): void => {
      this.failureCounts[f]++;
      done({ ok: false, error: ERROR_KEY_OF[f] });
    };
    if (this.failedHost) return fail('hostFailed');
    if (this.soleLeaderUpToDate()) {
      // No other node can lead, this leader's first entry is committed, and
      // every committed entry is applied: the state machine holds every
      // acknowledged write (writes still in flight are not acknowledged yet).
      this.counters.readsServed++;
      done({ ok: true, value: query(this.sm) });
      return;
    }
    if (this.reads.size >= this.limits.readWaitersMax) return fail('overloaded');
    const id = this.nextReadId++;
    this.reads.set(id, {
      run: () => {
        this.counters.readsServed++;
        done({ ok: true, value: query(this.sm) });
      },
      fail,
      deadlineMs: this.now() + this.limits.requestTimeoutMs,
      index: -1,
    });
    this.readsToIssue.push(id);
    this.scheduleTurn();
  }

  /** The only voter leads, has committed an entry of its term, has applied every committed entry, and no read waits before. */
  private soleLeaderUpToDate(): boolean {
    const node = this.node;
    return node.role === Role.Leader && node.soleVoter() && this.reads.size === 0 && node.committedInTerm() && this.applied === node.commitIndex();
  }

  peek(key: string): StoredValue | undefined {
    return this.sm.getValue(key);
  }

  get keyCount(): number {
    return this.sm.size;
  }

  get stats(): RaftGroupStats {
    return {
      ...this.counters,
      checkpointIndex: this.checkpointIndex,
      keysInMemory: this.sm.keysInMemory,
      batchesInFlight: this.proposed.size,
      persistFailures: this.failedHost ? 1 : 0,
      failures: { ...this.failureCounts },
    };
  }

  /** Waits (bounded by the request timeout) until every accepted write and read is answered. */
  close(): Promise<void> {
    if (this.closing === null) {
      this.closing = (async () => {
        this.scheduleTurn();
        while ((this.opsInFlight() > 0 || this.reads.size > 0) && !this.failedHost) {
          await new Promise<void>((resolve) => setTimeout(resolve, 5));
        }
      })();
      this.checkWindowLease(false); // waiting window requests are answered now
    }
    return this.closing;
  }

  isLeader(): boolean {
    return this.node.role === Role.Leader;
  }

  /**
   * The group's leader as this replica knows it (this node's id when it
   * leads), null during an election. When a write is answered `notLeader`,
   * this names the leader at the moment of the answer (`done` runs
   * synchronously with that decision), so a router can forward or redirect.
   */
  leaderId(): string | null {
    return this.node.leader;
  }

  /** Hands leadership to `target` (a voter of the group) once it is up to date; false when this node does not lead or cannot. */
  transferLeadership(target: string): boolean {
    const started = this.node.transferLeadership(target);
    if (started) this.scheduleTurn();
    return started;
  }

  /** Calls `listener(isLeader, term)` whenever this node gains or loses leadership of the group. */
  onLeadershipChange(listener: LeadershipListener): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  /**
   * Window values may be served from memory only by a leader that holds its
   * check-quorum lease (so no other node can have been elected meanwhile) and
   * whose predecessors' leases have surely expired (RaftNode
   * predecessorLeaseExpired), while its tick count keeps up with real time.
   * The only voter of a group needs none of it: no other node can lead it.
   * Window mode therefore needs check-quorum (the default). A follower that
   * knows the leader answers `notLeader`; one that knows none waits for the
   * election.
   */
  windowLease(): WindowLease {
    if (this.failedHost) return 'hostFailed';
    if (this.closing !== null) return 'shuttingDown';
    const node = this.node;
    if (node.role !== Role.Leader) return node.leader === null ? 'wait' : 'notLeader';
    if (node.soleVoter()) return 'serve';
    return node.leaseValid() && node.predecessorLeaseExpired() && this.clockTrusted() ? 'serve' : 'wait';
  }

  /** Calls `listener` when windowLease() may have changed, and at every tick while it is not 'serve'. */
  onWindowLeaseChange(listener: () => void): () => void {
    this.windowListeners.add(listener);
    return () => {
      this.windowListeners.delete(listener);
    };
  }

  /** The state machine (tests and diagnostics; not a linearizable view). */
  get stateMachine(): StateMachine {
    return this.sm;
  }

  get appliedIndex(): number {
    return this.applied;
  }

  // ------------------------------------------------------- driven by the host

  /** Start of a host loop turn: notice leadership changes, propose this turn's ops, issue reads. */
  beginTurn(): void {
    this.checkLeadership();
    this.resolveAwaitingLeader();
    if (this.queued.length > 0) this.proposeQueued();
    if (this.readsToRetry.length > 0) {
      for (const id of this.readsToRetry) this.readsToIssue.push(id);
      this.readsToRetry = [];
    }
    if (this.readsToIssue.length > 0) this.issueReads();
    this.checkWindowLease(false);
  }

  /** Writes what a Ready asks to persist into storage (not yet durable). Returns whether anything was written. */
  /**
   * Writes the Ready's snapshot, entries and hard state to storage; true when
   * the turn must make them durable before going on. A hard state whose term
   * and vote are unchanged (only the commit index moved) is written but needs
   * no flush of its own: Raft does not need the commit index durable (a
   * restarted node learns it again), so it rides along with the next flush and
   * applying and answering the newly committed entries does not wait for one.
   */
  persistReady(rd: Ready): boolean {
    let wrote = false;
    if (rd.snapshot !== null) {
      this.persistSnapshot(rd.snapshot);
      wrote = true;
    }
    if (rd.entries.length > 0) {
      this.storage.append(rd.entries);
      wrote = true;
    }
    if (rd.hardState !== null) {
      const hs = rd.hardState;
      if (hs.term !== this.durableTerm || hs.vote !== this.durableVote) wrote = true;
      this.storage.setHardState(hs);
      this.durableTerm = hs.term;
      this.durableVote = hs.vote;
    }
    return wrote;
  }

  /**
   * Before the turn's storage commit: applies the Ready's committed entries
   * and answers their proposals. They are committed, so a majority holds them
   * durably already (a leader counts itself only up to its own durable index),
   * and answering them need not wait for this turn's flush of newer entries;
   * a reply thus waits for one flush, not two. A Ready carrying a snapshot is
   * applied after the commit, in order.
   */
  applyCommitted(rd: Ready): void {
    if (rd.snapshot !== null) return;
    for (const e of rd.committedEntries) if (e.index > this.applied) this.applyEntry(e);
  }

  /** After the turn's storage commit: advance, install a snapshot, apply what applyCommitted did not, answer reads. */
  finishReady(rd: Ready): void {
    this.node.advance();
    if (rd.snapshot !== null) this.installSnapshot(rd);
    for (const e of rd.committedEntries) if (e.index > this.applied) this.applyEntry(e);
    for (const rs of rd.readStates) {
      const w = this.reads.get(rs.requestId);
      if (w === undefined) continue; // timed out meanwhile
      w.index = rs.index;
      this.readsAwaitingApply.push(rs.requestId);
    }
    // A read the leader refused (not leading any more, or not yet committed in
    // its term) is asked again at a later turn, as one that could not be asked:
    // asked again at once, the refusal and the retry would chase each other
    // without pause until the leader's state changes.
    for (const id of rd.droppedReads) if (this.reads.has(id)) this.readsToRetry.push(id);
    this.serveReads();
    this.maybeSnapshot();
    this.checkLeadership();
    this.resolveAwaitingLeader();
    this.checkWindowLease(false);
  }

  /** Once per host tick: expire requests past their deadline. */
  expire(): void {
    const now = this.now();
    this.resolveAwaitingLeader(); // a leader may have become known since the last turn
    if (this.awaitingLeader.length > 0) {
      // Still no leader known (else resolveAwaitingLeader would have taken
      // them): nothing was proposed, so past its wait a write is not applied.
      const keep: QueuedOp[] = [];
      const expired: QueuedOp[] = [];
      for (const q of this.awaitingLeader) (q.leaderWaitDeadlineMs <= now ? expired : keep).push(q);
      this.awaitingLeader = keep;
      for (const q of expired) this.fail(q.done, 'noLeader');
    }
    const cutoff = now - this.limits.requestTimeoutMs;
    for (const [index, p] of this.proposed) {
      if (p.proposedAtMs > cutoff) break; // insertion order is proposal order
      this.proposed.delete(index);
      this.answerAll(p.dones, 'outcomeUnknown');
    }
    for (const [id, w] of this.reads) {
      if (w.deadlineMs <= now) {
        this.reads.delete(id);
        w.fail('readTimeout');
      }
    }
    this.checkWindowLease(true);
  }

  /** Whether the group has queued work for the next turn. */
  hasQueuedWork(): boolean {
    return this.queued.length > 0 || this.readsToIssue.length > 0;
  }

  /** The host stopped (storage failure or crash): answer everything truthfully and refuse new work. */
  failHost(): void {
    this.failedHost = true;
    const queued = [...this.awaitingLeader, ...this.queued];
    this.awaitingLeader = [];
    this.queued = [];
    for (const q of queued) this.fail(q.done, 'hostFailed');
    this.failProposed('outcomeUnknown');
    for (const [id, w] of this.reads) {
      this.reads.delete(id);
      w.fail('hostFailed');
    }
    this.readsToIssue = [];
    this.readsToRetry = [];
    this.readsAwaitingApply = [];
    this.checkWindowLease(false);
  }

  // ---------------------------------------------------------------- internals

  private opsInFlight(): number {
    return this.awaitingLeader.length + this.queued.length + this.proposedOps;
  }

  /**
   * Ops this node accepted but did not propose, and cannot propose now: with
   * a leader elsewhere they are refused (`notLeader`, not applied); with no
   * leader known they wait for the election (bounded by their deadline).
   */
  private unproposable(ops: readonly QueuedOp[]): void {
    if (ops.length === 0) return;
    if (this.node.status().leader !== null) {
      for (const q of ops) this.fail(q.done, 'notLeader');
      return;
    }
    // Any op still waiting arrived before these (waiting ops move to the queue as soon as this node leads).
    for (const q of ops) this.awaitingLeader.push(q);
  }

  /** Once leadership is known, ops that waited for it are proposed here (queued for this turn) or refused. */
  private resolveAwaitingLeader(): void {
    if (this.awaitingLeader.length === 0) return;
    const st = this.node.status();
    if (st.leader === null) return; // still electing
    const waiting = this.awaitingLeader;
    this.awaitingLeader = [];
    if (st.role === Role.Leader) {
      // They arrived before anything queued since this node became leader.
      this.queued = waiting.concat(this.queued);
      this.scheduleTurn();
      return;
    }
    for (const q of waiting) this.fail(q.done, 'notLeader');
  }

  private fail(done: Done, f: RaftGroupFailure): void {
    this.failureCounts[f]++;
    done({ type: 'error', error: ERROR_KEY_OF[f] });
  }

  private answerAll(dones: readonly Done[], f: RaftGroupFailure): void {
    this.proposedOps -= dones.length;
    assert.ok(this.proposedOps >= 0);
    for (const d of dones) this.fail(d, f);
  }

  private failProposed(f: RaftGroupFailure): void {
    for (const p of this.proposed.values()) this.answerAll(p.dones, f);
    this.proposed.clear();
  }

  private checkLeadership(): void {
    const st = this.node.status();
    const leading = st.role === Role.Leader;
    if (this.leaderTerm >= 0 && (!leading || st.term !== this.leaderTerm)) {
      // Lost leadership (or lost and regained it in a later term): entries
      // proposed in the old term may or may not commit under the next leader.
      this.leaderTerm = -1;
      this.failProposed('outcomeUnknown');
      const queued = this.queued;
      this.queued = [];
      this.unproposable(queued); // never proposed: refused, or waiting for the next leader
      for (const l of this.listeners) l(false, st.term);
    }
    if (leading && this.leaderTerm < 0) {
      this.leaderTerm = st.term;
      for (const l of this.listeners) l(true, st.term);
    }
  }

  private proposeQueued(): void {
    const queued = this.queued;
    this.queued = [];
    if (this.leaderTerm < 0) {
      this.unproposable(queued);
      return;
    }
    let start = 0;
    while (start < queued.length) {
      let end = start;
      let bytes = 0;
      while (end < queued.length && (end === start || bytes < ENTRY_BYTES_MAX)) {
        bytes += (queued[end] as QueuedOp).bytes;
        end++;
      }
      const batch = queued.slice(start, end);
      start = end;
      const ops = batch.map((q) => q.op);
      const payload = encodeOps(ops);
      const r = this.node.propose(payload);
      if (!r.ok) {
        // Not proposed. (checkLeadership ran this turn, so the node still leads: overloaded or transferring.)
        if (r.reason === 'overloaded') for (const q of batch) this.fail(q.done, 'overloaded');
        else this.unproposable(batch);
        continue;
      }
      assert.equal(r.term, this.leaderTerm, 'proposal in a term other than the one this node leads');
      assert.ok(!this.proposed.has(r.index), 'two proposals at one index');
      this.proposed.set(r.index, { term: r.term, payload, ops, dones: batch.map((q) => q.done), proposedAtMs: this.now() });
      this.proposedOps += batch.length;
      this.counters.entriesProposed++;
      this.counters.opsProposed += batch.length;
      if (batch.length > this.counters.opsPerEntryMax) this.counters.opsPerEntryMax = batch.length;
    }
  }

  private issueReads(): void {
    const ids = this.readsToIssue;
    this.readsToIssue = [];
    for (const id of ids) {
      if (!this.reads.has(id)) continue;
      // A lease is counted in ticks: while the tick count lags real time, confirm with a ReadIndex round.
      const mode = this.limits.readMode === 'lease' && !this.clockTrusted() ? 'safe' : this.limits.readMode;
      const res = this.node.read(id, mode);
      // No leader known yet, or a new leader before its first commit: try
      // again at a later turn (ticks make turns), bounded by the timeout.
      if (res !== 'ok') this.readsToRetry.push(id);
    }
  }

  /** Tells the window listeners when windowLease() changed, and at every tick (`periodic`) while it is not 'serve'. */
  private checkWindowLease(periodic: boolean): void {
    if (this.windowListeners.size === 0) return;
    const lease = this.windowLease();
    const changed = lease !== this.lastWindowLease;
    this.lastWindowLease = lease;
    if (changed || (periodic && lease !== 'serve')) for (const l of [...this.windowListeners]) l();
  }

  /**
   * A snapshot from the leader, into the log store. Restored from staged
   * chunks (no data in it): without a keyspace the chunks become the
   * snapshot's data; with one the keyspace holds it already
   * (beginStagedInstall) and the log records it without data.
   */
  private persistSnapshot(snap: Snapshot): void {
    this.snapshotIndex = snap.meta.index; // a checkpoint completing meanwhile must not snapshot the log below it
    if (snap.data.length > 0) {
      this.storage.applySnapshot(snap); // sent whole by an inline transfer
      return;
    }
    if (this.keyspace === null) {
      const blob = itemsToSnapshot(this.stagedChunks);
      this.stagedChunks = [];
      this.installingBlob = blob;
      this.storage.applySnapshot({ meta: snap.meta, data: blob });
      return;
    }
    assert.ok(this.installingMeta?.index === snap.meta.index, 'a staged snapshot recorded in the log before the keyspace installed it');
    this.storage.applySnapshot(snap);
  }

  /** Whether a Ready restoring `snap` must first install it into the keyspace (beginStagedInstall), before the log records it. */
  needsStagedInstall(snap: Snapshot): boolean {
    return this.keyspace !== null && snap.data.length === 0 && snap.meta.index > 0;
  }

  /**
   * With a keyspace: installs the staged snapshot `meta` into it (one LMDB
   * transaction; durable when the promise resolves). Until the Ready that
   * restored it is finished, the state machine reads nothing from the
   * keyspace (it is detached, empty) and no checkpoint of this group is
   * taken. The log records the snapshot only after this (persistReady in a
   * later turn): a crash in between leaves the keyspace ahead of the log,
   * which the log adopts at restart (keyspace.ts adoptInstalledCheckpoint).
   */
  beginStagedInstall(meta: SnapshotMeta): Promise<void> {
    const ks = this.keyspace;
    assert.ok(ks !== null && this.installingMeta === null, 'beginStagedInstall: no keyspace, or an install in progress');
    this.installingMeta = meta;
    this.snapshotIndex = meta.index;
    this.sm.clear(); // detached from the keyspace until the install is done
    return ks.store.installStaged(this.groupId, { appliedIndex: meta.index, appliedTerm: meta.term, conf: meta.conf });
  }

  private installSnapshot(rd: Ready): void {
    const snap = rd.snapshot;
    assert.ok(snap !== null);
    if (this.installingMeta !== null) {
      assert.equal(this.installingMeta.index, snap.meta.index, 'installed another snapshot than the one persisted');
      this.installingMeta = null;
      this.sm.resetToBacking();
      this.checkpointIndex = snap.meta.index;
    } else if (this.installingBlob !== null) {
      restoreState(this.sm, this.installingBlob);
      this.installingBlob = null;
    } else {
      restoreState(this.sm, toBuffer(snap.data));
    }
    this.applied = snap.meta.index;
    this.snapshotIndex = snap.meta.index;
    this.bytesSinceSnapshot = 0;
    this.counters.snapshotsRestored++;
    // The log this node proposed into was replaced: whatever it proposed up to there is unknown.
    for (const [index, p] of this.proposed) {
      if (index > snap.meta.index) break;
      this.proposed.delete(index);
      this.answerAll(p.dones, 'outcomeUnknown');
    }
  }

  private applyEntry(e: Entry): void {
    assert.equal(e.index, this.applied + 1, `apply out of order: ${e.index} after ${this.applied}`);
    this.applied = e.index;
    this.bytesSinceSnapshot += e.data.length;
    this.counters.entriesApplied++;
    let results: OpResult[] | null = null;
    const p = this.proposed.get(e.index);
    if (e.type === EntryType.Normal && e.data.length > 0) {
      // This node's own proposal carries its ops; any other payload is decoded (one
      // every replica accepted and that cannot be decoded is a bug: decodeOps throws).
      const ops = p !== undefined && p.payload === e.data ? p.ops : decodeOps(e.data);
      results = [];
      for (const op of ops) results.push(this.sm.apply(op));
      this.counters.opsApplied += ops.length;
    }
    if (p === undefined) return;
    this.proposed.delete(e.index);
    if (p.term !== e.term) {
      // Another leader's entry took this index: ours was truncated and is never applied.
      this.answerAll(p.dones, 'superseded');
      return;
    }
    assert.ok(results !== null && results.length === p.dones.length, 'applied entry does not match its proposal');
    this.proposedOps -= p.dones.length;
    this.counters.batchesPersisted++;
    this.counters.opsPersisted += p.dones.length;
    for (let i = 0; i < p.dones.length; i++) (p.dones[i] as Done)(results[i] as OpResult);
  }

  private serveReads(): void {
    if (this.readsAwaitingApply.length === 0) return;
    const waiting: number[] = [];
    for (const id of this.readsAwaitingApply) {
      const w = this.reads.get(id);
      if (w === undefined) continue;
      if (w.index <= this.applied) {
        this.reads.delete(id);
        w.run();
      } else {
        waiting.push(id);
      }
    }
    this.readsAwaitingApply = waiting;
  }

  // ------------------------------------------------------ snapshot transfers

  /**
   * The snapshot to send a follower: the keyspace's last checkpoint read in
   * one LMDB read transaction when it is the group's snapshot (at or past
   * the log's), else the log's snapshot (in memory).
   */
  openSnapshotSource(requested: SnapshotMeta): SnapshotSource {
    const ks = this.keyspace;
    if (ks !== null) {
      const reader = ks.store.openSnapshotReader(this.groupId);
      const state = reader.state;
      const usable: boolean = checkpointUsable(state, ks.logStorage);
      if (state !== undefined && usable) {
        return {
          meta: { index: state.appliedIndex, term: state.appliedTerm, conf: state.conf },
          nextChunk: (bytesMax) => reader.nextChunk(bytesMax),
          close: () => reader.close(),
        };
      }
      reader.close();
    }
    const snap = (ks?.logStorage ?? this.storage).snapshot();
    assert.ok(snap.meta.index >= requested.index, "the log's snapshot is behind the one Raft asked for");
    return blobSource(snap);
  }

  stageSnapshotChunk(data: Uint8Array): Promise<void> {
    if (this.keyspace !== null) return this.keyspace.store.stageChunk(this.groupId, data);
    try {
      for (const item of readItems(data)) void item; // malformed chunks are refused here, not at install
    } catch (e) {
      return Promise.reject(e instanceof Error ? e : new Error(String(e)));
    }
    this.stagedChunks.push(data);
    return Promise.resolve();
  }

  discardStagedSnapshot(): Promise<void> {
    this.stagedChunks = [];
    return this.keyspace === null ? Promise.resolve() : this.keyspace.store.discardStaging(this.groupId);
  }

  snapshotStaged(from: NodeId, term: number, meta: SnapshotMeta): boolean {
    const m = newMessage('snapshot', from, this.node.id, term);
    m.snapshotMeta = meta;
    this.node.step(m);
    this.scheduleTurn();
    return this.node.pendingSnapshotIndex() === meta.index;
  }

  // ------------------------------------------------------------ checkpoints

  /** With a keyspace: whether this group is past a threshold (entries or bytes applied since its last checkpoint). */
  checkpointDue(): boolean {
    if (this.keyspace === null || this.checkpointInFlight !== null || this.installingMeta !== null) return false;
    return this.applied - this.checkpointIndex >= this.limits.snapshotEntries || this.bytesSinceSnapshot >= this.limits.snapshotBytes;
  }

  /**
   * With a keyspace: takes this group's part of a checkpoint (what changed
   * since the last one, at the applied index), or null when nothing did or one
   * is in flight. Every applied entry is durable in this node's log (Raft hands
   * out only persisted entries to apply), so a restart can replay from it.
   */
  beginCheckpoint(): KeyspaceCheckpointItem | null {
    // Not while a staged snapshot is installed: the detached state machine would write a clear over it.
    if (this.keyspace === null || this.checkpointInFlight !== null || this.failedHost || this.installingMeta !== null) return null;
    if (this.applied === this.checkpointIndex && this.sm.keysInMemory === 0) return null;
    const term = this.storage.term(this.applied);
    assert.ok(term !== undefined, `group ${this.groupId}: no term for the applied index ${this.applied}`);
    this.checkpointInFlight = {
      groupId: this.groupId,
      changes: this.sm.beginCheckpoint(),
      appliedIndex: this.applied,
      appliedTerm: term,
      conf: this.node.confStateAt(this.applied),
      keyCount: this.sm.size,
    };
    this.bytesSinceSnapshot = 0;
    return this.checkpointInFlight;
  }

  /**
   * The checkpoint from beginCheckpoint is durable: the state machine forgets
   * what it wrote, and the log store records a snapshot at its index (without
   * data: followers are sent one exported from the keyspace) and is compacted
   * behind it, keeping logKeepEntries.
   */
  checkpointDone(item: KeyspaceCheckpointItem): void {
    assert.ok(this.checkpointInFlight === item, "checkpointDone: not this group's checkpoint in flight");
    this.checkpointInFlight = null;
    this.sm.checkpointed(item.changes);
    this.checkpointIndex = item.appliedIndex;
    this.counters.checkpoints++;
    const index = item.appliedIndex;
    // A snapshot received meanwhile may have moved the log past the checkpoint.
    if (index <= this.snapshotIndex) return;
    this.storage.createSnapshot(index, item.conf, EMPTY_DATA);
    const compactTo = Math.min(index - this.limits.logKeepEntries, this.snapshotSendFloor());
    if (compactTo >= this.storage.firstIndex()) this.storage.compact(compactTo);
    this.snapshotIndex = index;
    this.counters.snapshotsCreated++;
    this.storageWritten();
  }

  private maybeSnapshot(): void {
    if (this.keyspace !== null) return; // the host checkpoints instead
    const since = this.applied - this.snapshotIndex;
    if (since <= 0) return;
    if (since < this.limits.snapshotEntries && this.bytesSinceSnapshot < this.limits.snapshotBytes) return;
    const index = this.applied;
    this.storage.createSnapshot(index, this.node.confStateAt(index), snapshotState(this.sm));
    const compactTo = Math.min(index - this.limits.logKeepEntries, this.snapshotSendFloor());
    if (compactTo >= this.storage.firstIndex()) this.storage.compact(compactTo);
    this.snapshotIndex = index;
    this.bytesSinceSnapshot = 0;
    this.counters.snapshotsCreated++;
    this.storageWritten();
  }
}

const EMPTY_DATA = new Uint8Array(0);

/** A snapshot kept whole in memory (the log's), read in chunks of items. */
function blobSource(snap: Snapshot): SnapshotSource {
  const reader = snap.data.length === 0 ? null : new BlobItemReader(toBuffer(snap.data));
  let held: SnapshotItem | null = null;
  return {
    meta: snap.meta,
    nextChunk: (bytesMax) => {
      const out = new ChunkWriter(bytesMax);
      for (;;) {
        const item = held ?? (reader === null ? null : reader.next());
        held = null;
        if (item === null) return { data: out.take(), last: true };
        if (!out.fits(item.key, item.record)) {
          held = item;
          return { data: out.take(), last: false };
        }
        out.push(item.kind, item.key, item.record);
      }
    },
    close: () => undefined,
  };
}

function toBuffer(data: Uint8Array): Buffer {
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

/** Rough encoded size of an op, to cut a turn's ops into entries of about ENTRY_BYTES_MAX. */
function opBytesEstimate(op: Op): number {
  switch (op.type) {
    case 'incrby':
      return 16 + op.key.length;
    case 'incrbyfloat':
      return 16 + op.key.length + op.increment.length;
    case 'set':
      return 16 + op.key.length + op.value.length;
    case 'append':
    case 'setrange':
      return 24 + op.key.length + op.value.length;
    case 'setbit':
      return 24 + op.key.length;
    case 'mset':
    case 'msetnx': {
      let n = 8;
      for (const k of op.keys) n += 4 + k.length;
      for (const v of op.values) n += 4 + v.length;
      return n;
    }
    case 'del': {
      let n = 8;
      for (const k of op.keys) n += 4 + k.length;
      return n;
    }
    case 'flushall':
      return 8;
    case 'seqcreate':
    case 'adopt':
      return 96 + op.key.length;
    case 'seqnext':
      return 64 + op.key.length + (op.token === null ? 0 : op.token.length);
    case 'reserve':
      return 32 + op.key.length + op.id.length;
    case 'token':
      return 128 + op.key.length + op.token.length;
  }
}
