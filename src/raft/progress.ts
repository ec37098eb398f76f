// The leader's view of one follower's log.

import assert from 'node:assert/strict';
import { Snapshot } from './types.js';

export const ProgressState = {
  /** Unknown match point: send one append at a time and wait for the answer. */
  Probe: 0,
  /** Known match point: stream appends optimistically, bounded by the inflight window. */
  Replicate: 1,
  /** Follower needs a snapshot: stream its chunks. */
  Snapshot: 2,
} as const;
export type ProgressState = (typeof ProgressState)[keyof typeof ProgressState];

/** Ring buffer of the last indexes of append messages in flight to one follower. */
export class Inflights {
  private readonly buf: Float64Array;
  private start = 0;
  count = 0;

  constructor(readonly capacity: number) {
    assert.ok(capacity >= 1);
    this.buf = new Float64Array(capacity);
  }

  full(): boolean {
    return this.count === this.capacity;
  }

  add(lastIndex: number): void {
    assert.ok(!this.full(), 'inflights full');
    this.buf[(this.start + this.count) % this.capacity] = lastIndex;
    this.count++;
  }

  /** Free every inflight message whose last index is <= index. */
  freeTo(index: number): void {
    while (this.count > 0 && (this.buf[this.start] as number) <= index) {
      this.start = (this.start + 1) % this.capacity;
      this.count--;
    }
  }

  reset(): void {
    this.start = 0;
    this.count = 0;
  }
}

export class Progress {
  match = 0;
  next: number;
  state: ProgressState = ProgressState.Probe;
  /** In Probe state: an append was sent and no answer came yet. */
  probeSent = false;
  /** Heard from since the last check-quorum round. */
  recentActive = false;
  /** Highest leader tick echoed back by this peer (start of the lease it granted). */
  ackedSentTick = -1;
  /** Highest ReadIndex round this peer acknowledged. */
  ackedReadSeq = 0;
  readonly inflights: Inflights;
  /** Leader tick of the last sign of progress (ack advancing match, or a probe sent). */
  lastProgressTick = 0;
  /** Last commit index sent to this follower in an append. */
  commitSent = 0;
  /** Snapshot being streamed (state Snapshot). */
  pendingSnapshot: Snapshot | null = null;
  /** Bytes of pendingSnapshot acknowledged by the follower. */
  snapshotAckedOffset = 0;
  /** Leader tick at which the last snapshot chunk was sent. */
  snapshotSentTick = 0;
  /**
   * External snapshot transfer: index of a snapshot the application
   * delivered and the follower has not acknowledged or rejected yet (0:
   * none). Probes start after it, so a follower still installing it is not
   * sent another one.
   */
  deliveredSnapshotIndex = 0;

  constructor(
    next: number,
    inflightMax: number,
    public isLearner: boolean,
  ) {
    this.next = next;
    this.inflights = new Inflights(inflightMax);
  }

  becomeProbe(): void {
    if (this.state === ProgressState.Snapshot && this.pendingSnapshot !== null) {
      this.next = Math.max(this.match + 1, this.pendingSnapshot.meta.index + 1);
    } else {
      this.next = Math.max(this.match + 1, this.deliveredSnapshotIndex + 1);
    }
    this.state = ProgressState.Probe;
    this.probeSent = false;
    this.pendingSnapshot = null;
    this.inflights.reset();
  }

  becomeReplicate(): void {
    this.state = ProgressState.Replicate;
    this.next = this.match + 1;
    this.probeSent = false;
    this.pendingSnapshot = null;
    this.inflights.reset();
  }

  becomeSnapshot(snap: Snapshot, nowTick: number): void {
    this.state = ProgressState.Snapshot;
    this.pendingSnapshot = snap;
    this.snapshotAckedOffset = 0;
    this.snapshotSentTick = nowTick;
    this.inflights.reset();
  }

  /** An ack for index arrived; returns true if it told us something new. */
  maybeUpdate(index: number): boolean {
    let updated = false;
    if (this.match < index) {
      this.match = index;
      updated = true;
      this.probeSent = false;
    }
    if (this.match >= this.deliveredSnapshotIndex) this.deliveredSnapshotIndex = 0;
    this.next = Math.max(this.next, index + 1);
    return updated;
  }

  /**
   * A reject of prevIndex `rejected` arrived with a hint of where the logs may
   * match. Returns false if the reject is stale (answers an older message).
   */
  maybeDecrTo(rejected: number, matchHint: number): boolean {
    const accepted = this.decrTo(rejected, matchHint);
    if (accepted) this.deliveredSnapshotIndex = 0; // the follower's log disagrees: it does not hold that snapshot
    return accepted;
  }

  private decrTo(rejected: number, matchHint: number): boolean {
    if (this.state === ProgressState.Replicate) {
      if (rejected <= this.match) return false;
      this.next = this.match + 1;
      return true;
    }
    if (this.next - 1 !== rejected) return false;
    this.next = Math.max(Math.min(rejected, matchHint + 1), this.match + 1);
    this.probeSent = false;
    return true;
  }

  /** May the leader send an append now? */
  isPaused(): boolean {
    switch (this.state) {
      case ProgressState.Probe:
        return this.probeSent;
      case ProgressState.Replicate:
        return this.inflights.full();
      default:
        return true;
    }
  }
}
