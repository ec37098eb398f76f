// The replicated state machine: a keyspace of counters and strings. Ops go in,
// results come out, deterministically: no I/O, no clock, no randomness. The
// same ops applied in the same order give the same state on every replica.
//
// Keys are byte strings; they are held as latin1 JS strings (one char a byte),
// which maps bytes to strings one to one. A value is a bigint when it was
// produced by a counter command (the common case, kept in binary so INCR does
// not parse text), otherwise the bytes SET or a string command (APPEND,
// SETRANGE, SETBIT) stored; those read a bigint as its decimal text.
//
// Unbacked, the whole keyspace is a Map in memory. Backed (a KeyspaceBacking,
// the keyspace as of the last durable checkpoint, see backing.ts), the Map is
// an overlay holding only the keys changed since the last checkpoint was
// taken, with tombstones for deleted keys; taking a checkpoint sets the
// overlay aside (read-only, `frozen`) until it is durable. Every read looks at
// the overlay, then the frozen one, then the backing. Both modes give the same
// results for the same ops.

import assert from 'node:assert/strict';
import type { ErrorKey } from '../errors.js';
import { compareScanItems, scanHash, type BackingScanItem, type KeyspaceBacking } from './backing.js';
import { addFloatText, INT64_MAX, INT64_MIN, parseInt64 } from './numbers.js';
import { appendBytes, BIT_OFFSET_MAX, copyWithRoom, getBit, STRING_BYTES_MAX } from './string-ops.js';
import {
  addToken,
  isSequence,
  lastOfRange,
  newSequence,
  pruneTokens,
  sequenceValue,
  type Sequence,
  type SequenceSpec,
  type TokenPolicy,
  type TokenRecord,
  type TokenTable,
} from './sequence.js';

export type StoredValue = bigint | Buffer | Sequence;

export type Op =
  | { readonly type: 'incrby'; readonly key: string; readonly delta: bigint }
  | { readonly type: 'incrbyfloat'; readonly key: string; readonly increment: Buffer }
  | {
      readonly type: 'set';
      readonly key: string;
      readonly value: Buffer;
      readonly condition: 'always' | 'nx' | 'xx';
      readonly get: boolean;
    }
  | { readonly type: 'mset'; readonly keys: readonly string[]; readonly values: readonly Buffer[] }
  /** MSETNX: sets every key, or none when any of them exists. */
  | { readonly type: 'msetnx'; readonly keys: readonly string[]; readonly values: readonly Buffer[] }
  | { readonly type: 'append'; readonly key: string; readonly value: Buffer }
  /** SETRANGE; `offset` is at most STRING_BYTES_MAX (the server caps larger ones: they fail the same way). */
  | { readonly type: 'setrange'; readonly key: string; readonly offset: number; readonly value: Buffer }
  /** SETBIT; `offset` is at most BIT_OFFSET_MAX (the server refuses larger ones). */
  | { readonly type: 'setbit'; readonly key: string; readonly offset: number; readonly bit: 0 | 1 }
  | { readonly type: 'del'; readonly keys: readonly string[] }
  | { readonly type: 'flushall' }
  /** SEQCREATE: a new sequence; refused when the key exists unless `replace`. */
  | { readonly type: 'seqcreate'; readonly key: string; readonly spec: SequenceSpec; readonly replace: boolean }
  /**
   * Turns a missing key or a plain counter into a sequence that continues above
   * the counter's value (--window-keys, --default-mode); a sequence stays as it is.
   */
  | { readonly type: 'adopt'; readonly key: string; readonly spec: SequenceSpec }
  /** SEQNEXT through the log: `count` values; with a token, a retry gets the same values. */
  | {
      readonly type: 'seqnext';
      readonly key: string;
      readonly count: bigint;
      readonly range: boolean;
      readonly token: string | null;
      readonly nowMs: number;
      readonly policy: TokenPolicy;
    }
  /** Window mode: reserve the next window (at least `countMin` values) above everything reserved before. */
  | { readonly type: 'reserve'; readonly key: string; readonly id: string; readonly countMin: bigint }
  /** Window mode: remember values served from a window under a token, so a retry gets them again. */
  | {
      readonly type: 'token';
      readonly key: string;
      readonly token: string;
      readonly record: TokenRecord;
      readonly policy: TokenPolicy;
    };

