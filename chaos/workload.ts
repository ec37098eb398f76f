// The clients of a fault run: several connections per node, plain ioredis
// (one request at a time, or pipelines) and ioredis Cluster (follows MOVED,
// retries TRYAGAIN), doing INCR, INCRBY, GET and SEQNEXT with and without
// COUNT and TOKEN on keys spread over every group. Every operation is
// recorded in the history with its invoke and complete times and its outcome:
// ok, failed (an error that promises "not applied") or unknown.
//
// A client library must not resend a write on its own without it showing in
// the history, or the accounting would miss an application: plain clients run
// with autoResendUnfulfilledCommands off and no offline queue, and every
// internal attempt of the cluster client (its TRYAGAIN retries, its MOVED
// redirections) is seen through its command's reject hook and counted.

import { performance } from 'node:perf_hooks';
import { Cluster, Command, Redis } from 'ioredis';
import { keySlot } from '../src/cluster/slots.js';
import { slotRanges } from '../src/cluster/topology.js';
import { ERR, WRITE_NOT_APPLIED, WRITE_OUTCOME_UNKNOWN, type ErrorKey } from '../src/errors.js';
import { LOOPBACK } from '../testkit/processes.js';
import { childSeed, int, prng, type Random } from '../testkit/random.js';
import { sleep } from '../testkit/wait.js';
import { HistoryRecorder, type Anomaly, type Op, type OpKind, type Outcome } from './history.js';

/** A client gives up on a request after this long: its outcome is then unknown. */
export const COMMAND_TIMEOUT_MS = 10_000;
/** Times a SEQNEXT TOKEN whose outcome was unknown is sent again with the same token. */
export const TOKEN_RETRIES_MAX = 3;

/** The keys of a run: `perGroup` keys in every data group (one of them with a hash tag). */
export function keysForGroups(groups: number, perGroup: number): { key: string; group: number }[] {
  const ranges = slotRanges(groups);
  const groupOfSlot = (slot: number): number => ranges.findIndex((r) => slot >= r.start && slot <= r.end) + 1;
  const out: { key: string; group: number }[] = [];
  const count = new Map<number, number>();
  const tagged = new Set<number>();
  for (let i = 0; out.length < groups * perGroup && i < 1_000_000; i++) {
    const plain = `chaos:k${i}`;
    const tag = `{chaos${i}}:seq`;
    for (const key of [tag, plain]) {
      const g = groupOfSlot(keySlot(key));
      if ((count.get(g) ?? 0) >= perGroup) continue;
      if (key === tag && tagged.has(g)) continue;
      if (key === tag) tagged.add(g);
      count.set(g, (count.get(g) ?? 0) + 1);
      out.push({ key, group: g });
    }
  }
  return out.sort((a, b) => a.group - b.group || a.key.localeCompare(b.key));
}

export type ErrorClass = 'failed' | 'unknown';

const notAppliedTexts = new Set<string>([...WRITE_NOT_APPLIED].map((k: ErrorKey) => ERR[k]));
const unknownTexts = new Set<string>([...WRITE_OUTCOME_UNKNOWN].map((k: ErrorKey) => ERR[k]));
const registryTexts = new Set<string>(Object.values(ERR));
/** ioredis's own errors that mean the request never left the client. */
const NOT_SENT = ["Stream isn't writeable and enableOfflineQueue options is false"];

export interface Classified {
  readonly cls: ErrorClass;
  /** A reply the server is not supposed to send (not in the registry's write sets); for the anomaly list. */
  readonly unexpected: boolean;
  readonly text: string;
}

/**
 * What an error says about a write: failed only when it promises the write
 * was not applied (the registry's "not applied" texts, MOVED/ASK, a request
 * that never left the client); anything else may have happened.
 */
