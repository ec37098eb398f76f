// The TCP bus on loopback: delivery, coalescing, reconnects, backoff, the
// handshake and its refusals, hostile bytes, bounded queues, clean close.
// Every transport and socket is closed by the test that opened it.

import { test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { TcpTransport } from '../src/transport/tcp.js';
import type { TcpTransportOptions } from '../src/transport/tcp.js';
import type { PeerAddress, PeerStatus } from '../src/transport/types.js';
import { backoffDelayMs } from '../src/transport/backoff.js';
import {
  FRAME_HEADER_BYTES,
  FRAME_MAGIC,
  FrameDecoder,
  FrameType,
  HANDSHAKE_FRAME_BYTES_MAX,
  PROTOCOL_VERSION,
  encodeDataFrame,
  encodeFrame,
} from '../src/transport/frame.js';
import type { Frame } from '../src/transport/frame.js';
import { NONCE_BYTES, decodeHello, decodeRefuse, encodeAuth, encodeHello } from '../src/transport/handshake.js';
import { sleep, waitFor } from '../testkit/wait.js';

const FAST = {
  reconnectBaseMs: 10,
  reconnectDelayMsMax: 100,
  closeTimeoutMs: 200,
} as const;

interface Node {
  t: TcpTransport;
  received: { from: string; payload: Buffer }[];
  log: string[];
}

type Extra = Partial<Omit<TcpTransportOptions, 'nodeId'>>;

/** Start a transport on a free loopback port (or `port`), closed when the test ends. */
async function startNode(ctx: TestContext, nodeId: string, extra: Extra = {}): Promise<Node> {
  const log: string[] = [];
  const t = await TcpTransport.start({ nodeId, port: 0, host: '127.0.0.1', ...FAST, log: (l) => log.push(l), ...extra });
  ctx.after(() => t.close());
  const node: Node = { t, received: [], log };
  t.onMessage((from, payload) => node.received.push({ from, payload: Buffer.from(payload) }));
  return node;
}

/** Make every node a peer of every other. */
function mesh(...nodes: Node[]): void {
  for (const n of nodes) {
    const peers = new Map<string, PeerAddress>();
    for (const m of nodes) if (m !== n) peers.set(m.t.nodeId, m.t.address());
    n.t.setPeers(peers);
  }
}

const nextTurn = (): Promise<void> => new Promise((r) => setImmediate(r));

function status(n: Node, peer: string): PeerStatus {
  const s = n.t.peerStatus().get(peer);
  assert.ok(s !== undefined, `${n.t.nodeId} has no peer ${peer}`);
  return s;
}

async function connected(...nodes: Node[]): Promise<void> {
  await waitFor('all connected', () => nodes.every((n) => nodes.every((m) => m === n || status(n, m.t.nodeId).connected)));
}

/** Deterministic bytes. */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function payload(rand: () => number, size: number): Buffer {
  const b = Buffer.allocUnsafe(size);
  for (let i = 0; i < size; i++) b[i] = (rand() * 256) | 0;
  return b;
}

/** A port nobody listens on (bound, then released). */
async function deadPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen({ host: '127.0.0.1', port: 0 }, () => r()));
  const a = s.address();
  assert.ok(a !== null && typeof a === 'object');
  await new Promise<void>((r) => s.close(() => r()));
  return a.port;
}

