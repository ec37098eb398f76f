// One Raft group member as a pure, deterministic state machine.
//
// Driving loop (see docs/raft.md):
//   node.tick()            on every logical clock tick
//   node.step(msg)         for every message received
//   node.propose(data)     to append a command (leader only)
//   if (node.hasReady()) {
//     const rd = node.ready();
//     send rd.messages                       (safe to send at once)
//     persist rd.snapshot, rd.entries, rd.hardState (in this order), make durable
//     node.advance()                         (confirms durability)
//     apply rd.committedEntries, serve rd.readStates
//   }
//
// Persistence contract: every message whose meaning depends on durable state
// (vote grants, append acks, vote requests, snapshot-installed acks) is held
// inside the node and only released by advance() of the Ready that persisted
// that state; Ready.messages never depend on anything not yet durable. The
// leader's own appends go out in the same Ready that asks to persist them
// (Raft thesis 10.2.1); the leader counts itself toward commit only up to the
// index advance() confirmed durable.

import assert from 'node:assert/strict';
import { ConfChange, applyConfChange, decodeConfState, encodeConfState } from './confchange.js';
import { RaftLog } from './log.js';
import { Progress, ProgressState } from './progress.js';
import { ReadIndexQueue, leaseHolds, type PendingRead, type ReadResult } from './reads.js';
import { InlineSnapshotAssembler, externalSnapshotRequest, inlineChunkMessage, type SnapshotTransferMode } from './snapshot-stream.js';
import { Storage } from './storage.js';
import { ConfState, Entry, EntryType, HardState, Message, MessageType, NodeId, ReadState, Snapshot, SnapshotMeta, assertIndex, newMessage } from './types.js';

export const Role = {
  Follower: 'follower',
  PreCandidate: 'preCandidate',
  Candidate: 'candidate',
  Leader: 'leader',
} as const;
export type Role = (typeof Role)[keyof typeof Role];

export interface RaftConfig {
  readonly id: NodeId;
  readonly storage: Storage;
  /** Uniform random number in [0, 1); the only source of randomness. */
  readonly random: () => number;
  /** Base election timeout; the actual one is uniform in [this, 2 * this). */
  readonly electionTimeoutTicks?: number;
  readonly heartbeatIntervalTicks?: number;
  readonly preVote?: boolean;
  readonly checkQuorum?: boolean;
  /** Max bytes of entries in one append message (at least one entry is always sent). */
  readonly appendBytesMax?: number;
  /** Max append messages in flight to one follower (pipelining window). */
  readonly inflightAppendsMax?: number;
  /** Max entries appended but not yet committed; propose() refuses beyond it. */
  readonly uncommittedEntriesMax?: number;
  /** Max bytes of committed entries handed out in one Ready. */
  readonly applyBytesMax?: number;
  /** Bytes of snapshot data per snapshot message (inline transfer). */
  readonly snapshotChunkBytes?: number;
  /**
   * Who moves snapshot data to a follower (see snapshot-stream.ts): the node
   * itself in messages ("inline", the default), or the application
   * ("external": the node asks with a meta-only "snapshot" message and is
   * told the outcome through reportSnapshot).
   */
  readonly snapshotTransfer?: SnapshotTransferMode;
  /**
   * Bound on clock drift between members over one election timeout, in ticks.
   * A lease read is served only if a quorum acknowledged a message sent less
   * than electionTimeoutTicks - leaseClockDriftTicks ticks ago.
   */
  readonly leaseClockDriftTicks?: number;
  /**
   * A follower that streams (or probes) without any acknowledgement for this
   * many ticks is probed again from its match index (lost appends).
   */
  readonly appendRetransmitTicks?: number;
  /** A learner may be promoted only if its match index is within this many entries of the leader's last index. */
  readonly promoteLagEntriesMax?: number;
}

/** Documented defaults of every RaftConfig limit. */
export const RAFT_DEFAULTS = {
  electionTimeoutTicks: 10,
  heartbeatIntervalTicks: 1,
  preVote: true,
  checkQuorum: true,
  appendBytesMax: 1024 * 1024,
  inflightAppendsMax: 64,
  uncommittedEntriesMax: 8192,
  applyBytesMax: 64 * 1024 * 1024,
  snapshotChunkBytes: 256 * 1024,
  snapshotTransfer: 'inline',
  leaseClockDriftTicks: 2,
  promoteLagEntriesMax: 64,
  appendRetransmitTicks: 5,
} as const;

export interface Ready {
  /** Hard state to persist, if it changed. */
  readonly hardState: HardState | null;
  /** Snapshot to install in storage (before `entries`), if one arrived. */
  readonly snapshot: Snapshot | null;
  /** Entries to append to storage (dropping existing entries at and after entries[0].index). */
  readonly entries: Entry[];
  /** Committed entries to apply, in order (only entries already durable locally). */
  readonly committedEntries: Entry[];
  /** Messages to send now; none of them depends on this Ready's persistence. */
  readonly messages: Message[];
  /** Reads that may be served once the application applied ReadState.index. */
  readonly readStates: ReadState[];
  /** Read request ids that will never complete here (leadership lost): retry elsewhere. */
  readonly droppedReads: number[];
}

export type ProposeResult =
  | { readonly ok: true; readonly index: number; readonly term: number }
  | {
      readonly ok: false;
      readonly reason: 'notLeader' | 'transferring' | 'overloaded' | 'confChangePending' | 'invalid';
      readonly leader: NodeId | null;
      readonly detail?: string;
    };

export interface RaftStatus {
  readonly id: NodeId;
  readonly role: Role;
  readonly term: number;
  readonly vote: NodeId | null;
  readonly leader: NodeId | null;
  readonly commit: number;
  readonly applied: number;
  readonly firstIndex: number;
  readonly lastIndex: number;
  readonly persistedIndex: number;
  readonly conf: ConfState;
}

interface OutstandingReady {
  readonly lastEntryIndex: number;
  readonly lastEntryTerm: number;
  readonly snapshotIndex: number;
  readonly release: Message[];
}

const EMPTY = new Uint8Array(0);

