// One client connection: bytes in, commands out to the dispatcher, replies back
// strictly in request order. Replies that are ready are gathered and written
// with one socket write per loop turn. Every queue here is bounded: past the
// pipeline depth or the output soft limit, ordo stops reading from the socket
// (backpressure); past the output hard limit, or when a client stays blocked
// too long, it is disconnected.

import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { protocolError } from '../errors.js';
import { ProtocolError, RequestDecoder } from '../resp/decoder.js';
import { encodeInto, joinParts, R, type Protocol, type Reply } from '../resp/encoder.js';
import type { Config } from '../config.js';

export interface ConnectionHost {
  readonly config: Config;
  /** Runs one command; `respond` must be called exactly once, now or later. */
  dispatch(conn: Connection, args: Buffer[], respond: (reply: Reply) => void): void;
  onClose(conn: Connection): void;
  /** Called for every reply written (statistics). */
  onReply(reply: Reply): void;
}

const pendingFlush = new Set<Connection>();
let flushScheduled = false;

function scheduleFlush(conn: Connection): void {
  pendingFlush.add(conn);
  if (!flushScheduled) {
    flushScheduled = true;
    queueMicrotask(flushAll);
  }
}

function flushAll(): void {
  flushScheduled = false;
  // Taken before flushing: a flush can resume reading and answer more commands
  // at once, which schedules the connection again; that must not be cleared.
  const connections = [...pendingFlush];
  pendingFlush.clear();
  for (const conn of connections) conn.flush();
}

export class Connection {
  readonly id: number;
  readonly createdAtMs = Date.now();
  lastCommandAtMs = Date.now();
  lastCommandName = 'NULL';
  proto: Protocol = 2;
  name: string | null = null;
  libName = '';
  libVersion = '';
  private isAuthenticated: boolean;
  /** Set once the client asked for the cluster topology (cluster-aware clients get MOVED). */
  clusterAware = false;
  closing = false;

  private readonly decoder: RequestDecoder;
  /** Replies in request order; `undefined` while a command is still running. */
  private readonly replies: (Reply | undefined)[] = [];
  /** The protocol each reply is encoded in: the connection's when its command ran (HELLO switches it for its own reply). */
  private readonly replyProtos: Protocol[] = [];
  /** Index in `replies` of the next reply to write. */
  private repliesHead = 0;
  /** Sequence number (count of commands received before it) of `replies[0]`. */
  private repliesBase = 0;
  private closeAfterFlush = false;
  private readingPaused = false;
  /**
   * Estimated bytes of replies that are ready but not yet written. Replies to a
   * pipeline already in the decoder can be produced in one go (reads answer at
   * once), so the soft limit must count them before they reach the socket.
   */
  private readyReplyBytes = 0;
  private stalledSinceMs: number | null = null;

  constructor(
    readonly socket: Socket,
    id: number,
    private readonly host: ConnectionHost,
  ) {
    this.id = id;
    const { config } = host;
    this.isAuthenticated = config.requirepass === null;
    this.decoder = new RequestDecoder({
      queryBufferBytesMax: config.queryBufferBytesMax,
      bulkBytesMax: config.bulkBytesMax,
      multibulkLengthMax: config.multibulkLengthMax,
    });
    this.decoder.setAuthenticated(this.isAuthenticated);
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('drain', () => this.onDrain());
    socket.on('error', () => socket.destroy());
    socket.on('close', () => {
      this.closing = true;
      pendingFlush.delete(this);
      host.onClose(this);
    });
  }

  /** Whether the client may run commands; until then the decoder applies Redis's unauthenticated bounds. */
  get authenticated(): boolean {
    return this.isAuthenticated;
  }

  set authenticated(value: boolean) {
    this.isAuthenticated = value;
    this.decoder.setAuthenticated(value);
  }

  get remoteAddress(): string {
    return `${this.socket.remoteAddress ?? '?'}:${this.socket.remotePort ?? 0}`;
  }

  get localAddress(): string {
    return `${this.socket.localAddress ?? '?'}:${this.socket.localPort ?? 0}`;
  }

  get pendingReplies(): number {
    return this.replies.length - this.repliesHead;
  }

  get queryBufferBytes(): number {
    return this.decoder.pendingBytes;
  }

  get outputBufferBytes(): number {
    return this.socket.writableLength;
  }

  private onData(chunk: Buffer): void {
    if (this.closing || this.closeAfterFlush) return;
    try {
      this.decoder.feed(chunk);
      this.drainCommands();
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      this.protocolFailure(e.message);
    }
  }

  /** Parses and dispatches commands until the decoder is empty or backpressure applies. */
  private drainCommands(): void {
    const depthMax = this.host.config.pipelineDepthMax;
    const nowMs = Date.now();
    while (!this.closeAfterFlush && !this.closing) {
      if (this.pendingReplies >= depthMax || this.readyReplyBytes + this.socket.writableLength > this.host.config.outputBufferSoftBytes) {
        this.pauseReading();
        return;
      }
      const args = this.decoder.next();
      if (args === null) break;
      this.lastCommandAtMs = nowMs;
      const seq = this.repliesBase + this.replies.length;
      this.replies.push(undefined);
      this.replyProtos.push(this.proto);
      let answered = false;
      let dispatching = true;
      this.host.dispatch(this, args, (reply) => {
        assert.equal(answered, false, 'a command replied twice');
        answered = true;
        if (this.closing) return;
        const index = seq - this.repliesBase;
        this.replies[index] = reply;
        this.readyReplyBytes += replyBytesEstimate(reply);
        if (dispatching) this.replyProtos[index] = this.proto;
        if (index === this.repliesHead) scheduleFlush(this);
      });
      dispatching = false;
    }
  }

