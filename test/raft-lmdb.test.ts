// The LMDB Raft storage: the Storage contract, the same answers as
// MemoryStorage for random operations (also across reopening), what reaches
// the disk (compaction, snapshot chunks), atomic turns across a SIGKILL,
// refusal of foreign or corrupt files, failure reporting, and the cost of a
// turn (reported, not asserted).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import fc from 'fast-check';
import { ABORT, open } from 'lmdb';
import { MemoryStorage, type WritableStorage } from '../src/raft/storage.js';
import { EntryType, type ConfState, type Entry } from '../src/raft/types.js';
import { RAFT_DATA_FILE, RAFT_LOCK_FILE, RaftLogStore, SNAPSHOT_CHUNK_BYTES_DEFAULT } from '../src/storage/raft-lmdb.js';
import { DataDirectoryError, PersistError } from '../src/storage/store.js';
import { assertSameReads, bytes, CONF, CONFS, entries, opArb, runLogStoreModel } from './helpers/log-store-model.js';
import { storageContract } from './raft-storage.test.js';
import { scratchDirs } from './helpers/dirs.js';

const tempDir = scratchDirs('ordo-raft-lmdb-');

/** Every key in the file, read with a plain LMDB handle (the store must be closed). */
function rawKeys(dir: string): Buffer[] {
  const db = open<Buffer, Buffer>({ path: join(dir, RAFT_DATA_FILE), keyEncoding: 'binary', encoding: 'binary' });
  try {
    return [...db.getKeys({})].map((k) => Buffer.from(k));
  } finally {
    void db.close();
  }
}

async function rawWrite(dir: string, edit: (db: ReturnType<typeof open<Buffer, Buffer>>) => Promise<unknown>): Promise<void> {
  const db = open<Buffer, Buffer>({ path: join(dir, RAFT_DATA_FILE), keyEncoding: 'binary', encoding: 'binary' });
  await edit(db);
  await db.close();
}

function entryKey(group: number, index: number): Buffer {
  const k = Buffer.alloc(13);
  k[0] = 0x05;
  k.writeUInt32BE(group, 1);
  k.writeUInt32BE(Math.floor(index / 2 ** 32), 5);
  k.writeUInt32BE(index >>> 0, 9);
  return k;
}

const contractDir = tempDir();
const contractStore = RaftLogStore.open(contractDir, { fsync: 'never' });
let contractGroup = 0;
storageContract('RaftLogStore group', (conf) => contractStore.group(contractGroup++, conf));
after(async () => {
  await contractStore.close();
});

// Model test against MemoryStorage (test/helpers/log-store-model.ts)

describe('RaftLogStore against MemoryStorage', () => {
  it('answers every read like MemoryStorage after random operations, turns and reopenings (turns committed on either thread)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 100, size: 'max' }), fc.boolean(), (ops, commitOffThread) =>
        runLogStoreModel(ops, (dir, when) =>
          RaftLogStore.open(dir, when === 'final' ? { fsync: 'never' } : { fsync: 'never', snapshotChunkBytes: when === 'first' ? 7 : 5, commitOffThread }),
        ),
      ),
      { numRuns: 200 },
    );
  });
});

// --------------------------------------------------------------------------
// Durability, isolation and what is on disk
// --------------------------------------------------------------------------