export class RaftNode {
  readonly id: NodeId;
  private readonly random: () => number;
  readonly electionTimeoutTicks: number;
  private readonly heartbeatIntervalTicks: number;
  private readonly preVote: boolean;
  private readonly checkQuorum: boolean;
  private readonly appendBytesMax: number;
  private readonly inflightAppendsMax: number;
  private readonly uncommittedEntriesMax: number;
  private readonly applyBytesMax: number;
  private readonly snapshotChunkBytes: number;
  private readonly snapshotTransfer: SnapshotTransferMode;
  private readonly leaseClockDriftTicks: number;
  private readonly promoteLagEntriesMax: number;
  private readonly appendRetransmitTicks: number;

  readonly log: RaftLog;
  term = 0;
  vote: NodeId | null = null;
  leader: NodeId | null = null;
  role: Role = Role.Follower;

  private voters: NodeId[] = [];
  private learners: NodeId[] = [];
  private voterSet = new Set<NodeId>();
  private baseConf: ConfState;
  private confHistory: { index: number; conf: ConfState }[] = [];

  private readonly progress = new Map<NodeId, Progress>();
  private readonly votes = new Map<NodeId, boolean>();

  /** Monotonic tick counter (never reset). */
  private tickCount = 0;
  private electionElapsed = 0;
  private heartbeatElapsed = 0;
  private randomizedElectionTimeout = 0;
  /** Ticks since we last heard from a leader (or started): vote requests inside it are ignored. */
  private ticksSinceLeaderContact = 0;

  private leadTransferee: NodeId | null = null;
  /** Tick at which this node last became leader (meaningful while it leads). */
  private leaderSinceTick = 0;
  /**
   * Set once this leader sent TimeoutNow in its term: the target may win an
   * election that ignores leases at any later time (the message may be
   * delayed), so lease reads stop for the rest of the term.
   */
  private leaseRevoked = false;
  private pendingConfIndex = 0;
  /** Leader: appends (new entries or a new commit index) must be sent at the next ready(). */
  private needBroadcast = false;

  private readonly reads = new ReadIndexQueue();

  private readonly incomingSnapshot = new InlineSnapshotAssembler();

  /** Messages safe to send now. */
  private msgs: Message[] = [];
  /** Messages that depend on state not yet handed out for persistence. */
  private msgsAfterPersist: Message[] = [];
  private outstanding: OutstandingReady | null = null;
  private lastHardState: HardState;

  private readonly scratch: number[] = [];

  constructor(cfg: RaftConfig) {
    this.id = cfg.id;
    this.random = cfg.random;
    this.electionTimeoutTicks = cfg.electionTimeoutTicks ?? RAFT_DEFAULTS.electionTimeoutTicks;
    this.heartbeatIntervalTicks = cfg.heartbeatIntervalTicks ?? RAFT_DEFAULTS.heartbeatIntervalTicks;
    this.preVote = cfg.preVote ?? RAFT_DEFAULTS.preVote;
    this.checkQuorum = cfg.checkQuorum ?? RAFT_DEFAULTS.checkQuorum;
    this.appendBytesMax = cfg.appendBytesMax ?? RAFT_DEFAULTS.appendBytesMax;
    this.inflightAppendsMax = cfg.inflightAppendsMax ?? RAFT_DEFAULTS.inflightAppendsMax;
    this.uncommittedEntriesMax = cfg.uncommittedEntriesMax ?? RAFT_DEFAULTS.uncommittedEntriesMax;
    this.applyBytesMax = cfg.applyBytesMax ?? RAFT_DEFAULTS.applyBytesMax;
    this.snapshotChunkBytes = cfg.snapshotChunkBytes ?? RAFT_DEFAULTS.snapshotChunkBytes;
    this.snapshotTransfer = cfg.snapshotTransfer ?? RAFT_DEFAULTS.snapshotTransfer;
    this.leaseClockDriftTicks = cfg.leaseClockDriftTicks ?? RAFT_DEFAULTS.leaseClockDriftTicks;
    this.promoteLagEntriesMax = cfg.promoteLagEntriesMax ?? RAFT_DEFAULTS.promoteLagEntriesMax;
    this.appendRetransmitTicks = cfg.appendRetransmitTicks ?? RAFT_DEFAULTS.appendRetransmitTicks;
    assert.ok(this.heartbeatIntervalTicks >= 1 && this.electionTimeoutTicks > this.heartbeatIntervalTicks);
    assert.ok(this.leaseClockDriftTicks >= 0 && this.leaseClockDriftTicks < this.electionTimeoutTicks);
    assert.ok(this.snapshotChunkBytes >= 1 && this.inflightAppendsMax >= 1);

    const storage = cfg.storage;
    const { hardState, snapshotConf } = storage.initialState();
    assertIndex(hardState.term, 'term');
    this.term = hardState.term;
    this.vote = hardState.vote;
    this.lastHardState = hardState;
    this.log = new RaftLog(storage, hardState.commit);
    this.baseConf = snapshotConf;
    // Membership is applied on append: replay the conf entries still in the log.
    const first = storage.firstIndex();
    const last = storage.lastIndex();
    if (last >= first) {
      for (const e of storage.entries(first, last + 1, Number.MAX_SAFE_INTEGER)) {
        if (e.type === EntryType.ConfChange) this.confHistory.push({ index: e.index, conf: decodeConfState(e.data) });
      }
    }
    this.setConf(this.currentConf());
    this.becomeFollower(this.term, null);
    // A node that ran before may have been part of a leader's lease quorum
    // just before it restarted: it ignores vote requests for one election
    // timeout after start, as if it had just heard from that leader. A brand
    // new node (term 0) never promised anything.
    this.ticksSinceLeaderContact = this.term > 0 ? 0 : this.electionTimeoutTicks;
  }

  // ---------------------------------------------------------------- public API

  tick(): void {
    this.tickCount++;
    if (this.role === Role.Leader) this.tickLeader();
    else this.tickElection();
  }

