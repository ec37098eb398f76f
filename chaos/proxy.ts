// A fault-injecting proxy for the bus between ordo nodes. Node i announces the
// bus port the proxy listens on (`--cluster ...@B_i`) and listens itself on
// another one (`--bus-port R_i`); the proxy forwards B_i to R_i. The node that
// dials (the one with the smaller id) sends its Hello frame first, so the proxy
// learns from it which node is on the other end; the acceptor's Hello names the
// acceptor. Links are cut per direction:
//
// - blackhole (default): bytes from a cut direction are held, not delivered,
//   and the sender's socket is no longer read, so its kernel buffers fill up and
//   it sees no error at all: exactly what a dropped link looks like to TCP. A
//   close from the cut side is held too. Healing delivers what was held (as TCP
//   retransmission would), unless a node gave up on the connection first.
// - reset: connections across the cut are destroyed at once and new ones are
//   closed as soon as their Hello shows they cross it.
//
// A cut from a to b with b to a open is an asymmetric (one-way) fault.

import { createServer, Socket, type Server } from 'node:net';
import { FRAME_HEADER_BYTES, FrameType } from '../src/transport/frame.js';
import { decodeHello } from '../src/transport/handshake.js';

export type CutMode = 'blackhole' | 'reset';

export interface ProxyLink {
  /** Port the proxy listens on: the bus port the other nodes dial for this node. */
  readonly listenPort: number;
  /** Port the node itself listens on for the bus. */
  readonly targetPort: number;
}

export interface ProxyStats {
  connections: number;
  bytesForwarded: number;
  /** Connections destroyed by a reset cut. */
  resets: number;
}

/** Hello frames are small; a first frame larger than this is not a Hello. */
const HELLO_BYTES_MAX = 4096;

/** One direction of one proxied connection. */
class Pipe {
  blocked = false;
  held: Buffer[] = [];
  /** The source ended (or closed) while the direction was blocked. */
  endHeld = false;
  ended = false;

  constructor(
    readonly from: Socket,
    readonly to: Socket,
  ) {}

  /** Writes what is held (once unblocked) and resumes reading. */
  flush(): void {
    if (this.blocked) return;
    const held = this.held;
    this.held = [];
    let full = false;
    for (const b of held) if (!this.to.destroyed && !this.to.write(b)) full = true;
    if (this.endHeld && !this.ended) {
      this.ended = true;
      this.to.end();
      return;
    }
    if (full) this.to.once('drain', () => this.resume());
    else this.resume();
  }

  private resume(): void {
    if (!this.blocked && !this.from.destroyed) this.from.resume();
  }
}

class Link {
  /** Index of the dialing node, once its Hello was read (null: not yet known). */
  dialer: number | null = null;
  dialerId: string | null = null;
  closed = false;
  /** Bytes from the dialer before its whole Hello arrived. */
  private helloBytes: Buffer = Buffer.alloc(0);
  private upstreamSeen = false;
  readonly forward: Pipe;
  readonly backward: Pipe;

  constructor(
    private readonly proxy: BusProxy,
    /** Index of the node this listener stands for (the acceptor). */
    readonly acceptor: number,
    readonly client: Socket,
    readonly upstream: Socket,
  ) {
    this.forward = new Pipe(client, upstream);
    this.backward = new Pipe(upstream, client);
    client.on('error', () => this.close());
    upstream.on('error', () => this.close());
    client.on('close', () => this.sourceGone(this.forward));
    upstream.on('close', () => this.sourceGone(this.backward));
    client.on('end', () => this.sourceEnded(this.forward));
    upstream.on('end', () => this.sourceEnded(this.backward));
    client.on('data', (d: Buffer) => this.fromClient(d));
    upstream.on('data', (d: Buffer) => this.fromUpstream(d));
  }

  private fromClient(d: Buffer): void {
    if (this.dialer === null && this.dialerId === null) {
      this.helloBytes = this.helloBytes.length === 0 ? d : Buffer.concat([this.helloBytes, d]);
      const id = helloId(this.helloBytes);
      if (id === undefined) {
        // Not all of the Hello yet: hold it (and read no further while it is large).
        if (this.helloBytes.length > HELLO_BYTES_MAX) this.identified(null);
        return;
      }
      this.identified(id);
      return;
    }
    this.pass(this.forward, d);
  }