/** A hand-driven bus client speaking the documented wire format. */
class RawPeer {
  readonly socket: net.Socket;
  private readonly decoder = new FrameDecoder(64 * 1024 * 1024);
  private readonly frames: Frame[] = [];
  private waiter: (() => void) | null = null;
  closed = false;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (c: Buffer) => {
      this.frames.push(...this.decoder.pushAll(c));
      this.waiter?.();
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      this.closed = true;
      this.waiter?.();
    });
  }

  static async connect(ctx: TestContext, port: number): Promise<RawPeer> {
    const socket = net.connect({ host: '127.0.0.1', port });
    ctx.after(() => {
      socket.destroy();
    });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return new RawPeer(socket);
  }

  async frame(timeoutMs = 3000): Promise<Frame | null> {
    if (this.frames.length === 0 && !this.closed) {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          this.waiter = null;
          reject(new Error('no frame in time'));
        }, timeoutMs);
        this.waiter = () => {
          if (this.frames.length === 0 && !this.closed) return;
          clearTimeout(timer);
          this.waiter = null;
          resolve();
        };
      });
    }
    return this.frames.shift() ?? null;
  }

  async closedByPeer(timeoutMs = 3000): Promise<void> {
    await waitFor('raw socket closed', () => this.closed, timeoutMs);
  }

  /** Handshake as `nodeId` without a secret; resolves once welcomed. */
  async handshake(nodeId: string, clusterId = 'ordo'): Promise<void> {
    this.socket.write(
      encodeFrame(FrameType.Hello, encodeHello({ hasSecret: false, nonce: new Uint8Array(NONCE_BYTES), nodeId, clusterId, proof: new Uint8Array(0) })),
    );
    const hello = await this.frame();
    assert.ok(hello !== null, 'closed instead of hello');
    if (hello.type === FrameType.Refuse) throw new Error(`refused: ${decodeRefuse(hello.body)}`);
    assert.equal(hello.type, FrameType.Hello);
    decodeHello(hello.body);
    this.socket.write(encodeFrame(FrameType.Auth, encodeAuth(new Uint8Array(0))));
    const welcome = await this.frame();
    assert.ok(welcome !== null && welcome.type === FrameType.Welcome, 'not welcomed');
  }
}

test('backoffDelayMs: doubles from the base, capped, jitter within [d/2, d)', () => {
  const half = (): number => 0.5;
  assert.deepEqual(
    [0, 1, 2, 3, 4, 5, 40].map((a) => backoffDelayMs(a, 100, 1000, half)),
    [75, 150, 300, 600, 750, 750, 750],
  );
  assert.equal(
    backoffDelayMs(3, 100, 1000, () => 0),
    400,
  );
  assert.ok(backoffDelayMs(3, 100, 1000, () => 0.999999) <= 800);
  assert.throws(() => backoffDelayMs(0, 100, 1000, () => 1));
});

test('messages arrive intact and in order, both ways, empty and up to the size limit', async (ctx) => {
  const frameBytesMax = 256 * 1024;
  const a = await startNode(ctx, 'a', { frameBytesMax });
  const b = await startNode(ctx, 'b', { frameBytesMax });
  mesh(a, b);
  await connected(a, b);
  const max = a.t.messageBytesMax;
  const rand = prng(7);
  const sent: Record<string, Buffer[]> = { a: [], b: [] };
  // Edge sizes, mixed with random ones (-1).
  const sizes = [0, 1, max, max - 1, 0, 2, -1, -1];
  let k = 0;
  for (let turn = 0; turn < 20; turn++) {
    for (let i = 0; i < 15; i++) {
      const pick = sizes[k++ % sizes.length] ?? 0;
      const size = pick < 0 ? Math.floor(rand() * 5000) : pick;
      for (const [from, to] of [
        [a, b],
        [b, a],
      ] as const) {
        const p = payload(rand, size);
        assert.equal(from.t.send(to.t.nodeId, p), true);
        sent[from.t.nodeId]?.push(p);
      }
    }
    await nextTurn();
  }
  await waitFor('all delivered', () => a.received.length === sent['b']?.length && b.received.length === sent['a']?.length, 10_000);
  assert.deepEqual(
    b.received.map((m) => m.payload),
    sent['a'],
  );
  assert.deepEqual(
    a.received.map((m) => m.payload),
    sent['b'],
  );
  assert.ok(b.received.every((m) => m.from === 'a'));
  // One byte over the limit is refused at send time and counted.
  assert.equal(a.t.send('b', new Uint8Array(max + 1)), false);
  assert.equal(a.t.stats().oversizeDrops, 1);
  assert.equal(a.t.send('nobody', new Uint8Array(1)), false);
  assert.equal(a.t.stats().unknownPeerDrops, 1);
});

