// The simulator's disk (sim/disk.ts) and the node's log on it:
// unsynced writes lost at a crash, torn pieces of the last one kept, synced
// data and synced directory changes kept, a full disk, operations completing
// on virtual time; then WalStore driven on the simulated disk and crashed at
// many seeded points: every acknowledged turn survives, the log reopens as of
// a whole turn, torn tails are cut and never refused, and a turn costs one
// write and one fdatasync.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Prng } from '../sim/prng.js';
import { EntryType, type ConfState, type Entry } from '../src/raft/types.js';
import { SimDisk, type SimDiskOp, type SimDiskScheduler, type TornWrite } from '../sim/disk.js';
import { PersistError } from '../src/storage/store.js';
import { WalStore } from '../src/storage/wal-store.js';

/** A virtual clock for the disk's asynchronous operations: events in time order, promise continuations run between them. */
class VirtualClock implements SimDiskScheduler {
  now = 0;
  private queue: { time: number; seq: number; fn: () => void }[] = [];
  private seq = 0;

  after(ms: number, fn: () => void): void {
    this.queue.push({ time: this.now + ms, seq: this.seq++, fn });
    this.queue.sort((a, b) => a.time - b.time || a.seq - b.seq);
  }

  /** Runs every event due up to `now + ms`. */
  async runFor(ms: number): Promise<void> {
    const end = this.now + ms;
    await settle();
    for (;;) {
      const e = this.queue[0];
      if (e === undefined || e.time > end) break;
      this.queue.shift();
      this.now = e.time;
      e.fn();
      await settle();
    }
    this.now = end;
  }

  /** Forgets the events of a crashed process (the disk would drop them anyway). */
  clear(): void {
    this.queue = [];
  }
}

async function settle(): Promise<void> {
  await new Promise<void>((resolve) => setImmediate(resolve));
}

function diskWith(random: () => number, delayMs?: (op: SimDiskOp) => number): { disk: SimDisk; clock: VirtualClock } {
  const clock = new VirtualClock();
  const disk = new SimDisk({ random, scheduler: clock, ...(delayMs === undefined ? {} : { delayMs }) });
  disk.mkdirSync('/d');
  disk.syncDirSync('/');
  return { disk, clock };
}

/** A PRNG stub: always `v` (0: keep no unsynced directory change, cut at the first byte). */
const always = (v: number) => (): number => v;

function writeAll(disk: SimDisk, path: string, data: string, position = 0): number {
  const fd = disk.openSync(path, disk.existsSync(path) ? 'r+' : 'w');
  const buf = Buffer.from(data);
  disk.writeSync(fd, buf, 0, buf.length, position);
  return fd;
}

