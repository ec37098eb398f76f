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

export type StoredValue = bigint | Buffer;

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
  | { readonly type: 'flushall' };

export type OpResult =
  | { readonly type: 'int'; readonly value: bigint }
  | { readonly type: 'bulk'; readonly value: Buffer | null }
  | { readonly type: 'ok' }
  | { readonly type: 'error'; readonly error: ErrorKey };

const OK: OpResult = { type: 'ok' };
const NIL: OpResult = { type: 'bulk', value: null };

/** What changed since the last `takeChanges`: per key the new value, or null for deleted. */
export interface ChangeSet {
  cleared: boolean;
  readonly values: Map<string, StoredValue | null>;
}

export class StateMachine {
  private readonly data = new Map<string, StoredValue>();
  private changes: ChangeSet = { cleared: false, values: new Map() };
  /** Sorted key order for SCAN, rebuilt only after keys were added or removed. */
  private scanOrder: { hashes: Uint32Array; keys: string[] } | null = null;

  apply(op: Op): OpResult {
    switch (op.type) {
      case 'incrby':
        return this.incrBy(op.key, op.delta);
      case 'incrbyfloat': {
        const current = this.data.get(op.key);
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
        if (doSet) this.write(op.key, op.value);
        if (op.get) return { type: 'bulk', value: previous };
        return doSet ? OK : NIL;
      }
      case 'mset':
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
        }
        return { type: 'int', value: removed };
      }
      case 'flushall':
        this.data.clear();
        this.changes = { cleared: true, values: new Map() };
        this.scanOrder = null;
        return OK;
    }
  }

  private incrBy(key: string, delta: bigint): OpResult {
    const current = this.data.get(key);
    let value: bigint;
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

  private write(key: string, value: StoredValue): void {
    if (!this.data.has(key)) this.scanOrder = null;
    this.data.set(key, value);
    this.changes.values.set(key, value);
  }

  /** Returns and resets what changed since the last call (for persistence). */
  takeChanges(): ChangeSet {
    const taken = this.changes;
    this.changes = { cleared: false, values: new Map() };
    return taken;
  }

  hasChanges(): boolean {
    return this.changes.cleared || this.changes.values.size > 0;
  }

  /** Loads a value during recovery, without recording a change. */
  load(key: string, value: StoredValue): void {
    this.data.set(key, value);
    this.scanOrder = null;
  }

  clear(): void {
    this.data.clear();
    this.changes = { cleared: false, values: new Map() };
    this.scanOrder = null;
  }

  // Reads.

  getBytes(key: string): Buffer | null {
    const value = this.data.get(key);
    if (value === undefined) return null;
    return typeof value === 'bigint' ? Buffer.from(value.toString(), 'latin1') : value;
  }

  has(key: string): boolean {
    return this.data.has(key);
  }

  get size(): number {
    return this.data.size;
  }

  strlen(key: string): number {
    const value = this.data.get(key);
    if (value === undefined) return 0;
    return typeof value === 'bigint' ? value.toString().length : value.length;
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

function fnv1a(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash;
}