test('messages sent in one loop turn travel as one frame', async (ctx) => {
  const a = await startNode(ctx, 'a');
  const b = await startNode(ctx, 'b');
  mesh(a, b);
  await connected(a, b);
  const before = status(a, 'b').sentFrames;
  for (let i = 0; i < 1000; i++) assert.ok(a.t.send('b', Buffer.from(`m${i}`)));
  await waitFor('1000 delivered', () => b.received.length === 1000);
  assert.equal(status(a, 'b').sentFrames - before, 1);
  assert.equal(status(b, 'a').receivedFrames, 1);
  assert.equal(status(b, 'a').receivedMessages, 1000);
  assert.deepEqual(
    b.received.map((m) => m.payload.toString()),
    Array.from({ length: 1000 }, (_, i) => `m${i}`),
  );
  // Three turns, three frames.
  for (let turn = 0; turn < 3; turn++) {
    a.t.send('b', Buffer.from('x'));
    a.t.send('b', Buffer.from('y'));
    await nextTurn();
  }
  await waitFor('6 more delivered', () => b.received.length === 1006);
  assert.equal(status(a, 'b').sentFrames - before, 4);
});

test("a turn's messages past the frame limit are split into several frames, still in order", async (ctx) => {
  const frameBytesMax = 4096;
  const a = await startNode(ctx, 'a', { frameBytesMax });
  const b = await startNode(ctx, 'b', { frameBytesMax });
  mesh(a, b);
  await connected(a, b);
  const sent: Buffer[] = [];
  for (let i = 0; i < 10; i++) {
    const p = Buffer.alloc(1000, i);
    sent.push(p);
    a.t.send('b', p);
  }
  await waitFor('10 delivered', () => b.received.length === 10);
  assert.deepEqual(
    b.received.map((m) => m.payload),
    sent,
  );
  const frames = status(a, 'b').sentFrames;
  assert.ok(frames >= 3 && frames <= 4, `10 KB in 4 KB frames took ${frames} frames`);
});

test('three nodes: one connection per pair, dialed by the smaller id', async (ctx) => {
  const a = await startNode(ctx, 'a');
  const b = await startNode(ctx, 'b');
  const c = await startNode(ctx, 'c');
  mesh(a, b, c);
  await connected(a, b, c);
  assert.equal(status(a, 'b').dialer, true);
  assert.equal(status(a, 'c').dialer, true);
  assert.equal(status(b, 'a').dialer, false);
  assert.equal(status(b, 'c').dialer, true);
  assert.equal(status(c, 'a').dialer, false);
  assert.equal(status(c, 'b').dialer, false);
  for (const n of [a, b, c]) {
    for (const m of [a, b, c]) if (n !== m) n.t.send(m.t.nodeId, Buffer.from(`${n.t.nodeId}->${m.t.nodeId}`));
  }
  await waitFor('6 delivered', () => a.received.length + b.received.length + c.received.length === 6);
  assert.deepEqual(c.received.map((m) => m.payload.toString()).sort(), ['a->c', 'b->c']);
  for (const n of [a, b, c]) {
    assert.equal(n.t.stats().rejectedConnections, 0);
    for (const s of n.t.peerStatus().values()) assert.equal(s.connects, 1);
  }
});

test('removing a peer closes its connection and drops its queue; adding it back reconnects', async (ctx) => {
  const a = await startNode(ctx, 'a');
  const b = await startNode(ctx, 'b');
  mesh(a, b);
  await connected(a, b);
  a.t.setPeers(new Map());
  assert.equal(a.t.peerStatus().size, 0);
  assert.equal(a.t.send('b', Buffer.from('x')), false);
  await waitFor('b sees the close', () => !status(b, 'a').connected);
  assert.equal(status(b, 'a').state, 'waiting');
  mesh(a, b);
  await connected(a, b);
  assert.equal(status(b, 'a').connects, 2);
});