describe('RaftLogStore on disk', () => {
  it('keeps committed turns, loses the turn that was never committed', async () => {
    const dir = tempDir();
    let store = RaftLogStore.open(dir, { fsync: 'always' });
    const g = store.group(1, CONF);
    g.append(entries(1, 5, 1));
    g.setHardState({ term: 1, vote: 'a', commit: 4 });
    store.putMeta('node', bytes(1, 4));
    await store.commitTurn();
    g.append(entries(4, 8, 2)); // overwrites 4..5, never committed
    g.setHardState({ term: 2, vote: 'b', commit: 5 });
    store.group(2, CONF).append(entries(1, 1, 1));
    store.putMeta('node', bytes(2, 4));
    await store.close();

    store = RaftLogStore.open(dir, { fsync: 'always' });
    assert.deepEqual(store.groups(), [1]);
    const h = store.group(1, CONF);
    assert.equal(h.lastIndex(), 5);
    assert.deepEqual(h.entries(1, 6, Infinity), entries(1, 5, 1));
    assert.deepEqual(h.initialState().hardState, { term: 1, vote: 'a', commit: 4 });
    assert.deepEqual(store.getMeta('node'), bytes(1, 4));
    await store.close();
  });

  it('keeps groups apart: 16 groups with different logs', async () => {
    const dir = tempDir();
    let store = RaftLogStore.open(dir, { fsync: 'always' });
    const models = new Map<number, MemoryStorage>();
    for (let g = 0; g < 16; g++) {
      const conf = CONFS[g % CONFS.length] as ConfState;
      const m = new MemoryStorage(conf);
      const s = store.group(g * 1000, conf);
      for (const target of [m, s] as WritableStorage[]) {
        target.append(entries(1, 10 + g, 1 + (g % 3), g));
        if (g % 2 === 0) target.append(entries(5, 6 + g, 5)); // truncates a suffix
        if (g % 4 === 0) {
          target.createSnapshot(3, conf, bytes(g, g * 10));
          target.compact(2);
        }
        if (g % 5 === 0) target.applySnapshot({ meta: { index: 50 + g, term: 9, conf }, data: bytes(g, 3) });
        target.setHardState({ term: 9, vote: g % 2 === 0 ? 'a' : null, commit: g });
      }
      models.set(g * 1000, m);
    }
    await store.commitTurn();
    for (const [g, m] of models) assertSameReads(m, store.group(g, CONF), `group ${g}`);
    await store.close();
    store = RaftLogStore.open(dir, { fsync: 'always' });
    assert.deepEqual(store.groups(), [...models.keys()]);
    for (const [g, m] of models) assertSameReads(m, store.group(g, CONF), `group ${g} reopened`);
    await store.close();
  });

  it('compaction removes the entries from disk', async () => {
    const dir = tempDir();
    let store = RaftLogStore.open(dir, { fsync: 'always' });
    const g = store.group(3, CONF);
    const other = store.group(4, CONF);
    g.append(entries(1, 100, 1));
    other.append(entries(1, 10, 1));
    await store.commitTurn();
    g.createSnapshot(80, CONF, bytes(80, 100));
    g.compact(80);
    await store.commitTurn();
    await store.close();

    const entryKeys = rawKeys(dir).filter((k) => k[0] === 0x05);
    const ofGroup = (id: number): number[] => entryKeys.filter((k) => k.readUInt32BE(1) === id).map((k) => k.readUInt32BE(9));
    assert.deepEqual(ofGroup(3), [81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100]);
    assert.equal(ofGroup(4).length, 10, 'the other group keeps its entries');

    store = RaftLogStore.open(dir, { fsync: 'always' });
    const h = store.group(3, CONF);
    assert.equal(h.firstIndex(), 81);
    assert.equal(h.lastIndex(), 100);
    assert.equal(h.term(80), 1);
    assert.equal(h.snapshot().meta.index, 80);
    await store.close();
  });

  it('stores a snapshot bigger than a chunk in chunks, and a smaller one replaces them', async () => {
    const dir = tempDir();
    let store = RaftLogStore.open(dir, { fsync: 'always' });
    const g = store.group(9, CONF);
    g.append(entries(1, 20, 2));
    const big = bytes(7, 2 * SNAPSHOT_CHUNK_BYTES_DEFAULT + 12345);
    const conf2: ConfState = { voters: ['a', 'b'], learners: ['z'] };
    g.createSnapshot(15, conf2, big);
    g.compact(15);
    await store.commitTurn();
    await store.close();
    assert.equal(rawKeys(dir).filter((k) => k[0] === 0x04).length, 3);

    store = RaftLogStore.open(dir, { fsync: 'always' });
    let h = store.group(9, CONF);
    assert.deepEqual(h.snapshot().meta, { index: 15, term: 2, conf: conf2 });
    assert.ok(Buffer.from(h.snapshot().data).equals(Buffer.from(big)));
    assert.deepEqual(h.initialState().snapshotConf, conf2);
    assert.equal(h.firstIndex(), 16);
    h.applySnapshot({ meta: { index: 30, term: 3, conf: CONF }, data: bytes(1, 10) });
    await store.commitTurn();
    await store.close();
    const keys = rawKeys(dir);
    assert.equal(keys.filter((k) => k[0] === 0x04).length, 1);
    assert.equal(keys.filter((k) => k[0] === 0x05).length, 0, 'installing a snapshot removes the old log');

    store = RaftLogStore.open(dir, { fsync: 'always' });
    h = store.group(9, CONF);
    assert.deepEqual(h.snapshot().meta, { index: 30, term: 3, conf: CONF });
    assert.deepEqual(h.snapshot().data, bytes(1, 10));
    assert.equal(h.firstIndex(), 31);
    assert.equal(h.lastIndex(), 30);
    assert.equal(h.term(30), 3);
    await store.close();
  });

  for (const commitOffThread of [false, true]) {
    it(`overlapping turns settle in order and all survive (commit ${commitOffThread ? "on lmdb-js's write thread" : 'on the calling thread'})`, async () => {
      const dir = tempDir();
      let store = RaftLogStore.open(dir, { fsync: 'always', commitOffThread });
      const g = store.group(1, CONF);
      const order: number[] = [];
      const turns: Promise<void>[] = [];
      for (let t = 1; t <= 20; t++) {
        g.append(entries(t, t, 1, 1000));
        g.setHardState({ term: 1, vote: 'a', commit: t });
        turns.push(store.commitTurn().then(() => void order.push(t)));
      }
      turns.push(store.commitTurn().then(() => void order.push(21))); // an empty turn
      await Promise.all(turns);
      assert.deepEqual(
        order,
        Array.from({ length: 21 }, (_, i) => i + 1),
      );
      await store.close();
      store = RaftLogStore.open(dir, { fsync: 'always' });
      assert.equal(store.group(1, CONF).lastIndex(), 20);
      assert.equal(store.group(1, CONF).initialState().hardState.commit, 20);
      await store.close();
    });
  }

  it('writes only raft.mdb and its lock files, not ordo.mdb', async () => {
    const dir = tempDir();
    const store = RaftLogStore.open(dir, { fsync: 'always' });
    assert.ok(existsSync(join(dir, RAFT_LOCK_FILE)));
    store.group(1, CONF).append(entries(1, 1, 1));
    await store.commitTurn();
    await store.close();
    assert.ok(existsSync(join(dir, RAFT_DATA_FILE)));
    assert.ok(!existsSync(join(dir, 'ordo.mdb')));
    assert.ok(!existsSync(join(dir, RAFT_LOCK_FILE)), 'lock released on close');
  });
});

