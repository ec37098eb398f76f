// Window mode: the leader reserves a window of a sequence's values through the
// group (one durable log entry) and then hands them out from memory, reserving
// the next window before this one runs out, so serving never waits on a disk
// or a commit. Requests are served strictly in arrival order (FIFO), so a
// request that arrived later never gets a smaller value than one that arrived
// earlier, even when the earlier one had to wait for a reservation.
//
// Every serve first checks that the key still holds the sequence the window was
// cut from (same id, still window mode): a window of a deleted or recreated
// sequence is never served. A node that restarts (or, with Raft, a new leader)
// starts with no window and reserves above the highest value ever reserved, so
// the rest of an old window becomes a gap, never a duplicate.
//
// With replication, values are handed out only while the group says so
// (`Group.windowLease()`): on a leader that holds its lease and whose
// predecessors' leases have run out. Meanwhile requests wait, in arrival order,
// bounded in number (WINDOW_QUEUE_MAX per key) and in time (`leaseWaitMs`,
// then `windowLease`: nothing allocated); reservations still go ahead, so a
// new leader serves as soon as it may.

import assert from 'node:assert/strict';
import type { ErrorKey } from '../errors.js';
import { isSequence, type Sequence } from '../sequencer/sequence.js';
import type { OpResult } from '../sequencer/state-machine.js';
import type { Group } from './group.js';
import { DEFAULT_REQUEST_TIMEOUT_MS } from './raft-group.js';

export type Allocation = { readonly ok: true; readonly first: bigint; readonly last: bigint } | { readonly ok: false; readonly error: ErrorKey | 'retry' };

interface Request {
  readonly count: bigint;
  readonly done: (a: Allocation) => void;
  /** Until when it may wait for the group to allow serving (see `leaseWaitMs`). */
  readonly deadlineMs: number;
}

interface KeyWindow {
  readonly seqId: string;
  readonly step: bigint;
  /** Next value to hand out; the window is empty when next > end. */
  next: bigint;
  end: bigint;
  /** The last value handed out from this node's windows (null before the first). */
  lastServed: bigint | null;
  reserving: boolean;
  readonly queue: Request[];
}

/** Bound on requests waiting per key, for a reservation or for the key's adoption; past it they are refused. */
export const WINDOW_QUEUE_MAX = 100_000;

export interface WindowAllocatorOptions {
  /** Milliseconds clock for how long requests wait. Default performance.now. */
  readonly now?: () => number;
  /**
   * How long a request waits while the group may not serve window values
   * (election, a new leader waiting out its predecessors' leases), before it is
   * answered `windowLease`. Default DEFAULT_REQUEST_TIMEOUT_MS.
   */
  readonly leaseWaitMs?: number;
}

export interface WindowStats {
  readonly keys: number;
  readonly reservations: number;
  readonly served: number;
}

export class WindowAllocator {
  private readonly windows = new Map<string, KeyWindow>();
  /**
   * Keys being turned into window sequences (--window-keys), with the requests
   * that arrived meanwhile; they run after the adoption, in arrival order.
   */
  readonly adopting = new Map<string, (() => void)[]>();
  /** Keys whose queued requests wait for the group to allow serving. */
  private readonly waiting = new Set<string>();
  private reservations = 0;
  private served = 0;
  private readonly now: () => number;
  private readonly leaseWaitMs: number;
  private readonly unsubscribe: () => void;

  constructor(
    private readonly group: Group,
    opts: WindowAllocatorOptions = {},
  ) {
    this.now = opts.now ?? (() => performance.now());
    this.leaseWaitMs = opts.leaseWaitMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    assert.ok(this.leaseWaitMs >= 0, 'leaseWaitMs must not be negative');
    this.unsubscribe = group.onWindowLeaseChange(() => this.leaseChanged());
  }

  get stats(): WindowStats {
    return { keys: this.windows.size, reservations: this.reservations, served: this.served };
  }

  /** The last value this node handed out for the key's current sequence, if it has served any. */
  lastServed(key: string, seq: Sequence): bigint | null {
    const w = this.windows.get(key);
    return w !== undefined && w.seqId === seq.id ? w.lastServed : null;
  }

  /** The window being served, for SEQINFO. */
  window(key: string, seq: Sequence): { next: bigint; end: bigint } | null {
    const w = this.windows.get(key);
    return w !== undefined && w.seqId === seq.id && w.next <= w.end ? { next: w.next, end: w.end } : null;
  }

  /** Forgets every window (leadership lost, or the node stops serving). */
  reset(): void {
    const windows = [...this.windows.values()];
    this.windows.clear();
    this.waiting.clear();
    for (const w of windows) this.failAll(w, 'retry');
  }

  /** Stops listening to the group and forgets every window (waiting requests are told to retry). */
  close(): void {
    this.unsubscribe();
    this.reset();
  }

