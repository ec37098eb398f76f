// LmdbStore in a temporary directory: what is persisted is recovered exactly
// after reopening; FLUSHALL clears; unusable directories are refused with a
// reason; `--fsync never` still stores (it only skips the flush wait).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { open } from 'lmdb';
import { DATA_FILE, LmdbStore } from '../src/storage/lmdb.js';
import { DataDirectoryError } from '../src/storage/store.js';
import { newSequence, type TokenRecord } from '../src/sequencer/sequence.js';
import { StateMachine, type ChangeSet, type StoredValue } from '../src/sequencer/state-machine.js';
import { INT64_MAX, INT64_MIN } from '../src/sequencer/numbers.js';
import { removeDir, tempDir } from '../testkit/processes.js';

const dirs: string[] = [];
function freshDir(): string {
  const d = tempDir('storage');
  dirs.push(d);
  return d;
}
after(() => {
  for (const d of dirs) removeDir(d);
});

function changes(values: [string, StoredValue | null][], cleared = false): ChangeSet {
  return { cleared, values: new Map(values), tokens: new Map() };
}

function recovered(store: LmdbStore): StateMachine {
  const sm = new StateMachine();
  store.recover(sm);
  return sm;
}

function refusal(dir: string, message: RegExp): void {
  assert.throws(
    () => LmdbStore.open(dir, 'always'),
    (e: unknown) => e instanceof DataDirectoryError && message.test(e.message),
  );
}

