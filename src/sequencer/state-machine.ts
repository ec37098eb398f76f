// The replicated state machine: a keyspace of counters and strings. Ops go in,
// results come out, deterministically: no I/O, no clock, no randomness. The
// same ops applied in the same order give the same state on every replica.
//
// Keys are byte strings; they are held as latin1 JS strings (one char a byte),
// which maps bytes to strings one to one. A value is a bigint when it was
// produced by a counter command (the common case, kept in binary so INCR does
// not parse text), otherwise the bytes SET stored.

import type { ErrorKey } from '../errors.js';
import { addFloatText, INT64_MAX, INT64_MIN, parseInt64 } from './numbers.js';
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
  /** Window mode: reserve the next window (at least `minCount` values) above everything reserved before. */
  | { readonly type: 'reserve'; readonly key: string; readonly id: string; readonly minCount: bigint }
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
  private readonly data = new Map<string, StoredValue>();
  private readonly tokens = new Map<string, TokenTable>();
  private changes: ChangeSet = emptyChanges(false);
  /** Sorted key order for SCAN, rebuilt only after keys were added or removed. */
  private scanOrder: { hashes: Uint32Array; keys: string[] } | null = null;

  apply(op: Op): OpResult {
    switch (op.type) {
      case 'incrby':
        return this.incrBy(op.key, op.delta);
      case 'incrbyfloat': {
        const current = this.data.get(op.key);
        if (isSequence(current)) return { type: 'error', error: 'seqBackwards' };
        const currentText = current === undefined ? null : typeof current === 'bigint' ? current.toString() : current;
        const sum = addFloatText(currentText, op.increment);
        if (!sum.ok) return { type: 'error', error: sum.error };
        const stored = Buffer.from(sum.text, 'latin1');
        this.write(op.key, stored);
        return { type: 'bulk', value: stored };
      }
      case 'set': {
        const exists = this.data.has(op.key);
        const previous = op.get ? this.getBytes(op.key) : null;
        const doSet = op.condition === 'always' || (op.condition === 'nx' ? !exists : exists);
        if (doSet && isSequence(this.data.get(op.key))) return { type: 'error', error: 'seqBackwards' };
        if (doSet) this.write(op.key, op.value);
        if (op.get) return { type: 'bulk', value: previous };
        return doSet ? OK : NIL;
      }
      case 'mset':
        if (op.keys.some((k) => isSequence(this.data.get(k)))) return { type: 'error', error: 'seqBackwards' };
        for (let i = 0; i < op.keys.length; i++) {
          const key = op.keys[i];
          const value = op.values[i];
          if (key === undefined || value === undefined) throw new Error('mset: keys and values differ in length');
          this.write(key, value);
        }
        return OK;
      case 'del': {
        let removed = 0n;
        for (const key of op.keys) {
          if (this.data.delete(key)) {
            removed++;
            this.changes.values.set(key, null);
            this.scanOrder = null;
          }
          if (this.tokens.delete(key)) this.changes.tokens.set(key, null);
        }
        return { type: 'int', value: removed };
      }
      case 'flushall':
        this.data.clear();
        this.tokens.clear();
        this.changes = emptyChanges(true);
        this.scanOrder = null;
        return OK;
      case 'seqcreate':
        if (this.data.has(op.key) && !op.replace) return { type: 'error', error: 'seqExists' };
        this.write(op.key, newSequence(op.spec));
        if (this.tokens.delete(op.key)) this.changes.tokens.set(op.key, null);
        return OK;
      case 'adopt': {
        const current = this.data.get(op.key);
        if (isSequence(current)) return OK;
        let base: bigint | null = null;
        if (current !== undefined) {
          base = typeof current === 'bigint' ? current : parseInt64(current);
          if (base === null) return { type: 'error', error: 'notInteger' };
          // A counter at the 64-bit maximum has no next value (INCR there overflows, as in Redis).
          if (base === INT64_MAX) return { type: 'error', error: 'overflow' };
        }
        this.write(op.key, newSequence({ ...op.spec, start: base === null ? 1n : base + 1n }, base));
        return OK;
      }
      case 'seqnext':
        return this.seqNext(op);
      case 'reserve':
        return this.reserve(op.key, op.id, op.minCount);
      case 'token': {
        const table = pruneTokens(this.tokens.get(op.key), op.record.atMs, op.policy);
        const existing = table.get(op.token);
        if (existing !== undefined) return tokenReply(existing, op.record.count, op.record.range);
        addToken(table, op.token, op.record, op.policy);
        this.setTokens(op.key, table);
        return tokenReply(op.record, op.record.count, op.record.range);
      }
    }
  }

  private setTokens(key: string, table: TokenTable): void {
    this.tokens.set(key, table);
    this.changes.tokens.set(key, table);
  }

  private seqNext(op: Extract<Op, { type: 'seqnext' }>): OpResult {
    let table: Map<string, TokenRecord> | null = null;
    if (op.token !== null) {
      table = pruneTokens(this.tokens.get(op.key), op.nowMs, op.policy);
      const existing = table.get(op.token);
      if (existing !== undefined) return tokenReply(existing, op.count, op.range);
    }
    const current = this.data.get(op.key);
    let first: bigint;
    let last: bigint;
    if (isSequence(current)) {
      const floor = current.mode === 'strict' ? current.current : (current.reservedHigh ?? current.current);
      first = floor === null ? current.start : floor + current.step;
      const end = lastOfRange(first, op.count, current.step, current.max);
      if (end === null) return { type: 'error', error: 'seqMax' };
      last = end;
      this.write(
        op.key,
        current.mode === 'strict' ? { ...current, current: last } : { ...current, current: last, reservedHigh: last },
      );
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
      this.write(op.key, last);
    }
    const record: TokenRecord = { first, last, count: op.count, range: op.range, atMs: op.nowMs };
    if (table !== null && op.token !== null) {
      addToken(table, op.token, record, op.policy);
      this.setTokens(op.key, table);
    }
    return tokenReply(record, op.count, op.range);
  }

  private reserve(key: string, id: string, minCount: bigint): OpResult {
    const seq = this.data.get(key);
    // The sequence the window was asked for is gone (deleted or recreated): nothing to reserve.
    if (!isSequence(seq) || seq.id !== id || seq.mode !== 'window') return { type: 'error', error: 'seqGone' };
    const floor = seq.reservedHigh ?? seq.current;
    const first = floor === null ? seq.start : floor + seq.step;
    if (first > seq.max) return { type: 'error', error: 'seqMax' };
    const wanted = minCount > seq.windowSize ? minCount : seq.windowSize;
    // A window is cut at MAX: the values below it are still served.
    const room = (seq.max - first) / seq.step + 1n;
    const count = wanted < room ? wanted : room;
    const last = first + (count - 1n) * seq.step;
    this.write(key, { ...seq, reservedHigh: last });
    return { type: 'range', first, last };
  }

  private incrBy(key: string, delta: bigint): OpResult {
    const current = this.data.get(key);
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
    this.write(key, next);
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
      this.write(key, seq.mode === 'strict' ? { ...seq, current: next } : { ...seq, current: next, reservedHigh: next });
    }
    return { type: 'int', value: next };
  }

  private write(key: string, value: StoredValue): void {
    if (!this.data.has(key)) this.scanOrder = null;
    this.data.set(key, value);
    this.changes.values.set(key, value);
  }

  /** Returns and resets what changed since the last call (for persistence). */
  takeChanges(): ChangeSet {
    const taken = this.changes;
    this.changes = emptyChanges(false);
    return taken;
  }

  hasChanges(): boolean {
    return !isEmpty(this.changes);
  }

  /** Loads a key's tokens during recovery, without recording a change. */
  loadTokens(key: string, table: TokenTable): void {
    this.tokens.set(key, table);
  }

  tokenEntries(): IterableIterator<[string, TokenTable]> {
    return this.tokens.entries();
  }

  /** The stored value as it is (sequences included), for the server's sequence commands. */
  getValue(key: string): StoredValue | undefined {
    return this.data.get(key);
  }

  /** Loads a value during recovery, without recording a change. */
  load(key: string, value: StoredValue): void {
    this.data.set(key, value);
    this.scanOrder = null;
  }

  clear(): void {
    this.data.clear();
    this.tokens.clear();
    this.changes = emptyChanges(false);
    this.scanOrder = null;
  }

  // Reads.

  getBytes(key: string): Buffer | null {
    const value = this.data.get(key);
    if (value === undefined) return null;
    if (typeof value === 'bigint') return Buffer.from(value.toString(), 'latin1');
    if (isSequence(value)) {
      const n = sequenceValue(value);
      return n === null ? null : Buffer.from(n.toString(), 'latin1');
    }
    return value;
  }

  has(key: string): boolean {
    return this.data.has(key);
  }

  get size(): number {
    return this.data.size;
  }

  strlen(key: string): number {
    return this.getBytes(key)?.length ?? 0;
  }

  keys(): IterableIterator<string> {
    return this.data.keys();
  }

  entries(): IterableIterator<[string, StoredValue]> {
    return this.data.entries();
  }

  /**
   * One SCAN step. The cursor is the next key hash to visit, so a key that is
   * present for the whole scan is returned at least once whatever else changes.
   * All keys sharing a hash are returned together. Returns the next cursor (0
   * when done) and the keys visited (before MATCH filtering, which the caller does).
   */
  scan(cursor: number, count: number): { next: number; keys: string[] } {
    const order = this.getScanOrder();
    let lo = 0;
    let hi = order.hashes.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((order.hashes[mid] ?? 0) < cursor) lo = mid + 1;
      else hi = mid;
    }
    const keys: string[] = [];
    let i = lo;
    while (i < order.hashes.length && (keys.length < count || order.hashes[i] === order.hashes[i - 1])) {
      const key = order.keys[i];
      if (key !== undefined && this.data.has(key)) keys.push(key);
      i++;
    }
    const next = i >= order.hashes.length ? 0 : (order.hashes[i] ?? 0);
    return { next, keys };
  }

  private getScanOrder(): { hashes: Uint32Array; keys: string[] } {
    if (this.scanOrder !== null) return this.scanOrder;
    const pairs: [number, string][] = [];
    // Hash 0 is reserved for "start", so every key hashes to 1..2^32-1.
    for (const key of this.data.keys()) pairs.push([(fnv1a(key) % 0xffffffff) + 1, key]);
    pairs.sort((a, b) => a[0] - b[0] || (a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
    const hashes = new Uint32Array(pairs.length);
    const keys: string[] = new Array<string>(pairs.length);
    pairs.forEach(([h, k], i) => {
      hashes[i] = h;
      keys[i] = k;
    });
    this.scanOrder = { hashes, keys };
    return this.scanOrder;
  }
}

function tokenReply(record: TokenRecord, count: bigint, range: boolean): OpResult {
  if (record.count !== count || record.range !== range) return { type: 'error', error: 'tokenMismatch' };
  return range ? { type: 'range', first: record.first, last: record.last } : { type: 'int', value: record.last };
}

function fnv1a(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash;
}
