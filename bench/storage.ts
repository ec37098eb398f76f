// `npm run bench -- --only storage`: how the storage holds up as the keyspace
// grows, what it costs in memory, and how long a restart takes, side by side
// with redis-server in the same run, both writing every INCR to disk before
// replying:
//
//   ordo --fsync always  vs  redis-server --appendonly yes --appendfsync always --save ''
//
// 1. Growing keyspace: `redis-benchmark -t incr -c 50 -P 16 -r 100000000`, N
//    requests (3,000,000; --quick 300,000) run as ten consecutive
//    redis-benchmark runs of N/10 against the same server, so the keyspace
//    keeps growing from one tenth to the next and each tenth has its own rate.
//    DBSIZE after each tenth counts the keys; a tenth that added almost none
//    (redis-benchmark drew the keys of an earlier run) runs again. All of
//    ordo's tenths run first, then, once ordo is idle, redis-server's.
// 2. Memory: DBSIZE, VmRSS (with its anonymous and file-backed parts) of each
//    server process, and the size of its data directory, both idle.
// 3. Restart to serving: INCR a marker key, stop the server (SIGTERM and wait
//    for its exit; later kill -9 right after another N/10 INCRs), start the same
//    command line on the same port and data directory, and time from the spawn
//    to the first GET that answers the marker's value.
//
// Numbers only: nothing here fails on time. Servers and their temporary data
// directories come from BenchServer (redis-benchmark.ts), which stops them and
// removes the directories at the end, also on failure and on a signal.
//
// Run: node dist/bench/run.js --only storage [--quick]

import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { RespClient, RespErrorReply, RespNoReply, type PlainReply } from '../testkit/resp.js';
import {
  BenchServer,
  BenchSetupError,
  benchmarkArgs,
  CLIENT_COUNT,
  commandLine,
  formatRate,
  formatTable,
  RUN_TIMEOUT_MS_DEFAULT,
  runBenchmark,
  runBenchmarkOnce,
  SERVER_SPECS,
  warmupRequestsFor,
  type Product,
  type RunOutcome,
  type ServerSpec,
} from './redis-benchmark.js';

/** INCRs per server in the growing-keyspace run, full and --quick. */
export const STORAGE_REQUESTS_FULL = 3_000_000;
export const STORAGE_REQUESTS_QUICK = 300_000;
/** The growing run is measured in this many consecutive redis-benchmark runs. */
export const SLICE_COUNT = 10;
/** redis-benchmark -r: keys are counter:<12 digits> drawn from this many. */
export const GROWING_KEY_RANGE = 100_000_000;
/** redis-benchmark -P of the growing run. */
export const GROWING_PIPELINE_DEPTH = 16;
/**
 * A tenth that adds fewer new keys than this fraction of the keys due is run
 * again: redis-benchmark 7.0 now and then draws exactly the keys of the run
 * before it (its random seed is not unique per process), and a tenth of
 * updates to old keys says nothing about a growing keyspace.
 */
const NEW_KEYS_FRACTION_MIN = 0.5;
/** Repeats of one tenth, at most; the last run counts whatever it drew. */
const SLICE_REPEATS_MAX = 5;
/** The key written before each stop and read back after the restart. */
export const MARKER_KEY = 'ordo-bench:storage:marker';
/** A SIGTERM not followed by an exit within this long is finished with SIGKILL (and the row says so). */
const GRACEFUL_STOP_BOUND_MS = 120_000;
/** A restarted server that has not answered the marker within this long is reported as such. */
const RESTART_BOUND_MS = 300_000;
/** Pause between two connection or GET attempts while a server restarts: the resolution of the restart times. */
const RESTART_POLL_MS = 5;
/** Bound on one connection attempt while a server restarts. */
const RESTART_CONNECT_TIMEOUT_MS = 5_000;
/** A restart probe waiting longer than this for its GET's reply gets company: another connection probes too. */
const RESTART_PROBE_STUCK_MS = 100;
/** Open probe connections at most, while a server restarts. */
const RESTART_PROBES_MAX = 200;
/** Bound on DBSIZE, INCR and INFO sent by the benchmark itself. */
const COMMAND_TIMEOUT_MS = 30_000;
/** A server counts as idle once it used less than this fraction of a core over one sample. */
const IDLE_CPU_FRACTION_MAX = 0.05;
/** Length of one CPU sample while waiting for a server to become idle. */
const IDLE_SAMPLE_MS = 500;
/** Bound on waiting for a server to become idle; past it the bench goes on and says so. */
const IDLE_WAIT_BOUND_MS = 60_000;