describe('SimDisk', () => {
  it('keeps synced writes and loses unsynced ones at a crash', () => {
    const { disk } = diskWith(always(0));
    const fd = writeAll(disk, '/d/a', 'durable');
    disk.fdatasyncSync(fd);
    disk.syncDirSync('/d');
    disk.writeSync(fd, Buffer.from('LOST'), 0, 4, 2);
    disk.writeSync(fd, Buffer.from('more'), 0, 4, 7);
    assert.equal(disk.contents('/d/a').toString(), 'duLOSTemore', 'a write is visible to reads at once');
    const report = disk.crash('lost');
    assert.equal(report.filesRolledBack, 1);
    assert.equal(disk.contents('/d/a').toString(), 'durable');
    assert.throws(() => disk.writeSync(fd, Buffer.from('x'), 0, 1, 0), /EBADF/, 'descriptors do not survive a crash');
  });

  it('may keep a torn prefix, all, or garbage of the last unsynced write, never of earlier ones', () => {
    for (const kind of ['prefix', 'whole', 'garbage'] as TornWrite[]) {
      const rng = new Prng(7);
      const { disk } = diskWith(() => rng.float());
      const fd = writeAll(disk, '/d/log', 'header..');
      disk.fdatasyncSync(fd);
      disk.syncDirSync('/d');
      disk.writeSync(fd, Buffer.from('first-unsynced'), 0, 14, 8);
      disk.writeSync(fd, Buffer.from('LAST-WRITE'), 0, 10, 22);
      const report = disk.crash(kind);
      const after = disk.contents('/d/log');
      assert.equal(after.subarray(0, 8).toString(), 'header..', `${kind}: synced bytes kept`);
      assert.ok(
        after.subarray(8, 22).every((b) => b === 0),
        `${kind}: the earlier unsynced write is lost`,
      );
      const kept = after.subarray(22);
      assert.deepEqual(report.torn, [{ path: '/d/log', kind, offset: 22, keptBytes: kept.length }]);
      if (kind === 'prefix') {
        assert.ok(kept.length >= 1 && kept.length < 10 && 'LAST-WRITE'.startsWith(kept.toString()), `prefix: ${kept.toString()}`);
      } else if (kind === 'whole') {
        assert.equal(kept.toString(), 'LAST-WRITE');
      } else {
        assert.ok(kept.length >= 1 && kept.length <= 10);
      }
      disk.crash('lost');
      assert.equal(disk.contents('/d/log').length, 22 + kept.length, `${kind}: what a crash left is durable`);
    }
  });

  it('makes creates, renames and removals durable only with a directory sync', () => {
    const { disk } = diskWith(always(0));
    let fd = writeAll(disk, '/d/synced', 'x');
    disk.fsyncSync(fd);
    disk.closeSync(fd);
    disk.syncDirSync('/d');
    fd = writeAll(disk, '/d/tmp', 'payload');
    disk.fsyncSync(fd);
    disk.closeSync(fd);
    disk.renameSync('/d/tmp', '/d/final');
    disk.unlinkSync('/d/synced');
    assert.deepEqual(disk.readdirSync('/d'), ['final']);
    disk.crash();
    assert.deepEqual(disk.readdirSync('/d'), ['synced'], 'no directory change kept (the PRNG said none)');
    fd = writeAll(disk, '/d/tmp', 'payload');
    disk.fsyncSync(fd);
    disk.renameSync('/d/tmp', '/d/final');
    disk.syncDirSync('/d');
    disk.crash();
    assert.deepEqual(disk.readdirSync('/d'), ['final', 'synced']);
    assert.equal(disk.contents('/d/final').toString(), 'payload');
  });

  it('keeps a prefix, in order, of the directory changes not synced', () => {
    const { disk } = diskWith(always(0.99));
    for (const name of ['a', 'b', 'c']) disk.closeSync(writeAll(disk, `/d/${name}`, name));
    const report = disk.crash('lost');
    assert.equal(report.nameChangesKept, 3);
    assert.deepEqual(disk.readdirSync('/d'), ['a', 'b', 'c']);
    assert.equal(disk.contents('/d/a').length, 0, 'a name kept without its data ever synced: an empty file');
  });

  it('refuses growing writes with ENOSPC while full, but overwrites preallocated bytes', () => {
    const { disk } = diskWith(always(0));
    const fd = writeAll(disk, '/d/seg', '\0'.repeat(100));
    disk.full = true;
    assert.equal(disk.writeSync(fd, Buffer.from('frame'), 0, 5, 10), 5, 'inside the file: no new space needed');
    assert.throws(
      () => disk.writeSync(fd, Buffer.from('frame'), 0, 5, 100),
      (e: NodeJS.ErrnoException) => e.code === 'ENOSPC',
    );
    const created = disk.openSync('/d/new', 'w');
    assert.throws(() => disk.writeSync(created, Buffer.from('x'), 0, 1, 0), /ENOSPC/, 'a new file has no space either');
    disk.full = false;
    assert.equal(disk.writeSync(fd, Buffer.from('frame'), 0, 5, 100), 5);
    const small = new SimDisk({ random: always(0), scheduler: new VirtualClock(), capacityBytes: 8 });
    const f2 = small.openSync('/f', 'w');
    assert.equal(small.writeSync(f2, Buffer.from('0123456789'), 0, 10, 0), 8, 'a short write up to the capacity');
    assert.throws(() => small.writeSync(f2, Buffer.from('89'), 0, 2, 8), /ENOSPC/);
  });

  it('completes asynchronous operations on the injected clock, and never after a crash', async () => {
    const { disk, clock } = diskWith(always(0), (op) => (op === 'sync' ? 5 : 1));
    const fd = await (async () => {
      const p = disk.open('/d/f', 'w');
      await clock.runFor(1);
      return p;
    })();
    let wrote = false;
    void disk.write(fd, Buffer.from('abc'), 0, 3, 0).then(() => (wrote = true));
    await clock.runFor(0.5);
    assert.equal(wrote, false, 'not before its delay');
    await clock.runFor(0.5);
    assert.equal(wrote, true);
    let synced = false;
    void disk.fdatasync(fd).then(() => (synced = true));
    await clock.runFor(4);
    assert.equal(synced, false, 'a slow fdatasync is still in flight');
    disk.crash('lost');
    await clock.runFor(10);
    assert.equal(synced, false, 'the operation of a crashed process never completes');
    assert.deepEqual(disk.readdirSync('/d'), [], 'the file was never synced into its directory');
  });
});