  private identified(id: string | null): void {
    this.dialerId = id ?? '?';
    this.dialer = id === null ? null : this.proxy.indexOfId(id);
    const held = this.helloBytes;
    this.helloBytes = Buffer.alloc(0);
    this.proxy.applyTo(this);
    if (!this.closed) this.pass(this.forward, held);
  }

  private fromUpstream(d: Buffer): void {
    if (!this.upstreamSeen) {
      this.upstreamSeen = true;
      const id = helloId(d);
      if (id !== undefined && id !== null) this.proxy.learn(this.acceptor, id);
    }
    this.pass(this.backward, d);
  }

  private pass(pipe: Pipe, d: Buffer): void {
    if (this.closed || d.length === 0) return;
    if (pipe.blocked) {
      pipe.held.push(d);
      pipe.from.pause();
      return;
    }
    this.proxy.stats.bytesForwarded += d.length;
    if (!pipe.to.write(d)) {
      pipe.from.pause();
      pipe.to.once('drain', () => {
        if (!pipe.blocked && !pipe.from.destroyed) pipe.from.resume();
      });
    }
  }

  private sourceEnded(pipe: Pipe): void {
    if (this.closed) return;
    if (pipe.blocked || pipe.held.length > 0) {
      pipe.endHeld = true;
      return;
    }
    if (!pipe.ended) {
      pipe.ended = true;
      pipe.to.end();
    }
  }

  private sourceGone(pipe: Pipe): void {
    if (this.closed) return;
    if (pipe.blocked) {
      // The peer on the far side will not hear of it until the link heals.
      pipe.endHeld = true;
      return;
    }
    this.close();
  }

  /** Sets which directions are cut; unblocking delivers what was held. */
  setBlocked(forward: boolean, backward: boolean): void {
    for (const [pipe, blocked] of [
      [this.forward, forward],
      [this.backward, backward],
    ] as const) {
      if (pipe.blocked === blocked) continue;
      pipe.blocked = blocked;
      if (blocked) pipe.from.pause();
      else if (pipe.endHeld && pipe.from.destroyed && pipe.held.length === 0) this.close();
      else pipe.flush();
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.client.destroy();
    this.upstream.destroy();
    this.proxy.forget(this);
  }
}

/**
 * The node id in a complete Hello frame at the start of `bytes`: undefined while
 * it is incomplete, null when the bytes are not a Hello.
 */
export function helloId(bytes: Buffer): string | null | undefined {
  if (bytes.length < FRAME_HEADER_BYTES) return undefined;
  if (bytes[5] !== FrameType.Hello) return null;
  const bodyBytes = bytes.readUInt32BE(8);
  if (bodyBytes > HELLO_BYTES_MAX) return null;
  if (bytes.length < FRAME_HEADER_BYTES + bodyBytes) return undefined;
  try {
    return decodeHello(bytes.subarray(FRAME_HEADER_BYTES, FRAME_HEADER_BYTES + bodyBytes)).nodeId;
  } catch {
    return null;
  }
}

const pairKey = (from: number, to: number): string => `${from}>${to}`;

export class BusProxy {
  readonly stats: ProxyStats = { connections: 0, bytesForwarded: 0, resets: 0 };
  private readonly servers: Server[] = [];
  private readonly links = new Set<Link>();
  private readonly ids: (string | null)[];
  private cuts = new Set<string>();
  private mode: CutMode = 'blackhole';

  constructor(
    private readonly nodes: readonly ProxyLink[],
    private readonly host = '127.0.0.1',
  ) {
    this.ids = nodes.map(() => null);
  }

  async start(): Promise<void> {
    await Promise.all(
      this.nodes.map(
        (node, index) =>
          new Promise<void>((resolve, reject) => {
            const server = createServer((client) => this.accept(index, node, client));
            server.once('error', reject);
            server.listen(node.listenPort, this.host, () => {
              server.off('error', reject);
              resolve();
            });
            this.servers.push(server);
          }),
      ),
    );
  }

