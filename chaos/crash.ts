// Crash-restart cycles against one real ordo process on one data directory:
// pipelined INCR / INCRBY / SEQNEXT COUNT load from several raw clients, a
// SIGKILL at a seeded random moment, a restart. The restart must succeed, every
// acknowledged value must be covered by the value found after the restart, and
// no value (nor any element of a SEQNEXT range) is ever handed out twice across
// all cycles.
//
//   npm run crash -- [--cycles N] [--seed X]

import { parseArgs } from 'node:util';
import { Socket } from 'node:net';
import { removeDir, startOrdo, tempDir, type RunningOrdo } from '../testkit/processes.js';
import { childSeed, int, prng, seedFrom, type Random } from '../testkit/random.js';
import { encodeCommand, ReplyDecoder, RespClient, type WireReply } from '../testkit/resp.js';
import { sleep } from '../testkit/wait.js';
import { isMain, positiveInt } from './common.js';

export const KEYS: readonly string[] = ['order:id', 'invoice:id', 'ticket:id', '{user}:id'];
const CLIENTS = 4;
const PIPELINE_DEPTH = 16;
/** The kill comes this long after the load started, at a seeded random point in between. */
const KILL_AFTER_MS_MIN = 20;
const KILL_AFTER_MS_MAX = 700;
const READ_TIMEOUT_MS = 10_000;

export interface CrashOptions {
  cycles: number;
  seed: number;
  log?: (line: string) => void;
}

export interface CrashResult {
  readonly seed: number;
  readonly cycles: number;
  /** Acknowledged operations (each INCR, INCRBY or SEQNEXT reply with values). */
  readonly acks: number;
  /** Values handed out (a SEQNEXT COUNT n range counts n). */
  readonly valuesHandedOut: bigint;
  readonly errorReplies: number;
  readonly restartMsMax: number;
  readonly anomalies: readonly string[];
  readonly replay: string;
}

/** Values [first, last] handed out for one key by one acknowledged reply. */
interface Grant {
  readonly key: string;
  readonly first: bigint;
  readonly last: bigint;
  readonly cycle: number;
}

type Op = { readonly kind: 'INCR' | 'INCRBY' | 'SEQNEXT'; readonly key: string; readonly n: number };

/** A raw client keeping PIPELINE_DEPTH requests in flight until its socket closes; replies come in request order. */
class Loader {
  readonly grants: Grant[] = [];
  readonly errors: string[] = [];
  readonly anomalies: string[] = [];
  private readonly inFlight: Op[] = [];
  private readonly decoder = new ReplyDecoder();
  readonly closed: Promise<void>;

  constructor(
    private readonly socket: Socket,
    private readonly random: Random,
    private readonly cycle: number,
  ) {
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('error', () => undefined);
    socket.on('data', (d: Buffer) => {
      let replies: WireReply[];
      try {
        replies = this.decoder.push(d);
      } catch (e) {
        this.anomalies.push(`cycle ${this.cycle}: unparsable reply: ${(e as Error).message}`);
        socket.destroy();
        return;
      }
      for (const reply of replies) this.onReply(reply);
      this.fill();
    });
    this.fill();
  }

  static connect(port: number, random: Random, cycle: number): Promise<Loader> {
    return new Promise((resolve, reject) => {
      const s = new Socket();
      s.once('error', reject);
      s.connect(port, '127.0.0.1', () => {
        s.off('error', reject);
        resolve(new Loader(s, random, cycle));
      });
    });
  }

  private fill(): void {
    if (this.socket.destroyed) return;
    const parts: Buffer[] = [];
    while (this.inFlight.length < PIPELINE_DEPTH) {
      const key = KEYS[int(this.random, 0, KEYS.length - 1)] ?? 'order:id';
      const x = this.random();
      let op: Op;
      if (x < 0.4) op = { kind: 'INCR', key, n: 1 };
      else if (x < 0.7) op = { kind: 'INCRBY', key, n: int(this.random, 1, 20) };
      else op = { kind: 'SEQNEXT', key, n: int(this.random, 1, 50) };
      this.inFlight.push(op);
      if (op.kind === 'INCR') parts.push(encodeCommand(['INCR', key]));
      else if (op.kind === 'INCRBY') parts.push(encodeCommand(['INCRBY', key, String(op.n)]));
      else parts.push(encodeCommand(['SEQNEXT', key, 'COUNT', String(op.n)]));
    }
    if (parts.length > 0) this.socket.write(Buffer.concat(parts));
  }