// ---------------------------------------------------------------------------
// The node's log on the simulated disk
// ---------------------------------------------------------------------------

const CONF: ConfState = { voters: ['a', 'b', 'c'], learners: [] };
const GROUPS = [1, 2, 5];
const META_KEYS = ['node-id', 'peers'];

function data(seed: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (seed * 131 + i * 7) & 0xff;
  return out;
}

function makeEntries(from: number, to: number, term: number, size: number): Entry[] {
  const out: Entry[] = [];
  for (let i = from; i <= to; i++) out.push({ index: i, term, type: EntryType.Normal, data: data(i * 3 + term, size) });
  return out;
}

/** Everything a reopened log answers, as one string. */
function signature(store: WalStore): string {
  const parts: string[] = [];
  for (const id of store.groups()) {
    const g = store.group(id, CONF);
    const first = g.firstIndex();
    const last = g.lastIndex();
    const snap = g.snapshot();
    const ents = last >= first ? g.entries(first, last + 1, Number.MAX_SAFE_INTEGER) : [];
    parts.push(
      JSON.stringify({
        id,
        state: g.initialState(),
        first,
        last,
        logStartTerm: g.term(first - 1),
        snap: snap.meta,
        snapData: Buffer.from(snap.data).toString('hex'),
        ents: ents.map((e) => `${e.index}/${e.term}/${e.type}/${Buffer.from(e.data).toString('hex')}`),
      }),
    );
  }
  for (const key of store.metaKeys()) parts.push(`${key}=${Buffer.from(store.getMeta(key) ?? new Uint8Array()).toString('hex')}`);
  return parts.join('\n');
}

/** A few random writes, as a node makes them in a turn (terms never go down, nothing at or below a snapshot is replaced). */
function mutate(store: WalStore, rng: Prng): void {
  for (let i = 0, n = rng.int(1, 4); i < n; i++) {
    const g = store.group(rng.pick(GROUPS), CONF);
    const last = g.lastIndex();
    const snapIndex = g.snapshot().meta.index;
    const lastTerm = g.term(last) ?? 0;
    const r = rng.float();
    if (r < 0.5) {
      let from = last + 1;
      let term = Math.max(lastTerm, 1);
      if (rng.chance(0.2) && last > snapIndex) {
        from = rng.int(snapIndex + 1, last); // a new leader's entries replace a suffix
        term = lastTerm + 1;
      }
      g.append(makeEntries(from, from + rng.int(0, 4), term, rng.int(0, 80)));
    } else if (r < 0.7) {
      const hs = g.initialState().hardState;
      g.setHardState({
        term: Math.max(hs.term, lastTerm) + rng.int(0, 1),
        vote: rng.chance(0.5) ? rng.pick(CONF.voters) : null,
        commit: rng.int(hs.commit, last),
      });
    } else if (r < 0.85) {
      if (last <= snapIndex) continue;
      const index = rng.int(snapIndex + 1, last);
      g.createSnapshot(index, CONF, data(index, rng.pick([0, 10, 300])));
      if (rng.chance(0.8)) g.compact(Math.max(snapIndex, index - rng.int(0, 3)));
    } else if (r < 0.9) {
      const index = last + rng.int(1, 5); // a snapshot from the leader, past the log
      g.applySnapshot({ meta: { index, term: lastTerm + 1, conf: CONF }, data: data(index, rng.int(0, 200)) });
    } else {
      const key = rng.pick(META_KEYS);
      if (rng.chance(0.3)) store.deleteMeta(key);
      else store.putMeta(key, data(rng.int(0, 1000), rng.int(0, 40)));
    }
  }
}

interface CrashRunResult {
  readonly crashes: number;
  readonly turnsAcked: number;
  readonly tornTailsCut: number;
  readonly tornWrites: number;
  readonly refusals: string[];
}

