// The in-memory bus: the same delivery contract as TCP (order, integrity,
// one frame per turn, bounded queues) and the faults tests use.

import { test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { MemoryHub } from '../src/transport/memory.js';
import type { MemoryScheduler, MemoryTransport, MemoryTransportOptions } from '../src/transport/memory.js';
import type { PeerAddress, PeerStatus } from '../src/transport/types.js';

const NOWHERE: PeerAddress = { host: '127.0.0.1', port: 0 };

interface Node {
  t: MemoryTransport;
  received: { from: string; payload: Uint8Array }[];
}

function hubFor(ctx: TestContext, random?: () => number): MemoryHub {
  const hub = random === undefined ? new MemoryHub() : new MemoryHub({ random });
  ctx.after(() => hub.close());
  return hub;
}

function node(hub: MemoryHub, id: string, opts: MemoryTransportOptions = {}): Node {
  const t = hub.transport(id, opts);
  const n: Node = { t, received: [] };
  t.onMessage((from, payload) => n.received.push({ from, payload }));
  return n;
}

function mesh(...nodes: Node[]): void {
  for (const n of nodes) n.t.setPeers(new Map(nodes.filter((m) => m !== n).map((m) => [m.t.nodeId, NOWHERE])));
}

function status(n: Node, peer: string): PeerStatus {
  const s = n.t.peerStatus().get(peer);
  assert.ok(s !== undefined);
  return s;
}

const nextTurn = (): Promise<void> => new Promise((r) => setImmediate(r));
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function settle(turns = 3): Promise<void> {
  for (let i = 0; i < turns; i++) await nextTurn();
}

const text = (s: string): Uint8Array => new TextEncoder().encode(s);
const str = (b: Uint8Array): string => new TextDecoder().decode(b);

test('memory: random payloads arrive intact and in order per sender, one frame per turn', async () => {
  const frameBytesMax = 8192;
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.array(fc.tuple(fc.constantFrom('a', 'b', 'c'), fc.uint8Array({ maxLength: 3000 })), { maxLength: 20 }), {
        minLength: 1,
        maxLength: 8,
      }),
      async (turns) => {
        const hub = new MemoryHub();
        try {
          const nodes = ['a', 'b', 'c'].map((id) => node(hub, id, { frameBytesMax }));
          // "d" sends to a, b and c.
          const d = node(hub, 'd', { frameBytesMax });
          mesh(d, ...nodes);
          const expected = new Map<string, Uint8Array[]>([
            ['a', []],
            ['b', []],
            ['c', []],
          ]);
          const turnsWithMessages = new Map<string, number>([
            ['a', 0],
            ['b', 0],
            ['c', 0],
          ]);
          for (const turn of turns) {
            const touched = new Set<string>();
            for (const [to, p] of turn) {
              assert.equal(d.t.send(to, p), true);
              expected.get(to)?.push(Uint8Array.from(p));
              touched.add(to);
            }
            for (const to of touched) turnsWithMessages.set(to, (turnsWithMessages.get(to) ?? 0) + 1);
            await nextTurn();
          }
          await settle();
          for (const n of nodes) {
            assert.deepEqual(
              n.received.map((m) => m.payload),
              expected.get(n.t.nodeId),
            );
            // Frames: one per turn with messages, unless a turn's bytes exceed the frame limit.
            const frames = status(d, n.t.nodeId).sentFrames;
            assert.ok(frames >= (turnsWithMessages.get(n.t.nodeId) ?? 0));
            assert.equal(status(n, 'd').receivedFrames, frames);
          }
        } finally {
          await hub.close();
        }
      },
    ),
    { numRuns: 50, seed: 42 },
  );
});

test('memory: 1000 sends in one turn are one frame; the payload is copied at the end of the turn', async (ctx) => {
  const hub = hubFor(ctx);
  const a = node(hub, 'a');
  const b = node(hub, 'b');
  mesh(a, b);
  for (let i = 0; i < 1000; i++) a.t.send('b', text(`m${i}`));
  const reused = text('before');
  a.t.send('b', reused);
  await settle();
  assert.equal(b.received.length, 1001);
  assert.equal(status(a, 'b').sentFrames, 1);
  assert.equal(status(b, 'a').receivedFrames, 1);
  assert.equal(hub.stats().deliveredFrames, 1);
  reused.fill(0);
  assert.equal(str(b.received[1000]!.payload), 'before');
});

