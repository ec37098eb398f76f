// The node's log (WalStore, `DIR/wal/`): the Storage contract, the same
// answers as MemoryStorage for random operations (also across reopening, with
// segments rotating and deleted), segment rotation and deletion, snapshot
// files, torn tails cut and damage refused, turns kept across a SIGKILL, turns
// settling in order, failure reporting, and the cost of a turn next to
// RaftLogStore's (reported, not asserted).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync, truncateSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { crc32 } from 'node:zlib';
import fc from 'fast-check';
import { MemoryStorage, type WritableStorage } from '../src/raft/storage.js';
import { EntryType, type ConfState, type Entry } from '../src/raft/types.js';
import { RaftLogStore } from '../src/storage/raft-lmdb.js';
import { SEGMENT_HEADER_BYTES, segmentFileName, type SegmentIo } from '../src/storage/segments.js';
import { DataDirectoryError, PersistError } from '../src/storage/store.js';
import { WAL_DIR, WAL_LOCK_FILE, WalStore, type WalStoreOptions } from '../src/storage/wal-store.js';
import { assertSameReads, bytes, CONF, CONFS, entries, opArb, runLogStoreModel } from './helpers/log-store-model.js';
import { prng } from '../testkit/random.js';
import { storageContract } from './raft-storage.test.js';
import { scratchDirs } from './helpers/dirs.js';

/** Segments of the tests that do not rotate (the default, 64 MiB, takes a while to preallocate). */
const TEST_SEGMENT_BYTES = 256 * 1024;
/** Small segments, so that tests rotate and delete them. */
const SMALL_SEGMENT_BYTES = 4096;

const tempDir = scratchDirs('ordo-wal-');

function walDir(dir: string): string {
  return join(dir, WAL_DIR);
}

function segmentFiles(dir: string): string[] {
  return readdirSync(walDir(dir))
    .filter((f) => f.endsWith('.wal'))
    .sort();
}

function snapFiles(dir: string): string[] {
  return readdirSync(walDir(dir))
    .filter((f) => f.endsWith('.snap'))
    .sort();
}

/** Offsets of the frames of a segment file (up to the first zero length), and where they end. */
function frameOffsets(file: string): { offsets: number[]; end: number } {
  const buf = readFileSync(file);
  const offsets: number[] = [];
  let at = SEGMENT_HEADER_BYTES;
  while (at + 8 <= buf.length) {
    const len = buf.readUInt32LE(at);
    if (len === 0) break;
    offsets.push(at);
    at += 8 + len;
  }
  return { offsets, end: at };
}

/** Writes a frame with a valid CRC (frame number, flags, version, then `records`) at `at` in `file`. */
function plantFrame(file: string, at: number, frameNumber: number, records: Buffer): void {
  const payload = Buffer.alloc(10 + records.length);
  payload.writeUInt32LE(frameNumber >>> 0, 0);
  payload.writeUInt32LE(Math.floor(frameNumber / 2 ** 32), 4);
  payload[8] = 0;
  payload[9] = 1;
  records.copy(payload, 10);
  const head = Buffer.alloc(8);
  head.writeUInt32LE(payload.length, 0);
  head.writeUInt32LE(crc32(payload, crc32(head.subarray(0, 4))), 4);
  const buf = readFileSync(file);
  const frame = Buffer.concat([head, payload]);
  const out = Buffer.alloc(Math.max(buf.length, at + frame.length));
  buf.copy(out);
  frame.copy(out, at);
  writeFileSync(file, out);
}

/** The frame number of the frame at `at`. */
function frameNumberAt(file: string, at: number): number {
  const buf = readFileSync(file);
  return buf.readUInt32LE(at + 8) + buf.readUInt32LE(at + 12) * 2 ** 32;
}

/** Compares every read of two storages. */
/** Runs `fn` with stderr captured; returns what it wrote. */
async function captureStderr(fn: () => unknown): Promise<string> {
  const real = process.stderr.write.bind(process.stderr);
  let text = '';
  process.stderr.write = (chunk: string | Uint8Array): boolean => {
    text += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString();
    return true;
  };
  try {
    await fn();
  } finally {
    process.stderr.write = real;
  }
  return text;
}

// --------------------------------------------------------------------------
// The Storage contract
// --------------------------------------------------------------------------

const contractDir = tempDir();
const contractStore = WalStore.open(contractDir, { fsync: 'never', segmentBytes: 64 * 1024 });
let contractGroup = 0;
storageContract('WalStore group', (conf) => contractStore.group(contractGroup++, conf));
after(async () => {
  await contractStore.close();
});

// --------------------------------------------------------------------------
// Model test against MemoryStorage (test/helpers/log-store-model.ts)
// --------------------------------------------------------------------------

