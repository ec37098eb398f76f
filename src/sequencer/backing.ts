// Where a state machine reads the keys it does not hold in memory. A backed
// StateMachine keeps in memory only the keys changed since the last durable
// checkpoint (its overlay); every other key is read from a KeyspaceBacking:
// the keyspace as of that checkpoint (storage/keyspace.ts keeps it in LMDB).
// This file knows no storage: it defines the interface, the SCAN hash both
// sides order keys by, and an in-memory backing for tests and the simulator.

import type { StoredValue } from './state-machine.js';
import type { TokenTable } from './sequence.js';

/** One key as a backing's ordered scans yield it, with its scan hash. */
export interface BackingScanItem {
  readonly hash: number;
  readonly key: string;
}

/**
 * The state of one group's keyspace as of its last durable checkpoint, read
 * in place. Reads see a checkpoint only once it is durable: the state machine
 * holds every change made since in its overlay, so a read of the backing may
 * see either side of a checkpoint that is being committed.
 */
export interface KeyspaceBacking {
  /** Number of keys with a value. */
  readonly count: number;
  get(key: string): StoredValue | undefined;
  getTokens(key: string): TokenTable | undefined;
  /**
   * Keys with a value whose scanHash is >= `fromHash`, in ascending hash order
   * (keys sharing a hash in an order of the backing's choosing), read lazily:
   * the caller consumes or abandons the iterator synchronously.
   */
  scanFrom(fromHash: number): Iterator<BackingScanItem>;
  /** Keys with a token table, in the same order as scanFrom(0). */
  tokenKeys(): Iterator<BackingScanItem>;
}

/** SCAN's order: hash 0 is reserved for "start", so every key hashes to 1..2^32-1 (FNV-1a of the key's bytes). */
export function scanHash(key: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    hash ^= key.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return (hash % 0xffffffff) + 1;
}

/** Orders (hash, key) pairs: by hash, then by key bytes (keys are latin1 strings, one char a byte). */
export function compareScanItems(a: BackingScanItem, b: BackingScanItem): number {
  return a.hash - b.hash || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);
}

/** What a checkpoint writes into a backing: per key the new value or tokens, null when gone; `cleared` first empties it. */
export interface BackingChanges {
  readonly cleared: boolean;
  readonly values: ReadonlyMap<string, StoredValue | null>;
  readonly tokens: ReadonlyMap<string, TokenTable | null>;
}

/**
 * An in-memory KeyspaceBacking (tests and the simulator): maps, plus the
 * sorted order rebuilt after keys came or went. `write` plays the part of a
 * durable checkpoint.
 */
export class MemoryKeyspaceBacking implements KeyspaceBacking {
  private readonly values = new Map<string, StoredValue>();
  private readonly tokenTables = new Map<string, TokenTable>();
  private valueOrder: BackingScanItem[] | null = null;
  private tokenOrder: BackingScanItem[] | null = null;

  get count(): number {
    return this.values.size;
  }

  get(key: string): StoredValue | undefined {
    return this.values.get(key);
  }

  getTokens(key: string): TokenTable | undefined {
    return this.tokenTables.get(key);
  }

  scanFrom(fromHash: number): Iterator<BackingScanItem> {
    const order = (this.valueOrder ??= sortedItems(this.values.keys()));
    let lo = 0;
    let hi = order.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((order[mid] as BackingScanItem).hash < fromHash) lo = mid + 1;
      else hi = mid;
    }
    return order.slice(lo)[Symbol.iterator]();
  }

  tokenKeys(): Iterator<BackingScanItem> {
    return (this.tokenOrder ??= sortedItems(this.tokenTables.keys())).slice()[Symbol.iterator]();
  }

  /** Applies a checkpoint's changes (what LMDB does when it commits one). */
  write(changes: BackingChanges): void {
    if (changes.cleared) {
      this.values.clear();
      this.tokenTables.clear();
    }
    for (const [key, value] of changes.values) {
      if (value === null) this.values.delete(key);
      else this.values.set(key, value);
    }
    for (const [key, table] of changes.tokens) {
      if (table === null) this.tokenTables.delete(key);
      else this.tokenTables.set(key, table);
    }
    this.valueOrder = null;
    this.tokenOrder = null;
  }
}

function sortedItems(keys: Iterable<string>): BackingScanItem[] {
  const items: BackingScanItem[] = [];
  for (const key of keys) items.push({ hash: scanHash(key), key });
  return items.sort(compareScanItems);
}