export function classifyError(e: unknown, kind: OpKind): Classified {
  const message = e instanceof Error ? e.message : String(e);
  const name = e instanceof Error ? e.name : '';
  // The cluster client gave up after retrying; its last error may be a reply or a lost connection.
  const redirect = /^Too many Cluster redirections\. Last error: (?:(ReplyError): |\w*Error: )?(.*)$/s.exec(message);
  if (redirect !== null) {
    return classifyError(Object.assign(new Error(redirect[2] ?? ''), { name: redirect[1] === undefined ? 'Error' : 'ReplyError' }), kind);
  }
  const isReply = name === 'ReplyError';
  if (!isReply) {
    if (NOT_SENT.some((t) => message.startsWith(t))) return { cls: 'failed', unexpected: false, text: message };
    return { cls: 'unknown', unexpected: false, text: message };
  }
  if (/^(MOVED|ASK) \d+ /.test(message)) return { cls: 'failed', unexpected: false, text: message };
  if (notAppliedTexts.has(message)) return { cls: 'failed', unexpected: false, text: message };
  if (unknownTexts.has(message)) return { cls: 'unknown', unexpected: false, text: message };
  if (kind === 'GET') return { cls: 'failed', unexpected: !registryTexts.has(message) && !message.startsWith('LOADING'), text: message };
  return { cls: 'unknown', unexpected: true, text: message };
}

/** One planned request. */
export interface Plan {
  readonly kind: OpKind;
  readonly key: string;
  readonly n: bigint;
  readonly count?: boolean;
  readonly token?: string;
  readonly args: readonly string[];
}

export function planOp(random: Random, keys: readonly string[], tokenPrefix: string, tokenSeq: { n: number }): Plan {
  const key = keys[int(random, 0, keys.length - 1)] ?? 'chaos:k0';
  const x = random();
  if (x < 0.3) return { kind: 'INCR', key, n: 1n, args: ['INCR', key] };
  if (x < 0.45) {
    const n = int(random, 1, 10);
    return { kind: 'INCRBY', key, n: BigInt(n), args: ['INCRBY', key, String(n)] };
  }
  if (x < 0.65) return { kind: 'GET', key, n: 0n, args: ['GET', key] };
  const withCount = random() < 0.5;
  const withToken = random() < 0.4;
  const n = withCount ? int(random, 1, 20) : 1;
  const token = withToken ? `${tokenPrefix}-${tokenSeq.n++}` : undefined;
  return {
    kind: 'SEQNEXT',
    key,
    n: BigInt(n),
    ...(withCount ? { count: true } : {}),
    ...(token !== undefined ? { token } : {}),
    args: ['SEQNEXT', key, ...(withCount ? ['COUNT', String(n)] : []), ...(token !== undefined ? ['TOKEN', token] : [])],
  };
}

/** The values an ok reply stands for, or a description of what is wrong with it. */
export function interpret(plan: Plan, reply: unknown): { range?: readonly [bigint, bigint]; value?: bigint } | string {
  const int64 = (v: unknown): bigint | null => {
    if (typeof v === 'number' && Number.isSafeInteger(v)) return BigInt(v);
    if (typeof v === 'string' && /^-?\d+$/.test(v)) return BigInt(v);
    return null;
  };
  if (plan.kind === 'GET') {
    if (reply === null) return { value: 0n };
    const v = int64(reply);
    return v === null ? `GET answered ${JSON.stringify(reply)}` : { value: v };
  }
  if (plan.kind === 'SEQNEXT' && plan.count === true) {
    if (!Array.isArray(reply) || reply.length !== 2) return `SEQNEXT COUNT answered ${JSON.stringify(reply)}`;
    const a = int64(reply[0]);
    const b = int64(reply[1]);
    return a === null || b === null ? `SEQNEXT COUNT answered ${JSON.stringify(reply)}` : { range: [a, b] };
  }
  const v = int64(reply);
  if (v === null) return `${plan.kind} answered ${JSON.stringify(reply)}`;
  return plan.kind === 'INCRBY' ? { range: [v - plan.n + 1n, v] } : { range: [v, v] };
}

