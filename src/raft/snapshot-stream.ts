// How a Raft node moves a snapshot to a follower, kept out of node.ts. Two
// modes, chosen per node (RaftConfig.snapshotTransfer):
//
// - "inline": the node itself cuts `storage.snapshot().data` into "snapshot"
//   messages of snapshotChunkBytes, one at a time, each acknowledged by a
//   "snapshotResp" carrying the next offset wanted; the follower joins the
//   chunks in memory and restores the whole buffer. O(snapshot) memory on both
//   sides. Used by the plain Raft tests and the Raft simulator.
// - "external": the node only says which snapshot to send: it emits ONE
//   "snapshot" message with the snapshot's meta and no chunk (a request to the
//   application, never to be put on the wire). The application streams the
//   data by its own means, reports the outcome with RaftNode.reportSnapshot,
//   and on the follower steps a "snapshot" message with the meta and no chunk
//   once the data is staged; the follower's node then restores from the meta
//   (Ready.snapshot with empty data: the application installs what it staged)
//   and acknowledges with an appendResp at the snapshot index once durable.
//
// Nothing here does I/O: these are pure helpers over Message and Snapshot.

import assert from 'node:assert/strict';
import { Message, NodeId, Snapshot, SnapshotMeta, newMessage } from './types.js';

export type SnapshotTransferMode = 'inline' | 'external';

/** Inline mode: the chunk of `snap` starting at `offset`, as a "snapshot" message. */
export function inlineChunkMessage(from: NodeId, to: NodeId, term: number, snap: Snapshot, offset: number, chunkBytes: number, sentTick: number): Message {
  const m = newMessage('snapshot', from, to, term);
  m.snapshotMeta = snap.meta;
  m.offset = offset;
  m.chunk = snap.data.subarray(offset, Math.min(snap.data.length, offset + chunkBytes));
  m.totalBytes = snap.data.length;
  m.sentTick = sentTick;
  return m;
}

/** External mode: the request to the application to send `meta`'s snapshot to `to`. */
export function externalSnapshotRequest(from: NodeId, to: NodeId, term: number, meta: SnapshotMeta, sentTick: number): Message {
  const m = newMessage('snapshot', from, to, term);
  m.snapshotMeta = meta;
  m.sentTick = sentTick;
  return m;
}

/** Whether `m` is an external-mode snapshot message (meta, no data): a request on a leader, a staged snapshot on a follower. */
export function isExternalSnapshot(m: Message): boolean {
  return m.type === 'snapshot' && m.snapshotMeta !== null && m.chunk === null;
}

/** Inline mode, follower side: joins the chunks of one snapshot from one leader in one term. */
export class InlineSnapshotAssembler {
  private incoming: { readonly term: number; readonly leader: NodeId; readonly meta: SnapshotMeta; readonly chunks: Uint8Array[]; received: number } | null =
    null;

  /**
   * Takes one chunk. Returns the offset to ask for next ("next"), or the
   * whole snapshot once its last chunk arrived ("done").
   */
  accept(m: Message, term: number): { readonly kind: 'next'; readonly offset: number } | { readonly kind: 'done'; readonly snapshot: Snapshot } {
    const meta = m.snapshotMeta;
    assert.ok(meta !== null && m.chunk !== null, 'snapshot message without snapshot');
    let inc = this.incoming;
    if (inc === null || inc.meta.index !== meta.index || inc.term !== term || inc.leader !== m.from) {
      this.incoming = null;
      if (m.offset !== 0) return { kind: 'next', offset: 0 }; // start over
      inc = { term, leader: m.from, meta, chunks: [], received: 0 };
      this.incoming = inc;
    }
    if (m.offset !== inc.received) return { kind: 'next', offset: inc.received };
    inc.chunks.push(m.chunk);
    inc.received += m.chunk.length;
    assert.ok(inc.received <= m.totalBytes, 'snapshot chunks exceed total size');
    if (inc.received < m.totalBytes) return { kind: 'next', offset: inc.received };
    const data = new Uint8Array(inc.received);
    let at = 0;
    for (const c of inc.chunks) {
      data.set(c, at);
      at += c.length;
    }
    this.incoming = null;
    return { kind: 'done', snapshot: { meta, data } };
  }
}