/**
 * One seed: turns written on a simulated disk (off thread or on it, small
 * segments that rotate and are deleted, snapshot files), crashed at random
 * points (mid-write and mid-fdatasync among them) and reopened each time. The
 * reopened log must hold exactly the state after some turn issued at or after
 * the last acknowledged one.
 */
async function crashRun(seed: number, rounds: number): Promise<CrashRunResult> {
  const rng = new Prng(seed);
  const diskRng = rng.fork();
  const { disk, clock } = diskWith(
    () => diskRng.float(),
    (op) => (op === 'sync' ? rng.float() * 2 : op === 'write' ? rng.float() * 0.5 : 0),
  );
  const segmentBytes = rng.pick([1024, 2048, 8192]);
  let tornTailsCut = 0;
  let tornWrites = 0;
  let turnsAcked = 0;
  const refusals: string[] = [];
  const open = (): WalStore =>
    WalStore.open('/d', {
      fsync: 'always',
      commitOffThread: rng.chance(0.7),
      segmentBytes,
      fs: disk,
      log: (line) => {
        if (/cut a torn tail/.test(line)) tornTailsCut++;
      },
    });
  let store = open();
  /** The state after each turn issued since the last reopening; [0] is the state reopened. */
  let states = [signature(store)];
  let acked = 0;
  const failures: Error[] = [];
  for (let round = 0; round < rounds; round++) {
    const crashAtMs = clock.now + rng.float() * 40;
    while (clock.now < crashAtMs) {
      mutate(store, rng);
      const turn = states.length;
      const current = states;
      store.commitTurn().then(
        () => {
          if (current === states) acked = Math.max(acked, turn);
          turnsAcked++;
        },
        (e: unknown) => failures.push(e instanceof Error ? e : new Error('a turn was rejected with a non-error')),
      );
      states.push(signature(store));
      await clock.runFor(rng.float() * 3);
      const [failed] = failures;
      if (failed !== undefined) throw failed;
    }
    const report = disk.crash();
    if (report.torn.some((t) => t.kind !== 'lost')) tornWrites++;
    clock.clear();
    try {
      store = open();
    } catch (e) {
      refusals.push(`seed ${seed} round ${round}: ${(e as Error).message}`);
      break;
    }
    const recovered = signature(store);
    const k = states.indexOf(recovered, acked);
    assert.ok(k >= acked, `seed ${seed} round ${round}: the reopened log is not the state after turn ${acked} (acknowledged) or a later one`);
    states = [recovered];
    acked = 0;
  }
  return { crashes: rounds, turnsAcked, tornTailsCut, tornWrites, refusals };
}