describe('WalStore against MemoryStorage', () => {
  it('answers every read like MemoryStorage after random operations, turns and reopenings (segments rotating, either thread)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(opArb, { minLength: 1, maxLength: 100, size: 'max' }),
        fc.boolean(),
        fc.constantFrom(1024, 1024, 2048, 64 * 1024),
        (ops, offThread, segmentBytes) => runLogStoreModel(ops, (dir) => WalStore.open(dir, { fsync: 'never', commitOffThread: offThread, segmentBytes })),
      ),
      { numRuns: 300 },
    );
  });
});

// --------------------------------------------------------------------------
// On disk: turns, segments, snapshot files
// --------------------------------------------------------------------------

describe('WalStore on disk', () => {
  it('keeps committed turns, loses the turn that was never committed', async () => {
    const dir = tempDir();
    let store = WalStore.open(dir, { fsync: 'always', segmentBytes: TEST_SEGMENT_BYTES });
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

    store = WalStore.open(dir, { fsync: 'always', segmentBytes: TEST_SEGMENT_BYTES });
    assert.deepEqual(store.groups(), [1]);
    const h = store.group(1, CONF);
    assert.deepEqual(h.entries(1, 6, Infinity), entries(1, 5, 1));
    assert.deepEqual(h.initialState().hardState, { term: 1, vote: 'a', commit: 4 });
    assert.deepEqual(store.getMeta('node'), bytes(1, 4));
    await store.close();
    assert.deepEqual(readdirSync(walDir(dir)).sort(), [segmentFileName(1)], 'one segment, no lock left behind, no temporary file');
  });

  it('keeps groups apart: 16 groups with different logs', async () => {
    const dir = tempDir();
    let store = WalStore.open(dir, { fsync: 'always', segmentBytes: TEST_SEGMENT_BYTES });
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
    await store.close();
    store = WalStore.open(dir, { fsync: 'always', segmentBytes: TEST_SEGMENT_BYTES });
    assert.deepEqual(store.groups(), [...models.keys()]);
    for (const [g, m] of models) assertSameReads(m, store.group(g, CONF), `group ${g} reopened`);
    await store.close();
  });

  it('rotates segments when full, and deletes a segment once every group compacted its entries', async () => {
    const dir = tempDir();
    const options: WalStoreOptions = { fsync: 'always', segmentBytes: SMALL_SEGMENT_BYTES };
    let store = WalStore.open(dir, options);
    const busy = store.group(1, CONF);
    const slow = store.group(2, CONF);
    slow.append(entries(1, 3, 1, 100)); // in segment 1, not compacted: segment 1 must stay
    store.putMeta('node', bytes(9, 10));
    await store.commitTurn();
    for (let i = 1; i <= 100; i++) {
      busy.append(entries(i, i, 1, 200));
      busy.setHardState({ term: 1, vote: 'a', commit: i });
      await store.commitTurn();
    }
    const rotated = segmentFiles(dir);
    assert.ok(rotated.length >= 5, `100 turns of 200 bytes fill several segments of 4 KiB (${rotated.length})`);
    busy.createSnapshot(95, CONF, bytes(95, 50));
    busy.compact(95);
    await store.commitTurn();
    const kept = segmentFiles(dir);
    assert.equal(kept[0], segmentFileName(1), 'the slow group still needs segment 1, so nothing is deleted');
    assert.equal(kept.length, rotated.length);
    slow.createSnapshot(3, CONF, bytes(3, 10));
    slow.compact(3);
    await store.commitTurn();
    const left = segmentFiles(dir);
    assert.ok(left.length <= 2, `segments whose entries are all compacted are deleted (${left.join(', ')})`);
    assert.ok(!left.includes(segmentFileName(1)));
    assert.deepEqual(store.segmentNumbers().map(segmentFileName), left);
    await store.close();

    store = WalStore.open(dir, options);
    const b = store.group(1, CONF);
    assert.equal(b.firstIndex(), 96);
    assert.equal(b.lastIndex(), 100);
    assert.equal(b.term(95), 1);
    assert.deepEqual(
      b.entries(96, 101, Infinity),
      [96, 97, 98, 99, 100].map((i) => entries(i, i, 1, 200)[0]),
    );
    assert.deepEqual(b.initialState().hardState, { term: 1, vote: 'a', commit: 100 });
    assert.deepEqual(b.snapshot().data, bytes(95, 50));
    assert.equal(store.group(2, CONF).firstIndex(), 4);
    assert.deepEqual(store.getMeta('node'), bytes(9, 10), 'metadata written before the deleted segments survives (checkpoints)');
    // The store goes on appending and rotating after a reopen.
    for (let i = 101; i <= 130; i++) {
      b.append(entries(i, i, 2, 200));
      await store.commitTurn();
    }
    await store.close();
    store = WalStore.open(dir, options);
    assert.equal(store.group(1, CONF).lastIndex(), 130);
    assert.equal(store.group(1, CONF).term(130), 2);
    await store.close();
  });

  it('a turn bigger than a segment gets a segment of its own', async () => {
    const dir = tempDir();
    const options: WalStoreOptions = { fsync: 'always', segmentBytes: SMALL_SEGMENT_BYTES };
    let store = WalStore.open(dir, options);
    const g = store.group(1, CONF);
    g.append(entries(1, 1, 1, 100));
    await store.commitTurn();
    g.append(entries(2, 40, 1, 1000)); // 40 KB
    await store.commitTurn();
    g.append(entries(41, 41, 1, 100));
    await store.commitTurn();
    assert.equal(segmentFiles(dir).length, 3);
    await store.close();
    store = WalStore.open(dir, options);
    assert.deepEqual(store.group(1, CONF).entries(1, 42, Infinity), [...entries(1, 1, 1, 100), ...entries(2, 40, 1, 1000), ...entries(41, 41, 1, 100)]);
    await store.close();
  });

  it('writes snapshot data to files of their own and removes older ones', async () => {
    const dir = tempDir();
    let store = WalStore.open(dir, { fsync: 'always', segmentBytes: TEST_SEGMENT_BYTES });
    const g = store.group(5, CONF);
    g.append(entries(1, 20, 1));
    const conf2: ConfState = { voters: ['a', 'b'], learners: ['z'] };
    const big = bytes(7, 3 * 1024 * 1024 + 17);
    g.createSnapshot(10, conf2, big);
    await store.commitTurn();
    assert.deepEqual(snapFiles(dir).length, 1);
    assert.match(snapFiles(dir)[0] as string, /^snap-5-10-\d+\.snap$/);
    const segBytes = readFileSync(join(walDir(dir), segmentFileName(1)));
    assert.equal(segBytes.indexOf(Buffer.from(big.subarray(0, 64))), -1, 'snapshot data is not in the log');
    g.createSnapshot(15, CONF, bytes(8, 100));
    g.compact(15);
    await store.commitTurn();
    assert.match(snapFiles(dir).join(), /^snap-5-15-\d+\.snap$/, 'the older snapshot file is removed');
    g.applySnapshot({ meta: { index: 30, term: 3, conf: conf2 }, data: bytes(1, 10) });
    store.group(6, CONF).applySnapshot({ meta: { index: 3, term: 1, conf: CONF }, data: big });
    await store.commitTurn();
    assert.equal(snapFiles(dir).length, 2);
    await store.close();

    writeFileSync(join(walDir(dir), 'snap-9-9-9.snap'), 'left by a turn that never committed');
    store = WalStore.open(dir, { fsync: 'always', segmentBytes: TEST_SEGMENT_BYTES });
    assert.equal(snapFiles(dir).length, 2, 'unreferenced snapshot files are removed on open');
    const h = store.group(5, CONF);
    assert.deepEqual(h.snapshot().meta, { index: 30, term: 3, conf: conf2 });
    assert.deepEqual(h.snapshot().data, bytes(1, 10));
    assert.equal(h.firstIndex(), 31);
    assert.equal(h.lastIndex(), 30);
    assert.ok(Buffer.from(store.group(6, CONF).snapshot().data).equals(Buffer.from(big)));
    assert.deepEqual(store.group(6, CONF).initialState().snapshotConf, CONF);
    await store.close();
  });

  for (const commitOffThread of [false, true]) {
    it(`overlapping turns settle in order and all survive (commit ${commitOffThread ? "on libuv's pool" : 'on the calling thread'})`, async () => {
      const dir = tempDir();
      const options: WalStoreOptions = { fsync: 'always', commitOffThread, segmentBytes: SMALL_SEGMENT_BYTES };
      let store = WalStore.open(dir, options);
      const g = store.group(1, CONF);
      const order: number[] = [];
      const turns: Promise<void>[] = [];
      for (let t = 1; t <= 20; t++) {
        g.append(entries(t, t, 1, 1000));
        g.setHardState({ term: 1, vote: 'a', commit: t });
        if (t === 10) g.createSnapshot(8, CONF, bytes(8, 3000));
        turns.push(store.commitTurn().then(() => void order.push(t)));
      }
      turns.push(store.commitTurn().then(() => void order.push(21))); // an empty turn
      await Promise.all(turns);
      assert.deepEqual(
        order,
        Array.from({ length: 21 }, (_, i) => i + 1),
      );
      await store.close();
      store = WalStore.open(dir, options);
      assert.deepEqual(store.group(1, CONF).entries(1, 21, Infinity), entries(1, 20, 1, 1000));
      assert.equal(store.group(1, CONF).initialState().hardState.commit, 20);
      assert.deepEqual(store.group(1, CONF).snapshot().data, bytes(8, 3000));
      await store.close();
    });
  }
});

