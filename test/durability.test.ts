// Durability with real processes: kill -9 while clients increment with
// pipelining, restart on the same data directory, and check that no
// acknowledged increment was lost and no value was handed out twice. SIGTERM
// finishes in-flight writes and exits 0. Unusable data directories are
// refused, and so is a damaged data directory of the old single-node store
// (ordo.mdb), which a node otherwise imports at start.

import assert from 'node:assert/strict';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { Socket } from 'node:net';
import { join } from 'node:path';
import { after, describe, it, type TestContext } from 'node:test';
import { open } from 'lmdb';
import { StateMachine } from '../src/sequencer/state-machine.js';
import { LmdbStore } from '../src/storage/lmdb.js';
import { RawClient, removeDir, startOrdo, tempDir, type RunningOrdo } from '../testkit/index.js';
import { prng } from '../testkit/random.js';

const encode = (...args: string[]): string => `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`;

/**
 * A client that keeps `depth` INCRs in flight on random keys until its socket
 * closes, recording every acknowledged (key, value). Replies arrive in request
 * order, so the key of each reply is the oldest unanswered one.
 */
class Incrementer {
  readonly acked: { key: string; value: bigint }[] = [];
  readonly errors: string[] = [];
  private readonly inFlight: string[] = [];
  private buffered = '';
  private stopped = false;
  readonly done: Promise<void>;

  constructor(
    private readonly socket: Socket,
    private readonly keys: readonly string[],
    private readonly depth: number,
    private readonly random: () => number,
  ) {
    this.done = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('error', () => undefined);
    socket.on('data', (d: Buffer) => this.onData(d.toString('latin1')));
    this.fill();
  }

  static connect(port: number, keys: readonly string[], depth: number, random: () => number): Promise<Incrementer> {
    return new Promise((resolve, reject) => {
      const s = new Socket();
      s.once('error', reject);
      s.connect(port, '127.0.0.1', () => {
        s.off('error', reject);
        resolve(new Incrementer(s, keys, depth, random));
      });
    });
  }

  /** Stops sending; resolves once every request sent was answered or the socket closed. */
  async finish(): Promise<void> {
    this.stopped = true;
    while (this.inFlight.length > 0 && !this.socket.destroyed) await new Promise((r) => setTimeout(r, 5));
    this.socket.destroy();
  }

  private fill(): void {
    if (this.stopped || this.socket.destroyed) return;
    let out = '';
    while (this.inFlight.length < this.depth) {
      const key = this.keys[Math.floor(this.random() * this.keys.length)] as string;
      this.inFlight.push(key);
      out += encode('INCR', key);
    }
    if (out !== '') this.socket.write(out);
  }

  private onData(text: string): void {
    this.buffered += text;
    let start = 0;
    for (;;) {
      const end = this.buffered.indexOf('\r\n', start);
      if (end < 0) break;
      const line = this.buffered.slice(start, end);
      start = end + 2;
      const key = this.inFlight.shift();
      assert.ok(key !== undefined, `reply without a request: ${line}`);
      if (line.startsWith(':')) this.acked.push({ key, value: BigInt(line.slice(1)) });
      else this.errors.push(line);
    }
    this.buffered = this.buffered.slice(start);
    this.fill();
  }
}

/** Waits (up to 10 s) until the clients have had some increments acknowledged. */
async function someAcknowledged(clients: readonly Incrementer[]): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (clients.every((c) => c.acked.length === 0) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
}

async function getValues(port: number, keys: readonly string[]): Promise<Map<string, bigint>> {
  const client = await RawClient.connect(port);
  try {
    client.send(keys.map((k) => encode('GET', k)).join(''));
    const lines = (): string[] => client.bytes.toString('latin1').split('\r\n');
    await client.until(() => {
      // Each reply is `$-1` or `$n` + the value: count replies.
      const l = lines();
      let replies = 0;
      for (let i = 0; i < l.length; i++) {
        if (l[i] === '$-1') replies++;
        else if (l[i]?.startsWith('$') === true && i + 1 < l.length - 1) {
          replies++;
          i++;
        }
      }
      return replies >= keys.length;
    });
    const values = new Map<string, bigint>();
    const l = lines();
    let k = 0;
    for (let i = 0; i < l.length && k < keys.length; i++) {
      const key = keys[k++] as string;
      if (l[i] === '$-1') values.set(key, 0n);
      else {
        values.set(key, BigInt(l[i + 1] ?? 'x'));
        i++;
      }
    }
    return values;
  } finally {
    client.close();
  }
}

/** Every acknowledged value of a key was handed out once; returns the duplicates found. */
function duplicates(acked: readonly { key: string; value: bigint }[]): string[] {
  const seen = new Set<string>();
  const dups: string[] = [];
  for (const { key, value } of acked) {
    const id = `${key}=${value}`;
    if (seen.has(id)) dups.push(id);
    seen.add(id);
  }
  return dups;
}

function highestPerKey(acked: readonly { key: string; value: bigint }[]): Map<string, bigint> {
  const max = new Map<string, bigint>();
  for (const { key, value } of acked) if (value > (max.get(key) ?? 0n)) max.set(key, value);
  return max;
}