for (const restarted of ['acceptor', 'dialer'] as const) {
  test(`reconnect after the ${restarted} restarts on the same port; queued messages flow`, async (ctx) => {
    const a = await startNode(ctx, 'a');
    let b = await startNode(ctx, 'b');
    mesh(a, b);
    await connected(a, b);
    a.t.send('b', Buffer.from('before'));
    b.t.send('a', Buffer.from('before'));
    await waitFor('first messages', () => a.received.length === 1 && b.received.length === 1);

    // Restart one side: a transport with the same id on the same port.
    const [gone, stays] = restarted === 'acceptor' ? [b, a] : [a, b];
    const port = gone.t.address().port;
    await gone.t.close();
    await waitFor('disconnect seen', () => !status(stays, gone.t.nodeId).connected);
    // Sent while the peer is down: queued, not lost.
    // Large enough that the acceptor's first data frame exceeds the handshake frame limit.
    const big = Buffer.alloc(3 * HANDSHAKE_FRAME_BYTES_MAX, 7);
    for (let i = 0; i < 5; i++) assert.equal(stays.t.send(gone.t.nodeId, Buffer.concat([Buffer.from(`queued${i}`), big])), true);
    assert.equal(status(stays, gone.t.nodeId).queuedMessages, 5);
    await sleep(50);
    const again = await startNode(ctx, gone.t.nodeId, { port });
    if (restarted === 'acceptor') b = again;
    const newA = restarted === 'dialer' ? again : a;
    mesh(newA, b);
    await connected(newA, b);
    again.t.send(stays.t.nodeId, Buffer.from('after'));
    await waitFor('queued delivered', () => again.received.length === 5);
    assert.deepEqual(
      again.received.map((m) => m.payload.subarray(0, 7).toString()),
      ['queued0', 'queued1', 'queued2', 'queued3', 'queued4'],
    );
    await waitFor('new message delivered', () => stays.received.some((m) => m.payload.toString() === 'after'));
    assert.equal(status(stays, gone.t.nodeId).connects, 2);
    assert.equal(status(stays, gone.t.nodeId).queuedMessages, 0);
  });
}

test('redial backoff grows to its cap while the peer is down', async (ctx) => {
  const port = await deadPort();
  const a = await startNode(ctx, 'a', { reconnectBaseMs: 20, reconnectDelayMsMax: 160, random: () => 0.5 });
  a.t.setPeers(new Map([['b', { host: '127.0.0.1', port }]]));
  const seen: number[] = [];
  await waitFor(
    'backoff at its cap',
    () => {
      const s = status(a, 'b');
      if (s.lastBackoffMs !== 0 && seen[seen.length - 1] !== s.lastBackoffMs) seen.push(s.lastBackoffMs);
      return s.failedAttempts >= 6;
    },
    5000,
  );
  // With jitter fixed at 0.5 the delays are 15, 30, 60, 120, 120, ... (3/4 of 20·2^k, capped at 160).
  for (let i = 1; i < seen.length; i++) assert.ok(seen[i]! > seen[i - 1]!, `backoff shrank: ${seen.join(',')}`);
  assert.equal(seen[seen.length - 1], 120);
  assert.ok(seen.length >= 3, `saw ${seen.join(',')}`);
  const s = status(a, 'b');
  assert.equal(s.connected, false);
  assert.match(s.lastError ?? '', /ECONNREFUSED/);
  // Logged once, not once per attempt.
  assert.equal(a.log.filter((l) => l.includes('ECONNREFUSED')).length, 1);
});

test('with the same cluster secret, peers connect and messages pass', async (ctx) => {
  const a = await startNode(ctx, 'a', { secret: 'correct horse' });
  const b = await startNode(ctx, 'b', { secret: 'correct horse' });
  mesh(a, b);
  await connected(a, b);
  a.t.send('b', Buffer.from('hi'));
  await waitFor('delivered', () => b.received.length === 1);
});

for (const [name, secretA, secretB, reason] of [
  ['different secrets', 'secret-one', 'secret-two', /authentication failed/],
  ['only the dialer has a secret', 'secret-one', null, /secret/],
  ['only the acceptor has a secret', null, 'secret-two', /secret/],
] as const) {
  test(`${name}: refused on both sides, nothing passes`, async (ctx) => {
    const a = await startNode(ctx, 'a', { secret: secretA });
    const b = await startNode(ctx, 'b', { secret: secretB });
    mesh(a, b);
    a.t.send('b', Buffer.from('secret stuff'));
    b.t.send('a', Buffer.from('secret stuff'));
    await waitFor('refusals on both sides', () => status(a, 'b').failedAttempts >= 2 && status(b, 'a').failedAttempts >= 2);
    for (const [n, peer] of [
      [a, 'b'],
      [b, 'a'],
    ] as const) {
      const s = status(n, peer);
      assert.equal(s.connected, false);
      assert.equal(s.connects, 0);
      assert.match(s.lastError ?? '', reason);
      assert.ok(n.t.stats().rejectedConnections >= 1);
      assert.ok(
        n.log.some((l) => reason.test(l)),
        `${n.t.nodeId} logged the refusal`,
      );
    }
    assert.equal(a.received.length + b.received.length, 0);
    // The secret itself never appears in what the nodes report.
    for (const n of [a, b]) assert.ok(!n.log.join('\n').includes('secret-'));
  });
}

