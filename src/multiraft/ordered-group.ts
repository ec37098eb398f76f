// ArrivalOrderedGroup: hands a RaftGroup its requests in arrival order, so a
// pipelined read sees exactly the writes that arrived before it.

import type { Group, GroupStats, ReadOutcome, WindowLease } from './group.js';
import { DEFAULT_PROPOSALS_IN_FLIGHT_MAX, DEFAULT_READ_WAITERS_MAX, DEFAULT_REQUEST_TIMEOUT_MS, type RaftGroup } from './raft-group.js';
import type { Op, OpResult, StateMachine, StoredValue } from '../sequencer/state-machine.js';

/** Requests the arrival-order gate below may hold before it answers `overloaded`. */
export const ORDER_GATE_HELD_MAX = DEFAULT_PROPOSALS_IN_FLIGHT_MAX + DEFAULT_READ_WAITERS_MAX;

interface HeldRequest {
  readonly isWrite: boolean;
  /** When it arrived: a request held longer than the request timeout is refused, never started. */
  readonly arrivedMs: number;
  readonly start: () => void;
  readonly refuse: () => void;
}

/**
 * Keeps the local engine's promise that a command sees exactly the writes
 * that arrived before it: `SET x 5`, `INCR x`, `GET x`, `DEL x` pipelined on
 * one connection read 6. A RaftGroup applies a write when its entry commits
 * and serves a read once its read index is applied, in a later loop turn, so
 * a read could miss the writes just before it or see writes sent after it.
 * Requests therefore go to the group in arrival order, in phases: writes
 * (any number at once) while no read is in flight, reads (any number at once)
 * while no write is in flight. A write-only or read-only load passes straight
 * through; a mixed one pays a loop turn per switch.
 */
export class ArrivalOrderedGroup implements Group {
  private writesInFlight = 0;
  private readsInFlight = 0;
  private readonly held: HeldRequest[] = [];
  private heldHead = 0;
  private pumping = false;

  constructor(
    private readonly inner: RaftGroup,
    /** A request held longer than this behind other phases is refused without reaching the group. */
    private readonly requestTimeoutMs = DEFAULT_REQUEST_TIMEOUT_MS,
    /** Milliseconds clock (the host's). */
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** The Raft group underneath (INFO reads its term and indexes). */
  get raftGroup(): RaftGroup {
    return this.inner;
  }

  propose(op: Op, done: (result: OpResult) => void): void {
    // Nothing held and no read in flight: it starts now, as pump() would start it.
    if (this.heldHead === this.held.length && this.readsInFlight === 0) return this.startWrite(op, done);
    this.enqueue({
      isWrite: true,
      arrivedMs: this.now(),
      start: () => this.startWrite(op, done),
      refuse: () => done({ type: 'error', error: 'overloaded' }),
    });
  }

  read<T>(query: (sm: StateMachine) => T, done: (outcome: ReadOutcome<T>) => void): void {
    if (this.heldHead === this.held.length && this.writesInFlight === 0) return this.startRead(query, done);
    this.enqueue({
      isWrite: false,
      arrivedMs: this.now(),
      start: () => this.startRead(query, done),
      // As the group itself answers past its bound on waiting reads.
      refuse: () => done({ ok: false, error: 'overloaded' }),
    });
  }

  private startWrite(op: Op, done: (result: OpResult) => void): void {
    this.writesInFlight++;
    this.inner.propose(op, (result) => {
      this.writesInFlight--;
      done(result);
      this.pump();
    });
  }

  private startRead<T>(query: (sm: StateMachine) => T, done: (outcome: ReadOutcome<T>) => void): void {
    this.readsInFlight++;
    this.inner.read(query, (outcome) => {
      this.readsInFlight--;
      done(outcome);
      this.pump();
    });
  }

  private enqueue(request: HeldRequest): void {
    if (this.held.length - this.heldHead >= ORDER_GATE_HELD_MAX) {
      request.refuse();
      return;
    }
    this.held.push(request);
    this.pump();
  }

  /** Starts held requests, oldest first, while the head may run beside what is in flight. */
  private pump(): void {
    if (this.pumping) return; // the running loop sees the change
    this.pumping = true;
    try {
      const staleBeforeMs = this.now() - this.requestTimeoutMs;
      while (this.heldHead < this.held.length) {
        const head = this.held[this.heldHead] as HeldRequest;
        if (head.arrivedMs < staleBeforeMs) {
          // Held past the request timeout behind other phases: refused, and never reached the group.
          this.heldHead++;
          head.refuse();
          continue;
        }
        if (head.isWrite ? this.readsInFlight > 0 : this.writesInFlight > 0) break;
        this.heldHead++;
        head.start();
      }
      if (this.heldHead === this.held.length) {
        this.held.length = 0;
        this.heldHead = 0;
      } else if (this.heldHead > 1024 && this.heldHead * 2 > this.held.length) {
        this.held.splice(0, this.heldHead);
        this.heldHead = 0;
      }
    } finally {
      this.pumping = false;
    }
  }

  peek(key: string): StoredValue | undefined {
    return this.inner.peek(key);
  }

  get stats(): GroupStats {
    return this.inner.stats;
  }

  get keyCount(): number {
    return this.inner.keyCount;
  }

  isLeader(): boolean {
    return this.inner.isLeader();
  }

  leaderId(): string | null {
    return this.inner.leaderId();
  }

  windowLease(): WindowLease {
    return this.inner.windowLease();
  }

  onWindowLeaseChange(listener: () => void): () => void {
    return this.inner.onWindowLeaseChange(listener);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