// --------------------------------------------------------------------------
// Torn tails and damage
// --------------------------------------------------------------------------

describe('WalStore after a torn write', () => {
  /** A store with 5 turns of one entry each in one segment; returns the dir, the segment and the offset of the last frame. */
  async function fiveTurns(): Promise<{ dir: string; file: string; last: number; end: number }> {
    const dir = tempDir();
    const store = WalStore.open(dir, { fsync: 'always', segmentBytes: TEST_SEGMENT_BYTES });
    const g = store.group(1, CONF);
    for (let t = 1; t <= 5; t++) {
      g.append(entries(t, t, 1, 300));
      g.setHardState({ term: 1, vote: 'a', commit: t });
      store.putMeta('turn', bytes(t, 3));
      await store.commitTurn();
    }
    await store.close();
    const file = join(walDir(dir), segmentFileName(1));
    const { offsets, end } = frameOffsets(file);
    assert.equal(offsets.length, 5);
    return { dir, file, last: offsets[4] as number, end };
  }

  async function reopensWithFourTurns(dir: string, damage: string): Promise<void> {
    let store: WalStore | null = null;
    const said = await captureStderr(() => {
      store = WalStore.open(dir, { fsync: 'always', segmentBytes: TEST_SEGMENT_BYTES });
    });
    assert.match(said, /cut a torn tail at byte \d+/, `${damage}: one line on stderr`);
    assert.equal(said.trim().split('\n').length, 1);
    const s = store as unknown as WalStore;
    const g = s.group(1, CONF);
    assert.equal(g.lastIndex(), 4, `${damage}: the committed prefix`);
    assert.deepEqual(
      g.entries(1, 5, Infinity),
      [1, 2, 3, 4].map((i) => entries(i, i, 1, 300)[0]),
    );
    assert.equal(g.initialState().hardState.commit, 4);
    assert.deepEqual(s.getMeta('turn'), bytes(4, 3));
    // Appending goes on from the cut.
    g.append(entries(5, 6, 2, 10));
    await s.commitTurn();
    await s.close();
    const again = WalStore.open(dir, { fsync: 'always', segmentBytes: TEST_SEGMENT_BYTES });
    assert.equal(again.group(1, CONF).lastIndex(), 6);
    assert.equal(again.group(1, CONF).term(6), 2);
    await again.close();
  }

  it('a last frame cut short (the file ends mid-frame)', async () => {
    const { dir, file, last } = await fiveTurns();
    truncateSync(file, last + 100);
    await reopensWithFourTurns(dir, 'truncated');
  });

  it('a last frame whose end is zeros', async () => {
    const { dir, file, last, end } = await fiveTurns();
    const buf = readFileSync(file);
    buf.fill(0, last + 40, end);
    writeFileSync(file, buf);
    await reopensWithFourTurns(dir, 'zeros');
  });

  it('a last frame cut short, then zeros appended', async () => {
    const { dir, file, last } = await fiveTurns();
    truncateSync(file, last + 100);
    appendFileSync(file, Buffer.alloc(10_000));
    await reopensWithFourTurns(dir, 'truncated, zeros');
  });

  it('a last frame followed by random garbage', async () => {
    const { dir, file, last } = await fiveTurns();
    truncateSync(file, last + 100);
    const random = prng(7);
    appendFileSync(file, Buffer.from(Array.from({ length: 20_000 }, () => Math.floor(random() * 256))));
    await reopensWithFourTurns(dir, 'garbage');
  });

  it('a flipped bit in a frame followed by valid frames is refused, naming the file and the offset', async () => {
    const { dir, file } = await fiveTurns();
    const { offsets } = frameOffsets(file);
    const at = offsets[2] as number;
    const buf = readFileSync(file);
    buf[at + 60] = (buf[at + 60] as number) ^ 0x10;
    writeFileSync(file, buf);
    assert.throws(
      () => WalStore.open(dir, { fsync: 'always', segmentBytes: TEST_SEGMENT_BYTES }),
      (e: unknown) =>
        e instanceof DataDirectoryError &&
        e.message.includes(file) &&
        e.message.includes(`at byte ${at}`) &&
        /checksum mismatch, with valid frames after it/.test(e.message),
    );
    assert.ok(!existsSync(join(walDir(dir), WAL_LOCK_FILE)), 'no lock left behind');
  });

  it('a frame zeroed out with valid frames after it is refused (a hole, not a torn tail)', async () => {
    const { dir, file } = await fiveTurns();
    const { offsets } = frameOffsets(file);
    const at = offsets[1] as number;
    const buf = readFileSync(file);
    buf.fill(0, at, offsets[2] as number);
    writeFileSync(file, buf);
    assert.throws(
      () => WalStore.open(dir, { fsync: 'always', segmentBytes: TEST_SEGMENT_BYTES }),
      (e: unknown) => e instanceof DataDirectoryError && e.message.includes(`${file}: at byte ${at}: a hole, with valid frames after it`),
    );
  });

  it('a damaged frame in a segment that is not the last is refused', async () => {
    const dir = tempDir();
    const options: WalStoreOptions = { fsync: 'always', segmentBytes: SMALL_SEGMENT_BYTES };
    const store = WalStore.open(dir, options);
    const g = store.group(1, CONF);
    for (let i = 1; i <= 30; i++) {
      g.append(entries(i, i, 1, 300));
      await store.commitTurn();
    }
    await store.close();
    assert.ok(segmentFiles(dir).length >= 3);
    const file = join(walDir(dir), segmentFileName(2));
    const { offsets } = frameOffsets(file);
    const at = offsets[offsets.length - 1] as number;
    truncateSync(file, at + 50); // the last frame of a middle segment, cut short
    assert.throws(
      () => WalStore.open(dir, options),
      (e: unknown) => e instanceof DataDirectoryError && e.message.includes(file) && e.message.includes(`at byte ${at}`),
    );
  });
});