const DURABLE_SPECS: Readonly<Record<Product, ServerSpec>> = {
  ordo: specFor('ordo'),
  redis: specFor('redis'),
};

function specFor(product: Product): ServerSpec {
  const spec = SERVER_SPECS.find((s) => s.product === product && s.durability === 'durable');
  if (spec === undefined) throw new Error(`no durable ${product} server spec`);
  return spec;
}

/** redis-benchmark arguments of one slice of the growing run. */
export function growingArgs(port: string, requests: number): string[] {
  return benchmarkArgs(port, GROWING_PIPELINE_DEPTH, requests, CLIENT_COUNT, [], GROWING_KEY_RANGE);
}

/** Requests per slice: N / SLICE_COUNT rounded up to whole pipelines. */
export function sliceRequestsFor(requests: number): number {
  return Math.ceil(requests / SLICE_COUNT / GROWING_PIPELINE_DEPTH) * GROWING_PIPELINE_DEPTH;
}

/** Distinct keys expected after `requests` uniform draws out of GROWING_KEY_RANGE. */
export function expectedDistinctKeys(requests: number): number {
  return GROWING_KEY_RANGE * -Math.expm1(requests * Math.log1p(-1 / GROWING_KEY_RANGE));
}

// ---------------------------------------------------------------------------
// What /proc says about a server process (Linux; null elsewhere).

/** Clock ticks per second of /proc/<pid>/stat's CPU times. */
let clockTicksPerSecond: number | null = null;

function ticksPerSecond(): number {
  if (clockTicksPerSecond === null) {
    const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8', timeout: 5_000 });
    const n = Number(r.stdout?.trim());
    clockTicksPerSecond = r.status === 0 && Number.isSafeInteger(n) && n > 0 ? n : 100;
  }
  return clockTicksPerSecond;
}

/** User + system CPU seconds the process (all its threads) has used, or null. */
export function cpuSeconds(pid: number | undefined): number | null {
  if (pid === undefined) return null;
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const user = Number(fields[11]);
  const system = Number(fields[12]);
  return Number.isFinite(user) && Number.isFinite(system) ? (user + system) / ticksPerSecond() : null;
}

export interface MemoryUsage {
  /** VmRSS: resident memory, anonymous + file-backed + shared. */
  readonly vmRssBytes: number | null;
  /** RssAnon: heap, stacks, anonymous maps. */
  readonly rssAnonBytes: number | null;
  /** RssFile: resident pages of mapped files (an mmap'd database counts here). */
  readonly rssFileBytes: number | null;
}

/** The resident-memory lines of /proc/<pid>/status. */
export function memoryUsage(pid: number | undefined): MemoryUsage {
  let text = '';
  try {
    if (pid !== undefined) text = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    // not Linux, or gone: every field null
  }
  const field = (name: string): number | null => {
    const m = new RegExp(`^${name}:\\s+(\\d+) kB$`, 'm').exec(text);
    return m === null ? null : Number(m[1]) * 1024;
  };
  return { vmRssBytes: field('VmRSS'), rssAnonBytes: field('RssAnon'), rssFileBytes: field('RssFile') };
}

/** st_blocks counts units of this many bytes (POSIX), whatever the filesystem's block size. */
const STAT_BLOCK_BYTES = 512;

/** Disk space allocated to the files under `dir` (st_blocks, so sparse files count what they use). */
export function allocatedBytes(dir: string): number {
  let total = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) total += allocatedBytes(path);
    else if (entry.isFile()) total += statSync(path).blocks * STAT_BLOCK_BYTES;
  }
  return total;
}

// ---------------------------------------------------------------------------
// Talking to a server.

async function call(port: number, args: readonly string[]): Promise<PlainReply> {
  const client = await RespClient.connect(port, COMMAND_TIMEOUT_MS);
  try {
    return await client.call(args, COMMAND_TIMEOUT_MS);
  } finally {
    client.close();
  }
}

async function integerReply(server: BenchServer, args: readonly string[]): Promise<number> {
  let reply: PlainReply;
  try {
    reply = await call(server.port, args);
  } catch (e) {
    throw new BenchSetupError(`${args.join(' ')} on ${server.label}: ${(e as Error).message}`);
  }
  const n = Number(reply);
  if (typeof reply !== 'string' || !Number.isSafeInteger(n))
    throw new BenchSetupError(`${args.join(' ')} on ${server.label} answered ${JSON.stringify(reply)}`);
  return n;
}