test('unknown node ids and other clusters are refused; learning the peer later lets it in', async (ctx) => {
  const a = await startNode(ctx, 'a');
  const b = await startNode(ctx, 'b');
  const other = await startNode(ctx, 'c', { clusterId: 'elsewhere' });
  a.t.setPeers(
    new Map([
      ['b', b.t.address()],
      ['c', other.t.address()],
    ]),
  );
  other.t.setPeers(new Map([['a', a.t.address()]]));
  // b does not know a yet.
  await waitFor('refused as unknown', () => (b.t.stats().lastRejectReason ?? '').includes('unknown node id'));
  await waitFor('a saw the refusal', () => /refused by peer: unknown node id/.test(status(a, 'b').lastError ?? ''));
  await waitFor('cluster mismatch', () => /cluster id mismatch/.test(status(a, 'c').lastError ?? ''));
  assert.match(status(other, 'a').lastError ?? '', /cluster id mismatch/);
  b.t.setPeers(new Map([['a', a.t.address()]]));
  await connected(a, b);
  assert.equal(status(a, 'c').connected, false);
});

test('garbage and oversize frames before the handshake close that connection only', async (ctx) => {
  const a = await startNode(ctx, 'a');
  const b = await startNode(ctx, 'b');
  mesh(a, b);
  await connected(a, b);
  const port = b.t.address().port;

  const http = await RawPeer.connect(ctx, port);
  http.socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
  await http.closedByPeer();
  assert.match(b.t.stats().lastRejectReason ?? '', /bad frame magic/);

  const huge = await RawPeer.connect(ctx, port);
  const header = Buffer.alloc(FRAME_HEADER_BYTES);
  header.set(FRAME_MAGIC, 0);
  header[4] = PROTOCOL_VERSION;
  header[5] = FrameType.Hello;
  header.writeUInt32BE(HANDSHAKE_FRAME_BYTES_MAX, 8);
  huge.socket.write(header);
  await huge.closedByPeer();
  assert.match(b.t.stats().lastRejectReason ?? '', /exceeds the limit/);

  const future = await RawPeer.connect(ctx, port);
  const v2 = Buffer.from(header);
  v2[4] = PROTOCOL_VERSION + 1;
  v2.writeUInt32BE(0, 8);
  future.socket.write(v2);
  await future.closedByPeer();
  assert.match(b.t.stats().lastRejectReason ?? '', /unsupported protocol version/);

  const silent = await RawPeer.connect(ctx, port);
  silent.socket.write(Buffer.from([0x4f])); // a valid first byte, then nothing
  assert.equal(silent.closed, false);

  assert.ok(b.t.stats().rejectedConnections >= 3);
  // The bus still works.
  a.t.send('b', Buffer.from('still here'));
  await waitFor('delivered', () => b.received.length === 1);
  assert.equal(status(a, 'b').connects, 1);
});

test('a silent connection is closed at the handshake timeout', async (ctx) => {
  const b = await startNode(ctx, 'b', { handshakeTimeoutMs: 100 });
  const silent = await RawPeer.connect(ctx, b.t.address().port);
  await silent.closedByPeer(2000);
  assert.match(b.t.stats().lastRejectReason ?? '', /handshake not done/);
});

