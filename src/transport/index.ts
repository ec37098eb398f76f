// The bus between nodes. See docs/transport.md.

export type { MessageHandler, NodeId, PeerAddress, PeerState, PeerStatus, Transport, TransportLog, TransportStats } from './types.js';
export { TcpTransport } from './tcp.js';
export type { TcpTransportOptions } from './tcp.js';
export { MemoryHub, MemoryTransport, realScheduler } from './memory.js';
export type { MemoryHubOptions, MemoryHubStats, MemoryScheduler, MemoryTransportOptions } from './memory.js';
export * from './limits.js';
export { DEFAULT_FRAME_BYTES_MAX, HANDSHAKE_FRAME_BYTES_MAX, PROTOCOL_VERSION, messageBytesMaxFor } from './frame.js';
export { backoffDelayMs } from './backoff.js';