describe('WalStore on the simulated disk', () => {
  it('survives crashes at seeded points: acknowledged turns kept, whole turns only, torn tails cut and never refused', async (t) => {
    const totals = { crashes: 0, turnsAcked: 0, tornTailsCut: 0, tornWrites: 0 };
    const refusals: string[] = [];
    for (let seed = 1; seed <= 60; seed++) {
      const r = await crashRun(seed, 8);
      totals.crashes += r.crashes;
      totals.turnsAcked += r.turnsAcked;
      totals.tornTailsCut += r.tornTailsCut;
      totals.tornWrites += r.tornWrites;
      refusals.push(...r.refusals);
    }
    assert.deepEqual(refusals, []);
    t.diagnostic(JSON.stringify(totals));
    assert.ok(totals.turnsAcked > 1000, `${totals.turnsAcked} turns acknowledged`);
    assert.ok(totals.tornWrites > 20, `${totals.tornWrites} crashes left a piece of an unsynced write`);
    assert.ok(totals.tornTailsCut > 10, `${totals.tornTailsCut} torn tails cut on reopening`);
  });

  it('a torn frame at the tail is cut; the log goes on after it', async () => {
    for (const kind of ['prefix', 'garbage'] as TornWrite[]) {
      const rng = new Prng(3);
      const { disk, clock } = diskWith(
        () => rng.float(),
        (op) => (op === 'sync' ? 10 : 0),
      );
      const lines: string[] = [];
      const options = { fsync: 'always', commitOffThread: true, segmentBytes: 4096, fs: disk, log: (l: string) => lines.push(l) } as const;
      let store = WalStore.open('/d', options);
      store.group(1, CONF).append(makeEntries(1, 3, 1, 20));
      const first = store.commitTurn();
      await clock.runFor(20);
      await first;
      store.group(1, CONF).append(makeEntries(4, 9, 1, 200));
      void store.commitTurn();
      await clock.runFor(1); // written, its fdatasync in flight
      disk.crash(kind);
      store = WalStore.open('/d', options);
      assert.ok(
        lines.some((l) => /cut a torn tail/.test(l)),
        `${kind}: ${lines.join(' | ')}`,
      );
      assert.equal(store.group(1, CONF).lastIndex(), 3, `${kind}: the acknowledged turn, not the torn one`);
      store.group(1, CONF).append(makeEntries(4, 5, 2, 20));
      const next = store.commitTurn();
      await clock.runFor(20);
      await next;
      disk.crash('lost');
      store = WalStore.open('/d', options);
      assert.equal(store.group(1, CONF).lastIndex(), 5, `${kind}: appended after the cut, and kept`);
      assert.equal(store.group(1, CONF).term(5), 2);
    }
  });

  it('a full disk: frames go into the preallocated segment, a new segment waits for room, a torn tail is cut without any', async () => {
    const rng = new Prng(11);
    const { disk, clock } = diskWith(
      () => rng.float(),
      (op) => (op === 'sync' ? 2 : 0),
    );
    const lines: string[] = [];
    const options = { fsync: 'always', commitOffThread: true, segmentBytes: 1024, fs: disk, log: (l: string) => lines.push(l) } as const;
    let store = WalStore.open('/d', options);
    const commit = async (): Promise<void> => {
      const settled = store.commitTurn().then(
        () => null,
        (e: unknown) => (e instanceof Error ? e : new Error('a turn was rejected with a non-error')),
      );
      await clock.runFor(5);
      const e = await settled;
      if (e !== null) throw e;
    };
    store.group(1, CONF).append(makeEntries(1, 1, 1, 10));
    await commit();
    disk.full = true;
    store.group(1, CONF).append(makeEntries(2, 2, 1, 10));
    await commit(); // fits in the active segment: no new space needed
    let index = 2;
    let refused: unknown = null;
    while (refused === null && index < 100) {
      index++;
      store.group(1, CONF).append(makeEntries(index, index, 1, 100));
      await commit().catch((e: unknown) => (refused = e));
    }
    assert.ok(refused instanceof PersistError && refused.retryable && refused.applied === 'no', `a turn needing a new segment: ${String(refused)}`);
    disk.full = false;
    await commit(); // the kept turn first
    assert.equal(store.group(1, CONF).lastIndex(), index);
    // A turn written but not synced when the power goes, on a disk full again: reopening needs no space to cut it.
    store.group(1, CONF).append(makeEntries(index + 1, index + 1, 1, 50));
    void store.commitTurn();
    await clock.runFor(1); // written; its fdatasync has not completed
    disk.full = true;
    disk.crash('prefix');
    store = WalStore.open('/d', options);
    assert.ok(
      lines.some((l) => /cut a torn tail/.test(l)),
      lines.join(' | '),
    );
    assert.equal(store.group(1, CONF).lastIndex(), index, 'every acknowledged turn, not the torn one');
  });

  it('a turn is one write and one fdatasync', async () => {
    for (const commitOffThread of [false, true]) {
      const { disk, clock } = diskWith(always(0));
      const store = WalStore.open('/d', { fsync: 'always', commitOffThread, segmentBytes: 1024 * 1024, fs: disk });
      for (const g of GROUPS) store.group(g, CONF);
      let p = store.commitTurn();
      await clock.runFor(1);
      await p;
      const before = { ...disk.counts };
      for (let turn = 0; turn < 20; turn++) {
        for (const g of GROUPS) store.group(g, CONF).append(makeEntries(turn * 2 + 1, turn * 2 + 2, 1, 100));
        p = store.commitTurn();
        await clock.runFor(1);
        await p;
      }
      for (const op of Object.keys(before) as (keyof typeof before)[]) {
        const per = (disk.counts[op] - before[op]) / 20;
        assert.equal(per, op === 'write' || op === 'sync' ? 1 : 0, `${op} per turn (commit ${commitOffThread ? 'off thread' : 'on the calling thread'})`);
      }
    }
  });
});
