// Window mode against redis-server, measured by the stock `redis-benchmark`:
//
// 1. INCR on 1000 random keys (counter:000000000000 ..) from 50 connections,
//    16 deep and without pipelining, against ordo started with
//    --window-keys 'counter:*' (so plain INCR is served from windows, durably
//    reserved) and against redis-server without persistence. Target: ordo at
//    least 0.8 of redis-server at -P 16.
// 2. Ids handed out per second by `SEQNEXT key COUNT 1000` on 1000 keys, for
//    strict sequences (every request a durable commit) and window sequences.
//    ids/s = requests/s * 1000. Target: 100M ids/s.
//
// Servers listen on 127.0.0.1 on free ports with temporary data directories and
// are stopped at the end, also on failure. Each redis-benchmark run is killed
// after RUN_TIMEOUT_MS (it spins forever against a dead server) and reported as
// overrun. Numbers only: nothing here fails on time.
//
// Run: node dist/bench/sequences.js

import { cpus, loadavg, totalmem } from 'node:os';
import { pathToFileURL } from 'node:url';
import { removeDir, runProgram, startOrdo, startRedis, type RunningProcess } from '../testkit/processes.js';
import { plainReply, request, RespClient } from '../testkit/resp.js';
import { warmupRequestsFor } from './redis-benchmark.js';

/** Parallel connections (-c). */
export const CLIENT_COUNT = 50;
/** Distinct keys (-r). */
export const KEYSPACE_SIZE = 1000;
/** Requests per INCR run (-n). */
export const INCR_REQUESTS = 300_000;
/** Requests per SEQNEXT run (-n). */
export const SEQNEXT_REQUESTS = 200_000;
/** Values per SEQNEXT request. */
export const SEQNEXT_COUNT = 1000;
/** Pipeline depth of the SEQNEXT runs. */
export const SEQNEXT_PIPELINE = 16;
/** Pipeline depths of the INCR runs. */
export const INCR_PIPELINES: readonly number[] = [16, 1];
/** A redis-benchmark run taking longer than this is killed and reported as overrun. */
export const RUN_TIMEOUT_MS = 120_000;

export interface RunResult {
  readonly requestsPerSec: number | null;
  /** Set when the run did not finish normally (overrun, or no result printed). */
  readonly problem: string | null;
  readonly seconds: number;
}

export interface IncrRow {
  readonly pipeline: number;
  readonly ordo: RunResult;
  readonly redis: RunResult;
  /** ordo requests/s over redis-server requests/s. */
  readonly ratio: number | null;
}

export interface SeqnextRow {
  readonly mode: 'strict' | 'window';
  readonly run: RunResult;
  readonly idsPerSec: number | null;
}

export interface SequenceBenchResult {
  readonly dateIso: string;
  readonly machine: string;
  readonly node: string;
  /** 1-minute load average before and after the runs: other work on the machine skews the numbers. */
  readonly loadBefore: number;
  readonly loadAfter: number;
  readonly incr: IncrRow[];
  readonly seqnext: SeqnextRow[];
  /** Sanity checks after the runs (values the servers hold), for the reader. */
  readonly notes: string[];
}

/** Runs redis-benchmark with `args`; parses the last "N requests per second". */
export async function runRedisBenchmark(args: readonly string[], timeoutMs = RUN_TIMEOUT_MS): Promise<RunResult> {
  let run;
  try {
    run = await runProgram('redis-benchmark', args, { timeoutMs });
  } catch (e) {
    return { requestsPerSec: null, problem: `could not start redis-benchmark: ${(e as Error).message}`, seconds: 0 };
  }
  const out = run.stdout + run.stderr;
  const matches = [...out.matchAll(/([\d.]+) requests per second/g)];
  const last = matches[matches.length - 1]?.[1];
  const rate = last === undefined ? null : Number(last);
  let problem: string | null = null;
  if (run.timedOut) problem = `overrun: killed after ${timeoutMs / 1000} s`;
  else if (run.code !== 0) problem = `redis-benchmark exited with ${run.code ?? run.signal ?? 'unknown'}: ${out.slice(-300).trim()}`;
  else if (/error/i.test(out)) problem = `errors from the server: ${(/.*error.*/i.exec(out)?.[0] ?? '').trim()}`;
  else if (rate === null) problem = `no result in its output: ${out.slice(-300).trim()}`;
  return { requestsPerSec: problem === null ? rate : null, problem, seconds: run.seconds };
}