  step(m: Message): void {
    assert.equal(m.to, this.id, 'message for another node');
    assertIndex(m.term, 'message term');
    if (m.term > this.term) {
      if ((m.type === 'vote' || m.type === 'preVote') && !m.transfer && this.inLease()) {
        return; // we heard from a leader recently: do not help depose it
      }
      if (m.type === 'preVote') {
        // Pre-vote never changes our term.
      } else if (m.type === 'preVoteResp' && !m.reject) {
        // Granted pre-votes carry the future term we asked about.
      } else if (m.type === 'append' || m.type === 'heartbeat' || m.type === 'snapshot') {
        this.becomeFollower(m.term, m.from);
      } else {
        this.becomeFollower(m.term, null);
      }
    } else if (m.term < this.term) {
      if (m.type === 'append' || m.type === 'heartbeat') {
        // A stale leader: tell it our term so it steps down.
        this.sendHeld(newMessage('appendResp', this.id, m.from, this.term));
      } else if (m.type === 'preVote') {
        const r = newMessage('preVoteResp', this.id, m.from, this.term);
        r.reject = true;
        this.msgs.push(r);
      }
      return;
    }

    switch (m.type) {
      case 'preVote':
      case 'vote':
        this.handleVoteRequest(m);
        return;
      case 'timeoutNow':
        if (this.promotable() && this.role !== Role.Leader) this.campaign(false, true);
        return;
      case 'readIndexResp':
        // Confirmed by the leader of this term after the request was made: valid whatever our role is now.
        if (m.reject) this.reads.dropped(m.requestId);
        else this.reads.answered({ requestId: m.requestId, index: m.index });
        return;
      case 'readIndex':
        if (this.role !== Role.Leader) {
          const r = newMessage('readIndexResp', this.id, m.from, this.term);
          r.requestId = m.requestId;
          r.reject = true;
          this.msgs.push(r);
          return;
        }
        break;
      default:
        break;
    }
    switch (this.role) {
      case Role.Leader:
        this.stepLeader(m);
        return;
      case Role.Candidate:
      case Role.PreCandidate:
        this.stepCandidate(m);
        return;
      case Role.Follower:
        this.stepFollower(m);
        return;
    }
  }

  /** Start an election now (as if the election timeout fired), with pre-vote if enabled. */
  hup(): void {
    if (this.role === Role.Leader || !this.promotable()) return;
    this.campaign(this.preVote, false);
  }

  /** Append a normal entry. Batch many operations into one entry where possible. */
  propose(data: Uint8Array): ProposeResult {
    return this.proposeEntry(EntryType.Normal, data);
  }

  /** Propose a single-server membership change (one at a time). */
  proposeConfChange(cc: ConfChange): ProposeResult {
    if (this.role !== Role.Leader) return { ok: false, reason: 'notLeader', leader: this.leader };
    if (this.pendingConfIndex > this.log.committed) return { ok: false, reason: 'confChangePending', leader: this.id };
    const next = applyConfChange(this.currentConf(), cc);
    if (typeof next === 'string') return { ok: false, reason: 'invalid', leader: this.id, detail: next };
    if (cc.op === 'promote') {
      const pr = this.progress.get(cc.nodeId);
      if (pr === undefined || pr.match + this.promoteLagEntriesMax < this.log.lastIndex()) {
        return { ok: false, reason: 'invalid', leader: this.id, detail: `${cc.nodeId} has not caught up` };
      }
    }
    return this.proposeEntry(EntryType.ConfChange, encodeConfState(next));
  }

  /**
   * Ask for a linearizable read. 'safe' uses ReadIndex (a heartbeat round);
   * 'lease' answers at once while the check-quorum lease holds, else falls
   * back to ReadIndex. The answer arrives as a ReadState in a later Ready
   * (possibly the next one), or the id appears in Ready.droppedReads.
   */
  read(requestId: number, mode: 'safe' | 'lease' = 'safe'): ReadResult {
    if (this.role !== Role.Leader) {
      if (this.leader === null) return 'notLeader';
      const m = newMessage('readIndex', this.id, this.leader, this.term);
      m.requestId = requestId;
      this.msgs.push(m);
      return 'ok';
    }
    return this.leaderRead(requestId, this.id, mode);
  }

  /** Hand leadership to `target` (a voter): bring it up to date, then send it TimeoutNow. */
  transferLeadership(target: NodeId): boolean {
    if (this.role !== Role.Leader || target === this.id || !this.voterSet.has(target)) return false;
    const pr = this.progress.get(target);
    if (pr === undefined) return false;
    this.leadTransferee = target;
    this.electionElapsed = 0; // the transfer is abandoned after one election timeout
    if (pr.match === this.log.lastIndex()) this.sendTimeoutNow(target);
    else this.sendAppend(target, pr, true);
    return true;
  }

  hasReady(): boolean {
    if (this.outstanding !== null) return false;
    if (this.role === Role.Leader && this.needBroadcast) return true;
    return (
      this.msgs.length > 0 ||
      this.msgsAfterPersist.length > 0 ||
      this.hardStateChanged() ||
      this.log.hasUnstableEntries() ||
      (this.log.unstableSnapshot !== null && !this.log.snapshotInProgress) ||
      this.log.hasCommittedToApply() ||
      this.reads.hasReady()
    );
  }

  ready(): Ready {
    assert.equal(this.outstanding, null, 'ready() called before advance() of the previous Ready');
    if (this.role === Role.Leader && this.needBroadcast) this.broadcastAppend();
    const hardState = this.hardStateChanged() ? { term: this.term, vote: this.vote, commit: this.log.committed } : null;
    if (hardState !== null) this.lastHardState = hardState;
    let snapshot: Snapshot | null = null;
    if (this.log.unstableSnapshot !== null && !this.log.snapshotInProgress) {
      snapshot = this.log.unstableSnapshot;
      this.log.snapshotInProgress = true;
    }
    const entries = this.log.takeUnstableEntries();
    const committedEntries = this.log.takeCommittedEntries(this.applyBytesMax);
    const messages = this.msgs;
    this.msgs = [];
    const persists = hardState !== null || snapshot !== null || entries.length > 0;
    let release: Message[] = [];
    if (this.msgsAfterPersist.length > 0) {
      if (persists) release = this.msgsAfterPersist;
      else for (const m of this.msgsAfterPersist) messages.push(m);
      this.msgsAfterPersist = [];
    }
    const lastEntry = entries.length > 0 ? (entries[entries.length - 1] as Entry) : null;
    this.outstanding = {
      lastEntryIndex: lastEntry === null ? 0 : lastEntry.index,
      lastEntryTerm: lastEntry === null ? 0 : lastEntry.term,
      snapshotIndex: snapshot === null ? 0 : snapshot.meta.index,
      release,
    };
    const { readStates, droppedReads } = this.reads.take();
    return { hardState, snapshot, entries, committedEntries, messages, readStates, droppedReads };
  }

