// What travels on the bus besides Raft: commands a node forwards to a group's
// leader for a plain client, and their replies. One transport carries both;
// the first byte of every message says which it is:
//
//   RAFT     one MultiRaftHost frame as is (all groups' Raft messages of one
//            turn); its first byte is the frame's codec version, so every
//            byte below 0xF0 belongs to Raft and the frame is not copied
//   REQUEST  [id u32][protocol u8][argc u32] then argc × ([length u32][bytes])
//   REPLY    [id u32][status u8][bytes]: status EXECUTED carries the reply,
//            already encoded in the requested protocol; NOT_HERE carries the
//            node id of the leader the receiver knows (maybe empty): the
//            command was not run there and may be sent on.
//
// The origin keeps each forwarded request until its reply or its deadline
// (the request timeout plus a margin); a write whose reply never comes is
// reported "outcome unknown" by the caller, never "not applied".

import assert from 'node:assert/strict';
import { FRAME_CODEC_VERSION } from '../multiraft/message-codec.js';
import type { MessageHandler, NodeId, PeerAddress, PeerStatus, Transport, TransportStats } from '../transport/types.js';
import { OrdoError } from '../ordo-error.js';

export const CHANNEL_REQUEST = 0xf1;
export const CHANNEL_REPLY = 0xf2;
/** A starting member's [generation u32]: "have you seen me at this generation or later?" */
export const CHANNEL_PROBE = 0xf3;
/** [status u8][highest generation seen u32]: PROBE_OK, or PROBE_STALE when the asker's generation is not newer. */
export const CHANNEL_PROBE_REPLY = 0xf4;
export const PROBE_OK = 0;
export const PROBE_STALE = 1;

export const REPLY_EXECUTED = 0;
export const REPLY_NOT_HERE = 1;

export class BusDecodeError extends OrdoError {
  override readonly code = 'ORDO_ERR_BUS_DECODE';
}

export interface ForwardRequest {
  readonly id: number;
  readonly protocol: 2 | 3;
  readonly args: Buffer[];
  /** Sent to a node that is not the leader, to pass on to the leader it reaches (the origin's link to the leader is down). */
  readonly relay?: boolean;
}

/** Set in the protocol byte of a request to relay. */
const RELAY_FLAG = 0x80;

export type ForwardReply =
  | { readonly id: number; readonly status: typeof REPLY_EXECUTED; readonly bytes: Buffer }
  | { readonly id: number; readonly status: typeof REPLY_NOT_HERE; readonly leader: NodeId | null };

export function encodeRequest(r: ForwardRequest): Buffer {
  let size = 1 + 4 + 1 + 4;
  for (const a of r.args) size += 4 + a.length;
  const out = Buffer.allocUnsafe(size);
  let o = out.writeUInt8(CHANNEL_REQUEST, 0);
  o = out.writeUInt32BE(r.id, o);
  o = out.writeUInt8(r.protocol | (r.relay === true ? RELAY_FLAG : 0), o);
  o = out.writeUInt32BE(r.args.length, o);
  for (const a of r.args) {
    o = out.writeUInt32BE(a.length, o);
    o += a.copy(out, o);
  }
  return out;
}

export function decodeRequest(payload: Uint8Array): ForwardRequest {
  const b = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  if (b.length < 10 || b[0] !== CHANNEL_REQUEST) throw new BusDecodeError('short forward request');
  const id = b.readUInt32BE(1);
  const protocolByte = b.readUInt8(5);
  const relay = (protocolByte & RELAY_FLAG) !== 0;
  const protocol = protocolByte & ~RELAY_FLAG;
  if (protocol !== 2 && protocol !== 3) throw new BusDecodeError(`bad protocol ${protocol}`);
  const argc = b.readUInt32BE(6);
  let o = 10;
  if (argc === 0 || argc > (b.length - o) / 4) throw new BusDecodeError(`bad argument count ${argc}`);
  const args: Buffer[] = [];
  for (let i = 0; i < argc; i++) {
    if (o + 4 > b.length) throw new BusDecodeError('truncated forward request');
    const n = b.readUInt32BE(o);
    o += 4;
    if (o + n > b.length) throw new BusDecodeError('truncated forward request argument');
    args.push(Buffer.from(b.subarray(o, o + n))); // own copy: the handler may keep it
    o += n;
  }
  if (o !== b.length) throw new BusDecodeError('trailing bytes after forward request');
  return { id, protocol, args, relay };
}