test('the documented wire format works by hand; an oversize or malformed frame after the handshake closes the connection', async (ctx) => {
  const frameBytesMax = 64 * 1024;
  const b = await startNode(ctx, 'b', { frameBytesMax });
  const c = await startNode(ctx, 'c', { frameBytesMax });
  b.t.setPeers(
    new Map([
      ['a', { host: '127.0.0.1', port: 1 }],
      ['c', c.t.address()],
    ]),
  );
  c.t.setPeers(new Map([['b', b.t.address()]]));
  await connected(b, c);
  const port = b.t.address().port;

  // A hand-made client claiming to be "a" (which b expects to dial it).
  const raw = await RawPeer.connect(ctx, port);
  await raw.handshake('a');
  await waitFor('b sees a', () => status(b, 'a').connected);
  raw.socket.write(encodeDataFrame([Buffer.from('one'), Buffer.alloc(0), Buffer.from('three')]));
  await waitFor('3 delivered', () => b.received.length === 3);
  assert.deepEqual(
    b.received.map((m) => [m.from, m.payload.toString()]),
    [
      ['a', 'one'],
      ['a', ''],
      ['a', 'three'],
    ],
  );
  // b → a arrives on the raw socket as a data frame.
  b.t.send('a', Buffer.from('back'));
  let f = await raw.frame();
  while (f !== null && f.type === FrameType.Ping) f = await raw.frame();
  assert.ok(f !== null && f.type === FrameType.Data);

  // Oversize after the handshake.
  const header = Buffer.alloc(FRAME_HEADER_BYTES);
  header.set(FRAME_MAGIC, 0);
  header[4] = PROTOCOL_VERSION;
  header[5] = FrameType.Data;
  header.writeUInt32BE(frameBytesMax, 8);
  raw.socket.write(header);
  await raw.closedByPeer();
  await waitFor('b lost a', () => !status(b, 'a').connected);
  assert.match(status(b, 'a').lastError ?? '', /exceeds the limit/);
  assert.equal(b.t.stats().protocolErrors, 1);

  // Malformed data body: claims two messages, carries one.
  const raw2 = await RawPeer.connect(ctx, port);
  await raw2.handshake('a');
  const body = Buffer.alloc(4 + 4 + 1);
  body.writeUInt32BE(2, 0);
  body.writeUInt32BE(1, 4);
  raw2.socket.write(encodeFrame(FrameType.Data, body));
  await raw2.closedByPeer();
  assert.equal(b.t.stats().protocolErrors, 2);
  assert.equal(b.received.length, 3);

  // b and c never noticed.
  c.t.send('b', Buffer.from('fine'));
  await waitFor('c → b', () => b.received.length === 4);
  assert.equal(status(b, 'c').connects, 1);
});

test('a peer that redials replaces its old connection; wrong dial direction is refused', async (ctx) => {
  const b = await startNode(ctx, 'b');
  // b never dials "a" (a < b); it dials "z", where nothing listens.
  b.t.setPeers(
    new Map([
      ['a', { host: '127.0.0.1', port: 1 }],
      ['z', { host: '127.0.0.1', port: await deadPort() }],
    ]),
  );
  const port = b.t.address().port;
  const first = await RawPeer.connect(ctx, port);
  await first.handshake('a');
  const second = await RawPeer.connect(ctx, port);
  await second.handshake('a');
  await first.closedByPeer();
  assert.equal(status(b, 'a').connected, true);
  assert.equal(status(b, 'a').connects, 2);

  const wrongWay = await RawPeer.connect(ctx, port);
  await assert.rejects(wrongWay.handshake('z'), /wrong dial direction/);
});

test('an idle connection is closed; a live one is kept by pings', async (ctx) => {
  const opts = { pingIntervalMs: 50, idleTimeoutMs: 300 };
  const a = await startNode(ctx, 'a', opts);
  const b = await startNode(ctx, 'b', opts);
  b.t.setPeers(
    new Map([
      ['a', a.t.address()],
      ['0', { host: '127.0.0.1', port: 1 }],
    ]),
  );
  a.t.setPeers(new Map([['b', b.t.address()]]));
  await connected(a, b);
  const raw = await RawPeer.connect(ctx, b.t.address().port);
  raw.socket.on('data', () => {}); // reads, never writes
  await raw.handshake('0');
  await raw.closedByPeer(3000);
  assert.match(status(b, '0').lastError ?? '', /nothing received/);
  assert.equal(status(a, 'b').connected, true);
  assert.equal(status(a, 'b').connects, 1);
});