  private onReply(reply: WireReply): void {
    const op = this.inFlight.shift();
    if (op === undefined) {
      this.anomalies.push(`cycle ${this.cycle}: a reply without a request: ${reply.kind}${reply.line}`);
      return;
    }
    const grant = (first: bigint, last: bigint): void => {
      if (last - first + 1n !== BigInt(op.n)) this.anomalies.push(`cycle ${this.cycle}: ${op.kind} ${op.key} ${op.n} answered the range [${first}, ${last}]`);
      this.grants.push({ key: op.key, first, last, cycle: this.cycle });
    };
    if (reply.kind === '-') {
      this.errors.push(reply.line);
      return;
    }
    if (op.kind === 'SEQNEXT' && reply.kind === '*' && reply.items.length === 2) {
      const [a, b] = reply.items;
      if (a?.kind === ':' && b?.kind === ':') {
        grant(BigInt(a.line), BigInt(b.line));
        return;
      }
    }
    if (reply.kind === ':' && op.kind !== 'SEQNEXT') {
      const value = BigInt(reply.line);
      grant(value - BigInt(op.n) + 1n, value);
      return;
    }
    this.anomalies.push(`cycle ${this.cycle}: unexpected reply to ${op.kind} ${op.key} ${op.n}: ${reply.kind}${reply.line}`);
  }

  stop(): void {
    this.socket.destroy();
  }
}

/** GET of every key (a missing key reads as 0), pipelined on one connection. */
async function readValues(port: number): Promise<Map<string, bigint>> {
  const client = await RespClient.connect(port, READ_TIMEOUT_MS);
  let replies: WireReply[];
  try {
    replies = await Promise.all(KEYS.map((k) => client.send(['GET', k], READ_TIMEOUT_MS)));
  } finally {
    client.close();
  }
  const values = new Map<string, bigint>();
  KEYS.forEach((key, i) => {
    const r = replies[i];
    if (r === undefined || r.kind !== '$') throw new Error(`GET ${key} answered ${r?.kind ?? ''}${r?.line ?? 'nothing'}`);
    values.set(key, r.bulk === null ? 0n : BigInt(r.bulk));
  });
  return values;
}

/** Overlapping grants of one key (a value handed out twice). */
function overlaps(grants: readonly Grant[]): string[] {
  const found: string[] = [];
  const byKey = new Map<string, Grant[]>();
  for (const g of grants) {
    const list = byKey.get(g.key) ?? [];
    list.push(g);
    byKey.set(g.key, list);
  }
  for (const [key, list] of byKey) {
    list.sort((a, b) => (a.first < b.first ? -1 : a.first > b.first ? 1 : 0));
    for (let i = 1; i < list.length; i++) {
      const prev = list[i - 1];
      const cur = list[i];
      if (prev !== undefined && cur !== undefined && cur.first <= prev.last) {
        found.push(`${key}: [${prev.first}, ${prev.last}] (cycle ${prev.cycle}) and [${cur.first}, ${cur.last}] (cycle ${cur.cycle}) overlap`);
        if (found.length >= 20) return found;
      }
    }
  }
  return found;
}

