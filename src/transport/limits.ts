// Defaults of every bus limit and timer that is not part of the wire format
// (those are in frame.ts and handshake.ts). docs/transport.md lists them all.

const MiB = 1024 * 1024;

export const DEFAULT_CLUSTER_ID = 'ordo';
/** Address the bus listens on unless told otherwise: loopback only. */
export const DEFAULT_BUS_HOST = '127.0.0.1';
/** Bytes of queued messages per peer (payloads plus framing, including what the socket still holds). */
export const DEFAULT_SEND_QUEUE_BYTES_MAX = 64 * MiB;
/** Messages queued per peer, whatever their size (bounds the per-message overhead of tiny messages). */
export const DEFAULT_SEND_QUEUE_MESSAGES_MAX = 100_000;
/** Frames are handed to a socket only while it holds fewer unsent bytes than this. */
export const DEFAULT_WRITE_BUFFER_BYTES_MAX = 1 * MiB;
/** Smallest writeBufferBytesMax: not below a socket's high-water mark, so a full socket always drains. */
export const WRITE_BUFFER_BYTES_MAX_FLOOR = 64 * 1024;
/** First redial delay (before jitter); it doubles per failed attempt. */
export const DEFAULT_RECONNECT_BASE_MS = 100;
/** Cap of the redial delay (before jitter). */
export const DEFAULT_RECONNECT_DELAY_MS_MAX = 5000;
/** From the start of a dial (or an accept) to a completed handshake. */
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 5000;
/** A connection that sent nothing for this long sends a ping frame. */
export const DEFAULT_PING_INTERVAL_MS = 1000;
/** A connection that received nothing (not even a ping) for this long is closed. */
export const DEFAULT_IDLE_TIMEOUT_MS = 10_000;
/** Inbound connections still in their handshake; more are closed at once. */
export const DEFAULT_PENDING_CONNECTIONS_MAX = 64;
/** How long a closing socket may take to finish before it is destroyed. */
export const DEFAULT_CLOSE_TIMEOUT_MS = 1000;
