// The Storage contract, run against MemoryStorage. A durable implementation
// must pass the same cases (call storageContract with its factory).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryStorage, WritableStorage } from '../src/raft/storage.js';
import { ConfState, Entry, EntryType } from '../src/raft/types.js';

const CONF: ConfState = { voters: ['a', 'b', 'c'], learners: [] };

function entry(index: number, term: number, text = ''): Entry {
  return { index, term, type: EntryType.Normal, data: new TextEncoder().encode(text) };
}

function range(from: number, to: number, term: number): Entry[] {
  const out: Entry[] = [];
  for (let i = from; i <= to; i++) out.push(entry(i, term, `e${i}`));
  return out;
}

export function storageContract(name: string, make: (conf: ConfState) => WritableStorage): void {
  test(`${name}: empty storage`, () => {
    const s = make(CONF);
    assert.equal(s.firstIndex(), 1);
    assert.equal(s.lastIndex(), 0);
    assert.equal(s.term(0), 0);
    assert.equal(s.term(1), undefined);
    assert.deepEqual(s.initialState(), { hardState: { term: 0, vote: null, commit: 0 }, snapshotConf: CONF });
    assert.equal(s.snapshot().meta.index, 0);
  });

  test(`${name}: append, overwrite a suffix, read back with a byte limit`, () => {
    const s = make(CONF);
    s.append(range(1, 5, 1));
    s.append(range(4, 6, 2)); // drops 4 and 5 of term 1
    assert.equal(s.lastIndex(), 6);
    assert.deepEqual(
      [4, 5, 6].map((i) => s.term(i)),
      [2, 2, 2],
    );
    assert.equal(s.term(3), 1);
    const all = s.entries(1, 7, Number.MAX_SAFE_INTEGER);
    assert.deepEqual(
      all.map((e) => `${e.index}/${e.term}`),
      ['1/1', '2/1', '3/1', '4/2', '5/2', '6/2'],
    );
    const limited = s.entries(1, 7, 60); // 26 bytes per entry here
    assert.equal(limited.length, 2);
    assert.equal(s.entries(2, 3, 0).length, 1, 'always at least one entry');
    assert.throws(() => s.append(range(9, 9, 2)), 'gaps are refused');
  });

  test(`${name}: hard state round trip`, () => {
    const s = make(CONF);
    s.setHardState({ term: 7, vote: 'b', commit: 0 });
    assert.deepEqual(s.initialState().hardState, { term: 7, vote: 'b', commit: 0 });
  });

  test(`${name}: snapshot and compaction keep term lookups at the boundary`, () => {
    const s = make(CONF);
    s.append(range(1, 10, 3));
    const conf2: ConfState = { voters: ['a', 'b'], learners: ['d'] };
    const snap = s.createSnapshot(8, conf2, new Uint8Array([1, 2, 3]));
    assert.deepEqual(snap.meta, { index: 8, term: 3, conf: conf2 });
    s.compact(6);
    assert.equal(s.firstIndex(), 7);
    assert.equal(s.term(6), 3, 'term of the entry just before the first is kept');
    assert.equal(s.term(5), undefined);
    assert.equal(s.lastIndex(), 10);
    assert.throws(() => s.entries(5, 7, 1000));
    assert.throws(() => s.compact(9), 'cannot compact past the snapshot');
    assert.deepEqual(s.initialState().snapshotConf, conf2);
  });

  test(`${name}: installing a leader's snapshot replaces the log`, () => {
    const s = make(CONF);
    s.append(range(1, 4, 1));
    s.applySnapshot({ meta: { index: 20, term: 5, conf: CONF }, data: new Uint8Array([9]) });
    assert.equal(s.firstIndex(), 21);
    assert.equal(s.lastIndex(), 20);
    assert.equal(s.term(20), 5);
    s.append(range(21, 22, 5));
    assert.equal(s.lastIndex(), 22);
    s.append(range(15, 21, 5)); // entries covered by the snapshot are skipped
    assert.equal(s.lastIndex(), 21);
  });
}

storageContract('MemoryStorage', (conf) => new MemoryStorage(conf));
