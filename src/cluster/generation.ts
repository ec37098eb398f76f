// A member must never vote or lead with a wiped data directory, or with an
// older copy of the one it had: it would forget votes it cast and entries it
// acknowledged, and a majority counted on both. So every start is a new
// *generation* of the member, made durable before any peer hears of it, and
// before its groups start the member asks its peers (PROBE) whether they have
// seen it at this generation or a later one:
// - a peer that saw a generation >= the asker's answers STALE: the asker is
//   a wiped directory (generation 1 again) or a restored older copy. It
//   records the refusal durably, so later starts refuse too, and stops with
//   a message;
// - otherwise the peer records the generation and answers OK.
// Each start also draws a random nonce that its probes carry: a probe sent
// again (its OK reply was lost, or its link reconnected) has the generation
// the peer recorded and the same nonce, and is answered OK again; a wiped
// directory's generation 1 comes with another nonce and is STALE.
// The member starts its groups once peers forming a majority with it answered
// OK (a lone member at once). Peers answer while they are starting too, so a
// whole cluster can start together.
//
// What this catches: a member restarted on an emptied directory, or on a
// copy older than its last start, when at least one peer that saw it since
// answers. It cannot catch a copy taken during the member's current run and
// restored before it restarts (the generation is per start), nor a wipe while
// every peer that saw the member is down.

import type { NodeLogStore } from '../storage/store.js';
import { DataDirectoryError } from '../storage/store.js';
import type { NodeId } from '../transport/types.js';
import { CHANNEL_PROBE, CHANNEL_PROBE_REPLY, PROBE_OK, PROBE_STALE, type BusMux } from './bus.js';
import type { NodeRuntime } from './runtime.js';

/** Node metadata: how many times this member has started. */
export const META_GENERATION = 'generation';
/** Node metadata: why this member refuses to start (set once refused). */
export const META_REFUSED = 'refused';
/** Node metadata prefix: the highest generation seen of each peer ("generation nonce"; earlier versions: "generation"). */
export const META_SEEN_PREFIX = 'seen:';
/** How often an unanswered probe is sent again. */
export const PROBE_RETRY_MS = 200;
/** How often a member still waiting for answers says so. */
export const PROBE_LOG_EVERY_MS = 5000;

function u32(bytes: Uint8Array, offset: number): number {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).readUInt32BE(offset);
}

function metaNumber(store: NodeLogStore, key: string): number {
  return seenOf(store, key).generation;
}

/** A generation recorded in node metadata, with the nonce of that start when recorded with one. */
function seenOf(store: NodeLogStore, key: string): { readonly generation: number; readonly nonce: string | null } {
  const raw = store.getMeta(key);
  if (raw === undefined) return { generation: 0, nonce: null };
  const [generation, nonce] = Buffer.from(raw).toString('utf8').split(' ');
  return { generation: Number(generation), nonce: nonce ?? null };
}

/** Probe: channel byte, u32 generation, then (since nonces) 8 bytes of the start's nonce. */
const PROBE_BYTES = 13;
const PROBE_BYTES_WITHOUT_NONCE = 5;

/** Refuses a directory refused before; otherwise starts the next generation and makes it durable. */
export async function nextGeneration(store: NodeLogStore): Promise<number> {
  const refused = store.getMeta(META_REFUSED);
  if (refused !== undefined) throw new DataDirectoryError(Buffer.from(refused).toString('utf8'));
  const generation = metaNumber(store, META_GENERATION) + 1;
  store.putMeta(META_GENERATION, Buffer.from(String(generation), 'utf8'));
  await store.commitTurn();
  return generation;
}