/** A command whose slot is known before it is sent (ioredis does not know SEQNEXT's key). */
class SlotCommand extends Command {
  constructor(
    args: readonly string[],
    private readonly slotOfKey: number,
  ) {
    super(args[0] ?? '', args.slice(1), { replyEncoding: 'utf8' });
  }
  override getSlot(): number {
    return this.slotOfKey;
  }
}

export interface WorkloadOptions {
  readonly ports: readonly number[];
  readonly keys: readonly string[];
  readonly seed: number;
  readonly random: Random;
  /** Sequential plain clients per node. */
  readonly plainPerNode: number;
  /** Pipelining plain clients per node. */
  readonly pipelinedPerNode: number;
  /** Cluster clients (each with `clusterLoops` requests in flight). */
  readonly clusterClients: number;
  readonly clusterLoops: number;
  /**
   * Keys of each group, for two extra sequential plain clients per group that
   * touch only that group (on nodes g - 1 and g, mod N): their completions
   * show when the group served writes, undisturbed by other groups' waits.
   */
  readonly groupKeys?: readonly (readonly string[])[];
  readonly recorder: HistoryRecorder;
  /** ms since the start of the run. */
  readonly now: () => number;
}

export class Workload {
  private stopping = false;
  private readonly loops: Promise<void>[] = [];
  private readonly closers: (() => void)[] = [];
  readonly anomalies: Anomaly[] = [];
  /** Ops in flight per client, for the final wait. */
  private inFlight = 0;

  constructor(private readonly o: WorkloadOptions) {}

  start(): void {
    const { ports } = this.o;
    ports.forEach((port, node) => {
      for (let c = 0; c < this.o.plainPerNode; c++) this.startPlain(`n${node}-plain${c}`, port, false, this.o.keys);
      for (let c = 0; c < this.o.pipelinedPerNode; c++) this.startPlain(`n${node}-pipe${c}`, port, true, this.o.keys);
    });
    (this.o.groupKeys ?? []).forEach((keys, g) => {
      if (keys.length === 0) return;
      for (const node of new Set([g % ports.length, (g + 1) % ports.length])) this.startPlain(`g${g + 1}-n${node}`, ports[node] ?? 0, false, keys);
    });
    for (let c = 0; c < this.o.clusterClients; c++) this.startCluster(`cluster${c}`);
  }

