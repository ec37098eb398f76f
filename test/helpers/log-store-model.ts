// The model test shared by the node's log stores (WalStore, and RaftLogStore,
// the log of earlier versions): random operations on several groups and the
// node metadata, applied to a store and to MemoryStorages, with turns
// committed (waited for or not) and reopenings that drop the turn never
// committed; every read is compared after every operation and every reopen.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { MemoryStorage, type WritableStorage } from '../../src/raft/storage.js';
import { EntryType, type ConfState, type Entry } from '../../src/raft/types.js';
import type { NodeLogStore } from '../../src/storage/store.js';

export const CONF: ConfState = { voters: ['a', 'b', 'c'], learners: [] };
export const CONFS: readonly ConfState[] = [CONF, { voters: ['a', 'b'], learners: ['d'] }, { voters: ['n1'], learners: [] }];

export function bytes(seed: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (seed * 31 + i * 7) & 0xff;
  return out;
}

export function entries(from: number, to: number, term: number, size = 8): Entry[] {
  const out: Entry[] = [];
  for (let i = from; i <= to; i++) out.push({ index: i, term, type: EntryType.Normal, data: bytes(i + term, size) });
  return out;
}

/** Every read of `s` answers as `model`'s. */
export function assertSameReads(model: MemoryStorage, s: WritableStorage, label: string): void {
  assert.deepEqual(s.initialState(), model.initialState(), `${label}: initialState`);
  const first = model.firstIndex();
  const last = model.lastIndex();
  assert.equal(s.firstIndex(), first, `${label}: firstIndex`);
  assert.equal(s.lastIndex(), last, `${label}: lastIndex`);
  for (let i = Math.max(0, first - 3); i <= last + 2; i++) assert.equal(s.term(i), model.term(i), `${label}: term(${i})`);
  assert.deepEqual(s.entries(first, last + 1, Number.MAX_SAFE_INTEGER), model.entries(first, last + 1, Number.MAX_SAFE_INTEGER), `${label}: entries`);
  for (let lo = first; lo <= last; lo += 3) {
    assert.deepEqual(s.entries(lo, last + 1, 70), model.entries(lo, last + 1, 70), `${label}: entries(${lo}) limited`);
  }
  if (first > 1) assert.throws(() => s.entries(first - 1, last + 1, 100), `${label}: compacted entries refused`);
  const a = s.snapshot();
  const b = model.snapshot();
  assert.deepEqual(a.meta, b.meta, `${label}: snapshot meta`);
  assert.ok(Buffer.from(a.data).equals(Buffer.from(b.data)), `${label}: snapshot data`);
}

export type AbstractOp =
  | { k: 'hard'; g: number; term: number; vote: number; commit: number }
  | { k: 'append'; g: number; at: number; count: number; bump: number; len: number; type: number }
  | { k: 'snap'; g: number; at: number; conf: number; len: number }
  | { k: 'compact'; g: number; at: number }
  | { k: 'catchUp'; g: number; keep: number; len: number }
  | { k: 'install'; g: number; at: number; bump: number; conf: number; len: number }
  | { k: 'bad'; g: number; which: number }
  | { k: 'meta'; key: number; len: number; del: boolean }
  | { k: 'commit'; wait: boolean }
  | { k: 'reopen' };

type ConcreteOp =
  | { k: 'create'; g: number }
  | { k: 'hard'; g: number; term: number; vote: string | null; commit: number }
  | { k: 'append'; g: number; entries: Entry[] }
  | { k: 'snap'; g: number; index: number; conf: ConfState; data: Uint8Array }
  | { k: 'compact'; g: number; index: number }
  | { k: 'catchUp'; g: number; index: number; compactTo: number; data: Uint8Array }
  | { k: 'install'; g: number; index: number; term: number; conf: ConfState; data: Uint8Array }
  | { k: 'meta'; key: string; value: Uint8Array | null };

const GROUP_IDS = [0, 7, 4_000_000_000];
const META_KEYS = ['node', 'membership', 'x'];