// --------------------------------------------------------------------------
// Crash: SIGKILL right after a turn was acknowledged
// --------------------------------------------------------------------------

for (const commitOffThread of [false, true]) {
  const where = commitOffThread ? "on lmdb-js's write thread" : 'on the calling thread';

  describe(`RaftLogStore crash (commit ${where})`, () => {
    it('holds everything a turn wrote once commitTurn resolved, even after SIGKILL', async () => {
      const dir = tempDir();
      const moduleUrl = new URL('../src/storage/raft-lmdb.js', import.meta.url).href;
      const killAfterTurn = 25;
      // Each turn appends one entry to each of 8 groups, records the turn, and
      // every 7th turn snapshots and compacts group 0; the process keeps going
      // until it is killed.
      const script = `
        import { RaftLogStore } from ${JSON.stringify(moduleUrl)};
        const store = RaftLogStore.open(${JSON.stringify(dir)}, { fsync: 'always', commitOffThread: ${commitOffThread} });
        const conf = { voters: ['n1'], learners: [] };
        const groups = [0, 1, 2, 3, 4, 5, 6, 7].map((g) => store.group(g, conf));
        const data = (g, t) => { const d = new Uint8Array(100 + (t % 50)); for (let i = 0; i < d.length; i++) d[i] = (g * 13 + t * 7 + i) & 255; return d; };
        for (let turn = 1; ; turn++) {
          groups.forEach((g, k) => {
            g.append([{ index: turn, term: 1, type: 0, data: data(k, turn) }]);
            g.setHardState({ term: 1, vote: 'n1', commit: turn - 1 });
          });
          if (turn % 7 === 0) { groups[0].createSnapshot(turn - 1, conf, data(99, turn)); groups[0].compact(turn - 1); }
          store.putMeta('turn', new TextEncoder().encode(String(turn)));
          await store.commitTurn();
          process.stdout.write('turn ' + turn + '\\n');
        }
      `;
      const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const exited = new Promise<NodeJS.Signals | null>((resolve) => child.once('exit', (_code, signal) => resolve(signal)));
      await new Promise<void>((resolve, reject) => {
        let out = '';
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          if (out.includes(`turn ${killAfterTurn}\n`)) {
            child.kill('SIGKILL');
            resolve();
          }
        });
        child.once('exit', () => reject(new Error(`child exited early: ${stderr}`)));
      });
      assert.equal(await exited, 'SIGKILL');

      const store = RaftLogStore.open(dir, { fsync: 'always' });
      try {
        const turnBytes = store.getMeta('turn');
        assert.ok(turnBytes !== undefined);
        const turn = Number(new TextDecoder().decode(turnBytes));
        assert.ok(turn >= killAfterTurn, `turn ${turn} survived, ${killAfterTurn} was acknowledged`);
        assert.deepEqual(store.groups(), [0, 1, 2, 3, 4, 5, 6, 7]);
        const data = (g: number, t: number): Uint8Array => {
          const d = new Uint8Array(100 + (t % 50));
          for (let i = 0; i < d.length; i++) d[i] = (g * 13 + t * 7 + i) & 255;
          return d;
        };
        for (let k = 0; k < 8; k++) {
          const g = store.group(k, CONF);
          assert.equal(g.lastIndex(), turn, `group ${k} holds exactly the turns up to ${turn}`);
          assert.deepEqual(g.initialState().hardState, { term: 1, vote: 'n1', commit: turn - 1 });
          for (let i = g.firstIndex(); i <= turn; i++) assert.deepEqual(g.entry(i)?.data, data(k, i), `group ${k} entry ${i}`);
        }
        const snapAt = Math.floor(turn / 7) * 7 - 1;
        const g0 = store.group(0, CONF);
        assert.equal(g0.snapshot().meta.index, snapAt);
        assert.equal(g0.firstIndex(), snapAt + 1);
        assert.deepEqual(g0.snapshot().data, data(99, snapAt + 1));
      } finally {
        await store.close();
      }
    });
  });

  describe(`RaftLogStore crash during a big turn (commit ${where})`, () => {
    it('keeps a turn of 20000 entries all or nothing, wherever SIGKILL hits it', async (t) => {
      const moduleUrl = new URL('../src/storage/raft-lmdb.js', import.meta.url).href;
      const outcomes: string[] = [];
      for (const delayMs of [0, 20, 40, 55, 70, 85, 100]) {
        const dir = tempDir();
        const script = `
          import { RaftLogStore } from ${JSON.stringify(moduleUrl)};
          const store = RaftLogStore.open(${JSON.stringify(dir)}, { fsync: 'always', commitOffThread: ${commitOffThread} });
          const groups = Array.from({ length: 16 }, (_, g) => store.group(g, { voters: ['n1'], learners: [] }));
          for (const g of groups) g.append([{ index: 1, term: 1, type: 0, data: new Uint8Array(10) }]);
          await store.commitTurn();
          const data = new Uint8Array(200);
          for (const g of groups) g.append(Array.from({ length: 1250 }, (_, i) => ({ index: i + 2, term: 1, type: 0, data })));
          store.putMeta('big', data);
          process.stdout.write('go\\n');
          await store.commitTurn();
          process.stdout.write('done\\n');
          setInterval(() => {}, 1000);
        `;
        const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
        let acked = false;
        const exited = new Promise<NodeJS.Signals | null>((resolve) => child.once('exit', (_code, signal) => resolve(signal)));
        child.stdout.on('data', (d: Buffer) => {
          const text = d.toString();
          if (text.includes('done')) acked = true;
          if (text.includes('go')) setTimeout(() => child.kill('SIGKILL'), delayMs);
        });
        // The child must die by our SIGKILL, not by an error of its own (which would look like a lost turn).
        assert.equal(await exited, 'SIGKILL', `kill after ${delayMs} ms: the child exited by itself`);
        const store = RaftLogStore.open(dir, { fsync: 'always' });
        try {
          const lasts = new Set(store.groups().map((g) => store.group(g, CONF).lastIndex()));
          assert.equal(store.groups().length, 16);
          assert.equal(lasts.size, 1, `kill after ${delayMs} ms: groups disagree (${[...lasts].join(', ')})`);
          const whole = lasts.has(1251);
          assert.ok(whole || lasts.has(1), `kill after ${delayMs} ms: last index ${[...lasts].join(', ')}`);
          assert.equal(store.getMeta('big') !== undefined, whole, 'the metadata of the turn goes with it');
          if (acked) assert.ok(whole, 'an acknowledged turn survives');
          outcomes.push(`${delayMs} ms: ${whole ? (acked ? 'acknowledged, kept' : 'kept') : 'lost'}`);
        } finally {
          await store.close();
        }
      }
      t.diagnostic(`big turn killed after ${outcomes.join('; ')}`);
    });
  });
}

