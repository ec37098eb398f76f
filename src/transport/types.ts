// The bus between nodes, as the rest of ordo sees it: opaque messages
// (byte strings) between node ids. It knows nothing of Raft. Two
// implementations: TcpTransport (tcp.ts) for real nodes and MemoryTransport
// (memory.ts) for tests. docs/transport.md describes the wire format, the
// handshake and the failure behaviour.
//
// Delivery contract, both implementations:
// - per ordered pair of nodes, messages arrive in the order they were sent,
//   intact, at most once;
// - any message may be lost (peer down, connection lost, queue full,
//   partition); the sender is not told after send() returned true;
// - messages sent to one peer in one event-loop turn travel together (one
//   frame), written when the turn ends.

export type NodeId = string;

export interface PeerAddress {
  readonly host: string;
  readonly port: number;
}

/** Receives every message, synchronously, in arrival order. */
export type MessageHandler = (from: NodeId, payload: Uint8Array) => void;

/** Where the transport writes one line per noteworthy event (connect, disconnect, refusal). */
export type TransportLog = (line: string) => void;

export type PeerState =
  /** This node dials the peer: a dial or handshake is in progress. */
  | 'connecting'
  /** This node dials the peer: waiting out the backoff before the next dial. */
  | 'backoff'
  /** The peer dials this node: no connection from it yet. */
  | 'waiting'
  /** Handshake done; messages flow. */
  | 'connected';

export interface PeerStatus {
  readonly state: PeerState;
  readonly connected: boolean;
  /** True when this node dials the peer (see docs/transport.md, "Who dials"). */
  readonly dialer: boolean;
  /** Bytes accepted by send() and not yet handed to the socket (payloads plus framing). */
  readonly queuedBytes: number;
  readonly queuedMessages: number;
  /** Data frames written (one per loop turn with messages for this peer, while connected). */
  readonly sentFrames: number;
  readonly sentMessages: number;
  readonly receivedFrames: number;
  readonly receivedMessages: number;
  /** Messages refused by send() because the queue for this peer was full. */
  readonly droppedMessages: number;
  readonly droppedBytes: number;
  /** Handshakes completed with this peer. */
  readonly connects: number;
  /** Dial or handshake failures since the last successful handshake. */
  readonly failedAttempts: number;
  /** The last backoff delay chosen before a redial, in ms (0 before the first). */
  readonly lastBackoffMs: number;
  /** Why the last connection to the peer failed or closed, or null. */
  readonly lastError: string | null;
}

export interface TransportStats {
  /** send() calls to a node that is not a peer (or after close()). */
  readonly unknownPeerDrops: number;
  /** send() calls whose payload exceeds the largest message a frame can carry. */
  readonly oversizeDrops: number;
  /** Connections refused or closed before or during the handshake (garbage, wrong secret, unknown node...). */
  readonly rejectedConnections: number;
  /** Connections closed for a protocol violation after the handshake (bad magic, oversize frame...). */
  readonly protocolErrors: number;
  readonly lastRejectReason: string | null;
}

export interface Transport {
  readonly nodeId: NodeId;
  /**
   * Queue a message for `to`. Returns false when it is dropped at once: `to`
   * is not a peer, the payload is larger than the frame limit allows, the
   * queue for `to` is full, or the transport is closed. The transport keeps a
   * reference to `payload` until the end of the loop turn: do not modify it.
   */
  send(to: NodeId, payload: Uint8Array): boolean;
  /** Add a handler for incoming messages; returns a function that removes it. */
  onMessage(handler: MessageHandler): () => void;
  /**
   * Replace the set of peers. New peers are connected, removed ones are
   * disconnected and their queues dropped; the node's own id is ignored.
   */
  setPeers(peers: ReadonlyMap<NodeId, PeerAddress>): void;
  peerStatus(): Map<NodeId, PeerStatus>;
  stats(): TransportStats;
  /** Largest payload send() accepts. */
  readonly messageBytesMax: number;
  /** Stop timers, close sockets; messages not yet written are dropped. Idempotent. */
  close(): Promise<void>;
}

/**
 * A transport that tells whether the link to a peer is up: TcpTransport and
 * MemoryTransport are; the cluster engine needs it (forwarding, generation
 * probes, members shown as down).
 */
export interface LinkAwareTransport extends Transport {
  /** Whether messages to `peer` flow now: TCP, the handshake is done; memory, the hub carries messages both ways. */
  isConnected(peer: NodeId): boolean;
}