const dbsize = (server: BenchServer): Promise<number> => integerReply(server, ['DBSIZE']);

/** Whether redis-server is rewriting its AOF in a child process (INFO persistence). */
async function aofRewriteRunning(server: BenchServer): Promise<boolean> {
  const reply = await call(server.port, ['INFO', 'persistence']);
  return typeof reply === 'string' && /^aof_rewrite_in_progress:1\r?$/m.test(reply);
}

export interface IdleWait {
  readonly seconds: number;
  /** The server's CPU seconds while waiting. */
  readonly cpuSeconds: number | null;
  /** False when the bound passed first. */
  readonly idle: boolean;
}

/**
 * Waits until the server process uses less than IDLE_CPU_FRACTION_MAX of a core
 * over a sample (and, for redis-server, no AOF rewrite runs), so that work it
 * does after its replies (checkpoints, rewrites) is neither measured against
 * the other server nor left out of its memory.
 */
async function waitUntilIdle(server: BenchServer): Promise<IdleWait> {
  const pid = server.proc.pid;
  const started = performance.now();
  const cpuStart = cpuSeconds(pid);
  for (;;) {
    const before = cpuSeconds(pid);
    await sleep(IDLE_SAMPLE_MS);
    const after = cpuSeconds(pid);
    const elapsedMs = performance.now() - started;
    const done = (idle: boolean): IdleWait => ({
      seconds: elapsedMs / 1000,
      cpuSeconds: after === null || cpuStart === null ? null : after - cpuStart,
      idle,
    });
    if (server.exitDescription !== null) throw new BenchSetupError(server.target.deadServer() ?? `${server.label} exited`);
    const quiet = before === null || after === null || after - before < (IDLE_CPU_FRACTION_MAX * IDLE_SAMPLE_MS) / 1000;
    if (quiet && !(server.spec.product === 'redis' && (await aofRewriteRunning(server)))) return done(true);
    if (elapsedMs > IDLE_WAIT_BOUND_MS) return done(false);
  }
}

// ---------------------------------------------------------------------------
// 1. The growing keyspace.

export interface GrowingResult {
  readonly label: string;
  /** One outcome per tenth, in order. */
  readonly slices: readonly RunOutcome[];
  /** DBSIZE after each tenth. */
  readonly keysAfterSlice: readonly number[];
  /** Runs that drew the keys of an earlier run and were repeated, saying so. */
  readonly repeats: readonly string[];
  /** The server's CPU seconds during the ten runs. */
  readonly cpuSeconds: number | null;
  /** Waiting for the server to become idle after them. */
  readonly idleWait: IdleWait;
  /** The machine's 1-minute load average when the ten runs began and when they ended. */
  readonly loadAtStart: number;
  readonly loadAtEnd: number;
}

async function runGrowing(server: BenchServer, sliceRequests: number, runTimeoutMs: number, log: (line: string) => void): Promise<GrowingResult> {
  const pid = server.proc.pid;
  const loadAtStart = loadavg()[0] ?? 0;
  const cpuBefore = cpuSeconds(pid);
  const slices: RunOutcome[] = [];
  const keysAfterSlice: number[] = [];
  const repeats: string[] = [];
  let keys = await dbsize(server);
  for (let i = 0; i < SLICE_COUNT; i++) {
    const what = `tenth ${i + 1}/${SLICE_COUNT} against ${server.label}`;
    const expectedNewKeys = expectedDistinctKeys((i + 1) * sliceRequests) - expectedDistinctKeys(i * sliceRequests);
    for (let attempt = 0; ; attempt++) {
      const outcome = await runBenchmark(server.target, growingArgs(String(server.port), sliceRequests), what, runTimeoutMs);
      const newKeys = (await dbsize(server)) - keys;
      keys += newKeys;
      log(
        `${what}: ` +
          (outcome.kind === 'ok'
            ? `${formatRate(outcome.measurement.requestsPerSec)} req/s, p99 ${outcome.measurement.p99Ms ?? '?'} ms (${outcome.measurement.wallSeconds.toFixed(1)} s)`
            : `overran ${Math.round(runTimeoutMs / 1000)} s, killed`) +
          `, ${newKeys} new keys`,
      );
      const drewOldKeys = outcome.kind === 'ok' && newKeys < expectedNewKeys * NEW_KEYS_FRACTION_MIN;
      if (!drewOldKeys || attempt >= SLICE_REPEATS_MAX) {
        slices.push(outcome);
        keysAfterSlice.push(keys);
        break;
      }
      const why = `tenth ${i + 1}: a run added ${newKeys} keys where about ${Math.round(expectedNewKeys)} were due (it drew the keys of an earlier run), so it ran again`;
      repeats.push(why);
      log(why);
    }
  }
  const cpuAfter = cpuSeconds(pid);
  const loadAtEnd = loadavg()[0] ?? 0;
  const idleWait = await waitUntilIdle(server);
  log(`${server.label}: ${idleWait.idle ? 'idle' : 'STILL BUSY'} after ${idleWait.seconds.toFixed(1)} s (${idleWait.cpuSeconds?.toFixed(1) ?? '?'} CPU s)`);
  return {
    label: server.label,
    slices,
    keysAfterSlice,
    repeats,
    cpuSeconds: cpuBefore === null || cpuAfter === null ? null : cpuAfter - cpuBefore,
    idleWait,
    loadAtStart,
    loadAtEnd,
  };
}

