// The fault suite's bus proxy between real TCP bus transports on loopback:
// it forwards, learns who is on each end from the Hello frames, blackholes one
// direction or both, resets, and heals. Every transport and proxy is closed by
// the test that opened it.

import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { BusProxy, helloId } from '../chaos/proxy.js';
import { encodeFrame, FrameType } from '../src/transport/frame.js';
import { encodeHello, NONCE_BYTES } from '../src/transport/handshake.js';
import { TcpTransport } from '../src/transport/tcp.js';
import type { PeerAddress } from '../src/transport/types.js';
import { freePort } from '../testkit/processes.js';
import { sleep, waitFor } from '../testkit/wait.js';

interface Node {
  readonly t: TcpTransport;
  readonly received: { from: string; text: string }[];
}

const FAST = { reconnectBaseMs: 10, reconnectDelayMsMax: 100, closeTimeoutMs: 200, handshakeTimeoutMs: 1000 } as const;

/** Nodes with ids a, b, c, ... each behind its own proxy listener; every node dials the others' proxy ports. */
async function cluster(ctx: TestContext, count: number): Promise<{ nodes: Node[]; proxy: BusProxy }> {
  const ids = ['a', 'b', 'c', 'd', 'e'].slice(0, count);
  const nodes: Node[] = [];
  for (const id of ids) {
    const t = await TcpTransport.start({ nodeId: id, port: 0, host: '127.0.0.1', ...FAST, log: () => undefined });
    ctx.after(() => t.close());
    const node: Node = { t, received: [] };
    t.onMessage((from, payload) => node.received.push({ from, text: Buffer.from(payload).toString() }));
    nodes.push(node);
  }
  const links = await Promise.all(nodes.map(async (n) => ({ listenPort: await freePort(), targetPort: n.t.address().port })));
  const proxy = new BusProxy(links);
  await proxy.start();
  ctx.after(() => proxy.close());
  for (const n of nodes) {
    const peers = new Map<string, PeerAddress>();
    nodes.forEach((m, i) => {
      if (m !== n) peers.set(m.t.nodeId, { host: '127.0.0.1', port: links[i]?.listenPort ?? 0 });
    });
    n.t.setPeers(peers);
  }
  await waitFor('all connected', () => nodes.every((n) => [...n.t.peerStatus().values()].every((s) => s.connected)));
  return { nodes, proxy };
}

const got = (n: Node, from: string): string[] => n.received.filter((r) => r.from === from).map((r) => r.text);
const send = (from: Node, to: Node, text: string): boolean => from.t.send(to.t.nodeId, Buffer.from(text));

test('helloId reads the node id of a complete Hello frame only', () => {
  const frame = encodeFrame(
    FrameType.Hello,
    encodeHello({ hasSecret: false, nonce: new Uint8Array(NONCE_BYTES), nodeId: 'node-7', clusterId: 'ordo', proof: new Uint8Array(0) }),
  );
  assert.equal(helloId(frame), 'node-7');
  assert.equal(helloId(frame.subarray(0, 20)), undefined);
  assert.equal(helloId(Buffer.concat([frame, Buffer.from('more')])), 'node-7');
  assert.equal(helloId(encodeFrame(FrameType.Ping, new Uint8Array(0))), null);
});

test('the proxy forwards both ways and learns every node id', async (t) => {
  const { nodes, proxy } = await cluster(t, 3);
  const [a, b, c] = nodes as [Node, Node, Node];
  assert.ok(send(a, b, 'a>b') && send(b, a, 'b>a') && send(b, c, 'b>c') && send(c, a, 'c>a'));
  await waitFor('delivery', () => got(b, 'a').length === 1 && got(a, 'b').length === 1 && got(c, 'b').length === 1 && got(a, 'c').length === 1);
  assert.deepEqual(proxy.nodeIds(), ['a', 'b', 'c']);
  assert.ok(proxy.stats.connections >= 3 && proxy.stats.bytesForwarded > 0);
});

test('a one-way cut blackholes one direction; healing delivers what was held, in order', async (t) => {
  const { nodes, proxy } = await cluster(t, 2);
  const [a, b] = nodes as [Node, Node];
  proxy.setCuts([[0, 1]]); // a -> b
  send(a, b, 'one');
  send(a, b, 'two');
  send(b, a, 'back');
  await waitFor('b -> a still flows', () => got(a, 'b').length === 1);
  await sleep(300);
  assert.deepEqual(got(b, 'a'), [], 'nothing crosses the cut');
  // The sender sees no error: still connected.
  assert.equal(a.t.peerStatus().get('b')?.connected, true);
  proxy.heal();
  await waitFor('held messages delivered', () => got(b, 'a').length === 2);
  assert.deepEqual(got(b, 'a'), ['one', 'two']);
  send(a, b, 'three');
  await waitFor('new messages flow', () => got(b, 'a').length === 3);
});

test('a partition cuts across the sides only; a reset cut closes connections and healing reconnects', async (t) => {
  const { nodes, proxy } = await cluster(t, 3);
  const [a, b, c] = nodes as [Node, Node, Node];
  proxy.partition([[0], [1, 2]]);
  send(a, b, 'x');
  send(c, a, 'y');
  send(b, c, 'inside');
  send(c, b, 'inside too');
  await waitFor('the majority side talks', () => got(c, 'b').length === 1 && got(b, 'c').length === 1);
  await sleep(200);
  assert.deepEqual([got(b, 'a'), got(a, 'c')], [[], []]);
  proxy.heal();
  await waitFor('healed', () => got(b, 'a').length === 1 && got(a, 'c').length === 1);

  proxy.isolate(1, 'reset');
  assert.ok(proxy.stats.resets >= 2, `resets: ${proxy.stats.resets}`);
  await waitFor('b sees its links drop', () => [...b.t.peerStatus().values()].every((s) => !s.connected));
  // While cut, b's peers keep redialing; each new connection is closed once its Hello shows it crosses the cut.
  await sleep(300);
  assert.ok([...b.t.peerStatus().values()].every((s) => !s.connected));
  assert.equal(a.t.peerStatus().get('c')?.connected, true, 'a and c are not cut');
  proxy.heal();
  await waitFor('b reconnects', () => [...b.t.peerStatus().values()].every((s) => s.connected));
  send(a, b, 'after');
  send(b, c, 'after');
  await waitFor('flows again', () => got(b, 'a').includes('after') && got(c, 'b').includes('after'));
});