describe('WalStore refuses what is not a consistent log', () => {
  const refused = (dir: string, pattern: RegExp, options: WalStoreOptions = { fsync: 'always', segmentBytes: TEST_SEGMENT_BYTES }): void => {
    assert.throws(
      () => WalStore.open(dir, options),
      (e: unknown) => e instanceof DataDirectoryError && pattern.test(e.message),
    );
    assert.ok(!existsSync(join(walDir(dir), WAL_LOCK_FILE)), 'no lock left behind');
  };

  /** A closed store: group 2 with entries 1..5; returns the segment file and where the next frame would go. */
  async function validStore(): Promise<{ dir: string; file: string; end: number; next: number }> {
    const dir = tempDir();
    const store = WalStore.open(dir, { fsync: 'always', segmentBytes: TEST_SEGMENT_BYTES });
    store.group(2, CONF).append(entries(1, 5, 1));
    await store.commitTurn();
    await store.close();
    const file = join(walDir(dir), segmentFileName(1));
    const { offsets, end } = frameOffsets(file);
    return { dir, file, end, next: frameNumberAt(file, offsets[offsets.length - 1] as number) + 1 };
  }

  /** An ENTRIES record of group 2: `count` entries of `term` from `from`. */
  function entriesRecord(from: number, term: number, count: number): Buffer {
    const b = Buffer.alloc(1 + 4 + 8 + 8 + 4 + count * 6);
    b[0] = 0x04;
    b.writeUInt32LE(2, 1);
    b.writeUInt32LE(from, 5);
    b.writeUInt32LE(term, 13);
    b.writeUInt32LE(count, 21);
    for (let i = 0; i < count; i++) {
      b[25 + i * 6] = 0;
      b.writeUInt32LE(1, 26 + i * 6);
    }
    return b;
  }

  it('a segment that is not an ordo log', () => {
    const dir = tempDir();
    mkdirSync(walDir(dir));
    writeFileSync(join(walDir(dir), segmentFileName(1)), bytes(3, 5000));
    refused(dir, /0000000000000001\.wal: at byte 0: not an ordo log segment/);
  });

  it('a record of an unknown kind', async () => {
    const { dir, file, end, next } = await validStore();
    plantFrame(file, end, next, Buffer.from([0x42, 1, 2, 3]));
    refused(dir, new RegExp(`${segmentFileName(1)}: frame ${next} at byte ${end}: record 1 \\(kind 66\\): unknown record kind`));
  });

  it('a gap in a log', async () => {
    const { dir, file, end, next } = await validStore();
    plantFrame(file, end, next, entriesRecord(8, 1, 1));
    refused(dir, new RegExp(`frame ${next} at byte ${end}: record 1 \\(entries\\): entry 6 was expected, not 8`));
  });

  it('terms going down along a log', async () => {
    const { dir, file, end, next } = await validStore();
    plantFrame(file, end, next, entriesRecord(6, 0, 1));
    refused(dir, /record 1 \(entries\): term 0 below the preceding term 1/);
  });

  it('a frame out of sequence', async () => {
    const { dir, file, end, next } = await validStore();
    plantFrame(file, end, next + 1, entriesRecord(6, 1, 1));
    plantFrame(file, end + 200, next + 2, entriesRecord(7, 1, 1));
    refused(dir, new RegExp(`at byte ${end}: frame number ${next + 1}, ${next} was expected, with valid frames after it`));
  });

  it('a missing segment', async () => {
    const dir = tempDir();
    const options: WalStoreOptions = { fsync: 'always', segmentBytes: SMALL_SEGMENT_BYTES };
    const store = WalStore.open(dir, options);
    store.group(1, CONF); // never compacted: nothing is deleted
    for (let i = 1; i <= 30; i++) {
      store.group(1, CONF).append(entries(i, i, 1, 300));
      await store.commitTurn();
    }
    await store.close();
    unlinkSync(join(walDir(dir), segmentFileName(2)));
    refused(dir, new RegExp(`segment ${segmentFileName(2)} is missing`), options);
  });

  it('a snapshot file missing or damaged', async () => {
    const dir = tempDir();
    const store = WalStore.open(dir, { fsync: 'always', segmentBytes: TEST_SEGMENT_BYTES });
    store.group(3, CONF).append(entries(1, 5, 1));
    store.group(3, CONF).createSnapshot(4, CONF, bytes(4, 1000));
    await store.commitTurn();
    await store.close();
    const name = snapFiles(dir)[0] as string;
    const path = join(walDir(dir), name);
    const good = readFileSync(path);
    const bad = Buffer.from(good);
    bad[500] = (bad[500] as number) ^ 1;
    writeFileSync(path, bad);
    refused(dir, new RegExp(`${name} \\(snapshot of group 3 referenced by .*record \\d+\\): checksum mismatch`));
    unlinkSync(path);
    refused(dir, new RegExp(`${name} \\(snapshot of group 3 .*\\): file missing`));
    writeFileSync(path, good);
    const back = WalStore.open(dir, { fsync: 'always', segmentBytes: TEST_SEGMENT_BYTES });
    assert.deepEqual(back.group(3, CONF).snapshot().data, bytes(4, 1000));
    await back.close();
  });

  it('snapshot files without any segment (the log was lost)', async () => {
    const dir = tempDir();
    const store = WalStore.open(dir, { fsync: 'always', segmentBytes: TEST_SEGMENT_BYTES });
    store.group(3, CONF).append(entries(1, 5, 1));
    store.group(3, CONF).createSnapshot(4, CONF, bytes(4, 100));
    await store.commitTurn();
    await store.close();
    for (const f of segmentFiles(dir)) unlinkSync(join(walDir(dir), f));
    refused(dir, /holds snapshot files but no log segment/);
  });

  it('a second open while the store is open', async () => {
    const dir = tempDir();
    const store = WalStore.open(dir, { fsync: 'always', segmentBytes: TEST_SEGMENT_BYTES });
    assert.throws(() => WalStore.open(dir, { fsync: 'always', segmentBytes: TEST_SEGMENT_BYTES }), DataDirectoryError);
    await store.close();
  });
});

