// Bad and hostile input against a real ordo process: garbage, huge declared
// lengths, slow senders, a query buffer that never ends, too many clients, a
// client that never reads, deep pipelines. The server never crashes, answers
// a protocol error and closes that connection only, keeps serving everyone
// else, and keeps its memory bounded.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { RawClient, removeDir, sleep, startOrdo, type RunningOrdo } from '../testkit/index.js';

const encode = (...args: (string | Buffer)[]): Buffer => {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
  for (const a of args) {
    const b = typeof a === 'string' ? Buffer.from(a) : a;
    parts.push(Buffer.from(`$${b.length}\r\n`), b, Buffer.from('\r\n'));
  }
  return Buffer.concat(parts);
};

function rssKb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0);
}

const PROTOCOL_ERROR = /-ERR Protocol error: [^\r\n]+\r\n$/;

async function ping(port: number): Promise<void> {
  const c = await RawClient.connect(port);
  try {
    c.send('PING\r\n');
    const got = await c.until((b) => b.includes('\r\n'), 5000);
    assert.equal(got.toString(), '+PONG\r\n');
  } finally {
    c.close();
  }
}

/** Sends bytes, then waits for the server to close the connection; returns what it answered. */
async function sendExpectingClose(port: number, data: Buffer | string, timeoutMs = 5000): Promise<{ reply: string; closed: boolean }> {
  const c = await RawClient.connect(port);
  try {
    c.send(data);
    await c.until(() => false, timeoutMs);
    return { reply: c.bytes.toString('latin1'), closed: c.closed };
  } finally {
    c.close();
  }
}

/**
 * Sends `data`, then keeps writing PINGs the way a client that does not read
 * would. The client's side stays open (allowHalfOpen), so it only learns of
 * the close when a write fails: a server that merely half-closes (FIN) and
 * keeps swallowing the bytes never tells it.
 */
async function keepWritingAfter(port: number, data: string, timeoutMs = 3000): Promise<{ reply: string; writeFailed: boolean }> {
  const socket = new Socket({ allowHalfOpen: true });
  let reply = '';
  socket.on('data', (d: Buffer) => (reply += d.toString('latin1')));
  await new Promise<void>((resolve) => socket.connect(port, '127.0.0.1', resolve));
  socket.write(data);
  const writeFailed = await new Promise<boolean>((resolve) => {
    const timer = setInterval(() => {
      if (!socket.destroyed) socket.write('PING\r\n');
    }, 10);
    const finish = (failed: boolean): void => {
      clearInterval(timer);
      clearTimeout(deadline);
      resolve(failed);
    };
    const deadline = setTimeout(() => finish(false), timeoutMs);
    socket.on('error', () => finish(true));
    socket.on('close', () => finish(true));
  });
  socket.destroy();
  return { reply, writeFailed };
}

/** A well-behaved client: INCRs one key in a loop and checks each value is the previous plus one. */
class SteadyClient {
  count = 0;
  failure: string | null = null;
  private stopped = false;
  private readonly finished: Promise<void>;

  constructor(
    private readonly client: RawClient,
    private readonly key: string,
  ) {
    this.finished = this.loop();
  }