  /** Confirms that everything the last Ready asked to persist is durable. */
  advance(): void {
    const o = this.outstanding;
    assert.ok(o !== null, 'advance() without ready()');
    this.outstanding = null;
    if (o.snapshotIndex > 0) this.log.stableSnapshotTo(o.snapshotIndex);
    if (o.lastEntryIndex > 0) this.log.stableTo(o.lastEntryIndex, o.lastEntryTerm);
    for (const m of o.release) this.msgs.push(m);
    if (this.role === Role.Leader) {
      // Leader self-ack: it counts toward commit only up to its durable index.
      if (this.maybeCommit()) this.needBroadcast = true;
    }
  }

  status(): RaftStatus {
    return {
      id: this.id,
      role: this.role,
      term: this.term,
      vote: this.vote,
      leader: this.leader,
      commit: this.log.committed,
      applied: this.log.applied,
      firstIndex: this.log.firstIndex(),
      lastIndex: this.log.lastIndex(),
      persistedIndex: this.log.persistedIndex(),
      conf: this.currentConf(),
    };
  }

  /** Membership as of log index `index` (for the application's snapshots). */
  confStateAt(index: number): ConfState {
    for (let k = this.confHistory.length - 1; k >= 0; k--) {
      const h = this.confHistory[k] as { index: number; conf: ConfState };
      if (h.index <= index) return h.conf;
    }
    return this.baseConf;
  }

  /**
   * On a leader, each other replica's replication state: its match index and
   * how many ticks ago it last acknowledged this leader (Infinity: never in
   * this term). Empty on a follower.
   */
  followers(): { readonly id: NodeId; readonly match: number; readonly ticksSinceAck: number }[] {
    if (this.role !== Role.Leader) return [];
    const out: { id: NodeId; match: number; ticksSinceAck: number }[] = [];
    for (const [id, pr] of this.progress) {
      out.push({ id, match: pr.match, ticksSinceAck: pr.ackedSentTick < 0 ? Infinity : this.tickCount - pr.ackedSentTick });
    }
    return out;
  }

  /**
   * Whether every lease an earlier leader of the group may still hold has
   * surely run out, so this leader alone may act on its own lease (window
   * sequences). An earlier leader's lease starts at a round that some voter of
   * this leader's election answered before granting its vote, so before this
   * node won; it lasts electionTimeoutTicks - leaseClockDriftTicks of that
   * leader's ticks. This leader therefore waits predecessorLeaseTicks of its
   * own ticks after winning: electionTimeoutTicks covers the lease with the
   * drift it allows, leaseClockDriftTicks adds the same margin again, and one
   * tick more covers the tick that was in progress when it won. False on a
   * node that does not lead.
   */
  predecessorLeaseExpired(): boolean {
    return this.role === Role.Leader && this.tickCount - this.leaderSinceTick >= this.predecessorLeaseTicks;
  }

  /** The commit index as this node knows it. */
  commitIndex(): number {
    return this.log.committed;
  }

  /** Whether the last committed entry is of this node's term (a new leader's first entry committed). */
  committedInTerm(): boolean {
    return this.log.term(this.log.committed) === this.term;
  }

  /** Whether this node is the group's only voter (no other node can lead it). */
  soleVoter(): boolean {
    return this.voterSet.size === 1 && this.voterSet.has(this.id);
  }

  /** Ticks a new leader waits before predecessorLeaseExpired() (see there). */
  get predecessorLeaseTicks(): number {
    return this.electionTimeoutTicks + this.leaseClockDriftTicks + 1;
  }

  /** Whether a lease read would be served locally right now. */
  leaseValid(): boolean {
    if (this.role !== Role.Leader || !this.checkQuorum || this.leadTransferee !== null || this.leaseRevoked) return false;
    const n = this.voters.length;
    if (n === 0) return false;
    const a = this.scratch;
    a.length = 0;
    for (const v of this.voters) {
      a.push(v === this.id ? this.tickCount : (this.progress.get(v)?.ackedSentTick ?? -1));
    }
    return leaseHolds(this.tickCount, this.quorumValue(a), this.electionTimeoutTicks, this.leaseClockDriftTicks);
  }

  // ------------------------------------------------------------- roles & terms

  private promotable(): boolean {
    return this.voterSet.has(this.id);
  }

  private inLease(): boolean {
    if (!this.checkQuorum) return false;
    if (this.role === Role.Leader) return true;
    return this.ticksSinceLeaderContact < this.electionTimeoutTicks;
  }

  private resetTerm(term: number): void {
    assertIndex(term, 'term');
    if (term !== this.term) {
      assert.ok(term > this.term, 'term went backwards');
      this.term = term;
      this.vote = null;
    }
    this.leader = null;
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    this.randomizedElectionTimeout = this.electionTimeoutTicks + Math.floor(this.random() * this.electionTimeoutTicks);
    this.votes.clear();
    this.progress.clear();
    this.leadTransferee = null;
    this.leaseRevoked = false;
    this.needBroadcast = false;
    this.reads.dropPending(this.id);
  }

  private becomeFollower(term: number, leader: NodeId | null): void {
    this.resetTerm(term);
    this.role = Role.Follower;
    this.leader = leader;
    if (leader !== null) this.ticksSinceLeaderContact = 0;
  }

  private becomePreCandidate(): void {
    assert.notEqual(this.role, Role.Leader);
    // Pre-vote changes neither term nor vote.
    this.votes.clear();
    this.role = Role.PreCandidate;
    this.leader = null;
    this.electionElapsed = 0;
    this.randomizedElectionTimeout = this.electionTimeoutTicks + Math.floor(this.random() * this.electionTimeoutTicks);
  }