// --------------------------------------------------------------------------
// Foreign and corrupt data
// --------------------------------------------------------------------------

describe('RaftLogStore refuses what is not its data', () => {
  const refused = (dir: string, pattern: RegExp): void => {
    assert.throws(
      () => RaftLogStore.open(dir, { fsync: 'always' }),
      (e: unknown) => e instanceof DataDirectoryError && pattern.test(e.message),
    );
    assert.ok(!existsSync(join(dir, RAFT_LOCK_FILE)), 'no lock left behind');
  };

  async function validStore(): Promise<string> {
    const dir = tempDir();
    const store = RaftLogStore.open(dir, { fsync: 'always' });
    store.group(2, CONF).append(entries(1, 5, 1));
    await store.commitTurn();
    await store.close();
    return dir;
  }

  it('a file that is not LMDB', () => {
    const dir = tempDir();
    writeFileSync(join(dir, RAFT_DATA_FILE), bytes(3, 20_000));
    refused(dir, /not a valid LMDB file/);
  });

  it('an LMDB environment without the format marker', async () => {
    const dir = tempDir();
    const db = open({ path: join(dir, RAFT_DATA_FILE) });
    await db.put('hello', 'world');
    await db.close();
    refused(dir, /no format marker/);
  });

  it('another format version', async () => {
    const dir = await validStore();
    const marker = Buffer.concat([Buffer.from('ordo-raft', 'latin1'), Buffer.from([0, 0, 0, 2])]);
    await rawWrite(dir, (db) => db.put(Buffer.from([0]), marker));
    refused(dir, /format 2, this ordo reads format 1/);
  });

  it('a damaged entry record', async () => {
    const dir = await validStore();
    await rawWrite(dir, (db) => db.put(entryKey(2, 3), Buffer.from([0, 1])));
    refused(dir, /entry 3 of group 2: 2 bytes; refusing to start on corrupt/);
  });

  it('a flipped bit in an entry', async () => {
    const dir = await validStore();
    await rawWrite(dir, async (db) => {
      const value = Buffer.from(db.get(entryKey(2, 4)) as Buffer);
      value[10] = (value[10] as number) ^ 0x10;
      await db.put(entryKey(2, 4), value);
    });
    refused(dir, /entry 4 of group 2: checksum mismatch/);
  });

  it('a gap in a log', async () => {
    const dir = await validStore();
    await rawWrite(dir, (db) => db.remove(entryKey(2, 3)));
    refused(dir, /entry 4 of group 2: entry 3 was expected/);
  });

  it('a log that lost its last entries', async () => {
    const dir = await validStore();
    await rawWrite(dir, (db) => db.remove(entryKey(2, 5)));
    refused(dir, /group 2: log ends at 4, its last index is 5/);
  });

  it('a group that lost its records', async () => {
    const dir = await validStore();
    await rawWrite(dir, async (db) => {
      for (const k of [...db.getKeys({})].map((key) => Buffer.from(key))) {
        if (k[0] !== 0x00 && k.length >= 5 && k.readUInt32BE(1) === 2) await db.remove(k);
      }
    });
    refused(dir, /1 groups recorded|0 groups found, 1 recorded/);
  });

  it('a record of an unknown kind', async () => {
    const dir = await validStore();
    await rawWrite(dir, (db) => db.put(Buffer.from([0x42, 0, 0, 0, 2]), Buffer.from([1])));
    refused(dir, /unknown record kind/);
  });

  it('a second open while the store is open', async () => {
    const dir = tempDir();
    const store = RaftLogStore.open(dir, { fsync: 'always' });
    assert.throws(() => RaftLogStore.open(dir, { fsync: 'always' }), DataDirectoryError);
    await store.close();
  });
});