// --------------------------------------------------------------------------
// Crash: SIGKILL right after a turn was acknowledged
// --------------------------------------------------------------------------

for (const commitOffThread of [false, true]) {
  const where = commitOffThread ? "on libuv's pool" : 'on the calling thread';

  describe(`WalStore crash (commit ${where})`, () => {
    it('holds everything a turn wrote once commitTurn resolved, even after SIGKILL, with segments rotating and deleted', async () => {
      const dir = tempDir();
      const moduleUrl = new URL('../src/storage/wal-store.js', import.meta.url).href;
      const killAfterTurn = 60;
      const options = { fsync: 'always' as const, commitOffThread, segmentBytes: 8192 };
      // Each turn appends one entry to each of 8 groups, records the turn, and
      // every 7th turn snapshots and compacts every group (so old segments are
      // deleted); the process keeps going until it is killed.
      const script = `
        import { WalStore } from ${JSON.stringify(moduleUrl)};
        const store = WalStore.open(${JSON.stringify(dir)}, ${JSON.stringify(options)});
        const conf = { voters: ['n1'], learners: [] };
        const groups = [0, 1, 2, 3, 4, 5, 6, 7].map((g) => store.group(g, conf));
        const data = (g, t) => { const d = new Uint8Array(100 + (t % 50)); for (let i = 0; i < d.length; i++) d[i] = (g * 13 + t * 7 + i) & 255; return d; };
        for (let turn = 1; ; turn++) {
          groups.forEach((g, k) => {
            g.append([{ index: turn, term: 1, type: 0, data: data(k, turn) }]);
            g.setHardState({ term: 1, vote: 'n1', commit: turn - 1 });
            if (turn % 7 === 0) { g.createSnapshot(turn - 1, conf, data(99 + k, turn)); g.compact(turn - 3); }
          });
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
      assert.ok(!segmentFiles(dir).includes(segmentFileName(1)), 'compacted segments were deleted while running');

      const store = WalStore.open(dir, { fsync: 'always', segmentBytes: 8192 });
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
        const snapAt = Math.floor(turn / 7) * 7 - 1;
        for (let k = 0; k < 8; k++) {
          const g = store.group(k, CONF);
          assert.equal(g.lastIndex(), turn, `group ${k} holds exactly the turns up to ${turn}`);
          assert.deepEqual(g.initialState().hardState, { term: 1, vote: 'n1', commit: turn - 1 });
          assert.equal(g.firstIndex(), snapAt - 1);
          for (let i = g.firstIndex(); i <= turn; i++) assert.deepEqual(g.entry(i)?.data, data(k, i), `group ${k} entry ${i}`);
          assert.equal(g.snapshot().meta.index, snapAt);
          assert.deepEqual(g.snapshot().data, data(99 + k, snapAt + 1));
        }
        assert.equal(snapFiles(dir).length, 8, 'one snapshot file per group');
      } finally {
        await store.close();
      }
    });
  });
}

for (const commitOffThread of [false, true]) {
  describe(`WalStore crash during a big turn (commit ${commitOffThread ? "on libuv's pool" : 'on the calling thread'})`, () => {
    it('keeps a turn of 20000 entries all or nothing, wherever SIGKILL hits it', async (t) => {
      const moduleUrl = new URL('../src/storage/wal-store.js', import.meta.url).href;
      const outcomes: string[] = [];
      for (const delayMs of [0, 60, 400]) {
        const dir = tempDir();
        const options = { fsync: 'always' as const, commitOffThread, segmentBytes: 1024 * 1024 };
        const script = `
          import { WalStore } from ${JSON.stringify(moduleUrl)};
          const store = WalStore.open(${JSON.stringify(dir)}, ${JSON.stringify(options)});
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
        assert.equal(await exited, 'SIGKILL', `kill after ${delayMs} ms: the child exited by itself`);
        let store: WalStore | null = null;
        await captureStderr(() => {
          store = WalStore.open(dir, { fsync: 'always', segmentBytes: 1024 * 1024 });
        });
        const s = store as unknown as WalStore;
        try {
          const lasts = new Set(s.groups().map((g) => s.group(g, CONF).lastIndex()));
          assert.equal(s.groups().length, 16);
          assert.equal(lasts.size, 1, `kill after ${delayMs} ms: groups disagree (${[...lasts].join(', ')})`);
          const whole = lasts.has(1251);
          assert.ok(whole || lasts.has(1), `kill after ${delayMs} ms: last index ${[...lasts].join(', ')}`);
          assert.equal(s.getMeta('big') !== undefined, whole, 'the metadata of the turn goes with it');
          if (acked) assert.ok(whole, 'an acknowledged turn survives');
          outcomes.push(`${delayMs} ms: ${whole ? (acked ? 'acknowledged, kept' : 'kept') : 'lost'}`);
        } finally {
          await s.close();
        }
      }
      t.diagnostic(`big turn killed after ${outcomes.join('; ')}`);
    });
  });
}