export type OpResult =
  | { readonly type: 'int'; readonly value: bigint }
  | { readonly type: 'range'; readonly first: bigint; readonly last: bigint }
  | { readonly type: 'bulk'; readonly value: Buffer | null }
  | { readonly type: 'ok' }
  | { readonly type: 'error'; readonly error: ErrorKey };

const OK: OpResult = { type: 'ok' };
const NIL: OpResult = { type: 'bulk', value: null };

/** What changed since the last `takeChanges`: per key the new value (or tokens), or null for deleted. */
export interface ChangeSet {
  cleared: boolean;
  readonly values: Map<string, StoredValue | null>;
  readonly tokens: Map<string, TokenTable | null>;
}

const emptyChanges = (cleared: boolean): ChangeSet => ({ cleared, values: new Map(), tokens: new Map() });

/** Whether a change set holds nothing to persist. */
export function isEmpty(changes: ChangeSet): boolean {
  return !changes.cleared && changes.values.size === 0 && changes.tokens.size === 0;
}

export class StateMachine {
  /**
   * Unbacked: every key and its value. Backed: only the keys changed since the
   * last checkpoint was taken, null for a key deleted since (a tombstone that
   * hides the older value); every other key is read from `frozen`, then the
   * backing.
   */
  private overlay = new Map<string, StoredValue | null>();
  /** Token tables, held like `overlay`. */
  private tokenOverlay = new Map<string, TokenTable | null>();
  /**
   * Backed: the overlay as it was when the checkpoint in flight was taken
   * (that checkpoint writes it, so it never changes), read under `overlay`
   * until the checkpoint is durable. Empty when none is in flight.
   */
  private frozen: ReadonlyMap<string, StoredValue | null> = NO_VALUES;
  private frozenTokens: ReadonlyMap<string, TokenTable | null> = NO_TOKENS;
  /** SCAN order of `frozen` (built once, when first needed). */
  private frozenOrder: ScanOrder | null = null;
  private readonly backing: KeyspaceBacking | null;
  /** Backed: cleared (FLUSHALL, restore) since the last durable checkpoint, so the backing no longer counts. */
  private cleared = false;
  /** Clears so far: a checkpoint taken before a clear no longer counts once durable. */
  private clears = 0;
  /** Keys with a value (backed mode; tracked on every write and delete). */
  private keyCount: number;
  /** Backed: the checkpoint taken by beginCheckpoint and not yet durable. */
  private inFlight: { readonly changes: ChangeSet; readonly clears: number } | null = null;
  /** What changed since the last takeChanges; null when the owner does not ask (see the constructor). */
  private changes: ChangeSet | null;
  /** Sorted order of the overlay's keys for SCAN, rebuilt only after keys were added to it or removed. */
  private scanOrder: ScanOrder | null = null;

  /**
   * Without a backing the whole keyspace lives in memory (tests, the
   * simulator). With one, the state machine starts as the backing's state and
   * keeps in memory only what changed since; a checkpoint (beginCheckpoint,
   * then checkpointed once it is durable in the backing) lets it forget that.
   */
  constructor(backing?: KeyspaceBacking, options: { readonly recordChanges?: boolean } = {}) {
    this.backing = backing ?? null;
    this.keyCount = this.backing === null ? 0 : this.backing.count;
    // Replicas keep no record of what changed (their log and checkpoints say
    // it); the stores that persist a state machine's changes take them.
    this.changes = options.recordChanges === false ? null : emptyChanges(false);
  }

  /** Whether takeChanges() reports what changed (constructed without recordChanges: false). */
  get recordsChanges(): boolean {
    return this.changes !== null;
  }

