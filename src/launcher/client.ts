// A minimal RESP client for talking to ordo (or redis-server) processes on
// loopback: one connection, requests answered in order, each bounded in time.
// The local cluster launcher asks its nodes who leads what through it; tests,
// benchmarks and fault runs use the same one. An error reply rejects with
// RespErrorReply; no reply in time, or a lost connection, with RespNoReply
// (the outcome of a write is then unknown).

import { Socket } from 'node:net';
import { OrdoError } from '../ordo-error.js';
import { encodeCommand, plainReply, ReplyDecoder, type PlainReply, type WireReply } from '../resp/client-codec.js';

export const LOOPBACK = '127.0.0.1';
/** Default bound on connecting and on one request (a write may wait up to 5 s for an election). */
export const REQUEST_TIMEOUT_MS = 8_000;
/** Requests one connection may have waiting for their replies. */
export const REQUESTS_IN_FLIGHT_MAX = 100_000;

/** The server answered with an error reply. */
export class RespErrorReply extends OrdoError {
  readonly code = 'ORDO_ERR_RESP_ERROR_REPLY';
}

/** No reply: the connection failed or closed, or the request timed out. The outcome of a write is unknown. */
export class RespNoReply extends OrdoError {
  readonly code = 'ORDO_ERR_RESP_NO_REPLY';
}

/** The reply simplified (see plainReply); an error reply thrown as RespErrorReply. */
function simplified(reply: WireReply): PlainReply {
  if (reply.kind === '-') throw new RespErrorReply(reply.line);
  if (reply.kind === '!') throw new RespErrorReply(reply.bulk ?? '');
  return plainReply(reply);
}

interface Pending {
  readonly resolve: (reply: WireReply) => void;
  readonly reject: (e: Error) => void;
  readonly timer: NodeJS.Timeout;
}

/** Opens a loopback connection (bounded in time); rejects with RespNoReply. */
export function connectLoopback(port: number, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = new Socket();
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new RespNoReply(`port ${port}: no connection after ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once('error', (e) => {
      clearTimeout(timer);
      reject(new RespNoReply(`port ${port}: ${e.message}`));
    });
    socket.connect(port, LOOPBACK, () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      socket.setNoDelay(true);
      resolve(socket);
    });
  });
}

export class RespClient {
  private readonly pending: Pending[] = [];
  private readonly decoder = new ReplyDecoder();
  private failure: Error | null = null;

  private constructor(
    readonly port: number,
    private readonly socket: Socket,
  ) {
    socket.on('data', (d: Buffer) => {
      let replies: WireReply[];
      try {
        replies = this.decoder.push(d);
      } catch (e) {
        this.fail(new RespNoReply(`unparsable reply from port ${port}: ${(e as Error).message}`));
        return;
      }
      for (const reply of replies) this.settle(reply);
    });
    socket.on('error', (e) => this.fail(new RespNoReply(`port ${port}: ${e.message}`)));
    socket.on('close', () => this.fail(new RespNoReply(`port ${port}: connection closed`)));
  }

  static async connect(port: number, timeoutMs = REQUEST_TIMEOUT_MS): Promise<RespClient> {
    return new RespClient(port, await connectLoopback(port, timeoutMs));
  }

  get closed(): boolean {
    return this.failure !== null;
  }

  /** Sends one command; resolves with the reply as it came (an error reply too). */
  send(args: readonly string[], timeoutMs = REQUEST_TIMEOUT_MS): Promise<WireReply> {
    if (this.failure !== null) return Promise.reject(this.failure);
    if (this.pending.length >= REQUESTS_IN_FLIGHT_MAX)
      return Promise.reject(new Error(`more than ${REQUESTS_IN_FLIGHT_MAX} requests waiting on port ${this.port}`));
    return new Promise<WireReply>((resolve, reject) => {
      const timer = setTimeout(() => this.fail(new RespNoReply(`port ${this.port}: no reply to ${args[0] ?? '?'} after ${timeoutMs} ms`)), timeoutMs);
      this.pending.push({ resolve, reject, timer });
      this.socket.write(encodeCommand(args));
    });
  }

  /** Sends one command; rejects with RespErrorReply on an error reply, RespNoReply when none came in time. */
  async call(args: readonly string[], timeoutMs = REQUEST_TIMEOUT_MS): Promise<PlainReply> {
    return simplified(await this.send(args, timeoutMs));
  }

  close(): void {
    this.fail(new RespNoReply(`port ${this.port}: closed by the client`));
  }

  private settle(reply: WireReply): void {
    const p = this.pending.shift();
    if (p === undefined) {
      this.fail(new RespNoReply(`port ${this.port}: a reply without a request`));
      return;
    }
    clearTimeout(p.timer);
    p.resolve(reply);
  }

  /** Rejects every waiting request and closes the connection; later calls reject at once. */
  private fail(e: Error): void {
    this.failure ??= e;
    this.socket.destroy();
    for (const p of this.pending.splice(0)) {
      clearTimeout(p.timer);
      p.reject(this.failure);
    }
  }
}

/** Opens a connection, sends one command, closes; the reply as it came, error replies included. */
export async function request(port: number, args: readonly string[], timeoutMs = REQUEST_TIMEOUT_MS): Promise<WireReply> {
  const client = await RespClient.connect(port, timeoutMs);
  try {
    return await client.send(args, timeoutMs);
  } finally {
    client.close();
  }
}

/** Opens a connection, sends one command, closes; the reply simplified, an error reply thrown (see `call`). */
export async function command(port: number, args: readonly string[], timeoutMs = REQUEST_TIMEOUT_MS): Promise<PlainReply> {
  return simplified(await request(port, args, timeoutMs));
}