const incrArgs = (port: number, pipeline: number, requests = INCR_REQUESTS): string[] => [
  '-h',
  '127.0.0.1',
  '-p',
  String(port),
  '-q',
  '-t',
  'incr',
  '-c',
  String(CLIENT_COUNT),
  '-n',
  String(requests),
  '-r',
  String(KEYSPACE_SIZE),
  '-P',
  String(pipeline),
];

const seqnextArgs = (port: number, prefix: string, requests = SEQNEXT_REQUESTS): string[] => [
  '-h',
  '127.0.0.1',
  '-p',
  String(port),
  '-q',
  '-c',
  String(CLIENT_COUNT),
  '-n',
  String(requests),
  '-P',
  String(SEQNEXT_PIPELINE),
  '-r',
  String(KEYSPACE_SIZE),
  'SEQNEXT',
  `${prefix}__rand_int__`,
  'COUNT',
  String(SEQNEXT_COUNT),
];

/** Unreported runs before measuring, as in the other benchmarks: JIT, first windows of the keys. */
const INCR_WARMUP_REQUESTS = warmupRequestsFor(INCR_REQUESTS);
const SEQNEXT_WARMUP_REQUESTS = warmupRequestsFor(SEQNEXT_REQUESTS);

/** The key redis-benchmark makes of `prefix__rand_int__` for random number i (12 digits, zero padded). */
const benchKey = (prefix: string, i: number): string => `${prefix}${String(i).padStart(12, '0')}`;

/** Sends every command on one connection, pipelined; returns the replies' first lines (`+OK`, `-ERR ...`, `:5`). */
async function sendAll(port: number, commands: readonly (readonly string[])[]): Promise<string[]> {
  const c = await RespClient.connect(port, 30_000);
  try {
    const replies = await Promise.all(commands.map((args) => c.send(args, 30_000)));
    return replies.map((r) => `${r.kind}${r.line}`);
  } finally {
    c.close();
  }
}

/** The mode SEQINFO reports for a key (window, strict, counter), or what came back instead. */
async function seqInfoMode(port: number, key: string): Promise<string> {
  const reply = await request(port, ['SEQINFO', key], 5_000);
  if (reply.kind === '-') return JSON.stringify(reply.line);
  const fields = plainReply(reply);
  if (!Array.isArray(fields)) return JSON.stringify(fields);
  const mode = fields[fields.indexOf('mode') + 1];
  return typeof mode === 'string' ? mode : JSON.stringify(fields);
}

async function createSequences(port: number, prefix: string, mode: 'strict' | 'window'): Promise<void> {
  const commands = Array.from({ length: KEYSPACE_SIZE }, (_v, i) => ['SEQCREATE', benchKey(prefix, i), 'MODE', mode]);
  const replies = await sendAll(port, commands);
  const bad = replies.filter((r) => r !== '+OK');
  if (bad.length > 0) throw new Error(`SEQCREATE failed: ${bad[0] ?? 'no reply'}`);
}

const rate = (n: number | null): string => (n === null ? '-' : Math.round(n).toLocaleString('en-US'));

function machineText(): string {
  const list = cpus();
  return `${list[0]?.model.trim() ?? 'unknown cpu'}, ${list.length} cores, ${(totalmem() / 2 ** 30).toFixed(1)} GiB RAM`;
}