  apply(op: Op): OpResult {
    switch (op.type) {
      case 'incrby':
        return this.incrBy(op.key, op.delta);
      case 'incrbyfloat': {
        const current = this.lookup(op.key);
        if (isSequence(current)) return { type: 'error', error: 'seqBackwards' };
        const currentText = current === undefined ? null : typeof current === 'bigint' ? current.toString() : current;
        const sum = addFloatText(currentText, op.increment);
        if (!sum.ok) return { type: 'error', error: sum.error };
        const stored = Buffer.from(sum.text, 'latin1');
        this.write(op.key, stored, current !== undefined);
        return { type: 'bulk', value: stored };
      }
      case 'set': {
        const current = this.lookup(op.key);
        const exists = current !== undefined;
        const previous = op.get ? this.handOut(bytesOf(current)) : null;
        const doSet = op.condition === 'always' || (op.condition === 'nx' ? !exists : exists);
        if (doSet && isSequence(current)) return { type: 'error', error: 'seqBackwards' };
        if (doSet) this.write(op.key, op.value, exists);
        if (op.get) return { type: 'bulk', value: previous };
        return doSet ? OK : NIL;
      }
      case 'mset':
        if (op.keys.some((k) => isSequence(this.lookup(k)))) return { type: 'error', error: 'seqBackwards' };
        for (let i = 0; i < op.keys.length; i++) {
          const key = op.keys[i];
          const value = op.values[i];
          if (key === undefined || value === undefined) throw new Error('mset: keys and values differ in length');
          this.write(key, value, this.lookup(key) !== undefined);
        }
        return OK;
      case 'msetnx':
        assert.equal(op.keys.length, op.values.length, 'msetnx: keys and values differ in length');
        if (op.keys.some((k) => this.lookup(k) !== undefined)) return { type: 'int', value: 0n };
        op.keys.forEach((key, i) => this.write(key, op.values[i] as Buffer, this.lookup(key) !== undefined));
        return { type: 'int', value: 1n };
      case 'append':
        return this.append(op.key, op.value);
      case 'setrange':
        return this.setRange(op.key, op.offset, op.value);
      case 'setbit':
        return this.setBit(op.key, op.offset, op.bit);
      case 'del': {
        let removed = 0n;
        for (const key of op.keys) {
          if (this.remove(key)) removed++;
          this.removeTokens(key);
        }
        return { type: 'int', value: removed };
      }
      case 'flushall':
        this.clearAll();
        if (this.changes !== null) this.changes = emptyChanges(true);
        return OK;
      case 'seqcreate': {
        const exists = this.lookup(op.key) !== undefined;
        if (exists && !op.replace) return { type: 'error', error: 'seqExists' };
        this.write(op.key, newSequence(op.spec), exists);
        this.removeTokens(op.key);
        return OK;
      }
      case 'adopt': {
        const current = this.lookup(op.key);
        if (isSequence(current)) return OK;
        let base: bigint | null = null;
        if (current !== undefined) {
          base = typeof current === 'bigint' ? current : parseInt64(current);
          if (base === null) return { type: 'error', error: 'notInteger' };
          // A counter at the 64-bit maximum has no next value (INCR there overflows, as in Redis).
          if (base === INT64_MAX) return { type: 'error', error: 'overflow' };
        }
        this.write(op.key, newSequence({ ...op.spec, start: base === null ? 1n : base + 1n }, base), current !== undefined);
        return OK;
      }
      case 'seqnext':
        return this.seqNext(op);
      case 'reserve':
        return this.reserve(op.key, op.id, op.countMin);
      case 'token': {
        const table = pruneTokens(this.lookupTokens(op.key), op.record.atMs, op.policy);
        const existing = table.get(op.token);
        if (existing !== undefined) return tokenReply(existing, op.record.count, op.record.range);
        addToken(table, op.token, op.record, op.policy);
        this.setTokens(op.key, table);
        return tokenReply(op.record, op.record.count, op.record.range);
      }
    }
  }

  private setTokens(key: string, table: TokenTable): void {
    this.tokenOverlay.set(key, table);
    this.changes?.tokens.set(key, table);
  }

  private seqNext(op: Extract<Op, { type: 'seqnext' }>): OpResult {
    let table: Map<string, TokenRecord> | null = null;
    if (op.token !== null) {
      table = pruneTokens(this.lookupTokens(op.key), op.nowMs, op.policy);
      const existing = table.get(op.token);
      if (existing !== undefined) return tokenReply(existing, op.count, op.range);
    }
    const current = this.lookup(op.key);
    let first: bigint;
    let last: bigint;
    if (isSequence(current)) {
      const floor = current.mode === 'strict' ? current.current : (current.reservedHigh ?? current.current);
      first = floor === null ? current.start : floor + current.step;
      const end = lastOfRange(first, op.count, current.step, current.max);
      if (end === null) return { type: 'error', error: 'seqMax' };
      last = end;
      this.write(op.key, current.mode === 'strict' ? { ...current, current: last } : { ...current, current: last, reservedHigh: last }, true);
    } else {
      let base = 0n;
      if (current !== undefined) {
        const parsed = typeof current === 'bigint' ? current : parseInt64(current);
        if (parsed === null) return { type: 'error', error: 'notInteger' };
        base = parsed;
      }
      first = base + 1n;
      last = base + op.count;
      if (last > INT64_MAX) return { type: 'error', error: 'overflow' };
      this.write(op.key, last, current !== undefined);
    }
    const record: TokenRecord = { first, last, count: op.count, range: op.range, atMs: op.nowMs };
    if (table !== null && op.token !== null) {
      addToken(table, op.token, record, op.policy);
      this.setTokens(op.key, table);
    }
    return tokenReply(record, op.count, op.range);
  }