// --------------------------------------------------------------------------
// Failures are reported as not applied or unknown
// --------------------------------------------------------------------------

/** The store's file layer, to make its writes or its fdatasyncs fail. */
function ioOf(store: WalStore): { io: SegmentIo } {
  return (store as unknown as { log: { io: SegmentIo } }).log;
}

for (const commitOffThread of [false, true]) {
  describe(`WalStore write failures (commit ${commitOffThread ? "on libuv's pool" : 'on the calling thread'})`, () => {
    it('a failed write is "not applied", nothing of the turn is found on reopening, and every later turn fails', async () => {
      const dir = tempDir();
      let store = WalStore.open(dir, { fsync: 'always', commitOffThread, segmentBytes: TEST_SEGMENT_BYTES });
      store.group(2, CONF).append(entries(1, 3, 1));
      await store.commitTurn();
      const log = ioOf(store);
      const real = log.io;
      // Half of the frame reaches the file, then the write fails (a full disk, EIO).
      const enospc = (): Error => Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
      log.io = {
        ...real,
        writeSync: (fd, buf, offset, length, position) => {
          real.writeSync(fd, buf, offset, Math.floor(length / 2), position);
          throw enospc();
        },
        write: async (fd, buf, offset, length, position) => {
          await real.write(fd, buf, offset, Math.floor(length / 2), position);
          throw enospc();
        },
      };
      store.group(1, CONF).append(entries(1, 2, 1));
      store.group(2, CONF).append(entries(4, 6, 1));
      store.putMeta('m', bytes(1, 5));
      const first = store.commitTurn();
      store.group(1, CONF).append(entries(3, 3, 1));
      const second = store.commitTurn();
      await assert.rejects(first, (e: unknown) => e instanceof PersistError && e.applied === 'no' && /not applied: ENOSPC/.test(e.message));
      await assert.rejects(second, (e: unknown) => e instanceof PersistError && e.applied === 'no' && /earlier turn failed/.test(e.message));
      log.io = real;
      await assert.rejects(store.commitTurn(), (e: unknown) => e instanceof PersistError && e.applied === 'no');
      await store.close();
      const said = await captureStderr(() => {
        store = WalStore.open(dir, { fsync: 'always', segmentBytes: TEST_SEGMENT_BYTES });
      });
      assert.match(said, /cut a torn tail/, 'the half-written frame is cut');
      assert.deepEqual(store.groups(), [2], 'the failed turn left nothing behind');
      assert.equal(store.group(2, CONF).lastIndex(), 3);
      assert.equal(store.getMeta('m'), undefined);
      await store.close();
    });

    it('a failed fdatasync is "outcome unknown", and every later turn fails', async () => {
      const store = WalStore.open(tempDir(), { fsync: 'always', commitOffThread, segmentBytes: TEST_SEGMENT_BYTES });
      const log = ioOf(store);
      const real = log.io;
      let wrote = false;
      log.io = {
        ...real,
        writeSync: (...args) => {
          wrote = true;
          return real.writeSync(...args);
        },
        write: (...args) => {
          wrote = true;
          return real.write(...args);
        },
        fdatasyncSync: () => {
          throw new Error('EIO: i/o error');
        },
        fdatasync: () => Promise.reject(new Error('EIO: i/o error')),
      };
      store.group(1, CONF).append(entries(1, 2, 1));
      const first = store.commitTurn();
      store.group(1, CONF).append(entries(3, 3, 1));
      const second = store.commitTurn();
      await assert.rejects(first, (e: unknown) => e instanceof PersistError && e.applied === 'unknown' && /outcome unknown/.test(e.message));
      await assert.rejects(second, (e: unknown) => e instanceof PersistError && e.applied === 'no' && /earlier turn failed/.test(e.message));
      assert.ok(wrote, 'the frame was written before its fdatasync failed');
      log.io = real;
      await assert.rejects(store.commitTurn(), (e: unknown) => e instanceof PersistError && e.applied === 'no');
      await store.close();
    });
  });
}