// --------------------------------------------------------------------------
// Failures are reported as not applied or unknown
// --------------------------------------------------------------------------

/** The store's LMDB handle, to make its writes or its commit fail. */
interface RootHook {
  root: {
    putSync: (...args: unknown[]) => unknown;
    transactionSync: (callback: () => unknown) => unknown;
    childTransaction: (callback: () => unknown) => Promise<unknown>;
  };
}

/** Makes the store's next commits fail after their writes were made (as a failed fsync would); returns the undo. */
function failCommits(store: RaftLogStore, wrote: () => void): () => void {
  const hook = (store as unknown as RootHook).root;
  const realSync = hook.transactionSync;
  const realChild = hook.childTransaction;
  hook.transactionSync = function (this: unknown, callback: () => unknown): unknown {
    realSync.call(this, () => {
      callback();
      wrote();
      return ABORT;
    });
    throw new Error('EIO');
  };
  hook.childTransaction = function (this: unknown, callback: () => unknown): Promise<unknown> {
    return realChild
      .call(this, () => {
        callback();
        wrote();
      })
      .then(() => Promise.reject(new Error('EIO')));
  };
  return () => {
    hook.transactionSync = realSync;
    hook.childTransaction = realChild;
  };
}

for (const commitOffThread of [false, true]) {
  describe(`RaftLogStore write failures (commit ${commitOffThread ? "on lmdb-js's write thread" : 'on the calling thread'})`, () => {
    it('a write refused inside the transaction is "not applied", nothing of the turn is on disk, and every later turn fails', async () => {
      const dir = tempDir();
      let store = RaftLogStore.open(dir, { fsync: 'always', commitOffThread });
      store.group(2, CONF).append(entries(1, 3, 1));
      await store.commitTurn();
      const hook = (store as unknown as RootHook).root;
      const realPut = hook.putSync;
      let puts = 0;
      // The first writes of the turn go through, then one is refused: the transaction must be aborted as a whole.
      hook.putSync = function (this: unknown, ...args: unknown[]): unknown {
        if (++puts > 2) throw new Error('MDB_MAP_FULL');
        return realPut.apply(this, args);
      };
      store.group(1, CONF).append(entries(1, 2, 1));
      store.group(2, CONF).append(entries(4, 6, 1));
      store.putMeta('m', bytes(1, 5));
      const first = store.commitTurn();
      store.group(1, CONF).append(entries(3, 3, 1));
      const second = store.commitTurn();
      await assert.rejects(first, (e: unknown) => e instanceof PersistError && e.applied === 'no' && /not applied/.test(e.message));
      await assert.rejects(second, (e: unknown) => e instanceof PersistError && e.applied === 'no' && /earlier turn failed/.test(e.message));
      assert.ok(puts > 2, 'the refused write was inside the turn');
      hook.putSync = realPut;
      await assert.rejects(store.commitTurn(), (e: unknown) => e instanceof PersistError && e.applied === 'no');
      await store.close();
      store = RaftLogStore.open(dir, { fsync: 'always' });
      assert.deepEqual(store.groups(), [2], 'the failed turn left nothing behind');
      assert.equal(store.group(2, CONF).lastIndex(), 3);
      assert.equal(store.getMeta('m'), undefined);
      await store.close();
    });

    it('a failed commit is "outcome unknown", and every later turn fails', async () => {
      const store = RaftLogStore.open(tempDir(), { fsync: 'always', commitOffThread });
      let ran = false;
      const undo = failCommits(store, () => void (ran = true));
      store.group(1, CONF).append(entries(1, 2, 1));
      const first = store.commitTurn();
      store.group(1, CONF).append(entries(3, 3, 1));
      const second = store.commitTurn();
      await assert.rejects(first, (e: unknown) => e instanceof PersistError && e.applied === 'unknown' && /outcome unknown/.test(e.message));
      await assert.rejects(second, (e: unknown) => e instanceof PersistError && e.applied === 'no' && /earlier turn failed/.test(e.message));
      assert.ok(ran, 'the writes of the turn were made before the commit failed');
      undo();
      await assert.rejects(store.commitTurn(), (e: unknown) => e instanceof PersistError && e.applied === 'no');
      await store.close();
    });
  });
}