export function encodeReply(r: ForwardReply): Buffer {
  const body = r.status === REPLY_EXECUTED ? r.bytes : Buffer.from(r.leader ?? '', 'utf8');
  const out = Buffer.allocUnsafe(6 + body.length);
  out.writeUInt8(CHANNEL_REPLY, 0);
  out.writeUInt32BE(r.id, 1);
  out.writeUInt8(r.status, 5);
  body.copy(out, 6);
  return out;
}

export function decodeReply(payload: Uint8Array): ForwardReply {
  const b = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  if (b.length < 6 || b[0] !== CHANNEL_REPLY) throw new BusDecodeError('short forward reply');
  const id = b.readUInt32BE(1);
  const status = b.readUInt8(5);
  const body = Buffer.from(b.subarray(6));
  if (status === REPLY_EXECUTED) return { id, status, bytes: body };
  if (status === REPLY_NOT_HERE) return { id, status, leader: body.length === 0 ? null : body.toString('utf8') };
  throw new BusDecodeError(`bad forward reply status ${status}`);
}

/**
 * Splits one transport into the Raft channel (a Transport of its own, for the
 * MultiRaftHost) and the forwarding channel.
 */
export class BusMux {
  /** The Raft channel: what MultiRaftHost sends and receives. */
  readonly raft: Transport;
  private readonly raftHandlers = new Set<MessageHandler>();
  private readonly unsubscribe: () => void;

  constructor(
    readonly inner: Transport,
    private readonly onRequest: (from: NodeId, payload: Uint8Array) => void,
    private readonly onReply: (from: NodeId, payload: Uint8Array) => void,
    private readonly onProbe: (from: NodeId, payload: Uint8Array) => void,
  ) {
    assert.ok(FRAME_CODEC_VERSION < CHANNEL_REQUEST, 'Raft frame versions and bus channels overlap');
    this.raft = {
      nodeId: inner.nodeId,
      messageBytesMax: inner.messageBytesMax,
      send: (to: NodeId, payload: Uint8Array): boolean => inner.send(to, payload),
      onMessage: (handler: MessageHandler): (() => void) => {
        const h: MessageHandler = (from, payload) => handler(from, payload);
        this.raftHandlers.add(h);
        return () => {
          this.raftHandlers.delete(h);
        };
      },
      setPeers: (peers: ReadonlyMap<NodeId, PeerAddress>): void => inner.setPeers(peers),
      peerStatus: (): Map<NodeId, PeerStatus> => inner.peerStatus(),
      stats: (): TransportStats => inner.stats(),
      close: (): Promise<void> => inner.close(),
    };
    this.unsubscribe = inner.onMessage((from, payload) => this.receive(from, payload));
  }

  send(to: NodeId, payload: Buffer): boolean {
    return this.inner.send(to, payload);
  }

  private receive(from: NodeId, payload: Uint8Array): void {
    switch (payload[0]) {
      case CHANNEL_REQUEST:
        this.onRequest(from, payload);
        return;
      case CHANNEL_REPLY:
        this.onReply(from, payload);
        return;
      case CHANNEL_PROBE:
      case CHANNEL_PROBE_REPLY:
        this.onProbe(from, payload);
        return;
      default:
        // A Raft frame (the host checks its version and drops what it cannot decode).
        for (const h of this.raftHandlers) h(from, payload);
    }
  }

  close(): void {
    this.unsubscribe();
  }
}