/** All requests over the sum of the tenths' durations (gaps between the redis-benchmark runs left out); null if one overran. */
export function overallRate(slices: readonly RunOutcome[], sliceRequests: number): number | null {
  let seconds = 0;
  for (const s of slices) {
    if (s.kind !== 'ok') return null;
    seconds += sliceRequests / s.measurement.requestsPerSec;
  }
  return slices.length === 0 ? null : (slices.length * sliceRequests) / seconds;
}

// ---------------------------------------------------------------------------
// 2. Memory.

export interface MemoryResult extends MemoryUsage {
  readonly label: string;
  readonly keys: number;
  readonly dataDirBytes: number;
}

async function measureMemory(server: BenchServer): Promise<MemoryResult> {
  return { label: server.label, keys: await dbsize(server), ...memoryUsage(server.proc.pid), dataDirBytes: allocatedBytes(server.dataDir) };
}

// ---------------------------------------------------------------------------
// 3. Restart to serving.

export type StopHow = 'SIGTERM' | 'SIGKILL';

export interface RestartResult {
  readonly label: string;
  readonly product: Product;
  readonly how: StopHow;
  /** Growing-keyspace INCRs sent right before the marker and the stop (0: none). */
  readonly loadBeforeStop: number;
  readonly keysBefore: number;
  /** From the signal to the process's exit. */
  readonly stopMs: number;
  readonly exitedWith: string;
  /** From the spawn to the first accepted connection; null if none. */
  readonly listeningMs: number | null;
  /** From the spawn to the first GET answering the marker's value; null if none within RESTART_BOUND_MS. */
  readonly servingMs: number | null;
  /** The first reply before that one (an error such as LOADING, or another value), with when it came. */
  readonly firstOtherReply: string | null;
  /** DBSIZE once serving again; null if it never served. */
  readonly keysAfter: number | null;
}

/** The server being restarted: replaced by the relaunched one as soon as it is spawned, so a failure stops the right process. */
interface ServerSlot {
  server: BenchServer;
}

/**
 * Probes the restarting server until a GET answers `expected`: connection
 * attempts every RESTART_POLL_MS until one is accepted; then GETs on that
 * connection, RESTART_POLL_MS after each error reply. A server may hold
 * requests while it starts, answering them late or never, so whenever every
 * open probe has waited longer than RESTART_PROBE_STUCK_MS for its reply,
 * another connection probes too. The time is that of the first right answer on
 * any of them.
 */