test('sending to a dead peer: the queue is bounded, the excess dropped and counted', async (ctx) => {
  const port = await deadPort();
  const sendQueueBytesMax = 64 * 1024;
  const a = await startNode(ctx, 'a', { frameBytesMax: 16 * 1024, sendQueueBytesMax, sendQueueMessagesMax: 1000 });
  a.t.setPeers(new Map([['b', { host: '127.0.0.1', port }]]));
  let accepted = 0;
  for (let i = 0; i < 200; i++) if (a.t.send('b', new Uint8Array(1000))) accepted++;
  const s = status(a, 'b');
  assert.equal(accepted, Math.floor(sendQueueBytesMax / 1004));
  assert.equal(s.droppedMessages, 200 - accepted);
  assert.equal(s.droppedBytes, (200 - accepted) * 1000);
  assert.ok(s.queuedBytes <= sendQueueBytesMax);
  await sleep(100); // turns pass, redials fail: nothing changes
  assert.equal(status(a, 'b').queuedMessages, accepted);
  // The message count bound holds for tiny messages too.
  const a2 = await startNode(ctx, 'a2', { sendQueueMessagesMax: 100 });
  a2.t.setPeers(new Map([['b', { host: '127.0.0.1', port }]]));
  let tiny = 0;
  for (let i = 0; i < 1000; i++) if (a2.t.send('b', new Uint8Array(0))) tiny++;
  assert.equal(tiny, 100);
  assert.equal(status(a2, 'b').droppedMessages, 900);
});

test('a peer that stops reading: bytes held for it stay under the bound', async (ctx) => {
  const sendQueueBytesMax = 2 * 1024 * 1024;
  const b = await startNode(ctx, 'b', { frameBytesMax: 256 * 1024, sendQueueBytesMax });
  b.t.setPeers(new Map([['a', { host: '127.0.0.1', port: 1 }]]));
  const raw = await RawPeer.connect(ctx, b.t.address().port);
  await raw.handshake('a');
  raw.socket.pause(); // the kernel buffers fill, then b's socket buffer, then b's queue
  const chunk = new Uint8Array(64 * 1024);
  let queuedBytesPeak = 0;
  for (let turn = 0; turn < 80; turn++) {
    for (let i = 0; i < 16; i++) b.t.send('a', chunk);
    await nextTurn();
    queuedBytesPeak = Math.max(queuedBytesPeak, status(b, 'a').queuedBytes);
  }
  const s = status(b, 'a');
  ctx.diagnostic(`max queued ${queuedBytesPeak}, sent ${s.sentMessages}, dropped ${s.droppedMessages}`);
  assert.ok(s.sentMessages > 16, "a socket's worth was written");
  assert.ok(s.droppedMessages > 0, 'something was dropped');
  assert.ok(queuedBytesPeak <= sendQueueBytesMax, `queued ${queuedBytesPeak} > ${sendQueueBytesMax}`);
  assert.equal(s.connected, true);
  raw.socket.destroy();
});

test('close() stops every timer and socket', async (ctx) => {
  const kinds = (): string[] => process.getActiveResourcesInfo().filter((r) => r === 'TCPSocketWrap' || r === 'TCPServerWrap' || r === 'Timeout');
  const before = kinds().length;
  const port = await deadPort();
  const a = await startNode(ctx, 'a');
  const b = await startNode(ctx, 'b');
  mesh(a, b);
  a.t.setPeers(
    new Map([
      ['b', b.t.address()],
      ['c', { host: '127.0.0.1', port }],
    ]),
  );
  await connected(a, b);
  await waitFor('c in backoff', () => status(a, 'c').failedAttempts >= 1);
  const raw = await RawPeer.connect(ctx, b.t.address().port); // mid-handshake at close
  await Promise.all([a.t.close(), b.t.close()]);
  await raw.closedByPeer();
  await nextTurn();
  assert.equal(kinds().length, before, `left: ${kinds().join(',')}`);
  assert.equal(a.t.send('b', new Uint8Array(1)), false);
  await a.t.close(); // idempotent
});