describe('RaftLogStore turns in flight and closing', () => {
  it('a turn asked for while one is in flight is written after it, from its own buffers', async () => {
    const dir = tempDir();
    let store = RaftLogStore.open(dir, { fsync: 'always', commitOffThread: true });
    const g = store.group(1, CONF);
    g.append(entries(1, 100, 1, 4000));
    const first = store.commitTurn();
    // Written after the first turn was queued, before it committed: the slab it used must not be reused under it.
    g.append(entries(101, 200, 1, 4000));
    g.setHardState({ term: 1, vote: 'a', commit: 150 });
    const second = store.commitTurn();
    await Promise.all([first, second]);
    await store.close();
    store = RaftLogStore.open(dir, { fsync: 'always' });
    const back = store.group(1, CONF);
    assert.equal(back.lastIndex(), 200);
    assert.equal(back.initialState().hardState.commit, 150);
    const got = back.entries(1, 201, Number.MAX_SAFE_INTEGER);
    assert.deepEqual(got, entries(1, 200, 1, 4000));
    await store.close();
  });

  it('a closed store refuses turns', async () => {
    const store = RaftLogStore.open(tempDir(), { fsync: 'always' });
    await store.close();
    await assert.rejects(store.commitTurn(), (e: unknown) => e instanceof PersistError && e.applied === 'no');
  });
});