const groupArb = fc.integer({ min: 0, max: GROUP_IDS.length - 1 });
export const opArb: fc.Arbitrary<AbstractOp> = fc.oneof(
  { weight: 2, arbitrary: fc.record({ k: fc.constant('hard' as const), g: groupArb, term: fc.nat(9), vote: fc.nat(2), commit: fc.nat(40) }) },
  {
    weight: 6,
    arbitrary: fc.record({
      k: fc.constant('append' as const),
      g: groupArb,
      at: fc.nat(1000),
      count: fc.integer({ min: 1, max: 5 }),
      bump: fc.nat(2),
      len: fc.nat(40),
      type: fc.nat(1),
    }),
  },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('snap' as const), g: groupArb, at: fc.nat(1000), conf: fc.nat(2), len: fc.nat(60) }) },
  { weight: 3, arbitrary: fc.record({ k: fc.constant('compact' as const), g: groupArb, at: fc.nat(1000) }) },
  // What a node does: snapshot at the last index, compact all but a few entries (so that old segments can go).
  { weight: 2, arbitrary: fc.record({ k: fc.constant('catchUp' as const), g: groupArb, keep: fc.nat(3), len: fc.nat(20) }) },
  {
    weight: 1,
    arbitrary: fc.record({ k: fc.constant('install' as const), g: groupArb, at: fc.nat(1000), bump: fc.nat(1), conf: fc.nat(2), len: fc.nat(30) }),
  },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('bad' as const), g: groupArb, which: fc.nat(2) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('meta' as const), key: fc.nat(2), len: fc.nat(20), del: fc.boolean() }) },
  { weight: 3, arbitrary: fc.record({ k: fc.constant('commit' as const), wait: fc.boolean() }) },
  { weight: 1, arbitrary: fc.constant({ k: 'reopen' as const }) },
);

class Model {
  readonly groups = new Map<number, MemoryStorage>();
  readonly meta = new Map<string, Uint8Array>();

  apply(op: ConcreteOp): void {
    if (op.k === 'meta') {
      if (op.value === null) this.meta.delete(op.key);
      else this.meta.set(op.key, op.value);
      return;
    }
    if (op.k === 'create') {
      this.groups.set(op.g, new MemoryStorage(CONF));
      return;
    }
    const m = this.groups.get(op.g);
    assert.ok(m !== undefined);
    applyTo(m, op);
  }
}

function applyTo(s: WritableStorage, op: Exclude<ConcreteOp, { k: 'create' } | { k: 'meta' }>): void {
  switch (op.k) {
    case 'hard':
      s.setHardState({ term: op.term, vote: op.vote, commit: op.commit });
      break;
    case 'append':
      s.append(op.entries);
      break;
    case 'snap':
      s.createSnapshot(op.index, op.conf, op.data);
      break;
    case 'compact':
      s.compact(op.index);
      break;
    case 'catchUp':
      s.createSnapshot(op.index, CONF, op.data);
      s.compact(op.compactTo);
      break;
    case 'install':
      s.applySnapshot({ meta: { index: op.index, term: op.term, conf: op.conf }, data: op.data });
      break;
  }
}

function pick(at: number, lo: number, hi: number): number {
  return lo + (at % (hi - lo + 1));
}

/** Turns an abstract op into concrete calls valid for the model's current state (null: nothing to do). */
function concretize(op: AbstractOp, model: Model, seq: number): ConcreteOp | 'bad' | null {
  if (op.k === 'commit' || op.k === 'reopen') return null;
  if (op.k === 'meta') {
    const key = META_KEYS[op.key] as string;
    return { k: 'meta', key, value: op.del ? null : bytes(seq, op.len) };
  }
  const g = GROUP_IDS[op.g] as number;
  const m = model.groups.get(g);
  if (m === undefined) return { k: 'create', g }; // the caller applies it, then asks again
  const first = m.firstIndex();
  const last = m.lastIndex();
  const snapIndex = m.snapshot().meta.index;
  switch (op.k) {
    case 'hard':
      return { k: 'hard', g, term: op.term, vote: op.vote === 0 ? null : op.vote === 1 ? 'a' : 'b', commit: op.commit };
    case 'append': {
      // Like Raft: never replace entries up to the snapshot (they are committed).
      const start = pick(op.at, snapIndex >= first ? snapIndex + 1 : Math.max(1, first - 2), last + 1);
      const base = m.term(Math.max(start - 1, first - 1)) as number;
      const ents: Entry[] = [];
      for (let i = 0; i < op.count; i++) {
        ents.push({ index: start + i, term: base + op.bump, type: op.type === 0 ? EntryType.Normal : EntryType.ConfChange, data: bytes(seq + i, op.len) });
      }
      return { k: 'append', g, entries: ents };
    }
    case 'snap':
      if (snapIndex + 1 > last) return null;
      return { k: 'snap', g, index: pick(op.at, snapIndex + 1, last), conf: CONFS[op.conf] as ConfState, data: bytes(seq, op.len) };
    case 'compact':
      return { k: 'compact', g, index: pick(op.at, first - 1, snapIndex) };
    case 'catchUp':
      if (snapIndex + 1 > last) return null;
      return { k: 'catchUp', g, index: last, compactTo: Math.max(first - 1, last - op.keep), data: bytes(seq, op.len) };
    case 'install': {
      const index = pick(op.at, Math.max(1, snapIndex), last + 3);
      const term = (m.term(Math.min(index, last)) as number) + op.bump;
      return { k: 'install', g, index, term, conf: CONFS[op.conf] as ConfState, data: bytes(seq, op.len) };
    }
    case 'bad':
      return 'bad';
  }
}