  /** Allocates `count` consecutive values (by the sequence's step) of window sequence `seq` at `key`. */
  allocate(key: string, seq: Sequence, count: bigint, done: (a: Allocation) => void): void {
    assert.equal(seq.mode, 'window');
    assert.ok(count >= 1n);
    let w = this.windows.get(key);
    if (w === undefined || w.seqId !== seq.id) {
      if (w !== undefined) this.failAll(w, 'retry');
      w = { seqId: seq.id, step: seq.step, next: 1n, end: 0n, lastServed: null, reserving: false, queue: [] };
      this.windows.set(key, w);
    }
    // The common case, served at once: nothing waits before it, the window
    // holds enough and the group may serve (what serve() would do for a queue of one).
    if (w.queue.length === 0 && this.remaining(w) >= count && this.group.windowLease() === 'serve') {
      this.waiting.delete(key);
      this.handOut(w, count, done);
      if (!w.reserving && this.remaining(w) <= seq.windowSize / 2n) this.reserve(key, w, seq, 1n);
      return;
    }
    if (w.queue.length >= WINDOW_QUEUE_MAX) {
      done({ ok: false, error: 'overloaded' });
      return;
    }
    w.queue.push({ count, done, deadlineMs: this.now() + this.leaseWaitMs });
    this.serve(key, w, seq);
  }

  /** Hands out the next `count` values of the window (which holds them). */
  private handOut(w: KeyWindow, count: bigint, done: (a: Allocation) => void): void {
    const first = w.next;
    const last = first + (count - 1n) * w.step;
    w.next = last + w.step;
    w.lastServed = last;
    this.served++;
    done({ ok: true, first, last });
  }

  private remaining(w: KeyWindow): bigint {
    return w.next > w.end ? 0n : (w.end - w.next) / w.step + 1n;
  }

  /**
   * Serves queued requests in order while the window holds enough and the
   * group allows serving; reserves ahead (also while requests wait for the
   * group, so that serving starts as soon as it may).
   */
  private serve(key: string, w: KeyWindow, seq: Sequence): void {
    if (w.queue.length > 0) {
      const lease = this.group.windowLease();
      if (lease === 'serve') {
        this.waiting.delete(key);
        while (w.queue.length > 0) {
          const head = w.queue[0] as Request;
          if (this.remaining(w) < head.count) break;
          w.queue.shift();
          this.handOut(w, head.count, head.done);
        }
      } else if (lease === 'wait') {
        this.waiting.add(key);
      } else {
        // Not served here at all (another node leads, the host failed or stops): nothing allocated.
        if (this.windows.get(key) === w) this.dropKey(key, w, lease);
        return;
      }
    }
    const head = w.queue[0];
    const remaining = this.remaining(w);
    const needed = head === undefined ? 0n : head.count - remaining;
    if (!w.reserving && (needed > 0n || remaining <= seq.windowSize / 2n)) {
      this.reserve(key, w, seq, needed > 0n ? needed : 1n);
    }
  }

  /** The group's windowLease() may have changed: serve, fail, or expire the waiting requests. */
  private leaseChanged(): void {
    if (this.waiting.size === 0) return;
    const lease = this.group.windowLease();
    const keys = [...this.waiting];
    if (lease !== 'wait') this.waiting.clear();
    const now = this.now();
    for (const key of keys) {
      const w = this.windows.get(key);
      if (w === undefined || w.queue.length === 0) {
        this.waiting.delete(key);
        continue;
      }
      if (lease === 'serve') {
        const current = this.group.peek(key);
        if (isSequence(current) && current.id === w.seqId) this.serve(key, w, current);
        else this.dropKey(key, w, 'retry');
      } else if (lease !== 'wait') {
        this.dropKey(key, w, lease);
      } else {
        // Every request waits equally long, so the expired ones are the oldest: a prefix of the queue.
        while (w.queue.length > 0 && (w.queue[0] as Request).deadlineMs <= now) {
          (w.queue.shift() as Request).done({ ok: false, error: 'windowLease' });
        }
        if (w.queue.length === 0) this.waiting.delete(key);
      }
    }
  }

  private reserve(key: string, w: KeyWindow, seq: Sequence, countMin: bigint): void {
    w.reserving = true;
    this.reservations++;
    this.group.propose({ type: 'reserve', key, id: w.seqId, countMin }, (result: OpResult) => {
      w.reserving = false;
      if (this.windows.get(key) !== w) return; // reset meanwhile; its requests were answered
      if (result.type === 'range') {
        // Windows reserved one after another by the same node are contiguous;
        // anything else (never expected) drops the rest of the old one: a gap, never a repeat.
        if (result.first === w.end + w.step && w.next <= w.end) w.end = result.last;
        else {
          w.next = result.first;
          w.end = result.last;
        }
        const current = this.group.peek(key);
        if (isSequence(current) && current.id === w.seqId) this.serve(key, w, current);
        else this.dropKey(key, w, 'retry');
        return;
      }
      if (result.type === 'error' && result.error === 'seqMax') {
        // The head request cannot be served whole: it fails, nothing allocated; later ones may fit.
        const head = w.queue.shift();
        head?.done({ ok: false, error: 'seqMax' });
        if (w.queue.length > 0) this.serve(key, w, seq);
        return;
      }
      this.dropKey(key, w, result.type === 'error' && result.error !== 'seqGone' ? result.error : 'retry');
    });
  }

  private dropKey(key: string, w: KeyWindow, error: ErrorKey | 'retry'): void {
    this.windows.delete(key);
    this.waiting.delete(key);
    this.failAll(w, error);
  }

  private failAll(w: KeyWindow, error: ErrorKey | 'retry'): void {
    const queued = w.queue.splice(0);
    for (const r of queued) r.done({ ok: false, error });
  }
}