  private accept(index: number, node: ProxyLink, client: Socket): void {
    this.stats.connections++;
    client.setNoDelay(true);
    const upstream = new Socket();
    upstream.setNoDelay(true);
    const link = new Link(this, index, client, upstream);
    this.links.add(link);
    upstream.connect(node.targetPort, this.host);
  }

  /** Tells the proxy which node id node `index` has (learned from CLUSTER MYID or a Hello). */
  learn(index: number, id: string): void {
    if (index < 0 || index >= this.ids.length || this.ids[index] === id) return;
    this.ids[index] = id;
    // Dialers seen before their ids were known may be placeable now.
    for (const link of this.links) {
      if (link.dialer !== null || link.dialerId === null || link.dialerId === '?') continue;
      link.dialer = this.indexOfId(link.dialerId);
      if (link.dialer !== null) this.applyTo(link);
    }
  }

  /** The node index of a node id; when one node's id is still unknown, an unknown id is that node's. */
  indexOfId(id: string): number | null {
    const i = this.ids.indexOf(id);
    if (i >= 0) return i;
    const unknown = this.ids.flatMap((x, j) => (x === null ? [j] : []));
    if (unknown.length === 1 && unknown[0] !== undefined) {
      this.ids[unknown[0]] = id;
      return unknown[0];
    }
    return null;
  }

  nodeIds(): readonly (string | null)[] {
    return this.ids;
  }

  /** Is the direction from node `from` to node `to` cut? */
  isCut(from: number, to: number): boolean {
    return this.cuts.has(pairKey(from, to));
  }

  /** Replaces every cut with these directed ones (bytes from pair[0] to pair[1] stop). */
  setCuts(pairs: Iterable<readonly [number, number]>, mode: CutMode = 'blackhole'): void {
    this.cuts = new Set([...pairs].filter(([a, b]) => a !== b).map(([a, b]) => pairKey(a, b)));
    this.mode = mode;
    for (const link of [...this.links]) this.applyTo(link);
  }

  /** No cuts: everything held is delivered. */
  heal(): void {
    this.setCuts([]);
  }

  /** Cuts node i off from every other node, both ways. */
  isolate(i: number, mode: CutMode = 'blackhole'): void {
    this.setCuts(
      this.nodes.flatMap((_, j) =>
        j === i
          ? []
          : ([
              [i, j],
              [j, i],
            ] as const),
      ),
      mode,
    );
  }

  /** Cuts every link between nodes on different sides, both ways. Nodes on no side keep all their links. */
  partition(sides: readonly (readonly number[])[], mode: CutMode = 'blackhole'): void {
    const sideOf = new Map<number, number>();
    sides.forEach((side, s) => side.forEach((n) => sideOf.set(n, s)));
    const pairs: [number, number][] = [];
    for (const [a, sa] of sideOf) for (const [b, sb] of sideOf) if (sa !== sb) pairs.push([a, b]);
    this.setCuts(pairs, mode);
  }

  /** The cuts in force, as [from, to] pairs. */
  currentCuts(): [number, number][] {
    return [...this.cuts].map((k) => k.split('>').map(Number) as [number, number]);
  }

  /** @internal Applies the current cuts to one connection. */
  applyTo(link: Link): void {
    if (link.closed) return;
    if (link.dialer === null && link.dialerId !== null && link.dialerId !== '?') link.dialer = this.indexOfId(link.dialerId);
    if (link.dialer === null) {
      // Before its Hello is complete nothing passes anyway (the Hello is held
      // until it names the dialer, and the acceptor says nothing before it);
      // a dialer the proxy cannot place is never cut.
      link.setBlocked(false, false);
      return;
    }
    const forward = this.isCut(link.dialer, link.acceptor);
    const backward = this.isCut(link.acceptor, link.dialer);
    if (this.mode === 'reset' && (forward || backward)) {
      this.stats.resets++;
      link.client.resetAndDestroy();
      link.upstream.resetAndDestroy();
      link.close();
      return;
    }
    link.setBlocked(forward, backward);
  }

  /** @internal */
  forget(link: Link): void {
    this.links.delete(link);
  }

  /** Connections currently open through the proxy. */
  openConnections(): number {
    return this.links.size;
  }

  async close(): Promise<void> {
    for (const link of [...this.links]) link.close();
    await Promise.all(this.servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
    this.servers.length = 0;
  }
}
