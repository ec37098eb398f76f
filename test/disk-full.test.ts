// A full disk, for real: a node whose data directory is on a small tmpfs
// that the test fills up. Writes are refused with a clear MISCONF error (not
// applied), reads go on, INFO says so, writes resume by themselves once space
// is freed, and after a restart every acknowledged write is there. The
// node's log, on its own: a turn that finds no room for its next segment is
// kept and written once there is room. Needs root (mount); skipped, saying
// why, where the test cannot mount.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { Redis } from 'ioredis';
import { EntryType } from '../src/raft/types.js';
import { PersistError } from '../src/storage/store.js';
import { WalStore } from '../src/storage/wal-store.js';
import { removeDir, startOrdo, tempDir } from '../testkit/processes.js';

/** Size of the file system the node runs on. */
const TMPFS_BYTES = 48 * 1024 * 1024;
/** The log's segments in the log test: small, so that the disk runs out at a rotation. */
const SEGMENT_BYTES = 256 * 1024;
const ENTRY_BYTES = 16 * 1024;
/** Free space left once the test fills the disk: less than a log segment, far less than a checkpoint's margin. */
const LEFT_FREE_BYTES = 256 * 1024;

function tryMount(dir: string): string | null {
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${TMPFS_BYTES}`, 'tmpfs', dir], { encoding: 'utf8' });
  return r.status === 0 ? null : `mount failed: ${(r.stderr || r.error?.message || `exit ${r.status}`).trim()}`;
}

async function reply(client: Redis, ...args: string[]): Promise<string> {
  try {
    return String(await client.call(args[0] as string, ...args.slice(1)));
  } catch (e) {
    return `ERR!${(e as Error).message}`;
  }
}

async function until<T>(what: string, timeoutMs: number, probe: () => Promise<T | null>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const got = await probe();
    if (got !== null) return got;
    if (Date.now() > deadline) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Mounts a tmpfs on a new directory; null (and a skip) where the test cannot. */
function mountOrSkip(t: TestContext, base: string): string | null {
  const mnt = join(base, 'mnt');
  mkdirSync(mnt);
  const why = process.getuid?.() === 0 ? tryMount(mnt) : 'not root';
  if (why === null) return mnt;
  removeDir(base);
  t.skip(`cannot mount a tmpfs here (${why})`);
  return null;
}

function fillLeaving(mnt: string, filler: string, leftBytes: number): void {
  const fs = statfsSync(mnt);
  writeFileSync(filler, Buffer.alloc(Math.max(0, fs.bavail * fs.bsize - leftBytes)));
}

describe('a full disk', () => {
  it("the node's log keeps a turn it could not write (no room for a new segment) and writes it once there is room", async (t) => {
    const base = tempDir('wal-full');
    const mnt = mountOrSkip(t, base);
    if (mnt === null) return;
    const filler = join(mnt, 'filler');
    const conf = { voters: ['n1'], learners: [] };
    let store = WalStore.open(mnt, { fsync: 'always', segmentBytes: SEGMENT_BYTES });
    try {
      const g = store.group(1, conf);
      let index = 0;
      const turn = (): Promise<void> => {
        index++;
        g.append([{ index, term: 1, type: EntryType.Normal, data: Buffer.alloc(ENTRY_BYTES, index & 0xff) }]);
        g.setHardState({ term: 1, vote: 'n1', commit: index });
        return store.commitTurn();
      };
      await turn();
      fillLeaving(mnt, filler, 0);
      // The active segment takes turns until a turn needs the next one, which cannot be made.
      let refused: PersistError | null = null;
      while (refused === null && index < (4 * SEGMENT_BYTES) / ENTRY_BYTES) {
        await turn().catch((e: unknown) => {
          assert.ok(e instanceof PersistError, String(e));
          refused = e;
        });
      }
      const error = refused as PersistError | null;
      assert.ok(error !== null, 'a turn was refused');
      assert.equal(error.retryable, true, error.message);
      assert.equal(error.applied, 'no');
      assert.match(error.message, /no space left on device/i);
      const stalledAt = index;
      // Still no room: refused again, nothing lost.
      await assert.rejects(turn(), (e: unknown) => e instanceof PersistError && e.retryable);
      rmSync(filler);
      await turn(); // writes the stalled turns first, then this one
      const last = index;
      await store.close();
      store = WalStore.open(mnt, { fsync: 'always', segmentBytes: SEGMENT_BYTES });
      const again = store.group(1, conf);
      assert.equal(again.lastIndex(), last);
      assert.equal(again.initialState().hardState.commit, last);
      assert.ok(last > stalledAt && stalledAt > 1);
      t.diagnostic(`turn ${stalledAt} stalled for lack of a segment; ${last} turns on disk after the retry`);
    } finally {
      await store.close();
      spawnSync('umount', ['-l', mnt]);
      removeDir(base);
    }
  });

  it('refuses writes with MISCONF while reads go on, resumes once space is freed, and loses nothing', async (t) => {
    const base = tempDir('disk-full');
    const mnt = mountOrSkip(t, base);
    if (mnt === null) return;
    const dataDir = join(mnt, 'data');
    const filler = join(mnt, 'filler');
    const args = ['--log-segment-bytes', '1mb'];
    let node = await startOrdo({ dataDir, args });
    let client: Redis | null = null;
    try {
      client = new Redis({ port: node.port, host: '127.0.0.1', maxRetriesPerRequest: 0, retryStrategy: () => null });
      const c = client;
      const value = 'v'.repeat(1000);
      const acked: string[] = [];
      for (let i = 0; i < 200; i++) {
        assert.equal(await reply(c, 'SET', `before:${i}`, value), 'OK');
        acked.push(`before:${i}`);
      }
      fillLeaving(mnt, filler, LEFT_FREE_BYTES);

      let i = 0;
      const refused = await until('a write refused for the full disk', 30_000, async () => {
        const r = await reply(c, 'SET', `during:${i}`, value);
        if (r === 'OK') acked.push(`during:${i}`);
        i++;
        return r.startsWith('ERR!MISCONF') ? r : null;
      });
      assert.match(refused, /^ERR!MISCONF the disk of this node is full .*write not applied$/);
      assert.match(String(await c.info('ordo')), /\r\ndisk_full:1\r\n/);
      // Reads go on.
      assert.equal(await c.get('before:0'), value);
      assert.equal(await reply(c, 'INCR', 'counter'), refused);

      rmSync(filler);
      await until('writes to resume', 15_000, async () => ((await reply(c, 'INCR', 'counter')) === '1' ? true : null));
      assert.match(String(await c.info('ordo')), /\r\ndisk_full:0\r\n/);
      t.diagnostic(`${acked.length} writes acknowledged, ${i} tried while the disk filled`);

      c.disconnect();
      client = null;
      assert.equal(await node.stop(), 0, node.output());
      node = await startOrdo({ dataDir, args });
      client = new Redis({ port: node.port, host: '127.0.0.1', maxRetriesPerRequest: 0, retryStrategy: () => null });
      const values = await client.mget(...acked);
      assert.deepEqual(
        acked.filter((_, k) => values[k] !== value),
        [],
        'every acknowledged write is there after a restart',
      );
      assert.equal(await client.get('counter'), '1');
    } finally {
      client?.disconnect();
      await node.stop();
      spawnSync('umount', ['-l', mnt]);
      removeDir(base);
    }
  });
});