test('memory: size limit, unknown peers, closed transports', async (ctx) => {
  const hub = hubFor(ctx);
  const a = node(hub, 'a', { frameBytesMax: 4096 });
  const b = node(hub, 'b');
  mesh(a, b);
  assert.equal(a.t.send('b', new Uint8Array(a.t.messageBytesMax)), true);
  assert.equal(a.t.send('b', new Uint8Array(a.t.messageBytesMax + 1)), false);
  assert.equal(a.t.send('zed', new Uint8Array(1)), false);
  assert.deepEqual(a.t.stats(), { unknownPeerDrops: 1, oversizeDrops: 1, rejectedConnections: 0, protocolErrors: 0, lastRejectReason: null });
  await settle();
  assert.equal(b.received.length, 1);
  await a.t.close();
  assert.equal(a.t.send('b', new Uint8Array(1)), false);
});

test('memory: a partition drops messages both ways until healed; connected reflects it', async (ctx) => {
  const hub = hubFor(ctx);
  const a = node(hub, 'a');
  const b = node(hub, 'b');
  const c = node(hub, 'c');
  mesh(a, b, c);
  assert.equal(status(a, 'b').connected, true);
  hub.partition('a', 'b');
  assert.equal(status(a, 'b').connected, false);
  assert.equal(status(b, 'a').connected, false);
  a.t.send('b', text('lost'));
  b.t.send('a', text('lost'));
  a.t.send('c', text('fine'));
  await settle();
  assert.equal(a.received.length + b.received.length, 0);
  assert.equal(c.received.length, 1);
  assert.equal(hub.stats().lostMessages, 2);
  hub.heal('a', 'b');
  a.t.send('b', text('back'));
  await settle();
  assert.deepEqual(
    b.received.map((m) => str(m.payload)),
    ['back'],
  );

  hub.partitionOneWay('a', 'b');
  a.t.send('b', text('lost'));
  b.t.send('a', text('arrives'));
  await settle();
  assert.deepEqual(
    a.received.map((m) => str(m.payload)),
    ['arrives'],
  );
  assert.equal(b.received.length, 1);
  assert.equal(status(b, 'a').connected, false, 'one-way cut: not connected');

  hub.healAll();
  hub.isolate('c');
  a.t.send('c', text('lost'));
  c.t.send('b', text('lost'));
  await settle();
  assert.equal(c.received.length, 1);
  assert.equal(b.received.length, 1);
  hub.unisolate('c');
  c.t.send('b', text('ok'));
  await settle();
  assert.equal(b.received.length, 2);
});

test('memory: a frame in flight when the partition starts is lost, not delivered late', async (ctx) => {
  const hub = hubFor(ctx);
  const a = node(hub, 'a');
  const b = node(hub, 'b');
  mesh(a, b);
  hub.setDelay('a', 'b', 30);
  a.t.send('b', text('in flight'));
  await settle();
  hub.partition('a', 'b');
  await sleep(50);
  assert.equal(b.received.length, 0);
});

test('memory: delay postpones delivery and keeps order even when the delay shrinks', async (ctx) => {
  const hub = hubFor(ctx);
  const a = node(hub, 'a');
  const b = node(hub, 'b');
  mesh(a, b);
  hub.setDelay('a', 'b', 60);
  a.t.send('b', text('1'));
  await settle();
  hub.setDelay('a', 'b', 0);
  a.t.send('b', text('2'));
  await settle();
  // Frame 2's turn came first, but it carried the oldest frame: order holds.
  assert.deepEqual(
    b.received.map((m) => str(m.payload)),
    ['1'],
  );
  await sleep(80);
  assert.deepEqual(
    b.received.map((m) => str(m.payload)),
    ['1', '2'],
  );
});