describe('LmdbStore', () => {
  it('a new directory starts empty and holds only ordo files', async () => {
    const dir = freshDir();
    const store = LmdbStore.open(join(dir, 'nested', 'data'), 'always');
    assert.equal(recovered(store).size, 0);
    assert.match(store.description, /ordo\.mdb/);
    await store.close();
    assert.ok(existsSync(join(dir, 'nested', 'data', DATA_FILE)));
    assert.ok(!readdirSync(join(dir, 'nested', 'data')).includes('ordo.pid'), 'the lock is released on close');
  });

  it('recovers exactly what was persisted, across several batches, after reopening', async () => {
    const dir = freshDir();
    const seq = newSequence({ id: 'abc', mode: 'strict', start: 1n, step: 2n, max: 100n, windowSize: 10n }, 7n);
    const binaryKey = '\u0000\u00ff\r\n';
    let store = LmdbStore.open(dir, 'always');
    await store.persist(
      changes([
        ['a', 1n],
        ['b', Buffer.from('hello')],
        ['gone', 5n],
      ]),
    );
    await store.persist(
      changes([
        ['a', 2n],
        ['gone', null],
        ['max', INT64_MAX],
        ['min', INT64_MIN],
        [binaryKey, Buffer.from([0, 1, 2])],
        ['seq', seq],
      ]),
    );
    const tokens = new Map<string, TokenRecord>([['t', { first: 1n, last: 3n, count: 2n, range: true, atMs: 99 }]]);
    await store.persist({ cleared: false, values: new Map(), tokens: new Map([['seq', tokens]]) });
    await store.close();

    store = LmdbStore.open(dir, 'always');
    const sm = recovered(store);
    assert.deepEqual(
      new Map(sm.entries()),
      new Map<string, StoredValue>([
        ['a', 2n],
        ['b', Buffer.from('hello')],
        ['max', INT64_MAX],
        ['min', INT64_MIN],
        [binaryKey, Buffer.from([0, 1, 2])],
        ['seq', seq],
      ]),
    );
    assert.deepEqual(new Map(sm.tokenEntries()), new Map([['seq', tokens]]));
    await store.close();
  });

  // Redis accepts the empty key and keys up to 512 MB; LMDB refuses zero-length keys and keys over
  // its key size limit (1978 bytes in lmdb-js), and the failed write fails every op of the batch.
  it("stores the empty key and keys longer than LMDB's key size limit", async () => {
    const dir = freshDir();
    let store = LmdbStore.open(dir, 'always');
    await store.persist(changes([['', Buffer.from('empty key')]]));
    await store.persist(
      changes([
        ['k'.repeat(4000), 1n],
        ['k'.repeat(1025), 2n],
        ['k'.repeat(1024), 3n],
      ]),
    );
    await store.close();
    store = LmdbStore.open(dir, 'always');
    const sm = recovered(store);
    await store.close();
    assert.deepEqual(sm.getBytes(''), Buffer.from('empty key'));
    assert.equal(sm.getValue('k'.repeat(4000)), 1n);
    assert.equal(sm.getValue('k'.repeat(1025)), 2n);
    assert.equal(sm.getValue('k'.repeat(1024)), 3n);
  });

  it('recovers a large batch and many keys', async () => {
    const dir = freshDir();
    let store = LmdbStore.open(dir, 'always');
    const values: [string, StoredValue][] = [];
    for (let i = 0; i < 20_000; i++) values.push([`key:${i}`, BigInt(i) * 1_000_003n]);
    await store.persist(changes(values));
    await store.close();
    store = LmdbStore.open(dir, 'always');
    const sm = recovered(store);
    assert.equal(sm.size, 20_000);
    assert.equal(sm.getValue('key:19999'), 19999n * 1_000_003n);
    await store.close();
  });

  it("a cleared batch removes everything before the batch's own writes", async () => {
    const dir = freshDir();
    let store = LmdbStore.open(dir, 'always');
    await store.persist(
      changes([
        ['a', 1n],
        ['b', 2n],
      ]),
    );
    await store.persist({
      cleared: false,
      values: new Map(),
      tokens: new Map([['a', new Map([['t', { first: 1n, last: 1n, count: 1n, range: false, atMs: 1 }]])]]),
    });
    await store.persist(changes([['c', 3n]], true));
    await store.close();
    store = LmdbStore.open(dir, 'always');
    const sm = recovered(store);
    assert.deepEqual(new Map(sm.entries()), new Map([['c', 3n]]));
    assert.equal([...sm.tokenEntries()].length, 0);
    await store.close();
  });

  it('--fsync never stores too (it does not wait for the flush)', async () => {
    const dir = freshDir();
    let store = LmdbStore.open(dir, 'never');
    for (let i = 0; i < 50; i++) await store.persist(changes([['n', BigInt(i)]]));
    await store.close();
    store = LmdbStore.open(dir, 'never');
    assert.equal(recovered(store).getValue('n'), 49n);
    await store.close();
  });

  it('refuses a directory holding other files and no ordo data, and leaves it untouched', () => {
    const dir = freshDir();
    writeFileSync(join(dir, 'notes.txt'), 'mine');
    mkdirSync(join(dir, 'photos'));
    refusal(dir, /holds other files .*no ordo data/);
    assert.deepEqual(readdirSync(dir).sort(), ['notes.txt', 'photos']);
  });

  it('refuses a data file that is not an LMDB file', () => {
    const dir = freshDir();
    writeFileSync(join(dir, DATA_FILE), Buffer.alloc(64 * 1024, 0x5a));
    refusal(dir, /ordo\.mdb/);
    assert.ok(!existsSync(join(dir, 'ordo.pid')), 'the lock is released after a refusal');
  });

  it("refuses an LMDB file that is not ordo's", async () => {
    const dir = freshDir();
    const foreign = open({ path: join(dir, DATA_FILE) });
    await foreign.put('hello', 'world');
    await foreign.close();
    refusal(dir, /not an ordo data file/);
  });

  it('refuses an ordo data file whose pages were overwritten', async () => {
    const dir = freshDir();
    const store = LmdbStore.open(dir, 'always');
    await store.persist(changes([['a', 1n]]));
    await store.close();
    const path = join(dir, DATA_FILE);
    const bytes = readFileSync(path);
    bytes.fill(0xa5, 0, Math.min(bytes.length, 16 * 1024)); // both meta pages
    writeFileSync(path, bytes);
    refusal(dir, /ordo\.mdb/);
  });

  it('refuses a directory locked by a live process, takes over a lock left by a dead one', async () => {
    const dir = freshDir();
    const sleeper = spawn('sleep', ['30'], { stdio: 'ignore' });
    try {
      const pid = sleeper.pid ?? 0;
      assert.ok(pid > 0);
      writeFileSync(join(dir, 'ordo.pid'), `${pid}\n`);
      refusal(dir, new RegExp(`in use by process ${pid}`));
      assert.equal(readFileSync(join(dir, 'ordo.pid'), 'utf8'), `${pid}\n`, "another process's lock is left alone");
    } finally {
      sleeper.kill('SIGKILL');
    }
    await new Promise((resolve) => sleeper.once('exit', resolve));
    const store = LmdbStore.open(dir, 'always');
    assert.equal(readFileSync(join(dir, 'ordo.pid'), 'utf8'), `${process.pid}\n`);
    await store.close();
  });
});