  private async loop(): Promise<void> {
    let expected = 1;
    while (!this.stopped) {
      this.client.take();
      this.client.send(encode('INCR', this.key));
      const got = (await this.client.until((b) => b.includes('\r\n'), 5000)).toString();
      if (got !== `:${expected}\r\n`) {
        this.failure = `expected :${expected}, got ${JSON.stringify(got)}${this.client.closed ? ' (closed)' : ''}`;
        return;
      }
      expected++;
      this.count++;
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.finished;
    this.client.close();
  }
}

describe('bad input (default limits)', () => {
  let ordo: RunningOrdo;
  before(async () => {
    ordo = await startOrdo();
  });
  after(async () => {
    await ordo?.stop();
    if (ordo) removeDir(ordo.dataDir);
  });

  it('malformed frames on many connections: each gets its protocol error and is closed; others are unaffected', async () => {
    const steady = await Promise.all([0, 1, 2].map(async (i) => new SteadyClient(await RawClient.connect(ordo.port), `steady:${i}`)));
    const nonDigit = fc.integer({ min: 0, max: 255 }).filter((c) => c !== 0x0d && c !== 0x0a && (c < 0x30 || c > 0x39) && c !== 0x2d);
    const noLineEnd = fc.uint8Array({ maxLength: 40 }).map((u) => Buffer.from(u.filter((c) => c !== 0x0d && c !== 0x0a)));
    // [bytes to send, the error expected]
    const badFrame: fc.Arbitrary<[Buffer, RegExp]> = fc.oneof(
      fc
        .tuple(nonDigit, noLineEnd)
        .map(([c, rest]): [Buffer, RegExp] => [
          Buffer.concat([Buffer.from([0x2a, c]), rest, Buffer.from('\r\n')]),
          /-ERR Protocol error: invalid multibulk length\r\n$/,
        ]),
      fc
        .integer({ min: 0x21, max: 0x7e })
        .filter((c) => c !== 0x24)
        .map((c): [Buffer, RegExp] => [
          Buffer.from(`*2\r\n$3\r\nGET\r\n${String.fromCharCode(c)}xyz\r\n`, 'latin1'),
          new RegExp(`-ERR Protocol error: expected '\\$', got '${String.fromCharCode(c).replace(/[\\^$.*+?()[\]{}|/]/g, '\\$&')}'\\r\\n$`),
        ]),
      fc
        .tuple(nonDigit, noLineEnd)
        .map(([c, rest]): [Buffer, RegExp] => [
          Buffer.concat([Buffer.from('*1\r\n$'), Buffer.from([c]), rest, Buffer.from('\r\n')]),
          /-ERR Protocol error: invalid bulk length\r\n$/,
        ]),
      fc.constantFrom<[Buffer, RegExp]>(
        [Buffer.from('SET k "unbalanced\r\n'), /-ERR Protocol error: unbalanced quotes in request\r\n$/],
        [Buffer.from("SET k 'x'y\r\n"), /-ERR Protocol error: unbalanced quotes in request\r\n$/],
        [Buffer.from('*-5\r\n*1\r\n$-1\r\n'), /-ERR Protocol error: invalid bulk length\r\n$/],
      ),
    );
    const cases = fc.sample(badFrame, { seed: 1234, numRuns: 60 });
    const batchSize = 20;
    for (let i = 0; i < cases.length; i += batchSize) {
      await Promise.all(
        cases.slice(i, i + batchSize).map(async ([frame, expected]) => {
          // A good command first: it is answered before the error.
          const { reply, closed } = await sendExpectingClose(ordo.port, Buffer.concat([Buffer.from('PING\r\n'), frame]));
          assert.match(reply, expected, `sent ${JSON.stringify(frame.toString('latin1'))}`);
          assert.ok(reply.startsWith('+PONG\r\n'), `sent ${JSON.stringify(frame.toString('latin1'))}: ${JSON.stringify(reply)}`);
          assert.ok(closed, 'the connection is closed after a protocol error');
        }),
      );
    }
    await ping(ordo.port);
    const steadyCounts = steady.map((s) => s.count);
    await Promise.all(steady.map((s) => s.stop()));
    for (const s of steady) assert.equal(s.failure, null);
    assert.ok(
      steadyCounts.every((n) => n > 0),
      `steady clients made progress: ${steadyCounts.join(', ')}`,
    );
  });

  it('random bytes never crash the server; a protocol error always ends the connection', async () => {
    const steady = new SteadyClient(await RawClient.connect(ordo.port), 'steady:random');
    const garbage = fc.oneof(
      fc.uint8Array({ minLength: 1, maxLength: 3000 }).map((u) => Buffer.from(u)),
      // Mostly well-formed RESP with a few bytes flipped.
      fc
        .tuple(
          fc.array(fc.constantFrom('SET', 'GET', 'INCR', 'PING', 'ECHO', 'x', '12', ''), { minLength: 1, maxLength: 6 }),
          fc.array(fc.nat(), { maxLength: 4 }),
          fc.uint8Array({ minLength: 4, maxLength: 4 }),
        )
        .map(([args, positions, bytes]) => {
          const frame = Buffer.concat([encode(...args), encode(...args)]);
          positions.forEach((p, i) => (frame[p % frame.length] = bytes[i] ?? 0));
          return frame;
        }),
    );
    const inputs = fc.sample(garbage, { seed: 99, numRuns: 120 });
    let protocolErrors = 0;
    for (let i = 0; i < inputs.length; i += 30) {
      await Promise.all(
        inputs.slice(i, i + 30).map(async (data) => {
          const c = await RawClient.connect(ordo.port);
          c.send(data);
          await c.until((b) => b.includes('-ERR Protocol error'), 300);
          const reply = c.bytes.toString('latin1');
          if (reply.includes('-ERR Protocol error')) {
            protocolErrors++;
            await c.until(() => false, 2000);
            assert.ok(c.closed, `closed after ${JSON.stringify(reply.slice(-80))}`);
            assert.match(reply, PROTOCOL_ERROR, 'nothing follows the protocol error');
          }
          c.close();
        }),
      );
      await ping(ordo.port);
    }
    assert.ok(protocolErrors > 10, `protocol errors seen: ${protocolErrors}`);
    await steady.stop();
    assert.equal(steady.failure, null);
    assert.equal(ordo.proc.exitCode, null, 'still running');
  });

  it('after a protocol error the connection is closed outright: a client that keeps writing sees it fail', async () => {
    const cases: [string, string][] = [
      ['*1\r\n$abc\r\n', '-ERR Protocol error: invalid bulk length\r\n'],
      ['ECHO "abc\r\n', '-ERR Protocol error: unbalanced quotes in request\r\n'],
      ['*2\r\n$3\r\nGET\r\nxyz\r\n', "-ERR Protocol error: expected '$', got 'x'\r\n"],
      ['QUIT\r\n', '+OK\r\n'],
    ];
    for (const [data, expected] of cases) {
      const { reply, writeFailed } = await keepWritingAfter(ordo.port, `PING\r\n${data}`);
      assert.equal(reply, `+PONG\r\n${expected}`, JSON.stringify(data));
      assert.ok(writeFailed, `${JSON.stringify(data)}: writes after the close must fail`);
    }
    await ping(ordo.port);
  });

  it('huge declared lengths are refused at once, without allocating them', async () => {
    const rssBefore = rssKb(ordo.proc.pid ?? 0);
    const cases: [string, string][] = [
      ['*99999999999\r\n', 'invalid multibulk length'],
      ['*99999999999999999999999\r\n', 'invalid multibulk length'],
      ['*2000000\r\n', 'invalid multibulk length'], // above --multibulk-max (1M)
      ['*1\r\n$99999999999\r\n', 'invalid bulk length'],
      ['*1\r\n$600000000\r\n', 'invalid bulk length'], // above --bulk-max (512mb)
      ['*1\r\n$-2\r\n', 'invalid bulk length'],
      ['*1\r\n$9223372036854775808\r\n', 'invalid bulk length'],
    ];
    for (const [data, error] of cases) {
      const { reply, closed } = await sendExpectingClose(ordo.port, data);
      assert.equal(reply, `-ERR Protocol error: ${error}\r\n`, JSON.stringify(data));
      assert.ok(closed);
    }
    // A large but allowed declaration is accepted and waits for its bytes: nothing is allocated up front.
    const c = await RawClient.connect(ordo.port);
    c.send('*2\r\n$4\r\nECHO\r\n$500000000\r\n');
    await sleep(200);
    assert.equal(c.bytes.length, 0);
    assert.equal(c.closed, false);
    assert.ok(rssKb(ordo.proc.pid ?? 0) - rssBefore < 100_000, 'no 500 MB allocation for a declared length');
    c.close();
    await ping(ordo.port);
  });

  it('a slow sender (a byte every few ms) is served once its frames are whole', async () => {
    const c = await RawClient.connect(ordo.port);
    try {
      const data = Buffer.concat([encode('SET', 'slow', 'hello world'), Buffer.from('GET slow\r\n'), encode('INCRBY', 'slow:n', '42')]);
      const firstReplyAt = data.indexOf(Buffer.from('GET'));
      for (let i = 0; i < data.length; i++) {
        c.send(data.subarray(i, i + 1));
        if (i === firstReplyAt - 2) {
          // The SET frame lacks its last byte: no reply yet.
          await sleep(20);
          assert.equal(c.bytes.length, 0);
        }
        await sleep(3);
      }
      const got = await c.until((b) => b.toString().endsWith(':42\r\n'));
      assert.equal(got.toString(), '+OK\r\n$11\r\nhello world\r\n:42\r\n');
    } finally {
      c.close();
    }
  });

  it('half a frame now and the rest later', async () => {
    const c = await RawClient.connect(ordo.port);
    try {
      const frame = encode('ECHO', 'x'.repeat(100_000));
      c.send(frame.subarray(0, 50_000));
      await sleep(100);
      assert.equal(c.bytes.length, 0);
      c.send(frame.subarray(50_000));
      const got = await c.until((b) => b.length >= 100_000 + 11);
      assert.equal(got.toString(), `$100000\r\n${'x'.repeat(100_000)}\r\n`);
    } finally {
      c.close();
    }
  });
});

describe('bad input: limits', () => {
  const servers: RunningOrdo[] = [];
  after(async () => {
    for (const s of servers) {
      await s.stop();
      removeDir(s.dataDir);
    }
  });
  const start = async (args: string[]): Promise<RunningOrdo> => {
    const s = await startOrdo({ args });
    servers.push(s);
    return s;
  };

  it('--query-buffer-max 1mb: 2 MB of an unfinished bulk gets an error and a close, memory stays bounded', async () => {
    const ordo = await start(['--query-buffer-max', '1mb']);
    const pid = ordo.proc.pid ?? 0;
    const rssBefore = rssKb(pid);
    const c = await RawClient.connect(ordo.port);
    c.send('*2\r\n$4\r\nECHO\r\n$3000000\r\n');
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    for (let sent = 0; sent < 2 * 1024 * 1024 && !c.closed; sent += chunk.length) {
      c.send(chunk);
      await sleep(1);
    }
    await c.until(() => false, 3000);
    assert.equal(c.bytes.toString(), '-ERR Protocol error: query buffer limit exceeded\r\n');
    assert.ok(c.closed);
    c.close();
    assert.ok(rssKb(pid) - rssBefore < 50_000, `RSS grew by ${rssKb(pid) - rssBefore} kB`);
    // A big value under the limit is still fine.
    const ok = await RawClient.connect(ordo.port);
    ok.send(encode('ECHO', 'y'.repeat(500_000)));
    const got = await ok.until((b) => b.length >= 500_000 + 11);
    assert.equal(got.length, 500_000 + 11);
    ok.close();
    await ping(ordo.port);
  });

  it('--max-clients 3: the 4th connection is told so and closed', async () => {
    const ordo = await start(['--max-clients', '3']);
    const clients = await Promise.all([1, 2, 3].map(() => RawClient.connect(ordo.port)));
    for (const c of clients) {
      c.send('PING\r\n');
      assert.equal((await c.until((b) => b.includes('\r\n'))).toString(), '+PONG\r\n');
    }
    const fourth = await sendExpectingClose(ordo.port, 'PING\r\n', 2000);
    assert.equal(fourth.reply, '-ERR max number of clients reached\r\n');
    assert.ok(fourth.closed);
    // The three are unaffected; once one leaves, a new client gets in.
    for (const c of clients) {
      c.take();
      c.send('PING\r\n');
      assert.equal((await c.until((b) => b.includes('\r\n'))).toString(), '+PONG\r\n');
    }
    clients[0]?.close();
    await sleep(100);
    await ping(ordo.port);
    for (const c of clients) c.close();
  });

  it('a client that never reads: reading from it stops, it is disconnected, the server stays responsive and small', async () => {
    const ordo = await start(['--output-buffer-soft', '64kb', '--output-stall-timeout-ms', '1000']);
    const pid = ordo.proc.pid ?? 0;
    const setter = await RawClient.connect(ordo.port);
    const bigValue = 'v'.repeat(1024 * 1024);
    setter.send(encode('SET', 'big', bigValue));
    assert.equal((await setter.until((b) => b.includes('\r\n'))).toString(), '+OK\r\n');
    setter.close();
    const rssBefore = rssKb(pid);

    const lazy = new Socket();
    await new Promise<void>((resolve) => lazy.connect(ordo.port, '127.0.0.1', resolve));
    lazy.pause(); // never read (a paused socket also never reports the close: ask the server instead)
    lazy.on('error', () => undefined);
    const lazyAddr = `addr=127.0.0.1:${lazy.localPort ?? 0} `;
    // 2000 GETs of a 1 MB value: 2 GB of replies if they were all produced.
    const gets = encode('GET', 'big');
    lazy.write(Buffer.concat(Array.from({ length: 2000 }, () => gets)));

    const watcher = await RawClient.connect(ordo.port);
    const connected = async (): Promise<boolean> => {
      watcher.take();
      watcher.send(encode('CLIENT', 'LIST'));
      const list = (await watcher.until((b) => /^\$(\d+)\r\n/.test(b.toString()) && b.length >= Number(/^\$(\d+)/.exec(b.toString())?.[1]) + 8)).toString();
      return list.includes(lazyAddr);
    };
    assert.ok(await connected(), 'the lazy client is listed at first');
    let rssMax = 0;
    const started = Date.now();
    let gone = false;
    while (!gone && Date.now() - started < 8000) {
      rssMax = Math.max(rssMax, rssKb(pid));
      await ping(ordo.port);
      await sleep(50);
      gone = !(await connected());
    }
    const waited = Date.now() - started;
    rssMax = Math.max(rssMax, rssKb(pid));
    watcher.close();
    assert.ok(gone, 'the client that does not read is disconnected');
    assert.ok(waited >= 800, `disconnected after the stall timeout, not at once (${waited} ms)`);
    assert.ok(rssMax - rssBefore < 150_000, `RSS grew by ${rssMax - rssBefore} kB while the client did not read`);
    // What it did get is whole replies, then the close.
    lazy.resume();
    let received = 0;
    lazy.on('data', (d: Buffer) => (received += d.length));
    await new Promise<void>((resolve) => lazy.once('close', () => resolve()));
    assert.ok(received < 100 * 1024 * 1024, `received ${received} bytes`);
    await ping(ordo.port);
    lazy.destroy();
  });

  it('--pipeline-max 10: a pipeline of reads answered at once gets every reply too', async () => {
    const ordo = await start(['--pipeline-max', '10']);
    const c = await RawClient.connect(ordo.port);
    c.send(encode('SET', 'r', 'value'));
    await c.until((b) => b.includes('\r\n'));
    c.take();
    const n = 5000;
    c.send(Buffer.concat(Array.from({ length: n }, () => encode('GET', 'r'))));
    const expected = '$5\r\nvalue\r\n'.repeat(n);
    const got = await c.until((b) => b.length >= expected.length, 10_000);
    assert.equal(got.length, expected.length);
    assert.equal(got.toString(), expected);
    c.close();
  });

  it('--pipeline-max 10: a pipeline of 10000 INCRs that the client reads gets every reply, in order', async () => {
    const ordo = await start(['--pipeline-max', '10']);
    const c = await RawClient.connect(ordo.port);
    const n = 10_000;
    const frame = encode('INCR', 'deep');
    c.send(Buffer.concat(Array.from({ length: n }, () => frame)));
    const expected = Array.from({ length: n }, (_, i) => `:${i + 1}\r\n`).join('');
    const got = await c.until((b) => b.length >= expected.length, 20_000);
    assert.equal(got.toString(), expected);
    assert.equal(c.closed, false);
    c.close();
  });
});