test('memory: loss rate drops a share of messages, order of the rest holds', async (ctx) => {
  let s = 1;
  const random = (): number => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
  const hub = hubFor(ctx, random);
  const a = node(hub, 'a');
  const b = node(hub, 'b');
  mesh(a, b);
  hub.setLossRate('a', 'b', 0.3);
  for (let i = 0; i < 1000; i++) a.t.send('b', text(String(i)));
  await settle();
  const got = b.received.map((m) => Number(str(m.payload)));
  assert.ok(got.length > 600 && got.length < 800, `kept ${got.length}`);
  for (let i = 1; i < got.length; i++) assert.ok(got[i]! > got[i - 1]!);
  assert.equal(hub.stats().lostMessages, 1000 - got.length);
});

test('memory: queued and in-flight bytes are bounded per peer; the excess is dropped and counted', async (ctx) => {
  const hub = hubFor(ctx);
  const a = node(hub, 'a', { frameBytesMax: 4096, sendQueueBytesMax: 10_000, sendQueueMessagesMax: 50 });
  const b = node(hub, 'b');
  mesh(a, b);
  hub.setDelay('a', 'b', 20);
  let accepted = 0;
  for (let i = 0; i < 20; i++) if (a.t.send('b', new Uint8Array(996))) accepted++;
  assert.equal(accepted, 10);
  await settle();
  // In flight now, still counted against the bound.
  assert.equal(status(a, 'b').queuedBytes, 10_000);
  assert.equal(a.t.send('b', new Uint8Array(1)), false);
  assert.equal(status(a, 'b').droppedMessages, 11);
  await sleep(60);
  assert.equal(b.received.length, 10);
  assert.equal(status(a, 'b').queuedBytes, 0);
  let tiny = 0;
  for (let i = 0; i < 100; i++) if (a.t.send('b', new Uint8Array(0))) tiny++;
  assert.equal(tiny, 50);
});

test('memory: a node that closes and comes back with the same id receives again', async (ctx) => {
  const hub = hubFor(ctx);
  const a = node(hub, 'a');
  let b = node(hub, 'b');
  mesh(a, b);
  await b.t.close();
  assert.equal(status(a, 'b').connected, false);
  a.t.send('b', text('to the dead'));
  await settle();
  b = node(hub, 'b');
  mesh(a, b);
  assert.equal(status(a, 'b').connected, true);
  a.t.send('b', text('to the living'));
  await settle();
  assert.deepEqual(
    b.received.map((m) => str(m.payload)),
    ['to the living'],
  );
  // Only peers that list each other talk.
  const c = node(hub, 'c');
  c.t.setPeers(new Map([['a', NOWHERE]]));
  c.t.send('a', text('stranger'));
  await settle();
  assert.equal(a.received.length, 0);
});

test('memory: handlers can be removed', async (ctx) => {
  const hub = hubFor(ctx);
  const a = node(hub, 'a');
  const b = node(hub, 'b');
  mesh(a, b);
  const seen: string[] = [];
  const off = b.t.onMessage((_from, p) => seen.push(str(p)));
  a.t.send('b', text('1'));
  await settle();
  off();
  a.t.send('b', text('2'));
  await settle();
  assert.deepEqual(seen, ['1']);
  assert.equal(b.received.length, 2);
});

test('memory: a virtual-time scheduler drives delivery without real timers', async () => {
  const turnQueue: (() => void)[] = [];
  const timers: { at: number; fn: () => void }[] = [];
  let now = 0;
  const scheduler: MemoryScheduler = {
    endOfTurn: (fn) => {
      turnQueue.push(fn);
    },
    after: (ms, fn) => {
      const t = { at: now + ms, fn };
      timers.push(t);
      return () => {
        const i = timers.indexOf(t);
        if (i >= 0) timers.splice(i, 1);
      };
    },
  };
  const runTurns = (): void => {
    while (turnQueue.length > 0) turnQueue.shift()?.();
  };
  const advance = (ms: number): void => {
    now += ms;
    timers.sort((x, y) => x.at - y.at);
    while (timers.length > 0 && timers[0]!.at <= now) {
      timers.shift()?.fn();
      runTurns();
    }
  };
  const hub = new MemoryHub({ scheduler });
  const a = node(hub, 'a');
  const b = node(hub, 'b');
  mesh(a, b);
  hub.setDelay('a', 'b', 100);
  a.t.send('b', text('x'));
  runTurns();
  advance(99);
  assert.equal(b.received.length, 0);
  advance(1);
  assert.equal(b.received.length, 1);
  await hub.close();
});