function badCall(op: { which: number }, s: WritableStorage): void {
  if (op.which === 0) s.append(entries(s.lastIndex() + 2, s.lastIndex() + 2, 100));
  else if (op.which === 1) s.createSnapshot(s.snapshot().meta.index, CONF, new Uint8Array(1));
  else s.compact(Math.max(s.snapshot().meta.index + 1, s.firstIndex()));
}

function checkAll(model: Model, store: NodeLogStore, label: string): void {
  assert.deepEqual(
    store.groups(),
    [...model.groups.keys()].sort((a, b) => a - b),
    `${label}: groups`,
  );
  for (const [g, m] of model.groups) assertSameReads(m, store.group(g, CONF), `${label} group ${g}`);
  assert.deepEqual(store.metaKeys(), [...model.meta.keys()].sort(), `${label}: meta keys`);
  for (const [key, value] of model.meta) {
    const got = store.getMeta(key);
    assert.ok(got !== undefined && Buffer.from(got).equals(Buffer.from(value)), `${label}: meta ${key}`);
  }
}

/**
 * Applies `ops` to a store opened by `open` (in a fresh directory) and to
 * MemoryStorages, committing, reopening (dropping the turn not committed) and
 * comparing every read after every operation; `open` learns whether it opens
 * first, again after a reopen op, or for the final check.
 */
export async function runLogStoreModel(ops: AbstractOp[], open: (dir: string, when: 'first' | 'reopen' | 'final') => NodeLogStore): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'ordo-log-model-'));
  let store = open(dir, 'first');
  let model = new Model();
  const durable: ConcreteOp[] = [];
  let pending: ConcreteOp[] = [];
  let inFlight: Promise<void>[] = [];
  try {
    for (let n = 0; n < ops.length; n++) {
      const op = ops[n] as AbstractOp;
      if (op.k === 'commit') {
        const p = store.commitTurn();
        durable.push(...pending);
        pending = [];
        if (op.wait) {
          await Promise.all(inFlight);
          inFlight = [];
          await p;
        } else {
          inFlight.push(p);
        }
        continue;
      }
      if (op.k === 'reopen') {
        await Promise.all(inFlight);
        inFlight = [];
        await store.close(); // drops the writes of the turn never committed
        store = open(dir, 'reopen');
        model = new Model();
        for (const d of durable) model.apply(d);
        pending = [];
        checkAll(model, store, `op ${n} after reopen`);
        continue;
      }
      let c = concretize(op, model, n);
      if (c !== null && c !== 'bad' && c.k === 'create') {
        model.apply(c);
        store.group(c.g, CONF);
        pending.push(c);
        c = concretize(op, model, n);
      }
      if (c === null) continue;
      if (c === 'bad') {
        const g = GROUP_IDS[(op as { g: number }).g] as number;
        const m = model.groups.get(g);
        if (m === undefined) continue;
        assert.throws(() => badCall(op as { which: number }, m));
        assert.throws(() => badCall(op as { which: number }, store.group(g, CONF)));
      } else {
        model.apply(c);
        if (c.k === 'meta') {
          if (c.value === null) store.deleteMeta(c.key);
          else store.putMeta(c.key, c.value);
        } else if (c.k === 'create') {
          store.group(c.g, CONF);
        } else {
          applyTo(store.group(c.g, CONF), c);
        }
        pending.push(c);
      }
      checkAll(model, store, `op ${n} (${c === 'bad' ? 'bad' : c.k})`);
    }
    await Promise.all(inFlight);
    await store.commitTurn();
    durable.push(...pending);
    await store.close();
    store = open(dir, 'final');
    model = new Model();
    for (const d of durable) model.apply(d);
    checkAll(model, store, 'final reopen');
  } finally {
    await Promise.allSettled(inFlight);
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
