// The TCP bus. One connection per pair of nodes, dialed by the node with the
// smaller id; every message to a peer in one loop turn goes out as one data
// frame; a handshake checks cluster id, node ids and (with a cluster secret)
// HMAC proofs over both sides' nonces before any message passes. Every queue
// and buffer is bounded; a misbehaving peer loses its connection, never the
// node. See docs/transport.md.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { backoffDelayMs } from './backoff.js';
import {
  DEFAULT_BUS_HOST,
  DEFAULT_CLOSE_TIMEOUT_MS,
  DEFAULT_CLUSTER_ID,
  DEFAULT_HANDSHAKE_TIMEOUT_MS,
  DEFAULT_IDLE_TIMEOUT_MS,
  DEFAULT_PENDING_CONNECTIONS_MAX,
  DEFAULT_PING_INTERVAL_MS,
  DEFAULT_RECONNECT_BASE_MS,
  DEFAULT_RECONNECT_DELAY_MS_MAX,
  DEFAULT_SEND_QUEUE_BYTES_MAX,
  DEFAULT_SEND_QUEUE_MESSAGES_MAX,
  DEFAULT_WRITE_BUFFER_BYTES_MAX,
  WRITE_BUFFER_BYTES_MAX_FLOOR,
} from './limits.js';
import {
  DEFAULT_FRAME_BYTES_MAX,
  FRAME_BYTES_MAX_CEILING,
  FRAME_BYTES_MAX_FLOOR,
  FRAME_HEADER_BYTES,
  DATA_BODY_HEADER_BYTES,
  FrameDecoder,
  FrameType,
  HANDSHAKE_FRAME_BYTES_MAX,
  ProtocolError,
  decodeDataBody,
  encodeDataFrame,
  encodeFrame,
  messageBytesMaxFor,
} from './frame.js';
import type { Frame } from './frame.js';
import { SendQueue, type SendQueueLimits } from './send-queue.js';
import { NONCE_BYTES, checkId, computeProof, decodeAuth, decodeHello, decodeRefuse, encodeAuth, encodeHello, encodeRefuse, proofMatches } from './handshake.js';
import type { Hello, ProofContext } from './handshake.js';
import type { MessageHandler, NodeId, PeerAddress, PeerState, PeerStatus, Transport, TransportLog, TransportStats } from './types.js';

export interface TcpTransportOptions {
  readonly nodeId: NodeId;
  /** Port to listen on for peers; 0 picks a free one (see address()). */
  readonly port: number;
  /** Address to listen on. Default DEFAULT_BUS_HOST (loopback only). */
  readonly host?: string;
  /** Nodes of different clusters refuse each other. Default DEFAULT_CLUSTER_ID. */
  readonly clusterId?: string;
  /** The cluster secret; null or empty for none. Nodes with and without one refuse each other. */
  readonly secret?: string | Uint8Array | null;
  readonly frameBytesMax?: number;
  readonly sendQueueBytesMax?: number;
  readonly sendQueueMessagesMax?: number;
  readonly writeBufferBytesMax?: number;
  readonly reconnectBaseMs?: number;
  readonly reconnectDelayMsMax?: number;
  readonly handshakeTimeoutMs?: number;
  readonly pingIntervalMs?: number;
  readonly idleTimeoutMs?: number;
  readonly pendingConnectionsMax?: number;
  readonly closeTimeoutMs?: number;
  /** Source of reconnect jitter, in [0, 1). Default Math.random. */
  readonly random?: () => number;
  /** Default: one line to stderr per event. */
  readonly log?: TransportLog;
}

type Role = 'dialer' | 'acceptor';
/**
 * Where a connection is in its life:
 * connecting (dialer, TCP connect) → hello (waiting for the other side's Hello)
 * → auth (acceptor, waiting for the dialer's proof) / welcome (dialer, waiting
 * for the acceptor's verdict) → open → closed.
 */
type Phase = 'connecting' | 'hello' | 'auth' | 'welcome' | 'open' | 'closed';

class Conn {
  phase: Phase;
  readonly decoder = new FrameDecoder(HANDSHAKE_FRAME_BYTES_MAX);
  readonly nonce: Uint8Array = new Uint8Array(randomBytes(NONCE_BYTES));
  peerNonce: Uint8Array | null = null;
  /** Dialer: the peer it dialed. Acceptor: the id the peer claimed in its Hello. */
  peerId: NodeId | null;
  handshakeTimer: NodeJS.Timeout | null = null;
  closeTimer: NodeJS.Timeout | null = null;
  lastReceivedMs: number;
  lastSentMs: number;
  /** Why the connection is closing, once it is. */
  closeReason: string | null = null;