async function waitForMarker(
  server: BenchServer,
  expected: string,
  spawnedAtMs: number,
): Promise<Pick<RestartResult, 'listeningMs' | 'servingMs' | 'firstOtherReply'>> {
  let listeningMs: number | null = null;
  let servingMs: number | null = null;
  let firstOtherReply: string | null = null;
  let probeFailure: Error | null = null;
  /** Open probes, each with when its unanswered GET was sent (null while it waits to send the next). */
  const probes = new Map<RespClient, number | null>();
  const sinceSpawnMs = (): number => performance.now() - spawnedAtMs;
  const finished = (): boolean => servingMs !== null || probeFailure !== null;

  const probe = async (client: RespClient): Promise<void> => {
    try {
      while (!finished()) {
        probes.set(client, performance.now());
        let reply: PlainReply;
        try {
          reply = await client.call(['GET', MARKER_KEY], RESTART_BOUND_MS);
        } catch (e) {
          if (e instanceof RespNoReply) return;
          if (!(e instanceof RespErrorReply)) throw e;
          firstOtherReply ??= `-${e.message} at ${Math.round(sinceSpawnMs())} ms`;
          probes.set(client, null);
          await sleep(RESTART_POLL_MS);
          continue;
        }
        if (reply === expected) {
          servingMs ??= sinceSpawnMs();
          return;
        }
        firstOtherReply ??= `${JSON.stringify(reply)} at ${Math.round(sinceSpawnMs())} ms`;
        probes.set(client, null);
        await sleep(RESTART_POLL_MS);
      }
    } finally {
      probes.delete(client);
      client.close();
    }
  };

  try {
    while (!finished()) {
      if (server.exitDescription !== null) {
        throw new BenchSetupError(`${server.label} exited (${server.exitDescription}) while restarting (${server.commandText}): ${server.output().trim()}`);
      }
      if (sinceSpawnMs() > RESTART_BOUND_MS) break;
      const now = performance.now();
      const allStuck = [...probes.values()].every((sentAtMs) => sentAtMs !== null && now - sentAtMs > RESTART_PROBE_STUCK_MS);
      if (allStuck && probes.size < RESTART_PROBES_MAX) {
        try {
          const client = await RespClient.connect(server.port, RESTART_CONNECT_TIMEOUT_MS);
          listeningMs ??= sinceSpawnMs();
          probes.set(client, null);
          probe(client).catch((e: unknown) => (probeFailure ??= e instanceof Error ? e : new Error(String(e))));
        } catch (e) {
          if (!(e instanceof RespNoReply)) throw e;
        }
      }
      await sleep(RESTART_POLL_MS);
    }
    // Set from a probe's callback, so the compiler cannot see it change: widen it back.
    const failure = probeFailure as Error | null;
    if (failure !== null) throw failure;
    return { listeningMs, servingMs, firstOtherReply };
  } finally {
    for (const client of probes.keys()) client.close();
  }
}

async function timeRestart(slot: ServerSlot, how: StopHow, loadBeforeStop: number, runTimeoutMs: number, log: (line: string) => void): Promise<RestartResult> {
  const old = slot.server;
  if (loadBeforeStop > 0) {
    const outcome = await runBenchmark(old.target, growingArgs(String(old.port), loadBeforeStop), `INCRs before the kill of ${old.label}`, runTimeoutMs);
    log(
      `${old.label}: ${loadBeforeStop.toLocaleString('en-US')} more INCRs, ${outcome.kind === 'ok' ? `${formatRate(outcome.measurement.requestsPerSec)} req/s` : 'overran'}`,
    );
  }
  const marker = String(await integerReply(old, ['INCR', MARKER_KEY]));
  const keysBefore = await dbsize(old);
  const stopStarted = performance.now();
  const exitedWith = await old.halt(how, GRACEFUL_STOP_BOUND_MS);
  const stopMs = performance.now() - stopStarted;
  const spawnedAtMs = performance.now();
  const next = old.relaunch();
  slot.server = next;
  const timing = await waitForMarker(next, marker, spawnedAtMs);
  const keysAfter = timing.servingMs === null ? null : await dbsize(next);
  const label = old.label;
  log(
    `${label}, ${how === 'SIGTERM' ? 'SIGTERM' : 'kill -9'}: stopped in ${Math.round(stopMs)} ms (${exitedWith}), ` +
      `listening after ${timing.listeningMs === null ? '-' : Math.round(timing.listeningMs)} ms, ` +
      `GET ${MARKER_KEY} = ${marker} after ${timing.servingMs === null ? `NONE within ${RESTART_BOUND_MS / 1000} s` : `${Math.round(timing.servingMs)} ms`}; ` +
      `keys ${keysBefore} before, ${keysAfter ?? '?'} after`,
  );
  return { label, product: old.spec.product, how, loadBeforeStop, keysBefore, stopMs, exitedWith, ...timing, keysAfter };
}

// ---------------------------------------------------------------------------
// The whole section.

export interface StorageBenchOptions {
  /** INCRs per server in the growing run (default STORAGE_REQUESTS_FULL). */
  requests?: number;
  /** Bound on one redis-benchmark run (default RUN_TIMEOUT_MS_DEFAULT). */
  runTimeoutMs?: number;
  /** Where the temporary data directories go. */
  parentDir: string;
  log?: (line: string) => void;
}

export interface StorageReport {
  readonly requests: number;
  readonly sliceRequests: number;
  readonly warmupRequests: number;
  readonly runTimeoutMs: number;
  readonly commandLines: readonly string[];
  readonly growing: Readonly<Record<Product, GrowingResult>>;
  readonly memory: Readonly<Record<Product, MemoryResult>>;
  readonly restarts: readonly RestartResult[];
}