  /** Replies with the protocol error, then closes: the stream can no longer be trusted. */
  private protocolFailure(message: string): void {
    const index = this.replies.length;
    const reply = R.error(protocolError(message));
    this.replies.push(reply);
    this.readyReplyBytes += replyBytesEstimate(reply);
    this.replyProtos.push(this.proto);
    this.closeAfterFlush = true;
    if (index === this.repliesHead) scheduleFlush(this);
  }

  /** Sends a reply and closes the connection after it (QUIT, fatal errors). */
  closeAfterReplies(): void {
    this.closeAfterFlush = true;
  }

  /** Writes every reply that is ready, in order, in one socket write. */
  flush(): void {
    if (this.closing) return;
    const parts: (string | Buffer)[] = [];
    while (this.repliesHead < this.replies.length) {
      const reply = this.replies[this.repliesHead];
      if (reply === undefined) break;
      encodeInto(reply, this.replyProtos[this.repliesHead] ?? this.proto, parts);
      this.readyReplyBytes -= replyBytesEstimate(reply);
      this.host.onReply(reply);
      this.repliesHead++;
    }
    if (this.repliesHead === this.replies.length || (this.repliesHead > 1024 && this.repliesHead * 2 > this.replies.length)) {
      this.replies.splice(0, this.repliesHead);
      this.replyProtos.splice(0, this.repliesHead);
      this.repliesBase += this.repliesHead;
      this.repliesHead = 0;
    }
    if (parts.length > 0) this.write(parts);
    if (this.closeAfterFlush && this.pendingReplies === 0) {
      this.closing = true;
      // Closed outright once the last reply is handed to the kernel, as Redis
      // closes its socket: a client that keeps writing gets a reset instead of
      // a half-closed connection that swallows its bytes.
      this.socket.end(() => this.socket.destroy());
      return;
    }
    this.checkOutputLimits();
    if (this.readingPaused && this.pendingReplies < this.host.config.pipelineDepthMax && !this.aboveSoftLimit()) {
      this.resumeReading();
    }
  }

  private write(parts: (string | Buffer)[]): void {
    if (parts.length === 1) {
      const only = parts[0] as string | Buffer;
      if (typeof only === 'string') this.socket.write(only, 'latin1');
      else this.socket.write(only);
      return;
    }
    this.socket.write(joinParts(parts));
  }

  private aboveSoftLimit(): boolean {
    return this.socket.writableLength > this.host.config.outputBufferSoftBytes;
  }

  private checkOutputLimits(): void {
    const { outputBufferHardBytes, outputStallTimeoutMs } = this.host.config;
    const queued = this.socket.writableLength;
    if (queued > outputBufferHardBytes) {
      this.kill(`output buffer ${queued} bytes passed the hard limit`);
      return;
    }
    if (this.aboveSoftLimit()) {
      this.pauseReading();
      if (this.stalledSinceMs === null) {
        this.stalledSinceMs = Date.now();
        const timer = setTimeout(() => {
          if (this.stalledSinceMs !== null && this.aboveSoftLimit()) this.kill('client stopped reading its replies');
        }, outputStallTimeoutMs);
        timer.unref();
      }
    } else {
      this.stalledSinceMs = null;
    }
  }

  private onDrain(): void {
    this.stalledSinceMs = null;
    if (this.readingPaused && this.pendingReplies < this.host.config.pipelineDepthMax) this.resumeReading();
  }

  private pauseReading(): void {
    if (this.readingPaused) return;
    this.readingPaused = true;
    this.socket.pause();
  }

  private resumeReading(): void {
    this.readingPaused = false;
    this.socket.resume();
    // Commands may already be buffered in the decoder.
    try {
      this.drainCommands();
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      this.protocolFailure(e.message);
    }
  }

  /** Drops the connection at once (limits crossed). */
  kill(reason: string): void {
    if (this.closing) return;
    this.closing = true;
    this.killReason = reason;
    this.socket.destroy();
  }

  killReason: string | null = null;
}

/** About how many bytes a reply takes on the wire (for the output limits). */
function replyBytesEstimate(reply: Reply): number {
  switch (reply.kind) {
    case 'bulk':
      return reply.value.length + 16;
    case 'simple':
    case 'error':
    case 'verbatim':
      return reply.value.length + 8;
    case 'encoded':
      return reply.bytes.length;
    case 'array':
    case 'set': {
      let total = 16;
      for (const item of reply.items) total += replyBytesEstimate(item);
      return total;
    }
    case 'map': {
      let total = 16;
      for (const [k, v] of reply.entries) total += replyBytesEstimate(k) + replyBytesEstimate(v);
      return total;
    }
    default:
      return 24;
  }
}