  isClosed(): boolean {
    return this.phase === 'closed';
  }

  constructor(
    readonly socket: net.Socket,
    readonly role: Role,
    peerId: NodeId | null,
    nowMs: number,
  ) {
    this.phase = role === 'dialer' ? 'connecting' : 'hello';
    this.peerId = peerId;
    this.lastReceivedMs = nowMs;
    this.lastSentMs = nowMs;
  }
}

class Peer {
  address: PeerAddress;
  /** The authenticated connection messages flow over. */
  conn: Conn | null = null;
  /** Dialer only: the dial or handshake in progress. */
  attempt: Conn | null = null;
  retryTimer: NodeJS.Timeout | null = null;
  /** Redials scheduled since the last successful handshake (drives the backoff). */
  backoffAttempt = 0;
  /** Messages accepted by send() and not yet framed. */
  readonly queue = new SendQueue();
  sentFrames = 0;
  sentMessages = 0;
  receivedFrames = 0;
  receivedMessages = 0;
  connects = 0;
  failedAttempts = 0;
  lastBackoffMs = 0;
  lastError: string | null = null;

  constructor(
    readonly id: NodeId,
    address: PeerAddress,
    readonly dialer: boolean,
  ) {
    this.address = address;
  }
}

function positiveInt(name: string, v: number): number {
  if (!Number.isSafeInteger(v) || v <= 0) throw new RangeError(`${name} must be a positive integer, got ${v}`);
  return v;
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

export class TcpTransport implements Transport {
  readonly nodeId: NodeId;
  readonly clusterId: string;
  readonly messageBytesMax: number;
  private readonly host: string;
  private readonly listenPort: number;
  private readonly secret: Uint8Array | null;
  private readonly frameBytesMax: number;
  /** Bounds of each peer's send queue. */
  private readonly queueLimits: SendQueueLimits;
  private readonly writeBufferBytesMax: number;
  private readonly reconnectBaseMs: number;
  private readonly reconnectDelayMsMax: number;
  private readonly handshakeTimeoutMs: number;
  private readonly pingIntervalMs: number;
  private readonly idleTimeoutMs: number;
  private readonly pendingConnectionsMax: number;
  private readonly closeTimeoutMs: number;
  private readonly random: () => number;
  private readonly log: TransportLog;

  private readonly server: net.Server;
  private readonly peers = new Map<NodeId, Peer>();
  private readonly handlers = new Set<MessageHandler>();
  /** Every live connection, in any phase. */
  private readonly conns = new Set<Conn>();
  /** Inbound connections not yet open. */
  private readonly inboundHandshakes = new Set<Conn>();
  private flushHandle: NodeJS.Immediate | null = null;
  private pingTimer: NodeJS.Timeout | null = null;
  private closed = false;
  private closing: Promise<void> | null = null;

  private unknownPeerDrops = 0;
  private oversizeDrops = 0;
  private rejectedConnections = 0;
  private protocolErrors = 0;
  private lastRejectReason: string | null = null;
  private lastLoggedRefusal: string | null = null;

  private constructor(opts: TcpTransportOptions) {
    checkId('node id', opts.nodeId);
    this.nodeId = opts.nodeId;
    this.clusterId = opts.clusterId ?? DEFAULT_CLUSTER_ID;
    checkId('cluster id', this.clusterId);
    this.host = opts.host ?? DEFAULT_BUS_HOST;
    if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) throw new RangeError(`bad bus port ${opts.port}`);
    this.listenPort = opts.port;
    const secret = opts.secret ?? null;
    this.secret = secret === null || secret.length === 0 ? null : typeof secret === 'string' ? new TextEncoder().encode(secret) : Uint8Array.from(secret);
    this.frameBytesMax = positiveInt('frameBytesMax', opts.frameBytesMax ?? DEFAULT_FRAME_BYTES_MAX);
    if (this.frameBytesMax < FRAME_BYTES_MAX_FLOOR || this.frameBytesMax > FRAME_BYTES_MAX_CEILING) {
      throw new RangeError(`frameBytesMax must be within [${FRAME_BYTES_MAX_FLOOR}, ${FRAME_BYTES_MAX_CEILING}]`);
    }
    this.messageBytesMax = messageBytesMaxFor(this.frameBytesMax);
    const sendQueueBytesMax = positiveInt('sendQueueBytesMax', opts.sendQueueBytesMax ?? DEFAULT_SEND_QUEUE_BYTES_MAX);
    if (sendQueueBytesMax < this.frameBytesMax) throw new RangeError('sendQueueBytesMax must be at least frameBytesMax');
    this.queueLimits = {
      bytesMax: sendQueueBytesMax,
      messagesMax: positiveInt('sendQueueMessagesMax', opts.sendQueueMessagesMax ?? DEFAULT_SEND_QUEUE_MESSAGES_MAX),
    };
    this.writeBufferBytesMax = positiveInt('writeBufferBytesMax', opts.writeBufferBytesMax ?? DEFAULT_WRITE_BUFFER_BYTES_MAX);
    // At or above the socket's high-water mark, a full buffer always means a 'drain' event will come.
    if (this.writeBufferBytesMax < WRITE_BUFFER_BYTES_MAX_FLOOR) {
      throw new RangeError(`writeBufferBytesMax must be at least ${WRITE_BUFFER_BYTES_MAX_FLOOR}`);
    }
    this.reconnectBaseMs = positiveInt('reconnectBaseMs', opts.reconnectBaseMs ?? DEFAULT_RECONNECT_BASE_MS);
    this.reconnectDelayMsMax = positiveInt('reconnectDelayMsMax', opts.reconnectDelayMsMax ?? DEFAULT_RECONNECT_DELAY_MS_MAX);
    if (this.reconnectDelayMsMax < this.reconnectBaseMs) throw new RangeError('reconnectDelayMsMax must be at least reconnectBaseMs');
    this.handshakeTimeoutMs = positiveInt('handshakeTimeoutMs', opts.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS);
    this.pingIntervalMs = positiveInt('pingIntervalMs', opts.pingIntervalMs ?? DEFAULT_PING_INTERVAL_MS);
    this.idleTimeoutMs = positiveInt('idleTimeoutMs', opts.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS);
    if (this.idleTimeoutMs <= this.pingIntervalMs) throw new RangeError('idleTimeoutMs must exceed pingIntervalMs');
    this.pendingConnectionsMax = positiveInt('pendingConnectionsMax', opts.pendingConnectionsMax ?? DEFAULT_PENDING_CONNECTIONS_MAX);
    this.closeTimeoutMs = positiveInt('closeTimeoutMs', opts.closeTimeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS);
    this.random = opts.random ?? Math.random;
    this.log = opts.log ?? ((line) => process.stderr.write(`ordo: bus: ${line}\n`));
    this.server = net.createServer((socket) => this.accept(socket));
  }

  /** Create a transport and start listening. Rejects if the port cannot be bound. */
  static async start(opts: TcpTransportOptions): Promise<TcpTransport> {
    const t = new TcpTransport(opts);
    await new Promise<void>((resolve, reject) => {
      const onError = (e: Error): void => reject(e);
      t.server.once('error', onError);
      t.server.listen({ host: t.host, port: t.listenPort }, () => {
        t.server.off('error', onError);
        resolve();
      });
    });
    t.server.on('error', (e) => t.log(`${t.nodeId}: listener error: ${errorText(e)}`));
    t.pingTimer = setInterval(() => t.checkLiveness(), t.pingIntervalMs);
    return t;
  }

  /** The address peers should dial (the bound port when started with port 0). */
  address(): PeerAddress {
    const a = this.server.address();
    assert.ok(a !== null && typeof a === 'object', 'transport is not listening');
    return { host: this.host, port: a.port };
  }

  // ---- the Transport interface ----

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
    const inSocket = peer.conn !== null ? peer.conn.socket.writableLength : 0;
    if (!peer.queue.offer(payload, this.queueLimits, { bytes: inSocket, messages: 0 })) return false;
    if (peer.conn !== null) this.scheduleFlush();
    return true;
  }

  /** Whether messages to `peer` flow now (handshake done); a message sent while not connected waits for the connection. */
  isConnected(peer: NodeId): boolean {
    return !this.closed && (this.peers.get(peer)?.conn ?? null) !== null;
  }

  onMessage(handler: MessageHandler): () => void {
    // Wrap so that the same function may be added twice and removed once.
    const h: MessageHandler = (from, payload) => handler(from, payload);
    this.handlers.add(h);
    return () => {
      this.handlers.delete(h);
    };
  }

  setPeers(peers: ReadonlyMap<NodeId, PeerAddress>): void {
    if (this.closed) return;
    for (const [id, address] of peers) {
      checkId('peer id', id);
      if (!Number.isInteger(address.port) || address.port < 1 || address.port > 65535) {
        throw new RangeError(`bad port ${address.port} for peer ${JSON.stringify(id)}`);
      }
    }
    for (const [id, peer] of this.peers) {
      if (!peers.has(id) || id === this.nodeId) this.removePeer(peer);
    }
    for (const [id, address] of peers) {
      if (id === this.nodeId) continue;
      const existing = this.peers.get(id);
      if (existing !== undefined) {
        existing.address = { host: address.host, port: address.port };
        continue;
      }
      const peer = new Peer(id, { host: address.host, port: address.port }, this.nodeId < id);
      this.peers.set(id, peer);
      if (peer.dialer) this.dial(peer);
    }
  }

  peerStatus(): Map<NodeId, PeerStatus> {
    const out = new Map<NodeId, PeerStatus>();
    for (const [id, p] of this.peers) {
      let state: PeerState;
      if (p.conn !== null) state = 'connected';
      else if (!p.dialer) state = 'waiting';
      else if (p.retryTimer !== null) state = 'backoff';
      else state = 'connecting';
      out.set(id, {
        state,
        connected: p.conn !== null,
        dialer: p.dialer,
        queuedBytes: this.queuedBytes(p),
        queuedMessages: p.queue.messages,
        sentFrames: p.sentFrames,
        sentMessages: p.sentMessages,
        receivedFrames: p.receivedFrames,
        receivedMessages: p.receivedMessages,
        droppedMessages: p.queue.droppedMessages,
        droppedBytes: p.queue.droppedBytes,
        connects: p.connects,
        failedAttempts: p.failedAttempts,
        lastBackoffMs: p.lastBackoffMs,
        lastError: p.lastError,
      });
    }
    return out;
  }

  stats(): TransportStats {
    return {
      unknownPeerDrops: this.unknownPeerDrops,
      oversizeDrops: this.oversizeDrops,
      rejectedConnections: this.rejectedConnections,
      protocolErrors: this.protocolErrors,
      lastRejectReason: this.lastRejectReason,
    };
  }

  close(): Promise<void> {
    if (this.closing !== null) return this.closing;
    // Hand what this turn queued to open sockets, so a graceful stop delivers it.
    this.flush();
    this.closed = true;
    if (this.flushHandle !== null) clearImmediate(this.flushHandle);
    this.flushHandle = null;
    if (this.pingTimer !== null) clearInterval(this.pingTimer);
    this.pingTimer = null;
    for (const peer of this.peers.values()) {
      if (peer.retryTimer !== null) clearTimeout(peer.retryTimer);
      peer.retryTimer = null;
      peer.queue.clear();
    }
    const socketsClosed: Promise<void>[] = [];
    for (const conn of [...this.conns]) {
      socketsClosed.push(new Promise<void>((resolve) => conn.socket.once('close', () => resolve())));
      this.shutdown(conn, 'transport closed', false);
    }
    const serverClosed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.closing = Promise.all([serverClosed, ...socketsClosed]).then(() => {
      this.peers.clear();
      this.handlers.clear();
      assert.equal(this.conns.size, 0, 'connections left after close');
    });
    return this.closing;
  }

  // ---- sending ----

  private queuedBytes(peer: Peer): number {
    return peer.queue.bytes + (peer.conn !== null ? peer.conn.socket.writableLength : 0);
  }

  private scheduleFlush(): void {
    if (this.flushHandle !== null || this.closed) return;
    this.flushHandle = setImmediate(() => {
      this.flushHandle = null;
      this.flush();
    });
  }

  private flush(): void {
    for (const peer of this.peers.values()) this.flushPeer(peer);
  }

  /** Write the peer's pending messages as few frames as the limit allows, if the socket has room. */
  private flushPeer(peer: Peer): void {
    const conn = peer.conn;
    if (conn === null || conn.phase !== 'open' || peer.queue.messages === 0) return;
    if (conn.socket.writableLength >= this.writeBufferBytesMax) return; // resumed on 'drain'
    for (const batch of peer.queue.drain(this.frameBytesMax - FRAME_HEADER_BYTES - DATA_BODY_HEADER_BYTES)) {
      this.writeData(peer, conn, batch.messages);
    }
  }

  private writeData(peer: Peer, conn: Conn, messages: Uint8Array[]): void {
    assert.ok(messages.length > 0);
    const frame = encodeDataFrame(messages);
    assert.ok(frame.length <= this.frameBytesMax);
    this.write(conn, frame);
    peer.sentFrames++;
    peer.sentMessages += messages.length;
  }

  private write(conn: Conn, frame: Uint8Array): void {
    conn.socket.write(frame);
    conn.lastSentMs = performance.now();
  }

  // ---- connections ----

  private dial(peer: Peer): void {
    assert.ok(peer.dialer && peer.conn === null && peer.attempt === null && peer.retryTimer === null);
    if (this.closed) return;
    const socket = net.connect({ host: peer.address.host, port: peer.address.port });
    const conn = new Conn(socket, 'dialer', peer.id, performance.now());
    peer.attempt = conn;
    this.track(conn);
    socket.once('connect', () => {
      if (conn.phase !== 'connecting') return;
      conn.phase = 'hello';
      this.write(conn, encodeFrame(FrameType.Hello, encodeHello(this.hello(conn, new Uint8Array(0)))));
    });
  }

  private accept(socket: net.Socket): void {
    if (this.closed) {
      socket.destroy();
      return;
    }
    if (this.inboundHandshakes.size >= this.pendingConnectionsMax) {
      this.reject(`too many connections in handshake (limit ${this.pendingConnectionsMax}) from ${socket.remoteAddress ?? '?'}`);
      socket.destroy();
      return;
    }
    const conn = new Conn(socket, 'acceptor', null, performance.now());
    this.inboundHandshakes.add(conn);
    this.track(conn);
  }

  /** Wire up a new socket's events and the handshake deadline. */
  private track(conn: Conn): void {
    this.conns.add(conn);
    const socket = conn.socket;
    socket.setNoDelay(true);
    conn.handshakeTimer = setTimeout(() => {
      conn.handshakeTimer = null;
      this.fail(conn, `handshake not done within ${this.handshakeTimeoutMs} ms`, false);
    }, this.handshakeTimeoutMs);
    socket.on('data', (chunk: Buffer) => this.onData(conn, chunk));
    socket.on('drain', () => {
      const peer = this.peerOf(conn);
      if (peer !== null) this.flushPeer(peer);
    });
    socket.on('error', (e) => {
      if (conn.closeReason === null) conn.closeReason = errorText(e);
    });
    socket.on('close', () => this.onClose(conn));
  }

  /** The peer whose open connection this is, if it still is. */
  private peerOf(conn: Conn): Peer | null {
    if (conn.phase !== 'open' || conn.peerId === null) return null;
    const peer = this.peers.get(conn.peerId);
    return peer !== undefined && peer.conn === conn ? peer : null;
  }

  private onData(conn: Conn, chunk: Buffer): void {
    if (conn.phase === 'closed') return;
    conn.lastReceivedMs = performance.now();
    conn.decoder.push(chunk);
    // One frame at a time: a frame may change the phase and the frame limit for the next.
    for (;;) {
      if (conn.isClosed()) return; // the previous frame closed it
      try {
        const frame = conn.decoder.next();
        if (frame === null) return;
        this.onFrame(conn, frame);
      } catch (e) {
        this.protocolFailure(conn, e);
        return;
      }
    }
  }

  private protocolFailure(conn: Conn, e: unknown): void {
    if (!(e instanceof ProtocolError)) throw e;
    if (conn.phase === 'open') this.protocolErrors++;
    this.fail(conn, `protocol error: ${e.message}`, false);
  }

  private onFrame(conn: Conn, frame: Frame): void {
    if (frame.type === FrameType.Refuse && conn.phase !== 'open') {
      this.fail(conn, `refused by peer: ${decodeRefuse(frame.body)}`, false);
      return;
    }
    switch (conn.phase) {
      case 'hello':
        if (frame.type !== FrameType.Hello) throw new ProtocolError(`expected hello, got frame type ${frame.type}`);
        if (conn.role === 'acceptor') this.acceptorGotHello(conn, decodeHello(frame.body));
        else this.dialerGotHello(conn, decodeHello(frame.body));
        return;
      case 'auth':
        if (frame.type !== FrameType.Auth) throw new ProtocolError(`expected auth, got frame type ${frame.type}`);
        this.acceptorGotAuth(conn, decodeAuth(frame.body));
        return;
      case 'welcome':
        if (frame.type !== FrameType.Welcome) throw new ProtocolError(`expected welcome, got frame type ${frame.type}`);
        if (frame.body.length !== 0) throw new ProtocolError('welcome frame with a body');
        this.open(conn);
        return;
      case 'open':
        this.onOpenFrame(conn, frame);
        return;
      case 'connecting':
      case 'closed':
        throw new ProtocolError(`unexpected frame in phase ${conn.phase}`);
    }
  }

  private onOpenFrame(conn: Conn, frame: Frame): void {
    if (frame.type === FrameType.Ping) {
      if (frame.body.length !== 0) throw new ProtocolError('ping frame with a body');
      return;
    }
    if (frame.type !== FrameType.Data) throw new ProtocolError(`unexpected frame type ${frame.type} on an open connection`);
    const messages = decodeDataBody(frame.body);
    const peer = this.peerOf(conn);
    if (peer === null) return;
    peer.receivedFrames++;
    for (const m of messages) {
      // A handler may close the transport or drop this peer: stop delivering if so.
      if (peer.conn !== conn || this.closed) return;
      peer.receivedMessages++;
      for (const h of this.handlers) h(peer.id, m);
    }
  }

  private hello(conn: Conn, proof: Uint8Array): Hello {
    return { hasSecret: this.secret !== null, nonce: conn.nonce, nodeId: this.nodeId, clusterId: this.clusterId, proof };
  }

  /** Reasons to refuse a peer's Hello that apply to both roles, or null. */
  private helloProblem(hello: Hello): string | null {
    if (hello.clusterId !== this.clusterId) {
      return `cluster id mismatch: this node is in ${JSON.stringify(this.clusterId)}, the peer in ${JSON.stringify(hello.clusterId)}`;
    }
    if (hello.nodeId === this.nodeId) return `peer claims this node's own id ${JSON.stringify(this.nodeId)}`;
    if (this.secret !== null && !hello.hasSecret) return 'peer has no cluster secret and this node requires one';
    if (this.secret === null && hello.hasSecret) return 'peer uses a cluster secret and this node has none';
    return null;
  }

  private acceptorGotHello(conn: Conn, hello: Hello): void {
    conn.peerId = hello.nodeId;
    const problem =
      this.helloProblem(hello) ??
      (!this.peers.has(hello.nodeId)
        ? `unknown node id ${JSON.stringify(hello.nodeId)}`
        : hello.nodeId > this.nodeId
          ? `wrong dial direction: ${JSON.stringify(this.nodeId)} dials ${JSON.stringify(hello.nodeId)}, not the reverse`
          : null);
    if (problem !== null) {
      this.fail(conn, problem, true);
      return;
    }
    conn.peerNonce = hello.nonce;
    const proof = this.secret === null ? new Uint8Array(0) : computeProof(this.secret, 'acceptor', this.proofContext(conn));
    this.write(conn, encodeFrame(FrameType.Hello, encodeHello(this.hello(conn, proof))));
    conn.phase = 'auth';
  }

  private dialerGotHello(conn: Conn, hello: Hello): void {
    let problem = this.helloProblem(hello);
    if (problem === null && hello.nodeId !== conn.peerId) {
      problem = `dialed ${JSON.stringify(conn.peerId)} but found ${JSON.stringify(hello.nodeId)}`;
    }
    if (problem === null) {
      conn.peerNonce = hello.nonce;
      if (this.secret !== null) {
        const expected = computeProof(this.secret, 'acceptor', this.proofContext(conn));
        if (!proofMatches(expected, hello.proof)) problem = 'authentication failed (cluster secrets differ)';
      } else if (hello.proof.length !== 0) {
        problem = 'peer sent a proof without a cluster secret';
      }
    }
    if (problem !== null) {
      this.fail(conn, problem, true);
      return;
    }
    const proof = this.secret === null ? new Uint8Array(0) : computeProof(this.secret, 'dialer', this.proofContext(conn));
    this.write(conn, encodeFrame(FrameType.Auth, encodeAuth(proof)));
    conn.phase = 'welcome';
  }

  private acceptorGotAuth(conn: Conn, proof: Uint8Array): void {
    let problem: string | null = null;
    if (this.secret !== null) {
      const expected = computeProof(this.secret, 'dialer', this.proofContext(conn));
      if (!proofMatches(expected, proof)) problem = 'authentication failed (cluster secrets differ)';
    } else if (proof.length !== 0) {
      problem = 'peer sent a proof without a cluster secret';
    }
    // The peer may have been removed while the handshake ran.
    if (problem === null && (conn.peerId === null || !this.peers.has(conn.peerId))) {
      problem = `unknown node id ${JSON.stringify(conn.peerId)}`;
    }
    if (problem !== null) {
      this.fail(conn, problem, true);
      return;
    }
    this.write(conn, encodeFrame(FrameType.Welcome, new Uint8Array(0)));
    this.open(conn);
  }

  private proofContext(conn: Conn): ProofContext {
    assert.ok(conn.peerId !== null && conn.peerNonce !== null);
    const dialer = conn.role === 'dialer';
    return {
      clusterId: this.clusterId,
      dialerId: dialer ? this.nodeId : conn.peerId,
      acceptorId: dialer ? conn.peerId : this.nodeId,
      dialerNonce: dialer ? conn.nonce : conn.peerNonce,
      acceptorNonce: dialer ? conn.peerNonce : conn.nonce,
    };
  }

  /** The handshake succeeded: messages may flow. */
  private open(conn: Conn): void {
    assert.ok(conn.peerId !== null);
    const peer = this.peers.get(conn.peerId);
    if (peer === undefined || (conn.role === 'dialer' && peer.attempt !== conn)) {
      this.fail(conn, 'peer removed during the handshake', false);
      return;
    }
    if (conn.handshakeTimer !== null) clearTimeout(conn.handshakeTimer);
    conn.handshakeTimer = null;
    this.inboundHandshakes.delete(conn);
    if (conn.role === 'dialer') {
      peer.attempt = null;
    } else if (peer.conn !== null) {
      // The peer redialed: its old connection is dead or dying. Nothing more is read from it.
      this.shutdown(peer.conn, 'replaced by a new connection from the peer', false);
    }
    conn.phase = 'open';
    conn.decoder.setLimit(this.frameBytesMax);
    peer.conn = conn;
    peer.connects++;
    peer.failedAttempts = 0;
    peer.backoffAttempt = 0;
    peer.lastError = null;
    this.log(`${this.nodeId}: connected to ${peer.id} (${conn.role === 'dialer' ? 'dialed' : 'accepted'})`);
    this.flushPeer(peer);
  }

  /** Close a connection that failed; with `refuse`, tell the peer why first. */
  private fail(conn: Conn, reason: string, refuse: boolean): void {
    if (conn.phase === 'closed') return;
    if (conn.phase !== 'open') {
      this.rejectedConnections++;
      this.lastRejectReason = conn.peerId === null ? reason : `${conn.peerId}: ${reason}`;
    }
    this.shutdown(conn, reason, refuse);
  }

  private reject(reason: string): void {
    this.rejectedConnections++;
    this.lastRejectReason = reason;
    this.logRefusal(reason);
  }

  /** Log a refused inbound connection, once per distinct reason in a row (a misconfigured peer redials forever). */
  private logRefusal(reason: string): void {
    if (reason === this.lastLoggedRefusal) return;
    this.lastLoggedRefusal = reason;
    this.log(`${this.nodeId}: refused a connection: ${reason}`);
  }

  /** Start closing a connection; onClose does the bookkeeping once the socket is gone. */
  private shutdown(conn: Conn, reason: string, refuse: boolean): void {
    if (conn.phase === 'closed') return;
    const wasOpen = conn.phase === 'open';
    const wasConnecting = conn.phase === 'connecting';
    conn.phase = 'closed';
    conn.closeReason = reason;
    if (conn.handshakeTimer !== null) clearTimeout(conn.handshakeTimer);
    conn.handshakeTimer = null;
    const socket = conn.socket;
    if (wasConnecting) {
      socket.destroy();
    } else if (!wasOpen && refuse && !socket.destroyed) {
      socket.end(encodeFrame(FrameType.Refuse, encodeRefuse(reason)));
    } else if (!socket.destroyed) {
      socket.end();
    }
    // A peer that does not close its side within the grace period is cut off.
    conn.closeTimer = setTimeout(() => socket.destroy(), this.closeTimeoutMs);
    // Bookkeeping for the peer happens now, so a redial or replacement is not held up.
    this.detach(conn, reason, wasOpen);
  }

  private onClose(conn: Conn): void {
    if (conn.closeTimer !== null) clearTimeout(conn.closeTimer);
    conn.closeTimer = null;
    if (conn.handshakeTimer !== null) clearTimeout(conn.handshakeTimer);
    conn.handshakeTimer = null;
    this.conns.delete(conn);
    this.inboundHandshakes.delete(conn);
    if (conn.phase !== 'closed') {
      // Closed from the other side or by a socket error.
      const wasOpen = conn.phase === 'open';
      conn.phase = 'closed';
      const reason = conn.closeReason ?? 'connection closed by peer';
      conn.closeReason = reason;
      if (!wasOpen && conn.role === 'acceptor') {
        this.rejectedConnections++;
        this.lastRejectReason = reason;
      }
      this.detach(conn, reason, wasOpen);
    }
  }

  /** Unhook a closed connection from its peer and redial if this side dials. */
  private detach(conn: Conn, reason: string, wasOpen: boolean): void {
    assert.equal(conn.phase, 'closed');
    const peer = conn.peerId === null ? undefined : this.peers.get(conn.peerId);
    if (conn.role === 'acceptor') {
      this.inboundHandshakes.delete(conn);
      if (peer === undefined) {
        if (!wasOpen && reason !== 'transport closed') {
          const who = conn.peerId === null ? `from ${conn.socket.remoteAddress ?? '?'}` : `from ${JSON.stringify(conn.peerId)}`;
          this.logRefusal(`${who}: ${reason}`);
        }
        return;
      }
      if (peer.conn === conn) {
        peer.conn = null;
        peer.lastError = reason;
        this.log(`${this.nodeId}: disconnected from ${peer.id}: ${reason}`);
      } else if (!wasOpen) {
        peer.failedAttempts++;
        if (peer.lastError !== reason) this.log(`${this.nodeId}: connection from ${peer.id} failed: ${reason}`);
        peer.lastError = reason;
      }
      return;
    }
    if (peer === undefined) return;
    if (peer.conn === conn) {
      peer.conn = null;
      peer.lastError = reason;
      this.log(`${this.nodeId}: disconnected from ${peer.id}: ${reason}`);
      this.scheduleRedial(peer);
    } else if (peer.attempt === conn) {
      peer.attempt = null;
      peer.failedAttempts++;
      if (peer.lastError !== reason) this.log(`${this.nodeId}: connecting to ${peer.id} failed: ${reason}`);
      peer.lastError = reason;
      this.scheduleRedial(peer);
    }
  }

  private scheduleRedial(peer: Peer): void {
    if (this.closed || peer.retryTimer !== null || this.peers.get(peer.id) !== peer) return;
    const delay = backoffDelayMs(peer.backoffAttempt, this.reconnectBaseMs, this.reconnectDelayMsMax, this.random);
    peer.backoffAttempt++;
    peer.lastBackoffMs = delay;
    peer.retryTimer = setTimeout(() => {
      peer.retryTimer = null;
      if (this.closed || this.peers.get(peer.id) !== peer || peer.conn !== null || peer.attempt !== null) return;
      this.dial(peer);
    }, delay);
  }

  private removePeer(peer: Peer): void {
    this.peers.delete(peer.id);
    if (peer.retryTimer !== null) clearTimeout(peer.retryTimer);
    peer.retryTimer = null;
    peer.queue.clear();
    if (peer.conn !== null) this.shutdown(peer.conn, 'peer removed', false);
    if (peer.attempt !== null) this.shutdown(peer.attempt, 'peer removed', false);
    peer.conn = null;
    peer.attempt = null;
  }

  /** Once per ping interval: ping quiet connections, close dead ones. */
  private checkLiveness(): void {
    const now = performance.now();
    for (const conn of [...this.conns]) {
      if (conn.phase !== 'open') continue;
      if (now - conn.lastReceivedMs >= this.idleTimeoutMs) {
        this.fail(conn, `nothing received for ${this.idleTimeoutMs} ms`, false);
        continue;
      }
      if (now - conn.lastSentMs >= this.pingIntervalMs && conn.socket.writableLength === 0) {
        this.write(conn, encodeFrame(FrameType.Ping, new Uint8Array(0)));
      }
    }
  }
}