/** The command lines this section runs, PORT and DIR standing for the free port and temporary directory. */
export function plannedStorageCommandLines(requests: number): string[] {
  const slice = sliceRequestsFor(requests);
  return [
    ...(['ordo', 'redis'] as const).map((p) => `${DURABLE_SPECS[p].label}:  ${commandLine(DURABLE_SPECS[p].command, DURABLE_SPECS[p].args('PORT', 'DIR'))}`),
    `warm-up, 1000 keys, not reported:  ${commandLine('redis-benchmark', benchmarkArgs('PORT', GROWING_PIPELINE_DEPTH, warmupRequestsFor(requests)))}`,
    `growing keyspace, ${SLICE_COUNT} times in a row per server (ordo's first):  ${commandLine('redis-benchmark', growingArgs('PORT', slice))}`,
    `restart: INCR ${MARKER_KEY}; SIGTERM, wait for the exit; the same server command line on PORT and DIR; GET ${MARKER_KEY} every ${RESTART_POLL_MS} ms until it answers the value`,
    `crash: the growing-keyspace command once more, INCR ${MARKER_KEY}, SIGKILL, then as for restart`,
  ];
}

/**
 * Starts ordo and redis-server (fsync always), runs the growing keyspace,
 * measures memory, times the restarts, stops both. Throws BenchSetupError when
 * something could not run; servers are stopped either way.
 */
export async function runStorageBench(options: StorageBenchOptions): Promise<StorageReport> {
  const requests = options.requests ?? STORAGE_REQUESTS_FULL;
  const runTimeoutMs = options.runTimeoutMs ?? RUN_TIMEOUT_MS_DEFAULT;
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const sliceRequests = sliceRequestsFor(requests);
  const warmupRequests = warmupRequestsFor(requests);
  const slots = new Map<Product, ServerSlot>();
  const slot = (product: Product): ServerSlot => {
    const s = slots.get(product);
    if (s === undefined) throw new Error(`no ${product} server`);
    return s;
  };
  try {
    for (const product of ['ordo', 'redis'] as const) slots.set(product, { server: await BenchServer.start(DURABLE_SPECS[product], options.parentDir) });
    const commandLines = [...slots.values()].map((s) => `${s.server.label}:\n    ${s.server.commandText}`);
    for (const line of commandLines) log(`started ${line}`);

    // JIT for ordo, page cache for both: 1000 keys, not reported.
    for (const { server } of slots.values()) {
      log(`warm-up: ${warmupRequests} INCRs -P ${GROWING_PIPELINE_DEPTH} on 1000 keys against ${server.label}`);
      await runBenchmarkOnce(server, GROWING_PIPELINE_DEPTH, warmupRequests, runTimeoutMs);
    }
    const ordo = await runGrowing(slot('ordo').server, sliceRequests, runTimeoutMs, log);
    const redis = await runGrowing(slot('redis').server, sliceRequests, runTimeoutMs, log);
    const memory = { ordo: await measureMemory(slot('ordo').server), redis: await measureMemory(slot('redis').server) };

    const restarts: RestartResult[] = [];
    for (const how of ['SIGTERM', 'SIGKILL'] as const) {
      for (const product of ['ordo', 'redis'] as const) {
        restarts.push(await timeRestart(slot(product), how, how === 'SIGKILL' ? sliceRequests : 0, runTimeoutMs, log));
      }
    }
    return { requests, sliceRequests, warmupRequests, runTimeoutMs, commandLines, growing: { ordo, redis }, memory, restarts };
  } finally {
    await Promise.all([...slots.values()].map((s) => s.server.stop()));
  }
}

// ---------------------------------------------------------------------------
// The report.

const MiB = 1024 * 1024;

function mib(bytes: number | null): string {
  return bytes === null ? 'n/a' : (bytes / MiB).toFixed(1);
}

function ratioText(a: number | null, b: number | null): string {
  return a === null || b === null || b === 0 ? 'n/a' : (a / b).toFixed(2);
}

function percentChange(from: number, to: number): string {
  const change = (to / from - 1) * 100;
  return `${change >= 0 ? '+' : ''}${change.toFixed(1)}%`;
}

