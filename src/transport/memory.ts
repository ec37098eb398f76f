// The in-memory bus for tests: a MemoryHub connects transports in one
// process. Same interface and same delivery contract as the TCP bus (per
// pair FIFO, at most once, messages of one loop turn to one peer travel as
// one frame, bounded queues), plus faults a test controls: partitions
// (both ways or one way), isolation of a node, per-link message loss and
// delay. Time and "end of turn" come from a scheduler that can be replaced
// (for a virtual clock).

import assert from 'node:assert/strict';
import { DATA_BODY_HEADER_BYTES, DEFAULT_FRAME_BYTES_MAX, FRAME_BYTES_MAX_FLOOR, FRAME_HEADER_BYTES, messageBytesMaxFor } from './frame.js';
import { SendQueue, type SendQueueLimits } from './send-queue.js';
import { DEFAULT_SEND_QUEUE_BYTES_MAX, DEFAULT_SEND_QUEUE_MESSAGES_MAX } from './limits.js';
import type { LinkAwareTransport, MessageHandler, NodeId, PeerAddress, PeerStatus, TransportStats } from './types.js';

export interface MemoryScheduler {
  /** Run `fn` once the current loop turn's work is done. */
  readonly endOfTurn: (fn: () => void) => void;
  /** Run `fn` after `ms`; returns a function that cancels it. */
  readonly after: (ms: number, fn: () => void) => () => void;
}

export const realScheduler: MemoryScheduler = {
  endOfTurn: (fn) => {
    setImmediate(fn);
  },
  after: (ms, fn) => {
    const t = setTimeout(fn, ms);
    return () => clearTimeout(t);
  },
};

export interface MemoryHubOptions {
  /** Source of randomness for message loss, in [0, 1). Default Math.random. */
  readonly random?: () => number;
  readonly scheduler?: MemoryScheduler;
}

export interface MemoryTransportOptions {
  readonly frameBytesMax?: number;
  /** Per peer: bytes sent and not yet delivered (including delayed ones). Default as TCP. */
  readonly sendQueueBytesMax?: number;
  readonly sendQueueMessagesMax?: number;
}

export interface MemoryHubStats {
  /** Frames handed to receivers. */
  readonly deliveredFrames: number;
  readonly deliveredMessages: number;
  /** Messages lost to partitions, loss rates, or receivers that are gone or do not know the sender. */
  readonly lostMessages: number;
}

interface InFlight {
  readonly messages: Uint8Array[];
  readonly bytes: number;
}

/** One direction between two nodes. */
class Link {
  readonly inFlight: InFlight[] = [];
  inFlightBytes = 0;
  inFlightMessages = 0;
  lossRate = 0;
  delayMs = 0;
  cut = false;
}

export class MemoryHub {
  private readonly random: () => number;
  readonly scheduler: MemoryScheduler;
  private readonly transports = new Map<NodeId, MemoryTransport>();
  private readonly links = new Map<string, Link>();
  private readonly isolated = new Set<NodeId>();
  private readonly timers = new Set<() => void>();
  private deliveredFrames = 0;
  private deliveredMessages = 0;
  private lostMessages = 0;

  constructor(opts: MemoryHubOptions = {}) {
    this.random = opts.random ?? Math.random;
    this.scheduler = opts.scheduler ?? realScheduler;
  }

  /** A transport for `nodeId`; the id must not be in use by an open transport of this hub. */
  transport(nodeId: NodeId, opts: MemoryTransportOptions = {}): MemoryTransport {
    assert.ok(!this.transports.has(nodeId), `node ${nodeId} already has an open transport`);
    const t = new MemoryTransport(this, nodeId, opts);
    this.transports.set(nodeId, t);
    return t;
  }

  /** Cut both directions between a and b. */
  partition(a: NodeId, b: NodeId): void {
    this.link(a, b).cut = true;
    this.link(b, a).cut = true;
  }

  /** Cut only messages from `from` to `to`. */
  partitionOneWay(from: NodeId, to: NodeId): void {
    this.link(from, to).cut = true;
  }

  heal(a: NodeId, b: NodeId): void {
    this.link(a, b).cut = false;
    this.link(b, a).cut = false;
  }

  /** Cut a node from every other node (until healAll or unisolate). */
  isolate(id: NodeId): void {
    this.isolated.add(id);
  }

  unisolate(id: NodeId): void {
    this.isolated.delete(id);
  }

  /** Remove every partition and isolation (loss rates and delays stay). */
  healAll(): void {
    for (const l of this.links.values()) l.cut = false;
    this.isolated.clear();
  }

  /** Lose each message from `from` to `to` with probability `rate`. */
  setLossRate(from: NodeId, to: NodeId, rate: number): void {
    assert.ok(rate >= 0 && rate <= 1, 'loss rate must be within [0, 1]');
    this.link(from, to).lossRate = rate;
  }

