// Linearizable reads of one Raft node, kept out of node.ts (etcd keeps its
// read_only.go apart from raft.go the same way). RaftNode.read() asks; the
// answer arrives as a ReadState in a later Ready, or the request id in
// Ready.droppedReads.
//
// - ReadIndex ('safe'): once its term's no-op is committed, the leader notes
//   its commit index and starts a heartbeat round numbered `seq` (carried as
//   Message.readSeq); the read is answered at that index once a quorum of
//   voters acknowledged a round at least as recent. A follower forwards the
//   read to its leader ("readIndex") and gets the index back
//   ("readIndexResp").
// - Lease ('lease'): with check-quorum, a leader that a quorum of voters
//   acknowledged recently enough (leaseHolds) answers at once, without a
//   round.
//
// Nothing here sends or reads the node's state: this is the bookkeeping and
// the lease arithmetic; RaftNode does the rest.

import type { NodeId, ReadState } from './types.js';

export type ReadResult = 'ok' | 'notLeader' | 'notReady';

export interface PendingRead {
  readonly requestId: number;
  readonly index: number;
  readonly seq: number;
  /** Node that asked (self, or a follower that forwarded the request). */
  readonly from: NodeId;
}

/** A node's reads: those waiting for their heartbeat round, and those answered or dropped since the last Ready. */
export class ReadIndexQueue {
  /** Number of the latest ReadIndex heartbeat round (Message.readSeq). */
  seq = 0;
  private pending: PendingRead[] = [];
  private readStates: ReadState[] = [];
  private droppedReads: number[] = [];

  /** Waits for a new heartbeat round (the caller broadcasts it) to answer the read at `index`. */
  push(requestId: number, index: number, from: NodeId): void {
    this.seq++;
    this.pending.push({ requestId, index, seq: this.seq, from });
  }

  hasPending(): boolean {
    return this.pending.length > 0;
  }

  /** Answers, in order, every pending read whose round is at or below `ackedSeq` (the round a quorum acknowledged). */
  release(ackedSeq: number, answer: (r: PendingRead) => void): void {
    let k = 0;
    while (k < this.pending.length && (this.pending[k] as PendingRead).seq <= ackedSeq) {
      answer(this.pending[k] as PendingRead);
      k++;
    }
    if (k > 0) this.pending = this.pending.slice(k);
  }

  /** Forgets every pending read; `self`'s own ones are reported dropped. */
  dropPending(self: NodeId): void {
    for (const r of this.pending) if (r.from === self) this.droppedReads.push(r.requestId);
    this.pending = [];
  }

  /** A read answered here (for the next Ready). */
  answered(rs: ReadState): void {
    this.readStates.push(rs);
  }

  /** A read that will never complete here (for the next Ready). */
  dropped(requestId: number): void {
    this.droppedReads.push(requestId);
  }

  /** Whether the next Ready has reads to hand out. */
  hasReady(): boolean {
    return this.readStates.length > 0 || this.droppedReads.length > 0;
  }

  /** The reads answered and dropped since the last call, for a Ready. */
  take(): { readonly readStates: ReadState[]; readonly droppedReads: number[] } {
    const readStates = this.readStates;
    this.readStates = [];
    const droppedReads = this.droppedReads;
    this.droppedReads = [];
    return { readStates, droppedReads };
  }
}

/**
 * Whether a leader's lease holds at `tick`: `leaseStartTick` is the latest
 * tick a quorum of voters acknowledged (negative: none). The lease lasts
 * electionTimeoutTicks - leaseClockDriftTicks ticks from there.
 */
export function leaseHolds(tick: number, leaseStartTick: number, electionTimeoutTicks: number, leaseClockDriftTicks: number): boolean {
  if (leaseStartTick < 0) return false;
  return tick < leaseStartTick + electionTimeoutTicks - leaseClockDriftTicks;
}