function trendText(result: GrowingResult, sliceRequests: number): string {
  const first = result.slices[0];
  const last = result.slices[result.slices.length - 1];
  if (first?.kind !== 'ok' || last?.kind !== 'ok') return `${result.label}: n/a (a tenth overran)`;
  let slowest = 0;
  result.slices.forEach((s, i) => {
    const current = result.slices[slowest];
    if (s.kind === 'ok' && current?.kind === 'ok' && s.measurement.requestsPerSec < current.measurement.requestsPerSec) slowest = i;
  });
  const slow = result.slices[slowest];
  const slowRate = slow?.kind === 'ok' ? formatRate(slow.measurement.requestsPerSec) : '?';
  const half = Math.floor(result.slices.length / 2);
  const firstHalf = overallRate(result.slices.slice(0, half), sliceRequests);
  const secondHalf = overallRate(result.slices.slice(half), sliceRequests);
  return (
    `${result.label}: last tenth ${percentChange(first.measurement.requestsPerSec, last.measurement.requestsPerSec)} against the first, ` +
    `second half ${firstHalf === null || secondHalf === null ? 'n/a' : percentChange(firstHalf, secondHalf)} against the first half; ` +
    `slowest tenth: ${slowest + 1} (${slowRate} req/s); load average ${result.loadAtStart.toFixed(2)} at the start, ${result.loadAtEnd.toFixed(2)} at the end`
  );
}

function cpuText(result: GrowingResult, sliceRequests: number): string {
  const requests = (result.slices.length + result.repeats.length) * sliceRequests;
  const during = result.cpuSeconds === null ? '?' : `${result.cpuSeconds.toFixed(1)} s (${((result.cpuSeconds / requests) * 1e6).toFixed(1)} µs per INCR)`;
  const after = `${result.idleWait.cpuSeconds?.toFixed(1) ?? '?'} s more in the ${result.idleWait.seconds.toFixed(1)} s until idle${result.idleWait.idle ? '' : ' (NOT idle at the bound)'}`;
  return `${result.label}: ${during} during the ten runs, ${after}`;
}

function formatGrowing(report: StorageReport): string {
  const { ordo, redis } = report.growing;
  const overrun = `over ${Math.round(report.runTimeoutMs / 1000)} s`;
  const rate = (o: RunOutcome | undefined): string => (o === undefined ? '?' : o.kind === 'ok' ? formatRate(o.measurement.requestsPerSec) : overrun);
  const p99 = (o: RunOutcome | undefined): string => (o?.kind === 'ok' && o.measurement.p99Ms !== null ? o.measurement.p99Ms.toFixed(3) : '-');
  const rateOf = (o: RunOutcome | undefined): number | null => (o?.kind === 'ok' ? o.measurement.requestsPerSec : null);
  const keysText = (k: number | undefined): string => (k === undefined ? '?' : k.toLocaleString('en-US'));
  const header = ['tenth', 'ordo keys after', 'ordo req/s', 'ordo p99 ms', 'redis keys after', 'redis req/s', 'redis p99 ms', 'ordo/redis'];
  const rows = Array.from({ length: SLICE_COUNT }, (_, i) => {
    const o = ordo.slices[i];
    const r = redis.slices[i];
    return [
      String(i + 1),
      keysText(ordo.keysAfterSlice[i]),
      rate(o),
      p99(o),
      keysText(redis.keysAfterSlice[i]),
      rate(r),
      p99(r),
      ratioText(rateOf(o), rateOf(r)),
    ];
  });
  const ordoAll = overallRate(ordo.slices, report.sliceRequests);
  const redisAll = overallRate(redis.slices, report.sliceRequests);
  rows.push([
    'all',
    '',
    ordoAll === null ? 'n/a' : formatRate(ordoAll),
    '',
    '',
    redisAll === null ? 'n/a' : formatRate(redisAll),
    '',
    ratioText(ordoAll, redisAll),
  ]);
  const total = SLICE_COUNT * report.sliceRequests;
  return [
    `Growing keyspace: INCR on keys drawn at random from ${GROWING_KEY_RANGE.toLocaleString('en-US')}, ${CLIENT_COUNT} connections, -P ${GROWING_PIPELINE_DEPTH}, fsync always on both;`,
    `${total.toLocaleString('en-US')} requests per server as ${SLICE_COUNT} consecutive redis-benchmark runs of ${report.sliceRequests.toLocaleString('en-US')} ` +
      `(all of ordo's first, then redis-server's); "all" = every request over the sum of the ten runs' times;`,
    `keys after: DBSIZE, ${Math.round(expectedDistinctKeys(total)).toLocaleString('en-US')} distinct keys due from the ten tenths plus the warm-up's 1000`,
    '',
    formatTable(header, rows),
    '',
    ...[ordo, redis].map((g) => `  ${trendText(g, report.sliceRequests)}`),
    ...[ordo, redis].flatMap((g) => g.repeats.map((why) => `  ${g.label}, ${why}`)),
    'server CPU (user + system, all threads):',
    ...[ordo, redis].map((g) => `  ${cpuText(g, report.sliceRequests)}`),
  ].join('\n');
}

