// Core types of the pure Raft implementation. Nothing here touches I/O,
// clocks or randomness.

import assert from 'node:assert/strict';

export type NodeId = string;

/** Kind of a log entry. The leader's no-op at the start of a term is an empty Normal entry. */
export const EntryType = {
  Normal: 0,
  ConfChange: 1,
} as const;
export type EntryType = (typeof EntryType)[keyof typeof EntryType];

export interface Entry {
  readonly term: number;
  readonly index: number;
  readonly type: EntryType;
  /** Opaque payload; for ConfChange entries see confchange.ts. */
  readonly data: Uint8Array;
}

/** State that must be durable before any message that depends on it is sent. */
export interface HardState {
  readonly term: number;
  /** Candidate voted for in `term`, or null. */
  readonly vote: NodeId | null;
  /** Commit index (durability of this one is an optimisation, not a safety need). */
  readonly commit: number;
}

/** Membership of the group: voters count for elections and commit, learners only receive the log. */
export interface ConfState {
  readonly voters: readonly NodeId[];
  readonly learners: readonly NodeId[];
}

export interface SnapshotMeta {
  /** Last log index covered by the snapshot. */
  readonly index: number;
  /** Term of the entry at `index`. */
  readonly term: number;
  /** Membership as of `index`. */
  readonly conf: ConfState;
}

export interface Snapshot {
  readonly meta: SnapshotMeta;
  /** Opaque application state. */
  readonly data: Uint8Array;
}

/** Every kind of Raft message. */
export const MESSAGE_TYPES = [
  'preVote',
  'preVoteResp',
  'vote',
  'voteResp',
  'append',
  'appendResp',
  'heartbeat',
  'heartbeatResp',
  'snapshot',
  'snapshotResp',
  'timeoutNow',
  'readIndex',
  'readIndexResp',
] as const;
export type MessageType = (typeof MESSAGE_TYPES)[number];

/**
 * One flat message shape for every type (all fields always present) so that
 * the JS engine sees a single object shape on the hot path. Fields that a
 * type does not use keep their defaults (0, false, null, empty).
 */
export interface Message {
  type: MessageType;
  from: NodeId;
  to: NodeId;
  term: number;
  /**
   * append: index of the entry preceding `entries` (prevIndex).
   * appendResp: last matching index (ack) or the rejected prevIndex (reject).
   * preVote/vote: candidate's last log index.
   * readIndexResp: the read index. snapshotResp: snapshot index.
   */
  index: number;
  /** append: term at `index` (prevTerm). preVote/vote: candidate's last log term. */
  logTerm: number;
  entries: Entry[];
  /** Leader's commit index (append, heartbeat). */
  commit: number;
  reject: boolean;
  /** appendResp reject: follower's hint (largest index that may match) and its term. */
  hintIndex: number;
  hintTerm: number;
  /** heartbeat/heartbeatResp: read-round sequence number used by ReadIndex. */
  readSeq: number;
  /** Leader's tick counter when it sent the request; echoed in responses (lease). */
  sentTick: number;
  /** snapshot chunk: the snapshot being sent; snapshotResp: unused. */
  snapshotMeta: SnapshotMeta | null;
  /** snapshot: this chunk's bytes. */
  chunk: Uint8Array | null;
  /** snapshot: byte offset of `chunk`; snapshotResp: next offset wanted. */
  offset: number;
  /** snapshot: total size of the snapshot data in bytes. */
  totalBytes: number;
  /** vote: campaign triggered by leadership transfer (overrides the leader lease). */
  transfer: boolean;
  /** readIndex/readIndexResp: caller's request id. */
  requestId: number;
}

const EMPTY_ENTRIES: Entry[] = [];
Object.freeze(EMPTY_ENTRIES);

export function newMessage(type: MessageType, from: NodeId, to: NodeId, term: number): Message {
  return {
    type,
    from,
    to,
    term,
    index: 0,
    logTerm: 0,
    entries: EMPTY_ENTRIES,
    commit: 0,
    reject: false,
    hintIndex: 0,
    hintTerm: 0,
    readSeq: 0,
    sentTick: 0,
    snapshotMeta: null,
    chunk: null,
    offset: 0,
    totalBytes: 0,
    transfer: false,
    requestId: 0,
  };
}

/** A linearizable read that may be served once the state machine has applied `index`. */
export interface ReadState {
  readonly requestId: number;
  readonly index: number;
}

/** Bytes counted for an entry when sizing messages (payload plus a fixed header estimate). */
export const ENTRY_OVERHEAD_BYTES = 24;

export function entrySizeBytes(e: Entry): number {
  return e.data.length + ENTRY_OVERHEAD_BYTES;
}

export function assertIndex(n: number, what: string): void {
  // On every message and append: build the failure text only when it fails.
  if (!(Number.isSafeInteger(n) && n >= 0)) assert.fail(`${what} must be a non-negative safe integer, got ${n}`);
}