describe('WalStore closing', () => {
  it('a closed store refuses turns', async () => {
    const store = WalStore.open(tempDir(), { fsync: 'always', segmentBytes: TEST_SEGMENT_BYTES });
    await store.close();
    await assert.rejects(store.commitTurn(), (e: unknown) => e instanceof PersistError && e.applied === 'no');
  });
});

// --------------------------------------------------------------------------
// Cost of a turn (reported, never asserted), next to RaftLogStore's
// --------------------------------------------------------------------------

interface TurnStore {
  group(id: number, conf: ConfState): WritableStorage;
  commitTurn(): Promise<void>;
  close(): Promise<void>;
}

async function measureTurns(store: TurnStore, turns: number): Promise<number[]> {
  const groups = Array.from({ length: 16 }, (_, g) => store.group(g, CONF));
  const payload = bytes(1, 100);
  const total: number[] = [];
  let next = 1;
  for (let turn = 0; turn < turns + 20; turn++) {
    for (const g of groups) {
      const batch: Entry[] = [];
      for (let i = 0; i < 10; i++) batch.push({ index: next + i, term: 1, type: EntryType.Normal, data: payload });
      g.append(batch);
      g.setHardState({ term: 1, vote: 'a', commit: next + 9 });
    }
    next += 10;
    const t0 = performance.now();
    await store.commitTurn();
    if (turn >= 20) total.push(performance.now() - t0); // after a warm-up
  }
  return total;
}