function formatMemory(report: StorageReport): string {
  const { ordo, redis } = report.memory;
  const header = ['server (idle, after the growing keyspace)', 'keys (DBSIZE)', 'VmRSS MiB', 'RssAnon MiB', 'RssFile MiB', 'data dir MiB'];
  const row = (m: MemoryResult): string[] => [
    m.label,
    m.keys.toLocaleString('en-US'),
    mib(m.vmRssBytes),
    mib(m.rssAnonBytes),
    mib(m.rssFileBytes),
    mib(m.dataDirBytes),
  ];
  const ratios = [
    'ordo/redis',
    ratioText(ordo.keys, redis.keys),
    ratioText(ordo.vmRssBytes, redis.vmRssBytes),
    ratioText(ordo.rssAnonBytes, redis.rssAnonBytes),
    ratioText(ordo.rssFileBytes, redis.rssFileBytes),
    ratioText(ordo.dataDirBytes, redis.dataDirBytes),
  ];
  return [
    'Memory: /proc/<pid>/status of each server process (VmRSS = RssAnon + RssFile + RssShmem); data dir: disk space allocated',
    '',
    formatTable(header, [row(ordo), row(redis), ratios]),
  ].join('\n');
}

function formatRestarts(report: StorageReport): string {
  const header = ['restart', 'keys before', 'stop ms', 'exited with', 'listening ms', 'serving ms', 'keys after'];
  const ms = (v: number | null): string => (v === null ? '-' : String(Math.round(v)));
  const name = (r: RestartResult): string =>
    `${r.label}, ${r.how === 'SIGTERM' ? 'SIGTERM' : `kill -9 after ${r.loadBeforeStop.toLocaleString('en-US')} more INCRs`}`;
  const rows = report.restarts.map((r) => [
    name(r),
    r.keysBefore.toLocaleString('en-US'),
    ms(r.stopMs),
    r.exitedWith,
    ms(r.listeningMs),
    r.servingMs === null ? `none in ${RESTART_BOUND_MS / 1000} s` : ms(r.servingMs),
    r.keysAfter === null ? '-' : r.keysAfter.toLocaleString('en-US'),
  ]);
  const lines = [
    `Restart to serving: from the spawn (same command line, port and data directory) to the first GET ${MARKER_KEY}`,
    'answering the value INCR gave it just before the stop; listening: the first accepted connection',
    '',
    formatTable(header, rows),
    '',
  ];
  for (const how of ['SIGTERM', 'SIGKILL'] as const) {
    const o = report.restarts.find((r) => r.product === 'ordo' && r.how === how);
    const r = report.restarts.find((x) => x.product === 'redis' && x.how === how);
    lines.push(
      `  ordo/redis, ${how === 'SIGTERM' ? 'SIGTERM' : 'kill -9'}: time to serving ${ratioText(o?.servingMs ?? null, r?.servingMs ?? null)} (above 1: ordo takes longer)`,
    );
  }
  for (const r of report.restarts) {
    if (r.firstOtherReply !== null) lines.push(`  ${name(r)}: first answered ${r.firstOtherReply}`);
    if (r.keysAfter !== null && r.keysAfter !== r.keysBefore) lines.push(`  ${name(r)}: ${r.keysBefore - r.keysAfter} KEYS MISSING after the restart`);
    if (r.how === 'SIGTERM' && r.exitedWith !== 'exit code 0') lines.push(`  ${name(r)}: did not stop cleanly (${r.exitedWith})`);
  }
  return lines.join('\n').trimEnd();
}

export function formatStorageReport(report: StorageReport): string {
  return [
    `ordo --fsync always  vs  redis-server --appendonly yes --appendfsync always --save ''; ` +
      `warm-up before everything: ${report.warmupRequests.toLocaleString('en-US')} INCRs -P ${GROWING_PIPELINE_DEPTH} on 1000 keys each, not reported`,
    '',
    formatGrowing(report),
    '',
    formatMemory(report),
    '',
    formatRestarts(report),
  ].join('\n');
}