// --------------------------------------------------------------------------
// Cost of a turn (reported, never asserted)
// --------------------------------------------------------------------------

describe('RaftLogStore keeps every turn of a long run (and reports the cost of a turn)', () => {
  for (const fsync of ['always', 'never'] as const) {
    it(`16 groups x 10 entries of 2 KB per turn, fsync ${fsync}`, async (t) => {
      const dir = tempDir();
      const store = RaftLogStore.open(dir, { fsync });
      const groups = Array.from({ length: 16 }, (_, g) => store.group(g, CONF));
      const payload = bytes(1, 2048);
      const turns = 200;
      const total: number[] = [];
      const sync: number[] = [];
      let next = 1;
      const fill = (): void => {
        for (const g of groups) {
          const batch: Entry[] = [];
          for (let i = 0; i < 10; i++) batch.push({ index: next + i, term: 1, type: EntryType.Normal, data: payload });
          g.append(batch);
          g.setHardState({ term: 1, vote: 'a', commit: next + 9 });
        }
        next += 10;
      };
      for (let turn = 0; turn < turns; turn++) {
        fill();
        const t0 = performance.now();
        const p = store.commitTurn();
        sync.push(performance.now() - t0);
        await p;
        total.push(performance.now() - t0);
      }
      // Two turns in flight: with synchronous commits each is written when it is called, so this measures the same path back to back.
      const t1 = performance.now();
      const inFlight: Promise<void>[] = [];
      for (let turn = 0; turn < turns; turn++) {
        fill();
        inFlight.push(store.commitTurn());
        if (inFlight.length >= 2) await inFlight.shift();
      }
      await Promise.all(inFlight);
      const pipelinedMs = performance.now() - t1;
      await store.close();
      // What a user relies on: every entry and hard state of the 400 turns is there after reopening.
      const reopened = RaftLogStore.open(dir, { fsync });
      try {
        for (let g = 0; g < 16; g++) {
          const s = reopened.group(g, CONF);
          assert.equal(s.lastIndex(), next - 1, `group ${g}`);
          assert.equal(s.initialState().hardState.commit, next - 1, `group ${g}`);
          assert.deepEqual(s.entries(next - 1, next, Infinity)[0]?.data, payload, `group ${g}`);
        }
      } finally {
        await reopened.close();
      }
      const q = (xs: number[], f: number): string => ([...xs].sort((a, b) => a - b)[Math.floor(f * (xs.length - 1))] as number).toFixed(2);
      const mean = (xs: number[]): string => (xs.reduce((a, b) => a + b, 0) / xs.length).toFixed(2);
      t.diagnostic(
        `fsync ${fsync}: commitTurn of 160 entries (330 KB): mean ${mean(total)} ms, p50 ${q(total, 0.5)} ms, p99 ${q(total, 0.99)} ms; ` +
          `synchronous part mean ${mean(sync)} ms; pipelined (2 in flight) ${(pipelinedMs / turns).toFixed(2)} ms per turn`,
      );
    });
  }
});