  /**
   * Strings a write may change in place past their end (APPEND's spare room):
   * backing store -> end of the bytes in use. Only buffers this state machine
   * grew are here, so a value it shares with anyone else is copied first.
   */
  private readonly grown = new WeakMap<ArrayBuffer, number>();
  /**
   * Times stored values were handed out of the state machine (reads, change
   * sets, checkpoints, snapshots): whoever got one may keep it, so it must
   * never change after. Counted, not tracked per value, to stay O(1).
   */
  private handOuts = 0;
  /**
   * Buffers SETRANGE and SETBIT allocated (each on a store of its own) ->
   * `handOuts` when they were made. One whose count is still current was
   * never handed out: SETRANGE and SETBIT may change it in place, O(1) like
   * Redis, instead of copying the string.
   */
  private readonly unshared = new WeakMap<Buffer, number>();

  /**
   * `bytes` made `length` long (zero-padded) for SETRANGE or SETBIT to change:
   * the same bytes when no one else can see them and their store has the room,
   * otherwise a copy with room to grow. Either way unshared from now on.
   */
  private writable(bytes: Buffer, length: number): Buffer {
    let next: Buffer;
    if (this.unshared.get(bytes) === this.handOuts && bytes.byteOffset + length <= bytes.buffer.byteLength) {
      // The spare room past the end was never written: zeros, from copyWithRoom.
      next = length === bytes.length ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, length);
    } else next = copyWithRoom(bytes, length);
    this.unshared.set(next, this.handOuts);
    return next;
  }

  /** Marks every stored value as seen from outside (see `handOuts`); returns its argument. */
  private handOut<T>(value: T): T {
    this.handOuts++;
    return value;
  }

  // The string writes below: a sequence is not a string to them (WRONGTYPE);
  // a counter held as a bigint is its decimal text, as Redis's int encoding is.

  private append(key: string, value: Buffer): OpResult {
    const current = this.lookup(key);
    if (isSequence(current)) return { type: 'error', error: 'wrongType' };
    const bytes = bytesOf(current) ?? EMPTY;
    if (bytes.length + value.length > STRING_BYTES_MAX) return { type: 'error', error: 'stringTooLong' };
    if (current === undefined) {
      this.write(key, value, false);
      return { type: 'int', value: BigInt(value.length) };
    }
    const next = appendBytes(bytes, value, this.grown);
    this.write(key, next, true);
    return { type: 'int', value: BigInt(next.length) };
  }

  private setRange(key: string, offset: number, value: Buffer): OpResult {
    assert.ok(Number.isSafeInteger(offset) && offset >= 0, 'setrange: a negative or fractional offset');
    const current = this.lookup(key);
    if (isSequence(current)) return { type: 'error', error: 'wrongType' };
    const bytes = bytesOf(current) ?? EMPTY;
    // Writing nothing changes nothing (and creates no key), whatever the offset.
    if (value.length === 0) return { type: 'int', value: BigInt(bytes.length) };
    if (offset + value.length > STRING_BYTES_MAX) return { type: 'error', error: 'stringTooLong' };
    const next = this.writable(bytes, Math.max(bytes.length, offset + value.length));
    value.copy(next, offset);
    this.write(key, next, current !== undefined);
    return { type: 'int', value: BigInt(next.length) };
  }

  private setBit(key: string, offset: number, bit: 0 | 1): OpResult {
    assert.ok(Number.isSafeInteger(offset) && offset >= 0 && offset <= BIT_OFFSET_MAX, 'setbit: offset out of range');
    const current = this.lookup(key);
    if (isSequence(current)) return { type: 'error', error: 'wrongType' };
    const bytes = bytesOf(current) ?? EMPTY;
    const previous = getBit(bytes, offset);
    // A missing key, a string too short for the bit, or a bit that changes: a write.
    const byte = Math.floor(offset / 8);
    if (byte >= bytes.length && byte >= STRING_BYTES_MAX) return { type: 'error', error: 'stringTooLong' };
    if (current === undefined || byte >= bytes.length || previous !== bit) {
      const next = this.writable(bytes, Math.max(bytes.length, byte + 1));
      const mask = 1 << (7 - (offset % 8));
      next[byte] = bit === 1 ? (next[byte] as number) | mask : (next[byte] as number) & ~mask;
      this.write(key, next, current !== undefined);
    }
    return { type: 'int', value: BigInt(previous) };
  }

  private reserve(key: string, id: string, countMin: bigint): OpResult {
    const seq = this.lookup(key);
    // The sequence the window was asked for is gone (deleted or recreated): nothing to reserve.
    if (!isSequence(seq) || seq.id !== id || seq.mode !== 'window') return { type: 'error', error: 'seqGone' };
    const floor = seq.reservedHigh ?? seq.current;
    const first = floor === null ? seq.start : floor + seq.step;
    if (first > seq.max) return { type: 'error', error: 'seqMax' };
    const wanted = countMin > seq.windowSize ? countMin : seq.windowSize;
    // A window is cut at MAX: the values below it are still served.
    const room = (seq.max - first) / seq.step + 1n;
    const count = wanted < room ? wanted : room;
    const last = first + (count - 1n) * seq.step;
    this.write(key, { ...seq, reservedHigh: last }, true);
    return { type: 'range', first, last };
  }

  private incrBy(key: string, delta: bigint): OpResult {
    const current = this.lookup(key);
    let value: bigint;
    if (isSequence(current)) return this.incrSequence(key, current, delta);
    if (current === undefined) value = 0n;
    else if (typeof current === 'bigint') value = current;
    else {
      const parsed = parseInt64(current);
      if (parsed === null) return { type: 'error', error: 'notInteger' };
      value = parsed;
    }
    const next = value + delta;
    if (next > INT64_MAX || next < INT64_MIN) return { type: 'error', error: 'overflow' };
    this.write(key, next, current !== undefined);
    return { type: 'int', value: next };
  }

  /**
   * INCRBY on a sequence keeps its Redis meaning, add the delta and return the
   * new value, and only moves forward. In window mode the server serves INCR
   * from the window; this path (through the log) moves the reservation too.
   */
  private incrSequence(key: string, seq: Sequence, delta: bigint): OpResult {
    if (delta < 0n) return { type: 'error', error: 'seqBackwards' };
    const floor = seq.mode === 'strict' ? seq.current : (seq.reservedHigh ?? seq.current);
    const base = floor ?? seq.start - 1n;
    const next = base + delta;
    if (next > seq.max) return { type: 'error', error: 'seqMax' };
    if (delta > 0n) {
      this.write(key, seq.mode === 'strict' ? { ...seq, current: next } : { ...seq, current: next, reservedHigh: next }, true);
    }
    return { type: 'int', value: next };
  }

  // The keyspace as one view: the overlay first, then (backed, not cleared) the backing.

  private lookup(key: string): StoredValue | undefined {
    const value = this.overlay.get(key);
    if (value !== undefined) return value ?? undefined;
    if (this.backing === null) return undefined;
    const frozen = this.frozen.get(key);
    if (frozen !== undefined) return frozen ?? undefined;
    return this.cleared ? undefined : this.backing.get(key);
  }

  private lookupTokens(key: string): TokenTable | undefined {
    const table = this.tokenOverlay.get(key);
    if (table !== undefined) return table ?? undefined;
    if (this.backing === null) return undefined;
    const frozen = this.frozenTokens.get(key);
    if (frozen !== undefined) return frozen ?? undefined;
    return this.cleared ? undefined : this.backing.getTokens(key);
  }

  /** Sets a key's value; `existed` says whether the key had one (the caller just read it). */
  private write(key: string, value: StoredValue, existed: boolean): void {
    if (!existed) this.keyCount++;
    if (!this.overlay.has(key)) this.scanOrder = null;
    this.overlay.set(key, value);
    this.changes?.values.set(key, value);
  }

  /** Deletes a key's value; whether it had one. */
  private remove(key: string): boolean {
    if (this.lookup(key) === undefined) return false;
    this.keyCount--;
    if (this.backing === null) {
      this.overlay.delete(key);
      this.scanOrder = null;
    } else {
      if (!this.overlay.has(key)) this.scanOrder = null;
      this.overlay.set(key, null);
    }
    this.changes?.values.set(key, null);
    return true;
  }

  private removeTokens(key: string): void {
    if (this.lookupTokens(key) === undefined) return;
    if (this.backing === null) this.tokenOverlay.delete(key);
    else this.tokenOverlay.set(key, null);
    this.changes?.tokens.set(key, null);
  }

  private clearAll(): void {
    this.overlay.clear();
    this.tokenOverlay.clear();
    this.dropFrozen();
    this.keyCount = 0;
    this.scanOrder = null;
    this.clears++;
    if (this.backing !== null) this.cleared = true;
  }

  /** Returns and resets what changed since the last call (for persistence). */
  takeChanges(): ChangeSet {
    this.handOut(null);
    const taken = this.changes;
    assert.ok(taken !== null, 'takeChanges on a state machine that does not record its changes');
    this.changes = emptyChanges(false);
    return taken;
  }

  hasChanges(): boolean {
    return this.changes !== null && !isEmpty(this.changes);
  }

  // Checkpoints (backed mode).

  /** Whether the state machine reads through to a backing. */
  get backed(): boolean {
    return this.backing !== null;
  }

  /**
   * What a checkpoint must write into the backing to make it equal this
   * state machine now: the overlay itself (O(1): it is set aside, read-only,
   * and a new overlay takes the changes from here on), with `cleared` when the
   * backing no longer counts. One checkpoint at a time: call `checkpointed`
   * with the returned change set once it is durable in the backing.
   */
  beginCheckpoint(): ChangeSet {
    assert.ok(this.backing !== null, 'beginCheckpoint: the state machine has no backing');
    assert.ok(this.inFlight === null, 'beginCheckpoint: a checkpoint is in flight already');
    assert.ok(this.frozen.size === 0 && this.frozenTokens.size === 0);
    this.handOut(null);
    const changes: ChangeSet = { cleared: this.cleared, values: this.overlay, tokens: this.tokenOverlay };
    this.frozen = this.overlay;
    this.frozenTokens = this.tokenOverlay;
    this.frozenOrder = this.scanOrder;
    this.overlay = new Map();
    this.tokenOverlay = new Map();
    this.scanOrder = null;
    this.inFlight = { changes, clears: this.clears };
    return changes;
  }

  /**
   * The checkpoint `changes` (from beginCheckpoint) is durable in the backing:
   * the overlay it wrote is dropped (the backing has it now), unless the
   * keyspace was cleared since it was taken (then it was dropped already, and
   * what the checkpoint wrote does not count).
   */
  checkpointed(changes: ChangeSet): void {
    const inFlight = this.inFlight;
    assert.ok(inFlight !== null && inFlight.changes === changes, 'checkpointed: not the checkpoint in flight');
    this.inFlight = null;
    if (inFlight.clears !== this.clears) return;
    if (changes.cleared) this.cleared = false;
    this.dropFrozen();
  }

  /**
   * Backed: the backing was replaced as a whole (a snapshot from the leader
   * installed into it): every change held in memory is forgotten and every
   * key is read from the backing from now on. A checkpoint still in flight no
   * longer counts once durable (as after a clear).
   */
  resetToBacking(): void {
    const backing = this.backing;
    assert.ok(backing !== null, 'resetToBacking: the state machine has no backing');
    this.overlay = new Map();
    this.tokenOverlay = new Map();
    this.dropFrozen();
    this.scanOrder = null;
    this.clears++;
    this.cleared = false;
    this.keyCount = backing.count;
    if (this.changes !== null) this.changes = emptyChanges(false);
  }

  private dropFrozen(): void {
    this.frozen = NO_VALUES;
    this.frozenTokens = NO_TOKENS;
    this.frozenOrder = null;
  }

  /** Entries (values, tombstones and token tables) held in memory: every key unbacked, only those changed since the last checkpoint backed. */
  get keysInMemory(): number {
    return this.overlay.size + this.tokenOverlay.size + this.frozen.size + this.frozenTokens.size;
  }

  /** Loads a key's tokens during recovery, without recording a change (backed: held until the next checkpoint). */
  loadTokens(key: string, table: TokenTable): void {
    this.tokenOverlay.set(key, table);
  }

  tokenEntries(): IterableIterator<[string, TokenTable]> {
    return this.backing === null ? liveEntries(this.tokenOverlay) : this.mergedTokenEntries();
  }

  /** The stored value as it is (sequences included), for the server's sequence commands. */
  getValue(key: string): StoredValue | undefined {
    return this.handOut(this.lookup(key));
  }

  /**
   * The stored value for a caller that is done with it before it returns: it
   * neither keeps it nor puts its bytes in a reply (the bytes may change in
   * place at the next write). Anything else uses getValue or getBytes.
   */
  peekValue(key: string): StoredValue | undefined {
    return this.lookup(key);
  }

  /** Loads a value during recovery, without recording a change (backed: held until the next checkpoint). */
  load(key: string, value: StoredValue): void {
    if (this.lookup(key) === undefined) this.keyCount++;
    if (!this.overlay.has(key)) this.scanOrder = null;
    this.overlay.set(key, value);
  }

  /** Empties the keyspace (before a restore); backed, the backing stops counting until the next checkpoint. */
  clear(): void {
    this.clearAll();
    if (this.changes !== null) this.changes = emptyChanges(false);
  }

  // Reads.

  getBytes(key: string): Buffer | null {
    return this.handOut(bytesOf(this.lookup(key)));
  }

  has(key: string): boolean {
    return this.lookup(key) !== undefined;
  }

  get size(): number {
    return this.backing === null ? this.overlay.size : this.keyCount;
  }

  strlen(key: string): number {
    return bytesOf(this.lookup(key))?.length ?? 0;
  }

  /** Every key: in insertion order unbacked, in SCAN order (hash, then key) backed. */
  keys(): IterableIterator<string> {
    return this.backing === null ? this.overlay.keys() : this.mergedKeys();
  }

  entries(): IterableIterator<[string, StoredValue]> {
    return this.handingOut(this.backing === null ? liveEntries(this.overlay) : this.mergedEntries());
  }

  /** Counts each value an iteration hands out (see `handOuts`), however late it is consumed. */
  private *handingOut<T>(items: Iterable<T>): Generator<T, undefined, undefined> {
    for (const item of items) yield this.handOut(item);
    return undefined;
  }

  /**
   * One SCAN step. The cursor is the next key hash to visit, so a key that is
   * present for the whole scan is returned at least once whatever else changes.
   * All keys sharing a hash are returned together. Returns the next cursor (0
   * when done) and the keys visited (before MATCH filtering, which the caller does).
   */
  scan(cursor: number, count: number): { next: number; keys: string[] } {
    if (this.backing !== null) return this.scanMerged(cursor, count);
    const order = this.getScanOrder();
    const keys: string[] = [];
    let i = lowerBound(order.hashes, cursor);
    while (i < order.hashes.length && (keys.length < count || order.hashes[i] === order.hashes[i - 1])) {
      const key = order.keys[i];
      if (key !== undefined && this.overlay.has(key)) keys.push(key);
      i++;
    }
    const next = i >= order.hashes.length ? 0 : (order.hashes[i] ?? 0);
    return { next, keys };
  }

  private scanMerged(cursor: number, count: number): { next: number; keys: string[] } {
    const keys: string[] = [];
    for (const group of this.hashGroups(cursor, false)) {
      if (keys.length >= count) return { next: group.hash, keys };
      for (const key of group.keys) keys.push(key);
    }
    return { next: 0, keys };
  }

  private *mergedKeys(): Generator<string, undefined, undefined> {
    for (const group of this.hashGroups(0, false)) yield* group.keys;
    return undefined;
  }

  private *mergedEntries(): Generator<[string, StoredValue], undefined, undefined> {
    for (const group of this.hashGroups(0, false)) {
      for (const key of group.keys) {
        const value = this.lookup(key);
        assert.ok(value !== undefined, 'a merged key has no value');
        yield [key, value];
      }
    }
    return undefined;
  }

  private *mergedTokenEntries(): Generator<[string, TokenTable], undefined, undefined> {
    for (const group of this.hashGroups(0, true)) {
      for (const key of group.keys) {
        const table = this.lookupTokens(key);
        assert.ok(table !== undefined, 'a merged key has no tokens');
        yield [key, table];
      }
    }
    return undefined;
  }

  /**
   * Backed: the live keys (of values, or of token tables) whose hash is >=
   * `fromHash`, one hash at a time in ascending order, the keys of one hash
   * sorted: the backing's range merged with the frozen overlay and the
   * overlay (the newest layer holding a key decides it). Consumed
   * synchronously (the backing's iterator is open).
   */
  private *hashGroups(fromHash: number, tokens: boolean): Generator<{ hash: number; keys: string[] }, undefined, undefined> {
    const backing = this.backing;
    assert.ok(backing !== null);
    const top: ReadonlyMap<string, unknown> = tokens ? this.tokenOverlay : this.overlay;
    const under: ReadonlyMap<string, unknown> = tokens ? this.frozenTokens : this.frozen;
    const topOrder = tokens ? sortOrder(this.tokenOverlay.keys()) : this.getScanOrder();
    const underOrder = tokens ? sortOrder(this.frozenTokens.keys()) : (this.frozenOrder ??= sortOrder(this.frozen.keys()));
    let t = lowerBound(topOrder.hashes, fromHash);
    let u = lowerBound(underOrder.hashes, fromHash);
    const it = this.cleared ? null : tokens ? backing.tokenKeys() : backing.scanFrom(fromHash);
    const pull = (): BackingScanItem | undefined => {
      if (it === null) return undefined;
      for (;;) {
        const r = it.next();
        if (r.done === true) return undefined;
        if (r.value.hash >= fromHash) return r.value;
      }
    };
    const hashAt = (order: ScanOrder, i: number): number => (i < order.hashes.length ? (order.hashes[i] as number) : Infinity);
    let head = pull();
    try {
      for (;;) {
        const hash = Math.min(head === undefined ? Infinity : head.hash, hashAt(topOrder, t), hashAt(underOrder, u));
        if (hash === Infinity) return undefined;
        const keys: string[] = [];
        for (; head !== undefined && head.hash === hash; head = pull()) {
          if (!top.has(head.key) && !under.has(head.key)) keys.push(head.key);
        }
        for (; hashAt(underOrder, u) === hash; u++) {
          const key = underOrder.keys[u] as string;
          if (!top.has(key) && under.get(key) !== null) keys.push(key);
        }
        for (; hashAt(topOrder, t) === hash; t++) {
          const key = topOrder.keys[t] as string;
          if (top.get(key) !== null) keys.push(key);
        }
        if (keys.length === 0) continue;
        keys.sort();
        yield { hash, keys };
      }
    } finally {
      if (it !== null && it.return !== undefined) it.return();
    }
  }

  private getScanOrder(): ScanOrder {
    this.scanOrder ??= sortOrder(this.overlay.keys());
    return this.scanOrder;
  }
}