describe('durability', () => {
  const dirs: string[] = [];
  const running = new Set<RunningOrdo>();
  const track = (o: RunningOrdo): RunningOrdo => {
    running.add(o);
    return o;
  };
  after(async () => {
    for (const o of running) await o.stop();
    for (const d of dirs) removeDir(d);
  });
  const newDir = (): string => {
    const d = tempDir('durability');
    dirs.push(d);
    return d;
  };

  /** kill -9 cycles under pipelined INCR load on one data directory, nodes started with `args`; returns the directory. */
  async function killCycles(t: TestContext, args: readonly string[]): Promise<string> {
    const seed = Number(process.env['ORDO_TEST_SEED'] ?? Date.now() % 1_000_000);
    const random = prng(seed);
    const note = `seed ${seed} (ORDO_TEST_SEED=${seed} repeats it)`;
    const dataDir = newDir();
    const keys = ['order:id', 'invoice:id', 'ticket:id'];
    const allAcked: { key: string; value: bigint }[] = [];
    for (let cycle = 0; cycle < 5; cycle++) {
      const ordo = track(await startOrdo({ dataDir, args }));
      if (cycle > 0) {
        // What survived the last kill covers every value acknowledged before it.
        const values = await getValues(ordo.port, keys);
        for (const [key, max] of highestPerKey(allAcked)) {
          assert.ok((values.get(key) ?? 0n) >= max, `${note}: cycle ${cycle}: ${key} is ${values.get(key)} after restart, ${max} was acknowledged`);
        }
      }
      const clients = await Promise.all(
        Array.from({ length: 4 }, (_, i) => Incrementer.connect(ordo.port, keys, 1 + Math.floor(random() * 64), prng(seed * 31 + cycle * 7 + i))),
      );
      await someAcknowledged(clients);
      await new Promise((r) => setTimeout(r, 50 + Math.floor(random() * 450)));
      ordo.kill('SIGKILL');
      assert.equal(await ordo.exited, 'SIGKILL');
      running.delete(ordo);
      await Promise.all(clients.map((c) => c.done));
      let ackedThisCycle = 0;
      for (const c of clients) {
        allAcked.push(...c.acked);
        ackedThisCycle += c.acked.length;
        assert.deepEqual(c.errors, [], `${note}: no error replies`);
      }
      assert.ok(ackedThisCycle > 0, `${note}: cycle ${cycle} acknowledged nothing`);
    }
    assert.deepEqual(duplicates(allAcked), [], `${note}: values handed out twice`);
    // A last restart: everything acknowledged is there, and counting goes on above it.
    const ordo = track(await startOrdo({ dataDir, args }));
    const values = await getValues(ordo.port, keys);
    for (const [key, max] of highestPerKey(allAcked)) assert.ok((values.get(key) ?? 0n) >= max, `${note}: ${key} final`);
    const client = await Incrementer.connect(ordo.port, keys, 16, prng(seed + 1));
    await new Promise((r) => setTimeout(r, 100));
    await client.finish();
    allAcked.push(...client.acked);
    assert.deepEqual(duplicates(allAcked), [], `${note}: values handed out twice after the last restart`);
    t.diagnostic(`${note}: ${allAcked.length} acknowledged increments checked`);
    assert.equal(await ordo.stop(), 0);
    running.delete(ordo);
    return dataDir;
  }

  it('kill -9 while pipelined clients increment loses no acknowledged value and never repeats one (5 cycles)', async (t) => {
    await killCycles(t, []);
  });

  it('the same with 64 KiB log segments: kills land on segment rotations, and the log goes on past them', async (t) => {
    const dataDir = await killCycles(t, ['--log-segment-bytes', '64kb']);
    const segments = readdirSync(join(dataDir, 'wal'))
      .filter((f) => f.endsWith('.wal'))
      .sort();
    const newest = Number.parseInt(segments[segments.length - 1] ?? '0', 16);
    t.diagnostic(`segments now: ${segments.length}, newest ${newest}`);
    assert.ok(newest > 1, `the log rotated (segments: ${segments.join(' ')})`);
  });

  it('SIGTERM while clients write: exits 0, and every acknowledged write is there after restart', async () => {
    const dataDir = newDir();
    const keys = ['a', 'b', 'c', 'd'];
    const ordo = track(await startOrdo({ dataDir }));
    const clients = await Promise.all(Array.from({ length: 4 }, (_, i) => Incrementer.connect(ordo.port, keys, 32, prng(100 + i))));
    await someAcknowledged(clients);
    await new Promise((r) => setTimeout(r, 200));
    ordo.kill('SIGTERM');
    assert.equal(await ordo.exited, 0, ordo.output());
    running.delete(ordo);
    assert.match(ordo.output(), /stopped/);
    await Promise.all(clients.map((c) => c.done));
    const acked = clients.flatMap((c) => c.acked);
    assert.ok(acked.length > 0);
    assert.deepEqual(duplicates(acked), []);
    const restarted = track(await startOrdo({ dataDir }));
    const values = await getValues(restarted.port, keys);
    for (const [key, max] of highestPerKey(acked)) {
      assert.ok((values.get(key) ?? 0n) >= max, `${key}: ${values.get(key)} after restart, ${max} acknowledged`);
    }
    // A graceful stop waits for every write it accepted: nothing after the last acknowledgement
    // was lost either, so the stored value is exactly the count of acknowledged increments.
    const counts = new Map<string, bigint>();
    for (const { key } of acked) counts.set(key, (counts.get(key) ?? 0n) + 1n);
    for (const [key, count] of counts) assert.ok((values.get(key) ?? 0n) >= count);
    assert.equal(await restarted.stop(), 0);
    running.delete(restarted);
  });

  it('refuses a data directory in use by a live ordo', async () => {
    const dataDir = newDir();
    const first = track(await startOrdo({ dataDir }));
    const second = track(await startOrdo({ dataDir, noWait: true }));
    assert.equal(await second.exited, 1);
    running.delete(second);
    assert.match(second.output(), new RegExp(`is in use by process ${first.proc.pid ?? 'x'}`));
    // The first one is unharmed.
    const c = await RawClient.connect(first.port);
    c.send('PING\r\n');
    assert.equal((await c.until((b) => b.includes('\r\n'))).toString(), '+PONG\r\n');
    c.close();
    assert.equal(await first.stop(), 0);
    running.delete(first);
  });

  it('refuses a directory holding other files', async () => {
    const dataDir = newDir();
    writeFileSync(join(dataDir, 'important.db'), 'not ordo');
    const ordo = track(await startOrdo({ dataDir, noWait: true }));
    assert.equal(await ordo.exited, 1);
    running.delete(ordo);
    assert.match(ordo.output(), /holds other files \(important\.db\) and no ordo data; refusing to use it/);
    assert.ok(!existsSync(join(dataDir, 'ordo.mdb')));
  });

  it('refuses a corrupted ordo.mdb (old single-node store) with a clear message instead of importing it (or crashing)', async () => {
    const dataDir = await legacyDir(1);
    const fd = openSync(join(dataDir, 'ordo.mdb'), 'r+');
    writeSync(fd, Buffer.alloc(256, 0xa5), 0, 256, 0);
    closeSync(fd);
    const again = track(await startOrdo({ dataDir, noWait: true }));
    const code = await again.exited;
    running.delete(again);
    assert.equal(code, 1, again.output());
    assert.match(again.output(), /ordo\.mdb is not a valid LMDB file .*corrupt/);
  });

  it('refuses an ordo.mdb whose data pages were overwritten', async () => {
    const dataDir = await legacyDir(2000);
    // Everything after the two meta pages (LMDB has no checksums: the damage shows when a page is read).
    const path = join(dataDir, 'ordo.mdb');
    const size = statSync(path).size;
    const pageSize = 4096;
    assert.ok(size > 4 * pageSize);
    const fd = openSync(path, 'r+');
    writeSync(fd, Buffer.alloc(size - 2 * pageSize, 0xa5), 0, size - 2 * pageSize, 2 * pageSize);
    closeSync(fd);
    const again = track(await startOrdo({ dataDir, noWait: true }));
    assert.equal(await again.exited, 1, again.output());
    running.delete(again);
    assert.match(again.output(), /ordo: cannot read .*ordo\.mdb: .*the file may be corrupt; refusing to start/);
  });

  it('refuses an ordo.mdb holding a damaged record', async () => {
    const dataDir = await legacyDir(1);
    const env = open({ path: join(dataDir, 'ordo.mdb'), maxDbs: 4 });
    const kv = env.openDB<Buffer, Buffer>({ name: 'kv', keyEncoding: 'binary', encoding: 'binary' });
    await kv.put(Buffer.from('broken'), Buffer.from([0x7f, 1, 2, 3]));
    await env.close();
    const again = track(await startOrdo({ dataDir, noWait: true }));
    assert.equal(await again.exited, 1, again.output());
    running.delete(again);
    assert.match(again.output(), /corrupt record for key "broken"/);
  });

  /** A data directory of the old single-node store with `n` keys of 50 bytes. */
  async function legacyDir(n: number): Promise<string> {
    const dataDir = newDir();
    const store = LmdbStore.open(dataDir, 'always');
    const sm = new StateMachine();
    for (let i = 0; i < n; i++) sm.apply({ type: 'set', key: `key:${i}`, value: Buffer.alloc(50, 0x78), condition: 'always', get: false });
    await store.persist(sm.takeChanges());
    await store.close();
    return dataDir;
  }

  it('refuses a data directory that cannot be created', async () => {
    const base = newDir();
    writeFileSync(join(base, 'file'), '');
    mkdirSync(join(base, 'ok'));
    const ordo = track(await startOrdo({ dataDir: join(base, 'file', 'data'), noWait: true }));
    assert.equal(await ordo.exited, 1);
    running.delete(ordo);
    assert.match(ordo.output(), /cannot create data directory/);
  });
});