  private becomeCandidate(): void {
    assert.notEqual(this.role, Role.Leader);
    this.resetTerm(this.term + 1);
    this.vote = this.id;
    this.role = Role.Candidate;
  }

  private becomeLeader(): void {
    assert.ok(this.role === Role.Candidate, 'only a candidate becomes leader');
    this.resetTerm(this.term);
    this.role = Role.Leader;
    this.leader = this.id;
    this.leaderSinceTick = this.tickCount;
    const last = this.log.lastIndex();
    for (const p of this.voters) if (p !== this.id) this.progress.set(p, new Progress(last + 1, this.inflightAppendsMax, false));
    for (const p of this.learners) if (p !== this.id) this.progress.set(p, new Progress(last + 1, this.inflightAppendsMax, true));
    // Membership changes still uncommitted in our log must commit before a new one.
    this.pendingConfIndex = last;
    // The no-op of this term: nothing is served from this term before it commits.
    this.appendLocal([{ term: this.term, index: last + 1, type: EntryType.Normal, data: EMPTY }]);
    this.needBroadcast = true;
  }

  private campaign(usePreVote: boolean, transfer: boolean): void {
    if (!this.promotable()) return;
    let voteTerm: number;
    let type: MessageType;
    if (usePreVote) {
      this.becomePreCandidate();
      voteTerm = this.term + 1;
      type = 'preVote';
    } else {
      this.becomeCandidate();
      voteTerm = this.term;
      type = 'vote';
    }
    this.votes.set(this.id, true);
    if (this.pollResult() === 'won') {
      if (usePreVote) this.campaign(false, false);
      else this.becomeLeader();
      return;
    }
    const lastIndex = this.log.lastIndex();
    const lastTerm = this.log.lastTerm();
    for (const v of this.voters) {
      if (v === this.id) continue;
      const m = newMessage(type, this.id, v, voteTerm);
      m.index = lastIndex;
      m.logTerm = lastTerm;
      m.transfer = transfer;
      // A vote request depends on our durable vote for ourselves; a pre-vote on nothing.
      if (usePreVote) this.msgs.push(m);
      else this.sendHeld(m);
    }
  }

  private pollResult(): 'won' | 'lost' | 'pending' {
    let granted = 0;
    let rejected = 0;
    for (const v of this.voters) {
      const g = this.votes.get(v);
      if (g === true) granted++;
      else if (g === false) rejected++;
    }
    const q = (this.voters.length >> 1) + 1;
    if (granted >= q) return 'won';
    if (rejected >= q) return 'lost';
    return 'pending';
  }

  private handleVoteRequest(m: Message): void {
    const isPre = m.type === 'preVote';
    const canVote = this.vote === m.from || (this.vote === null && this.leader === null) || (isPre && m.term > this.term);
    const grant = canVote && this.log.isUpToDate(m.index, m.logTerm);
    const r = newMessage(isPre ? 'preVoteResp' : 'voteResp', this.id, m.from, grant ? m.term : this.term);
    r.reject = !grant;
    if (isPre) {
      this.msgs.push(r);
      return;
    }
    if (grant) {
      this.electionElapsed = 0;
      this.vote = m.from;
    }
    this.sendHeld(r); // released only once our vote is durable
  }

  private tickElection(): void {
    this.electionElapsed++;
    this.ticksSinceLeaderContact++;
    if (this.promotable() && this.electionElapsed >= this.randomizedElectionTimeout) {
      this.electionElapsed = 0;
      this.campaign(this.preVote, false);
    }
  }

  private tickLeader(): void {
    this.heartbeatElapsed++;
    this.electionElapsed++;
    if (this.electionElapsed >= this.electionTimeoutTicks) {
      this.electionElapsed = 0;
      if (this.checkQuorum) {
        if (!this.quorumActive()) {
          this.becomeFollower(this.term, null);
          return;
        }
      }
      this.leadTransferee = null; // a transfer that did not finish in time is abandoned
    }
    if (this.heartbeatElapsed >= this.heartbeatIntervalTicks) {
      this.heartbeatElapsed = 0;
      this.broadcastHeartbeat();
      for (const [id, pr] of this.progress) {
        if (this.snapshotTransfer === 'inline' && pr.state === ProgressState.Snapshot && this.tickCount - pr.snapshotSentTick >= this.appendRetransmitTicks) {
          this.sendSnapshotChunk(id, pr); // the previous chunk or its ack was lost
        }
      }
    }
  }

  private quorumActive(): boolean {
    let active = 0;
    for (const v of this.voters) {
      if (v === this.id) {
        active++;
        continue;
      }
      const pr = this.progress.get(v);
      if (pr !== undefined && pr.recentActive) active++;
    }
    for (const pr of this.progress.values()) pr.recentActive = false;
    return active >= (this.voters.length >> 1) + 1;
  }

  // ----------------------------------------------------------------- leader

  private proposeEntry(type: EntryType, data: Uint8Array): ProposeResult {
    if (this.role !== Role.Leader) return { ok: false, reason: 'notLeader', leader: this.leader };
    if (this.leadTransferee !== null) return { ok: false, reason: 'transferring', leader: this.id };
    const last = this.log.lastIndex();
    if (last - this.log.committed >= this.uncommittedEntriesMax) return { ok: false, reason: 'overloaded', leader: this.id };
    const index = last + 1;
    this.appendLocal([{ term: this.term, index, type, data }]);
    if (type === EntryType.ConfChange) this.pendingConfIndex = index;
    this.needBroadcast = true; // appends leave at the next ready(), together with this turn's other proposals
    return { ok: true, index, term: this.term };
  }