/** Keys sorted by (scan hash, key): hashes[i] is the hash of keys[i]. */
interface ScanOrder {
  readonly hashes: Uint32Array;
  readonly keys: string[];
}

const EMPTY = Buffer.alloc(0);
const NO_VALUES: ReadonlyMap<string, StoredValue | null> = new Map();
const NO_TOKENS: ReadonlyMap<string, TokenTable | null> = new Map();

/** A value's bytes as GET shows them (null: no value, or a sequence that handed out nothing yet). */
function bytesOf(value: StoredValue | undefined): Buffer | null {
  if (value === undefined) return null;
  if (typeof value === 'bigint') return Buffer.from(value.toString(), 'latin1');
  if (isSequence(value)) {
    const n = sequenceValue(value);
    return n === null ? null : Buffer.from(n.toString(), 'latin1');
  }
  return value;
}

function* liveEntries<T>(map: ReadonlyMap<string, T | null>): Generator<[string, T], undefined, undefined> {
  for (const [key, value] of map) if (value !== null) yield [key, value];
  return undefined;
}

/** Keys sorted by (scan hash, key). */
function sortOrder(keys: Iterable<string>): ScanOrder {
  const items: BackingScanItem[] = [];
  for (const key of keys) items.push({ hash: scanHash(key), key });
  items.sort(compareScanItems);
  const hashes = new Uint32Array(items.length);
  const sorted: string[] = new Array<string>(items.length);
  items.forEach((item, i) => {
    hashes[i] = item.hash;
    sorted[i] = item.key;
  });
  return { hashes, keys: sorted };
}

/** The first position whose hash is >= `hash`. */
function lowerBound(hashes: Uint32Array, hash: number): number {
  let lo = 0;
  let hi = hashes.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((hashes[mid] ?? 0) < hash) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function tokenReply(record: TokenRecord, count: bigint, range: boolean): OpResult {
  if (record.count !== count || record.range !== range) return { type: 'error', error: 'tokenMismatch' };
  return range ? { type: 'range', first: record.first, last: record.last } : { type: 'int', value: record.last };
}