  /** Stops issuing requests, waits for the ones in flight (each is bounded by COMMAND_TIMEOUT_MS), closes the clients. */
  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all(this.loops);
    for (const close of this.closers) close();
  }

  get pending(): number {
    return this.inFlight;
  }

  private subRandom(): Random {
    // Each client gets its own stream derived from the run's seeded generator.
    return prng(childSeed(this.o.random));
  }

  private record(
    process: string,
    plan: Plan,
    invokeMs: number,
    outcome: Outcome,
    extra: Partial<Pick<Op, 'range' | 'value' | 'error' | 'hiddenUnknownAttempts' | 'attemptErrors'>>,
  ): Op {
    return this.o.recorder.add({
      process,
      kind: plan.kind,
      key: plan.key,
      n: plan.n,
      ...(plan.count !== undefined ? { count: plan.count } : {}),
      ...(plan.token !== undefined ? { token: plan.token } : {}),
      invokeMs,
      completeMs: this.o.now(),
      outcome,
      ...extra,
    });
  }

  private settleOk(process: string, plan: Plan, invokeMs: number, reply: unknown, hidden: number, seen: readonly unknown[] = []): Outcome {
    const r = interpret(plan, reply);
    if (typeof r === 'string') {
      const op = this.record(process, plan, invokeMs, 'unknown', { error: `bad reply: ${r}` });
      this.anomalies.push({ kind: 'bad-reply', key: plan.key, message: `#${op.id} ${process}: ${r}`, ops: [op.id] });
      return 'unknown';
    }
    this.record(process, plan, invokeMs, 'ok', { ...r, ...(hidden > 0 ? { hiddenUnknownAttempts: hidden } : {}), ...attemptErrors(seen) });
    return 'ok';
  }

  /**
   * Records a failed or unknown op. `seen` lists the errors a cluster client's
   * command went through (its retries and redirections; the final one among
   * them when it came from a node); null for a plain client, which makes one
   * attempt only.
   */
  private settleError(process: string, plan: Plan, invokeMs: number, e: unknown, seen: readonly unknown[] | null): Outcome {
    const c = classifyError(e, plan.kind);
    let unknownAttempts = 0;
    for (const s of seen ?? []) if (classifyError(s, plan.kind).cls === 'unknown') unknownAttempts++;
    const wrapped = e instanceof Error && e.message.startsWith('Too many Cluster redirections');
    if (c.cls === 'unknown' && !wrapped && !(seen ?? []).includes(e)) unknownAttempts++;
    const outcome: Outcome = plan.kind === 'GET' || unknownAttempts === 0 ? 'failed' : 'unknown';
    // An unknown op counts as one possible application; the others are hidden attempts.
    const hidden = outcome === 'unknown' ? unknownAttempts - 1 : 0;
    const op = this.record(process, plan, invokeMs, outcome, {
      error: c.text,
      ...(hidden > 0 ? { hiddenUnknownAttempts: hidden } : {}),
      ...attemptErrors(seen ?? []),
    });
    if (c.unexpected)
      this.anomalies.push({ kind: 'unexpected-error', key: plan.key, message: `#${op.id} ${process} ${plan.args.join(' ')}: ${c.text}`, ops: [op.id] });
    return outcome;
  }

  private plainClient(port: number): Redis {
    const redis = new Redis({
      host: LOOPBACK,
      port,
      lazyConnect: false,
      enableOfflineQueue: false,
      autoResendUnfulfilledCommands: false,
      maxRetriesPerRequest: 0,
      commandTimeout: COMMAND_TIMEOUT_MS,
      connectTimeout: 2000,
      stringNumbers: true,
      enableReadyCheck: true,
      retryStrategy: () => 100,
    });
    redis.on('error', () => undefined);
    this.closers.push(() => redis.disconnect());
    return redis;
  }

  /**
   * Runs one planned operation (`attempt` records it and says how it ended).
   * An unknown TOKEN allocation is sent again with the same token (that is
   * what tokens are for); now and then an ok one is too, to check that it
   * answers the same range.
   */
  private async withTokenRetries(random: Random, first: Plan, attempt: (plan: Plan, invokeMs: number) => Promise<Outcome>): Promise<void> {
    let plan = first;
    for (let n = 0; ; n++) {
      const invokeMs = this.o.now();
      this.inFlight++;
      let outcome: Outcome;
      try {
        outcome = await attempt(plan, invokeMs);
      } finally {
        this.inFlight--;
      }
      const again = plan.token !== undefined && n < TOKEN_RETRIES_MAX && (outcome === 'unknown' || (outcome === 'ok' && random() < 0.05));
      if (!again || this.stopping) return;
      if (outcome !== 'ok') await sleep(int(random, 20, 200));
      plan = { ...plan };
    }
  }

  private startPlain(name: string, port: number, pipelined: boolean, keys: readonly string[]): void {
    const random = this.subRandom();
    const redis = this.plainClient(port);
    const tokenSeq = { n: 0 };
    const loop = async (): Promise<void> => {
      while (!this.stopping) {
        if (redis.status !== 'ready') {
          await sleep(50);
          continue;
        }
        if (!pipelined) {
          await this.withTokenRetries(random, planOp(random, keys, `${this.o.seed}-${name}`, tokenSeq), async (plan, invokeMs) => {
            try {
              const reply: unknown = await redis.call(plan.args[0] ?? '', ...plan.args.slice(1));
              return this.settleOk(name, plan, invokeMs, reply, 0);
            } catch (e) {
              return this.settleError(name, plan, invokeMs, e, null);
            }
          });
          if (redis.status !== 'ready') await sleep(50);
          continue;
        }
        const batch = Array.from({ length: int(random, 2, 12) }, () => planOp(random, keys, `${this.o.seed}-${name}`, tokenSeq));
        const pipeline = redis.pipeline();
        for (const p of batch) pipeline.call(p.args[0] ?? '', ...p.args.slice(1));
        const invokeMs = this.o.now();
        this.inFlight++;
        try {
          const results = await pipeline.exec();
          batch.forEach((p, i) => {
            const r = results?.[i];
            if (r === undefined) this.settleError(name, p, invokeMs, new Error('pipeline answered nothing'), null);
            else if (r[0] !== null) this.settleError(name, p, invokeMs, r[0], null);
            else this.settleOk(name, p, invokeMs, r[1], 0);
          });
        } catch (e) {
          for (const p of batch) this.settleError(name, p, invokeMs, e, null);
        } finally {
          this.inFlight--;
        }
      }
    };
    this.loops.push(loop());
  }

  private startCluster(name: string): void {
    const cluster = new Cluster(
      this.o.ports.map((port) => ({ host: LOOPBACK, port })),
      {
        scaleReads: 'master',
        maxRedirections: 8,
        retryDelayOnTryAgain: 100,
        retryDelayOnClusterDown: 100,
        retryDelayOnFailover: 100,
        retryDelayOnMoved: 0,
        slotsRefreshTimeout: 2000,
        slotsRefreshInterval: 1000,
        enableOfflineQueue: true,
        clusterRetryStrategy: () => 200,
        redisOptions: {
          autoResendUnfulfilledCommands: false,
          maxRetriesPerRequest: 0,
          commandTimeout: COMMAND_TIMEOUT_MS,
          connectTimeout: 2000,
          stringNumbers: true,
        },
      },
    );
    cluster.on('error', () => undefined);
    cluster.on('node error', () => undefined);
    this.closers.push(() => cluster.disconnect());
    const tokenSeq = { n: 0 };
    for (let l = 0; l < this.o.clusterLoops; l++) {
      const random = this.subRandom();
      const loopName = `${name}.${l}`;
      const loop = async (): Promise<void> => {
        while (!this.stopping) {
          await this.withTokenRetries(random, planOp(random, this.o.keys, `${this.o.seed}-${loopName}`, tokenSeq), async (plan, invokeMs) => {
            const command = new SlotCommand(plan.args, keySlot(plan.key));
            // Every error the cluster client sees for this command, including the ones it then retries or redirects.
            const seen: unknown[] = [];
            try {
              const promise = cluster.sendCommand(command) as Promise<unknown>;
              const clusterReject = command.reject;
              command.reject = (err: Error): void => {
                seen.push(err);
                clusterReject.call(command, err);
              };
              const reply = await promise;
              const hidden = plan.kind === 'GET' ? 0 : seen.filter((s) => classifyError(s, plan.kind).cls === 'unknown').length;
              return this.settleOk(loopName, plan, invokeMs, reply, hidden, seen);
            } catch (e) {
              return this.settleError(loopName, plan, invokeMs, e, seen);
            }
          });
          if (cluster.status !== 'ready') await sleep(50);
        }
      };
      this.loops.push(loop());
    }
  }
}

function attemptErrors(seen: readonly unknown[]): { attemptErrors?: string[] } {
  return seen.length === 0 ? {} : { attemptErrors: seen.map((e) => (e instanceof Error ? e.message : String(e))) };
}

/** ms since `t0` (performance clock). */
export function clockFrom(t0: number): () => number {
  return () => performance.now() - t0;
}
