// One peer's outgoing queue, as both transports keep it: messages accepted by
// send() and not yet framed, bounded in bytes and in count, and the count of
// what was refused; drained once per loop turn into batches that each fit in
// one data frame.

import assert from 'node:assert/strict';
import { MESSAGE_OVERHEAD_BYTES } from './frame.js';

export interface SendQueueLimits {
  readonly bytesMax: number;
  readonly messagesMax: number;
}

/** What is on its way to the peer already and counts towards the bounds (socket buffer, messages in flight). */
export interface AlreadySent {
  readonly bytes: number;
  readonly messages: number;
}

export interface Batch {
  readonly messages: Uint8Array[];
  /** Their bytes, each payload plus MESSAGE_OVERHEAD_BYTES. */
  readonly bytes: number;
}

const NOTHING_AHEAD: AlreadySent = { bytes: 0, messages: 0 };

export class SendQueue {
  private pending: Uint8Array[] = [];
  /** Queued bytes, each payload plus MESSAGE_OVERHEAD_BYTES. */
  bytes = 0;
  droppedMessages = 0;
  droppedBytes = 0;

  get messages(): number {
    return this.pending.length;
  }

  /** Queues `payload` (kept by reference) unless that passes a bound; a refusal is counted. */
  offer(payload: Uint8Array, limits: SendQueueLimits, ahead: AlreadySent = NOTHING_AHEAD): boolean {
    const cost = payload.length + MESSAGE_OVERHEAD_BYTES;
    if (this.bytes + ahead.bytes + cost > limits.bytesMax || this.pending.length + ahead.messages >= limits.messagesMax) {
      this.droppedMessages++;
      this.droppedBytes += payload.length;
      return false;
    }
    this.pending.push(payload);
    this.bytes += cost;
    return true;
  }

  /** Empties the queue into batches, in order, each fitting a data frame body of `bodyBytesMax`. */
  drain(bodyBytesMax: number): Batch[] {
    const out: Batch[] = [];
    let messages: Uint8Array[] = [];
    let bytes = 0;
    for (const m of this.pending) {
      const cost = m.length + MESSAGE_OVERHEAD_BYTES;
      assert.ok(cost <= bodyBytesMax, 'message over the frame limit was queued');
      if (bytes + cost > bodyBytesMax) {
        out.push({ messages, bytes });
        messages = [];
        bytes = 0;
      }
      messages.push(m);
      bytes += cost;
    }
    if (messages.length > 0) out.push({ messages, bytes });
    this.clear();
    return out;
  }

  clear(): void {
    this.pending = [];
    this.bytes = 0;
  }
}