  /** Deliver frames from `from` to `to` after `ms` (order is kept whatever the delays). */
  setDelay(from: NodeId, to: NodeId, ms: number): void {
    assert.ok(Number.isFinite(ms) && ms >= 0, 'delay must be >= 0');
    this.link(from, to).delayMs = ms;
  }

  /** Whether messages from `from` can reach `to` now. */
  canReach(from: NodeId, to: NodeId): boolean {
    const src = this.transports.get(from);
    const dst = this.transports.get(to);
    return (
      src !== undefined &&
      dst !== undefined &&
      src.knows(to) &&
      dst.knows(from) &&
      !this.isolated.has(from) &&
      !this.isolated.has(to) &&
      !(this.links.get(`${from}>${to}`)?.cut ?? false)
    );
  }

  stats(): MemoryHubStats {
    return { deliveredFrames: this.deliveredFrames, deliveredMessages: this.deliveredMessages, lostMessages: this.lostMessages };
  }

  /** Close every transport and cancel deliveries in flight. */
  async close(): Promise<void> {
    for (const cancel of this.timers) cancel();
    this.timers.clear();
    for (const t of [...this.transports.values()]) await t.close();
  }

  // ---- used by MemoryTransport ----

  /** Called by a transport's close(). */
  unregister(t: MemoryTransport): void {
    if (this.transports.get(t.nodeId) === t) this.transports.delete(t.nodeId);
  }

  inFlight(from: NodeId, to: NodeId): { bytes: number; messages: number } {
    const l = this.links.get(`${from}>${to}`);
    return l === undefined ? { bytes: 0, messages: 0 } : { bytes: l.inFlightBytes, messages: l.inFlightMessages };
  }

  /** Carry one frame; it is delivered (or lost) after the link's delay, in order. */
  carry(from: NodeId, to: NodeId, messages: Uint8Array[], bytes: number): void {
    const link = this.link(from, to);
    link.inFlight.push({ messages, bytes });
    link.inFlightBytes += bytes;
    link.inFlightMessages += messages.length;
    // Each timer delivers the oldest frame of the link, so order holds even if the delay changes.
    if (link.delayMs === 0) {
      this.scheduler.endOfTurn(() => this.deliverOldest(from, to, link));
    } else {
      const cancel = this.scheduler.after(link.delayMs, () => {
        this.timers.delete(cancel);
        this.deliverOldest(from, to, link);
      });
      this.timers.add(cancel);
    }
  }

  private deliverOldest(from: NodeId, to: NodeId, link: Link): void {
    const frame = link.inFlight.shift();
    if (frame === undefined) return; // the hub was closed
    link.inFlightBytes -= frame.bytes;
    link.inFlightMessages -= frame.messages.length;
    const dst = this.transports.get(to);
    if (dst === undefined || !this.canReach(from, to)) {
      this.lostMessages += frame.messages.length;
      return;
    }
    const kept: Uint8Array[] = [];
    for (const m of frame.messages) {
      if (link.lossRate > 0 && this.random() < link.lossRate) this.lostMessages++;
      else kept.push(m);
    }
    this.deliveredFrames++;
    this.deliveredMessages += kept.length;
    dst.receive(from, kept);
  }

  private link(from: NodeId, to: NodeId): Link {
    const key = `${from}>${to}`;
    let l = this.links.get(key);
    if (l === undefined) {
      l = new Link();
      this.links.set(key, l);
    }
    return l;
  }
}

interface MemoryPeer {
  readonly queue: SendQueue;
  sentFrames: number;
  sentMessages: number;
  receivedFrames: number;
  receivedMessages: number;
}

export class MemoryTransport implements LinkAwareTransport {
  readonly messageBytesMax: number;
  private readonly frameBytesMax: number;
  /** Bounds of each peer's send queue (messages in flight in the hub count too). */
  private readonly queueLimits: SendQueueLimits;
  private readonly peers = new Map<NodeId, MemoryPeer>();
  private readonly handlers = new Set<MessageHandler>();
  private flushScheduled = false;
  private closed = false;
  private unknownPeerDrops = 0;
  private oversizeDrops = 0;

