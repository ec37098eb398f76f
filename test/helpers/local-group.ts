// Test double: a group of one voter over a LegacyKeyspaceStore (the single-node
// engine of earlier versions, kept for the window allocator's tests). The
// node is its own majority. Ops are applied to the state machine as they arrive (in arrival order, which is the log order), and
// everything applied during one event-loop turn is persisted as one batch: one
// LMDB transaction and one fsync for every client that wrote in that turn.
// A reply (to a write or a read) is released only once every batch that could
// have influenced it is durable, so a client never sees a value that a crash
// could take back.
//
// Batches persist one after another, in order; while one is flushing the next
// one fills up, so batch sizes grow with load and no timer adds latency.

import assert from 'node:assert/strict';
import type { ErrorKey } from '../../src/errors.js';
import type { TokenTable } from '../../src/sequencer/sequence.js';
import { isEmpty, type ChangeSet, type Op, type OpResult, type StateMachine, type StoredValue } from '../../src/sequencer/state-machine.js';
import { PersistError, type LegacyKeyspaceStore } from '../../src/storage/store.js';
import type { Group, GroupStats, ReadOutcome, WindowLease } from '../../src/multiraft/group.js';

type Waiter = () => void;

interface Batch {
  readonly waiters: Waiter[];
  /** Set when the batch's persist failed: every waiter answers with this error. */
  failure: ErrorKey | null;
  opCount: number;
}

export class LocalGroup implements Group {
  private open: Batch | null = null;
  /** Sealed batches waiting for the persist loop. */
  private inFlight: Batch[] = [];
  private persisting = false;
  private closing: Promise<void> | null = null;
  private readonly counters = { batchesPersisted: 0, opsPersisted: 0, persistFailures: 0 };

  constructor(
    private readonly sm: StateMachine,
    private readonly store: LegacyKeyspaceStore,
  ) {}

  get stats(): GroupStats {
    return { ...this.counters, batchesInFlight: this.inFlight.length };
  }

  peek(key: string): StoredValue | undefined {
    return this.sm.getValue(key);
  }

  isLeader(): boolean {
    return true;
  }

  leaderId(): string | null {
    return null;
  }

  /** The only voter: no other node can serve its keys, so no lease is needed. */
  windowLease(): WindowLease {
    return 'serve';
  }

  /** windowLease() never changes: the listener is never called. */
  onWindowLeaseChange(_listener: () => void): () => void {
    return () => undefined;
  }

  get keyCount(): number {
    return this.sm.size;
  }

  propose(op: Op, done: (result: OpResult) => void): void {
    if (this.closing !== null) {
      done({ type: 'error', error: 'shuttingDown' });
      return;
    }
    const result = this.sm.apply(op);
    const batch = this.openBatch();
    batch.opCount++;
    batch.waiters.push(() => done(batch.failure === null ? result : { type: 'error', error: batch.failure }));
  }

  read<T>(query: (sm: StateMachine) => T, done: (outcome: ReadOutcome<T>) => void): void {
    const value = query(this.sm);
    // Nothing applied is waiting for disk: the state read is durable already.
    if (this.open === null && !this.persisting && this.inFlight.length === 0 && !this.sm.hasChanges()) {
      done({ ok: true, value });
      return;
    }
    const batch = this.openBatch();
    batch.waiters.push(() => done(batch.failure === null ? { ok: true, value } : { ok: false, error: batch.failure }));
  }

  private openBatch(): Batch {
    if (this.open === null) {
      this.open = { waiters: [], failure: null, opCount: 0 };
      setImmediate(() => this.seal());
    }
    return this.open;
  }

  /** Ends the turn's batch: queue it for persistence. */
  private seal(): void {
    const batch = this.open;
    if (batch === null) return;
    this.open = null;
    this.inFlight.push(batch);
    if (!this.persisting) void this.persistLoop();
  }

  /**
   * Persists sealed batches in order. Changes are taken from the state machine
   * when a persist starts, so batches sealed while one flushes are merged into
   * one write: a slow disk gives bigger batches, not a longer queue of writes.
   */
  private async persistLoop(): Promise<void> {
    assert.equal(this.persisting, false);
    this.persisting = true;
    try {
      while (this.inFlight.length > 0) {
        const batches = this.inFlight;
        this.inFlight = [];
        const changes = this.sm.takeChanges();
        let failure: ErrorKey | null = null;
        if (!isEmpty(changes)) {
          try {
            await this.store.persist(changes);
          } catch (e) {
            if (!(e instanceof PersistError)) throw e;
            failure = e.applied === 'no' ? 'persistFailed' : 'persistUnknown';
            this.counters.persistFailures++;
            this.recoverAfterFailure(e);
          }
        }
        for (const batch of batches) {
          batch.failure = failure;
          if (failure === null) {
            this.counters.batchesPersisted++;
            this.counters.opsPersisted += batch.opCount;
          }
          for (const waiter of batch.waiters) waiter();
        }
      }
    } finally {
      this.persisting = false;
    }
  }

  /**
   * After a failed persist, memory holds changes the disk may not: reload the
   * state from the store, which holds exactly what was durably written. Batches
   * opened meanwhile were applied on top of the lost state, so they fail too.
   */
  private recoverAfterFailure(error: PersistError): void {
    process.emitWarning(`ordo: ${error.message}; reloading state from storage`);
    this.sm.clear();
    this.store.recover(this.sm);
    if (this.open !== null) {
      this.inFlight.push(this.open);
      this.open = null;
    }
    // The changes of those batches are gone with the reload; their waiters get the error.
    for (const batch of this.inFlight) batch.failure = 'persistFailed';
    const failed = this.inFlight;
    this.inFlight = [];
    for (const batch of failed) for (const waiter of batch.waiters) waiter();
  }

  close(): Promise<void> {
    if (this.closing === null) {
      this.closing = (async () => {
        this.seal();
        while (this.persisting || this.inFlight.length > 0) {
          await new Promise<void>((resolve) => setImmediate(resolve));
        }
        await this.store.close();
      })();
    }
    return this.closing;
  }
}

/** In-memory store for tests. `failNext` makes the next persist fail the way a full disk would. */
export class MemoryStore implements LegacyKeyspaceStore {
  readonly description = 'memory';
  readonly values = new Map<string, StoredValue>();
  readonly tokens = new Map<string, TokenTable>();
  failNext: PersistError | null = null;
  persistCount = 0;

  recover(sm: StateMachine): void {
    for (const [k, v] of this.values) sm.load(k, v);
    for (const [k, t] of this.tokens) sm.loadTokens(k, t);
  }

  persist(changes: ChangeSet): Promise<void> {
    this.persistCount++;
    const failure = this.failNext;
    if (failure !== null) {
      this.failNext = null;
      return Promise.reject(failure);
    }
    if (changes.cleared) {
      this.values.clear();
      this.tokens.clear();
    }
    for (const [k, v] of changes.values) {
      if (v === null) this.values.delete(k);
      else this.values.set(k, v);
    }
    for (const [k, t] of changes.tokens) {
      if (t === null) this.tokens.delete(k);
      else this.tokens.set(k, t);
    }
    return Promise.resolve();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