  private stepLeader(m: Message): void {
    switch (m.type) {
      case 'appendResp':
        this.handleAppendResp(m);
        return;
      case 'heartbeatResp':
        this.handleHeartbeatResp(m);
        return;
      case 'snapshotResp':
        this.handleSnapshotResp(m);
        return;
      case 'readIndex': {
        const res = this.leaderRead(m.requestId, m.from, 'safe');
        if (res !== 'ok') {
          const r = newMessage('readIndexResp', this.id, m.from, this.term);
          r.requestId = m.requestId;
          r.reject = true;
          this.msgs.push(r);
        }
        return;
      }
      case 'append':
      case 'heartbeat':
      case 'snapshot':
        assert.fail(`two leaders in term ${this.term}: ${this.id} and ${m.from}`);
        return;
      default:
        return; // stale vote responses etc.
    }
  }

  private touch(pr: Progress, m: Message): void {
    pr.recentActive = true;
    if (m.sentTick > pr.ackedSentTick) pr.ackedSentTick = m.sentTick;
  }

  private handleAppendResp(m: Message): void {
    const pr = this.progress.get(m.from);
    if (pr === undefined) return;
    this.touch(pr, m);
    if (m.reject) {
      const hint = m.hintTerm > 0 ? this.log.findConflictByTerm(m.hintIndex, m.hintTerm).index : m.hintIndex;
      if (pr.maybeDecrTo(m.index, hint)) {
        if (pr.state === ProgressState.Replicate) pr.becomeProbe();
        pr.lastProgressTick = this.tickCount;
        this.sendAppend(m.from, pr, true);
      }
      return;
    }
    const updated = pr.maybeUpdate(m.index);
    if (pr.state === ProgressState.Replicate) pr.inflights.freeTo(m.index);
    if (!updated) return;
    pr.lastProgressTick = this.tickCount;
    if (pr.state === ProgressState.Probe) pr.becomeReplicate();
    else if (pr.state === ProgressState.Snapshot && pr.pendingSnapshot !== null && pr.match >= pr.pendingSnapshot.meta.index) {
      pr.becomeProbe();
    }
    if (this.maybeCommit()) {
      this.needBroadcast = true;
    } else if (pr.match < this.log.lastIndex()) {
      this.needBroadcast = true;
    }
    if (m.from === this.leadTransferee && pr.match === this.log.lastIndex()) this.sendTimeoutNow(m.from);
  }

  private handleHeartbeatResp(m: Message): void {
    const pr = this.progress.get(m.from);
    if (pr === undefined) return;
    this.touch(pr, m);
    if (pr.match < this.log.lastIndex() && pr.state !== ProgressState.Snapshot) {
      // The follower is alive but behind. If nothing was acknowledged for a
      // while, appends (or their acks) were lost: probe again from match.
      if (this.tickCount - pr.lastProgressTick >= this.appendRetransmitTicks) {
        pr.becomeProbe();
        pr.lastProgressTick = this.tickCount;
        this.sendAppend(m.from, pr, true);
      } else if (pr.state === ProgressState.Replicate) {
        this.sendAppend(m.from, pr, false);
      }
    }
    if (m.readSeq > pr.ackedReadSeq && !pr.isLearner) {
      pr.ackedReadSeq = m.readSeq;
      this.releaseReads();
    }
  }

  private handleSnapshotResp(m: Message): void {
    const pr = this.progress.get(m.from);
    if (pr === undefined) return;
    this.touch(pr, m);
    if (pr.state !== ProgressState.Snapshot || pr.pendingSnapshot === null) return;
    if (m.index !== pr.pendingSnapshot.meta.index) return;
    if (m.offset >= m.totalBytes && !m.reject) {
      // Installed and durable on the follower.
      pr.maybeUpdate(m.index);
      pr.becomeProbe();
      this.sendAppend(m.from, pr, true);
      return;
    }
    pr.snapshotAckedOffset = m.offset;
    this.sendSnapshotChunk(m.from, pr);
  }

  /** Recompute the commit index from the voters' durable match indexes. */
  private maybeCommit(): boolean {
    const a = this.scratch;
    a.length = 0;
    for (const v of this.voters) {
      a.push(v === this.id ? this.log.persistedIndex() : (this.progress.get(v)?.match ?? 0));
    }
    if (a.length === 0) return false;
    const idx = this.quorumValue(a);
    if (idx <= this.log.committed) return false;
    // Only entries of the current term are committed by counting (Raft §5.4.2).
    if (this.log.term(idx) !== this.term) return false;
    this.log.commitTo(idx);
    this.afterCommit();
    return true;
  }

  private afterCommit(): void {
    if (this.role !== Role.Leader) return;
    // A leader that removed itself steps down once that change is committed.
    if (!this.voterSet.has(this.id) && this.lastConfIndex() <= this.log.committed) {
      let best: NodeId | null = null;
      let bestMatch = -1;
      for (const v of this.voters) {
        const pr = this.progress.get(v);
        if (pr !== undefined && pr.match > bestMatch) {
          best = v;
          bestMatch = pr.match;
        }
      }
      this.broadcastAppend();
      if (best !== null && bestMatch === this.log.lastIndex()) this.sendTimeoutNow(best);
      this.becomeFollower(this.term, null);
      return;
    }
    this.releaseReads();
  }

  /** The value a quorum of the entries in `a` reaches (k-th largest, k = majority). */
  private quorumValue(a: number[]): number {
    a.sort((x, y) => y - x);
    return a[a.length >> 1] as number;
  }

  private broadcastAppend(): void {
    this.needBroadcast = false;
    for (const [id, pr] of this.progress) this.sendAppend(id, pr, false);
  }

  private broadcastHeartbeat(): void {
    for (const [id, pr] of this.progress) {
      const m = newMessage('heartbeat', this.id, id, this.term);
      m.commit = Math.min(pr.match, this.log.committed);
      m.readSeq = this.reads.seq;
      m.sentTick = this.tickCount;
      this.msgs.push(m);
    }
  }