describe('WalStore cost of a turn next to RaftLogStore (reported)', () => {
  for (const fsync of ['always', 'never'] as const) {
    it(`16 groups x 10 entries of 100 bytes per turn, fsync ${fsync}`, async (t) => {
      const turns = 200;
      const q = (xs: number[], f: number): string => ([...xs].sort((a, b) => a - b)[Math.floor(f * (xs.length - 1))] as number).toFixed(3);
      const mean = (xs: number[]): string => (xs.reduce((a, b) => a + b, 0) / xs.length).toFixed(3);
      const line = (name: string, xs: number[]): string => `${name}: mean ${mean(xs)} ms, p50 ${q(xs, 0.5)} ms, p99 ${q(xs, 0.99)} ms`;
      const lines: string[] = [];
      for (const commitOffThread of [false, true]) {
        const walDirPath = tempDir();
        const wal = WalStore.open(walDirPath, { fsync, commitOffThread });
        const walTimes = await measureTurns(wal, turns);
        await wal.close();
        const { end } = frameOffsets(join(walDir(walDirPath), segmentFileName(1)));
        const lmdb = RaftLogStore.open(tempDir(), { fsync, commitOffThread });
        const lmdbTimes = await measureTurns(lmdb, turns);
        await lmdb.close();
        const thread = commitOffThread ? 'off thread' : 'on thread';
        lines.push(
          `${line(`wal ${thread}`, walTimes)} (${Math.round((end - SEGMENT_HEADER_BYTES) / (turns + 20))} bytes per turn for 16 KB of entry data)`,
          line(`raft.mdb ${thread}`, lmdbTimes),
        );
      }
      // Small segments: a new segment (rename, directory fsync, checkpoint) every ~60 turns, old ones deleted.
      const rotating = WalStore.open(tempDir(), { fsync, segmentBytes: 1024 * 1024 });
      const rotatingTimes = await measureTurns(rotating, turns);
      lines.push(`${line('wal on thread, 1 MiB segments', rotatingTimes)} (${rotating.segmentNumbers().length} segments at the end)`);
      await rotating.close();
      t.diagnostic(`fsync ${fsync}, commitTurn of 160 entries (16 KB): ${lines.join('; ')}`);
    });
  }
});