export async function runSequenceBench(log: (line: string) => void = () => undefined): Promise<SequenceBenchResult> {
  const servers: RunningProcess[] = [];
  const dirs: string[] = [];
  const notes: string[] = [];
  const loadBefore = loadavg()[0] ?? 0;
  try {
    const ordo = await startOrdo({ args: ['--window-keys', 'counter:*'] });
    servers.push(ordo);
    dirs.push(ordo.dataDir);
    const redis = await startRedis();
    servers.push(redis);

    log(`warm-up: ${INCR_WARMUP_REQUESTS} INCRs -P 16 on each server`);
    await runRedisBenchmark(incrArgs(ordo.port, 16, INCR_WARMUP_REQUESTS));
    await runRedisBenchmark(incrArgs(redis.port, 16, INCR_WARMUP_REQUESTS));
    const incr: IncrRow[] = [];
    for (const pipeline of INCR_PIPELINES) {
      log(`INCR -P ${pipeline}: ordo`);
      const o = await runRedisBenchmark(incrArgs(ordo.port, pipeline));
      log(`INCR -P ${pipeline}: redis-server`);
      const r = await runRedisBenchmark(incrArgs(redis.port, pipeline));
      const ratio = o.requestsPerSec !== null && r.requestsPerSec !== null ? o.requestsPerSec / r.requestsPerSec : null;
      incr.push({ pipeline, ordo: o, redis: r, ratio });
    }
    notes.push(`after the INCR runs, SEQINFO ${benchKey('counter:', 0)} on ordo says mode ${await seqInfoMode(ordo.port, benchKey('counter:', 0))}`);

    await createSequences(ordo.port, 'strict:', 'strict');
    await createSequences(ordo.port, 'window:', 'window');
    const seqnext: SeqnextRow[] = [];
    for (const m of ['strict', 'window'] as const) {
      log(`SEQNEXT COUNT ${SEQNEXT_COUNT}: ${m} (after ${SEQNEXT_WARMUP_REQUESTS} unreported)`);
      await runRedisBenchmark(seqnextArgs(ordo.port, `${m}:`, SEQNEXT_WARMUP_REQUESTS));
      const run = await runRedisBenchmark(seqnextArgs(ordo.port, `${m}:`));
      seqnext.push({ mode: m, run, idsPerSec: run.requestsPerSec === null ? null : run.requestsPerSec * SEQNEXT_COUNT });
      const [current] = await sendAll(ordo.port, [['SEQCURRENT', benchKey(`${m}:`, 0)]]);
      notes.push(`after the ${m} SEQNEXT run, SEQCURRENT ${benchKey(`${m}:`, 0)} = ${current ?? '?'}`);
    }
    return {
      dateIso: new Date().toISOString(),
      machine: machineText(),
      node: process.version,
      loadBefore,
      loadAfter: loadavg()[0] ?? 0,
      incr,
      seqnext,
      notes,
    };
  } finally {
    for (const s of servers) await s.stop();
    for (const d of dirs) removeDir(d);
  }
}

function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string => `| ${cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join(' | ')} |`;
  return [line(header), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.map(line)].join('\n');
}

const runText = (r: RunResult): string => (r.problem !== null ? `(${r.problem})` : rate(r.requestsPerSec));

export function formatSequenceBench(r: SequenceBenchResult): string {
  const incrTable = table(
    ['benchmark', 'ordo req/s', 'redis-server req/s', 'ordo / redis'],
    r.incr.map((row) => [
      `INCR -c ${CLIENT_COUNT} -n ${INCR_REQUESTS} -r ${KEYSPACE_SIZE} -P ${row.pipeline}`,
      runText(row.ordo),
      runText(row.redis),
      row.ratio === null ? '-' : row.ratio.toFixed(2),
    ]),
  );
  const seqTable = table(
    ['benchmark', 'requests/s', 'ids/s'],
    r.seqnext.map((row) => [
      `SEQNEXT COUNT ${SEQNEXT_COUNT}, ${row.mode}, -c ${CLIENT_COUNT} -n ${SEQNEXT_REQUESTS} -P ${SEQNEXT_PIPELINE} -r ${KEYSPACE_SIZE}`,
      runText(row.run),
      rate(row.idsPerSec),
    ]),
  );
  return [
    `sequences benchmark, ${r.dateIso}`,
    `machine: ${r.machine}; node ${r.node}; load average (1 min) ${r.loadBefore.toFixed(2)} before, ${r.loadAfter.toFixed(2)} after`,
    `ordo: --window-keys 'counter:*' (default --fsync always, --window-size 10000); redis-server: --save '' --appendonly no`,
    `warm-up, not reported: ${INCR_WARMUP_REQUESTS} INCRs -P 16 on each server; ${SEQNEXT_WARMUP_REQUESTS} SEQNEXTs before each SEQNEXT run`,
    '',
    incrTable,
    '',
    seqTable,
    '',
    ...r.notes.map((n) => `note: ${n}`),
  ].join('\n');
}

const invokedPath = process.argv[1];
if (invokedPath !== undefined && import.meta.url === pathToFileURL(invokedPath).href) {
  const result = await runSequenceBench((line) => process.stderr.write(`  ${line}\n`));
  console.log(formatSequenceBench(result));
}