  /**
   * Send what `to` is missing, as many append messages as the inflight window
   * and appendBytesMax allow. `force`: send even an empty append (a probe, or
   * to carry the commit index).
   */
  private sendAppend(to: NodeId, pr: Progress, force: boolean): void {
    const last = this.log.lastIndex();
    for (;;) {
      if (pr.isPaused()) return;
      const prevIndex = pr.next - 1;
      const prevTerm = this.log.term(prevIndex);
      if (prevTerm === undefined) {
        this.startSnapshot(to, pr);
        return;
      }
      const hasEntries = pr.next <= last;
      if (!hasEntries && !force && pr.commitSent >= this.log.committed) return;
      const entries = hasEntries ? this.log.slice(pr.next, last + 1, this.appendBytesMax) : [];
      const m = newMessage('append', this.id, to, this.term);
      m.index = prevIndex;
      m.logTerm = prevTerm;
      m.entries = entries;
      m.commit = this.log.committed;
      m.sentTick = this.tickCount;
      this.msgs.push(m);
      pr.commitSent = this.log.committed;
      if (pr.state === ProgressState.Probe) {
        pr.probeSent = true;
        return;
      }
      if (entries.length === 0) return;
      const sentLast = (entries[entries.length - 1] as Entry).index;
      pr.next = sentLast + 1;
      pr.inflights.add(sentLast);
      if (pr.next > last) return;
      force = false;
    }
  }

  private startSnapshot(to: NodeId, pr: Progress): void {
    const snap = this.log.storage.snapshot();
    assert.ok(snap.meta.index >= pr.next - 1, 'log compacted without a covering snapshot');
    pr.becomeSnapshot(snap, this.tickCount);
    if (this.snapshotTransfer === 'external') {
      // Only the meta is read here: the application streams the data and calls reportSnapshot.
      this.msgs.push(externalSnapshotRequest(this.id, to, this.term, snap.meta, this.tickCount));
      return;
    }
    this.sendSnapshotChunk(to, pr);
  }

  private sendSnapshotChunk(to: NodeId, pr: Progress): void {
    const snap = pr.pendingSnapshot;
    assert.ok(snap !== null);
    this.msgs.push(inlineChunkMessage(this.id, to, this.term, snap, pr.snapshotAckedOffset, this.snapshotChunkBytes, this.tickCount));
    pr.snapshotSentTick = this.tickCount;
  }

  /**
   * External transfer, leader side: the application finished (`ok`) or gave
   * up on the snapshot it was asked to send to `to`. On success the follower
   * is probed right after the snapshot (its node restored it before the
   * application reported); on failure it is probed from its match index
   * later, which asks for a snapshot again if it still needs one.
   */
  reportSnapshot(to: NodeId, ok: boolean): void {
    assert.equal(this.snapshotTransfer, 'external', 'reportSnapshot without external snapshot transfer');
    if (this.role !== Role.Leader) return;
    const pr = this.progress.get(to);
    if (pr === undefined || pr.state !== ProgressState.Snapshot) return;
    if (ok) pr.deliveredSnapshotIndex = pr.pendingSnapshot?.meta.index ?? 0;
    else pr.pendingSnapshot = null;
    pr.becomeProbe();
    pr.lastProgressTick = this.tickCount;
    if (ok) this.sendAppend(to, pr, true);
    else pr.probeSent = true; // retried from a heartbeat response after appendRetransmitTicks
  }

  private sendTimeoutNow(to: NodeId): void {
    this.leaseRevoked = true;
    this.msgs.push(newMessage('timeoutNow', this.id, to, this.term));
  }

  private leaderRead(requestId: number, from: NodeId, mode: 'safe' | 'lease'): ReadResult {
    if (this.log.term(this.log.committed) !== this.term) return 'notReady'; // no-op not committed yet
    const index = this.log.committed;
    const single = this.voters.length === 1 && this.voters[0] === this.id;
    if (single || (mode === 'lease' && this.leaseValid())) {
      this.answerRead({ requestId, index, seq: 0, from });
      return 'ok';
    }
    this.reads.push(requestId, index, from);
    this.broadcastHeartbeat();
    return 'ok';
  }

  private answerRead(r: PendingRead): void {
    if (r.from === this.id) {
      this.reads.answered({ requestId: r.requestId, index: r.index });
    } else {
      const m = newMessage('readIndexResp', this.id, r.from, this.term);
      m.requestId = r.requestId;
      m.index = r.index;
      this.msgs.push(m);
    }
  }

  private releaseReads(): void {
    if (!this.reads.hasPending()) return;
    if (this.log.term(this.log.committed) !== this.term) return;
    const a = this.scratch;
    a.length = 0;
    for (const v of this.voters) a.push(v === this.id ? this.reads.seq : (this.progress.get(v)?.ackedReadSeq ?? 0));
    if (a.length === 0) return;
    this.reads.release(this.quorumValue(a), (r) => this.answerRead(r));
  }

  // --------------------------------------------------------------- follower

  private stepCandidate(m: Message): void {
    switch (m.type) {
      case 'append':
      case 'heartbeat':
      case 'snapshot':
        this.becomeFollower(m.term, m.from);
        this.stepFollower(m);
        return;
      case 'preVoteResp':
      case 'voteResp': {
        const expected = this.role === Role.PreCandidate ? 'preVoteResp' : 'voteResp';
        if (m.type !== expected) return;
        if (m.type === 'preVoteResp' && !m.reject && m.term !== this.term + 1) return;
        this.votes.set(m.from, !m.reject);
        const res = this.pollResult();
        if (res === 'won') {
          if (this.role === Role.PreCandidate) this.campaign(false, false);
          else this.becomeLeader();
        } else if (res === 'lost') {
          this.becomeFollower(this.term, null);
        }
        return;
      }
      default:
        return;
    }
  }

  private stepFollower(m: Message): void {
    switch (m.type) {
      case 'append':
        this.heardFromLeader(m.from);
        this.handleAppend(m);
        return;
      case 'heartbeat':
        this.heardFromLeader(m.from);
        this.handleHeartbeat(m);
        return;
      case 'snapshot':
        this.heardFromLeader(m.from);
        this.handleSnapshotChunk(m);
        return;
      default:
        return;
    }
  }

  private heardFromLeader(from: NodeId): void {
    this.electionElapsed = 0;
    this.ticksSinceLeaderContact = 0;
    this.leader = from;
  }