  constructor(
    private readonly hub: MemoryHub,
    readonly nodeId: NodeId,
    opts: MemoryTransportOptions,
  ) {
    this.frameBytesMax = opts.frameBytesMax ?? DEFAULT_FRAME_BYTES_MAX;
    assert.ok(Number.isSafeInteger(this.frameBytesMax) && this.frameBytesMax >= FRAME_BYTES_MAX_FLOOR, 'frameBytesMax too small');
    this.messageBytesMax = messageBytesMaxFor(this.frameBytesMax);
    this.queueLimits = {
      bytesMax: opts.sendQueueBytesMax ?? DEFAULT_SEND_QUEUE_BYTES_MAX,
      messagesMax: opts.sendQueueMessagesMax ?? DEFAULT_SEND_QUEUE_MESSAGES_MAX,
    };
    assert.ok(this.queueLimits.bytesMax >= this.frameBytesMax, 'sendQueueBytesMax must be at least frameBytesMax');
    assert.ok(this.queueLimits.messagesMax > 0, 'sendQueueMessagesMax must be positive');
  }

  knows(id: NodeId): boolean {
    return !this.closed && this.peers.has(id);
  }

  /** Whether the hub carries messages to `peer` and back now (registered, a peer of each other, neither isolated, no cut either way). */
  isConnected(peer: NodeId): boolean {
    return !this.closed && this.hub.canReach(this.nodeId, peer) && this.hub.canReach(peer, this.nodeId);
  }

  send(to: NodeId, payload: Uint8Array): boolean {
    const peer = this.closed ? undefined : this.peers.get(to);
    if (peer === undefined) {
      this.unknownPeerDrops++;
      return false;
    }
    if (payload.length > this.messageBytesMax) {
      this.oversizeDrops++;
      return false;
    }
    if (!peer.queue.offer(payload, this.queueLimits, this.hub.inFlight(this.nodeId, to))) return false;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      this.hub.scheduler.endOfTurn(() => this.flush());
    }
    return true;
  }

  onMessage(handler: MessageHandler): () => void {
    const h: MessageHandler = (from, payload) => handler(from, payload);
    this.handlers.add(h);
    return () => {
      this.handlers.delete(h);
    };
  }

  /** Addresses are ignored: the hub routes by node id. */
  setPeers(peers: ReadonlyMap<NodeId, PeerAddress>): void {
    if (this.closed) return;
    for (const id of [...this.peers.keys()]) if (!peers.has(id)) this.peers.delete(id);
    for (const id of peers.keys()) {
      if (id === this.nodeId || this.peers.has(id)) continue;
      this.peers.set(id, { queue: new SendQueue(), sentFrames: 0, sentMessages: 0, receivedFrames: 0, receivedMessages: 0 });
    }
  }

  peerStatus(): Map<NodeId, PeerStatus> {
    const out = new Map<NodeId, PeerStatus>();
    for (const [id, p] of this.peers) {
      const connected = this.isConnected(id);
      const dialer = this.nodeId < id;
      const inFlight = this.hub.inFlight(this.nodeId, id);
      out.set(id, {
        state: connected ? 'connected' : dialer ? 'connecting' : 'waiting',
        connected,
        dialer,
        queuedBytes: p.queue.bytes + inFlight.bytes,
        queuedMessages: p.queue.messages + inFlight.messages,
        sentFrames: p.sentFrames,
        sentMessages: p.sentMessages,
        receivedFrames: p.receivedFrames,
        receivedMessages: p.receivedMessages,
        droppedMessages: p.queue.droppedMessages,
        droppedBytes: p.queue.droppedBytes,
        connects: 0,
        failedAttempts: 0,
        lastBackoffMs: 0,
        lastError: null,
      });
    }
    return out;
  }

  stats(): TransportStats {
    return {
      unknownPeerDrops: this.unknownPeerDrops,
      oversizeDrops: this.oversizeDrops,
      rejectedConnections: 0,
      protocolErrors: 0,
      lastRejectReason: null,
    };
  }

  close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      this.peers.clear();
      this.handlers.clear();
      this.hub.unregister(this);
    }
    return Promise.resolve();
  }

  /** End of turn: one frame per peer (more only past the frame limit), copies of the payloads. */
  private flush(): void {
    this.flushScheduled = false;
    if (this.closed) return;
    const bodyBytesMax = this.frameBytesMax - FRAME_HEADER_BYTES - DATA_BODY_HEADER_BYTES;
    for (const [id, peer] of this.peers) {
      for (const batch of peer.queue.drain(bodyBytesMax)) {
        peer.sentFrames++;
        peer.sentMessages += batch.messages.length;
        this.hub.carry(
          this.nodeId,
          id,
          batch.messages.map((m) => Uint8Array.from(m)),
          batch.bytes,
        );
      }
    }
  }

  /** Called by the hub with one frame's messages. */
  receive(from: NodeId, messages: readonly Uint8Array[]): void {
    const peer = this.peers.get(from);
    if (this.closed || peer === undefined) return;
    peer.receivedFrames++;
    for (const m of messages) {
      if (this.closed || this.peers.get(from) !== peer) return;
      peer.receivedMessages++;
      for (const h of this.handlers) h(from, m);
    }
  }
}