export async function runCrash(options: CrashOptions): Promise<CrashResult> {
  const log = options.log ?? ((): void => undefined);
  const replay = `npm run crash -- --seed ${options.seed} --cycles ${options.cycles}`;
  const random = prng(options.seed);
  const dataDir = tempDir('crash');
  const grants: Grant[] = [];
  const anomalies: string[] = [];
  let errorReplies = 0;
  let restartMsMax = 0;
  let ordo: RunningOrdo | null = null;
  const ackedMax = (): Map<string, bigint> => {
    const max = new Map<string, bigint>();
    for (const g of grants) if (g.last > (max.get(g.key) ?? 0n)) max.set(g.key, g.last);
    return max;
  };
  const checkCovered = async (port: number, when: string): Promise<void> => {
    const values = await readValues(port);
    for (const [key, max] of ackedMax()) {
      const now = values.get(key) ?? 0n;
      if (now < max) anomalies.push(`${when}: ${key} is ${now}, but ${max} was acknowledged`);
    }
  };
  try {
    for (let cycle = 0; cycle < options.cycles && anomalies.length === 0; cycle++) {
      const t0 = Date.now();
      try {
        ordo = await startOrdo({ dataDir });
      } catch (e) {
        anomalies.push(`cycle ${cycle}: the restart failed: ${e instanceof Error ? e.message : String(e)}`);
        break;
      }
      const restartMs = Date.now() - t0;
      if (cycle > 0) restartMsMax = Math.max(restartMsMax, restartMs);
      await checkCovered(ordo.port, `cycle ${cycle}, after restart`);
      const loaders = await Promise.all(Array.from({ length: CLIENTS }, () => Loader.connect(ordo?.port ?? 0, prng(childSeed(random)), cycle)));
      await sleep(int(random, KILL_AFTER_MS_MIN, KILL_AFTER_MS_MAX));
      ordo.kill('SIGKILL');
      await ordo.exited;
      ordo = null;
      await Promise.all(loaders.map((l) => l.closed));
      for (const l of loaders) {
        for (const g of l.grants) grants.push(g);
        errorReplies += l.errors.length;
        for (const a of l.anomalies) anomalies.push(a);
        for (const e of l.errors) if (!/TIMEOUT|TRYAGAIN|LOADING/.test(e)) anomalies.push(`cycle ${cycle}: error reply: ${e}`);
      }
      for (const a of overlaps(grants)) anomalies.push(a);
      log(`crash: cycle ${cycle + 1}/${options.cycles}: ${grants.length} acks so far, restart took ${restartMs} ms`);
    }
    if (anomalies.length === 0) {
      // One last restart: everything acknowledged is there, and a graceful stop works.
      const t0 = Date.now();
      try {
        ordo = await startOrdo({ dataDir });
        restartMsMax = Math.max(restartMsMax, Date.now() - t0);
        await checkCovered(ordo.port, 'final restart');
        const code = await ordo.stop();
        ordo = null;
        if (code !== 0) anomalies.push(`graceful stop after the last restart exited with ${String(code)}`);
      } catch (e) {
        anomalies.push(`final restart failed: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
  } finally {
    if (ordo !== null) await ordo.stop();
    removeDir(dataDir);
  }
  return {
    seed: options.seed,
    cycles: options.cycles,
    acks: grants.length,
    valuesHandedOut: grants.reduce((n, g) => n + (g.last - g.first + 1n), 0n),
    errorReplies,
    restartMsMax,
    anomalies,
    replay,
  };
}

export function formatCrashResult(r: CrashResult): string {
  return [
    `crash ${r.anomalies.length === 0 ? 'passed' : 'FAILED'}`,
    `  cycles:            ${r.cycles}`,
    `  acks:              ${r.acks} (${r.valuesHandedOut} values handed out)`,
    `  error replies:     ${r.errorReplies}`,
    `  max restart time:  ${r.restartMsMax} ms`,
    `  seed:              ${r.seed}`,
    `  replay:            ${r.replay}`,
    ...r.anomalies.slice(0, 50).map((a) => `  ANOMALY: ${a}`),
  ].join('\n');
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { cycles: { type: 'string' }, seed: { type: 'string' } } });
  const result = await runCrash({
    cycles: positiveInt('cycles', values.cycles, 50),
    seed: seedFrom(values.seed),
    log: (line) => console.log(line),
  });
  console.log(formatCrashResult(result));
  process.exitCode = result.anomalies.length === 0 ? 0 : 1;
}

if (isMain(import.meta.url)) {
  main().catch((e: unknown) => {
    console.error(e);
    process.exit(2);
  });
}