  private handleAppend(m: Message): void {
    const r = newMessage('appendResp', this.id, m.from, this.term);
    r.sentTick = m.sentTick;
    if (m.index < this.log.committed) {
      r.index = this.log.committed;
      this.sendHeld(r);
      return;
    }
    if (this.log.matchTerm(m.index, m.logTerm)) {
      const lastNew = m.index + m.entries.length;
      const conflict = this.log.findConflict(m.entries);
      if (conflict !== 0) {
        assert.ok(conflict > this.log.committed, `conflict at ${conflict} with committed entry (commit ${this.log.committed})`);
        const from = conflict - (m.index + 1);
        this.appendLocal(from === 0 ? m.entries : m.entries.slice(from));
      }
      this.log.commitTo(Math.min(m.commit, lastNew));
      r.index = lastNew;
      this.sendHeld(r);
      return;
    }
    const hintIndex = Math.min(m.index, this.log.lastIndex());
    const hint = this.log.findConflictByTerm(hintIndex, m.logTerm);
    r.reject = true;
    r.index = m.index;
    r.hintIndex = hint.index;
    r.hintTerm = hint.term;
    this.sendHeld(r);
  }

  private handleHeartbeat(m: Message): void {
    this.log.commitTo(Math.min(m.commit, this.log.lastIndex()));
    const r = newMessage('heartbeatResp', this.id, m.from, this.term);
    r.readSeq = m.readSeq;
    r.sentTick = m.sentTick;
    this.sendHeld(r);
  }

  private handleSnapshotChunk(m: Message): void {
    const meta = m.snapshotMeta;
    assert.ok(meta !== null, 'snapshot message without snapshot');
    if (m.chunk === null) {
      this.handleExternalSnapshot(m, meta);
      return;
    }
    const r = newMessage('snapshotResp', this.id, m.from, this.term);
    r.index = meta.index;
    r.totalBytes = m.totalBytes;
    r.sentTick = m.sentTick;
    if (meta.index <= this.log.committed) {
      // Already have everything the snapshot covers.
      r.offset = m.totalBytes;
      this.sendHeld(r);
      return;
    }
    const got = this.incomingSnapshot.accept(m, this.term);
    if (got.kind === 'next') {
      r.offset = got.offset;
      this.msgs.push(r); // chunk acks carry no durable claim
      return;
    }
    this.restoreSnapshot(got.snapshot);
    r.offset = m.totalBytes;
    this.sendHeld(r); // released once the snapshot is durable
  }

  /**
   * External transfer, follower side: the application staged the data of
   * `meta`'s snapshot. Restore from it unless the log already covers it; the
   * ack (an appendResp at the snapshot index, or at the commit index when it
   * was not needed) is released once the Ready restoring it is durable.
   * Whether it was taken shows in pendingSnapshotIndex().
   */
  private handleExternalSnapshot(m: Message, meta: SnapshotMeta): void {
    assert.equal(this.snapshotTransfer, 'external', 'a snapshot without data in inline transfer mode');
    const r = newMessage('appendResp', this.id, m.from, this.term);
    r.sentTick = m.sentTick;
    if (meta.index <= this.log.committed) {
      r.index = this.log.committed;
      this.sendHeld(r);
      return;
    }
    this.restoreSnapshot({ meta, data: EMPTY });
    r.index = meta.index;
    this.sendHeld(r);
  }

  /** Index of the snapshot restored from a leader and not yet confirmed durable (0: none). */
  pendingSnapshotIndex(): number {
    const snap = this.log.unstableSnapshot;
    return snap === null ? 0 : snap.meta.index;
  }

  private restoreSnapshot(snap: Snapshot): void {
    const meta = snap.meta;
    if (this.log.matchTerm(meta.index, meta.term)) {
      // Our log already contains the snapshot's last entry: just fast-forward the commit.
      this.log.commitTo(meta.index);
      return;
    }
    this.log.restore(snap);
    this.baseConf = meta.conf;
    this.confHistory = [];
    this.setConf(meta.conf);
  }

  // ----------------------------------------------------------- log & config

  /** Append to our log; membership changes take effect as soon as they are appended. */
  private appendLocal(entries: readonly Entry[]): void {
    if (entries.length === 0) return;
    const first = (entries[0] as Entry).index;
    const truncating = first <= this.log.lastIndex();
    this.log.append(entries);
    let confChanged = false;
    if (truncating) {
      while (this.confHistory.length > 0 && (this.confHistory[this.confHistory.length - 1] as { index: number }).index >= first) {
        this.confHistory.pop();
        confChanged = true;
      }
    }
    for (const e of entries) {
      if (e.type === EntryType.ConfChange) {
        this.confHistory.push({ index: e.index, conf: decodeConfState(e.data) });
        confChanged = true;
      }
    }
    if (confChanged) this.setConf(this.currentConf());
  }

  private currentConf(): ConfState {
    const h = this.confHistory[this.confHistory.length - 1];
    return h === undefined ? this.baseConf : h.conf;
  }

  private lastConfIndex(): number {
    const h = this.confHistory[this.confHistory.length - 1];
    return h === undefined ? 0 : h.index;
  }

  private setConf(conf: ConfState): void {
    this.voters = conf.voters.slice();
    this.learners = conf.learners.slice();
    this.voterSet = new Set(this.voters);
    if (this.role !== Role.Leader) return;
    const last = this.log.lastIndex();
    const members = new Set<NodeId>();
    for (const v of this.voters) members.add(v);
    for (const l of this.learners) members.add(l);
    for (const p of members) {
      if (p === this.id) continue;
      const pr = this.progress.get(p);
      const learner = !this.voterSet.has(p);
      if (pr === undefined) this.progress.set(p, new Progress(last + 1, this.inflightAppendsMax, learner));
      else pr.isLearner = learner;
    }
    for (const p of [...this.progress.keys()]) if (!members.has(p)) this.progress.delete(p);
    if (this.leadTransferee !== null && !this.voterSet.has(this.leadTransferee)) this.leadTransferee = null;
  }

  private hardStateChanged(): boolean {
    const h = this.lastHardState;
    return h.term !== this.term || h.vote !== this.vote || h.commit !== this.log.committed;
  }

  private sendHeld(m: Message): void {
    this.msgsAfterPersist.push(m);
  }
}