/** Answers a peer's PROBE from what this member has seen (recorded with its next storage commit). */
export function answerProbe(store: NodeLogStore, mux: BusMux, from: NodeId, payload: Uint8Array): void {
  if (payload.length !== PROBE_BYTES && payload.length !== PROBE_BYTES_WITHOUT_NONCE) return;
  const generation = u32(payload, 1);
  const nonce = payload.length === PROBE_BYTES ? Buffer.from(payload.subarray(5, 13)).toString('hex') : null;
  const seen = seenOf(store, META_SEEN_PREFIX + from);
  const again = nonce !== null && seen.generation === generation && seen.nonce === nonce; // this start's probe, sent again
  const stale = !again && seen.generation >= generation;
  if (!stale && !again) store.putMeta(META_SEEN_PREFIX + from, Buffer.from(nonce === null ? String(generation) : `${generation} ${nonce}`, 'utf8'));
  const reply = Buffer.alloc(6);
  reply[0] = CHANNEL_PROBE_REPLY;
  reply[1] = stale ? PROBE_STALE : PROBE_OK;
  reply.writeUInt32BE(seen.generation, 2);
  mux.send(from, reply);
}

export interface ProbeRound {
  /** Resolves once a majority (with this member) answered OK; rejects with a DataDirectoryError on STALE. */
  readonly done: Promise<void>;
  /** Feeds a PROBE_REPLY from `from`. */
  receive(from: NodeId, payload: Uint8Array): void;
  cancel(): void;
}

/** Asks every peer about `generation` until a majority with this member answered OK. */
export function probePeers(
  store: NodeLogStore,
  mux: BusMux,
  isConnected: (peer: NodeId) => boolean,
  peers: readonly NodeId[],
  generation: number,
  runtime: NodeRuntime,
  log: (line: string) => void,
): ProbeRound {
  const needed = Math.floor((peers.length + 1) / 2); // peers that, with this member, make a majority
  const answered = new Set<NodeId>();
  let stopTimer: (() => void) | null = null;
  let settle: { resolve: () => void; reject: (e: Error) => void } | null = null;
  const done = new Promise<void>((resolve, reject) => (settle = { resolve, reject }));
  const finish = (error: Error | null): void => {
    stopTimer?.();
    stopTimer = null;
    const s = settle;
    settle = null;
    if (s === null) return;
    if (error === null) s.resolve();
    else s.reject(error);
  };
  const probe = Buffer.alloc(PROBE_BYTES);
  probe[0] = CHANNEL_PROBE;
  probe.writeUInt32BE(generation, 1);
  probe.writeUInt32BE(Math.floor(runtime.random() * 0x1_0000_0000) >>> 0, 5);
  probe.writeUInt32BE(Math.floor(runtime.random() * 0x1_0000_0000) >>> 0, 9);
  let loggedMs = runtime.now();
  const ask = (): void => {
    for (const p of peers) if (!answered.has(p) && isConnected(p)) mux.send(p, probe);
    if (runtime.now() - loggedMs >= PROBE_LOG_EVERY_MS) {
      loggedMs = runtime.now();
      log(`waiting for ${needed - answered.size} more member(s) to confirm this member's data directory (${answered.size} of ${peers.length} answered)`);
    }
  };
  if (answered.size >= needed) finish(null);
  else {
    stopTimer = runtime.scheduler.every(PROBE_RETRY_MS, ask);
    ask();
  }
  return {
    done,
    receive(from, payload) {
      if (payload.length !== 6 || settle === null || !peers.includes(from)) return;
      if (payload[1] === PROBE_STALE) {
        const seen = u32(payload, 2);
        const reason =
          generation === 1
            ? `this member's data directory is new, but member ${from} has seen it before (start ${seen}): the directory was wiped or replaced. ` +
              'A member that lost its data must not vote; it stays refused. Restore its data directory, or bootstrap a new cluster.'
            : `this member's data directory is older than one member ${from} has seen (start ${generation} here, ${seen} seen): it was restored from an older copy. ` +
              'It stays refused; restore the newest data directory, or bootstrap a new cluster.';
        store.putMeta(META_REFUSED, Buffer.from(`${store.description}: ${reason}`, 'utf8'));
        void store.commitTurn().then(
          () => finish(new DataDirectoryError(`${store.description}: ${reason}`)),
          (e: unknown) => finish(e instanceof Error ? e : new Error(String(e))),
        );
        return;
      }
      answered.add(from);
      if (answered.size >= needed) finish(null);
    },
    cancel() {
      finish(new Error('probe cancelled'));
    },
  };
}
