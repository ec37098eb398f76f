// ordo against redis-server, side by side in one run, measured by the stock
// `redis-benchmark` tool: INCR on 1000 random keys from 50 connections, without
// pipelining and 16 deep. Two pairings:
//
//   durable:   ordo --fsync always   vs  redis-server --appendonly yes --appendfsync always
//   volatile:  ordo --fsync never    vs  redis-server without persistence
//
// Every server listens on 127.0.0.1 only, on a free port, with its own temporary
// data directory, and is stopped (directory removed) at the end, also on failure.
// Every redis-benchmark run is bounded in time. A benchmark never fails on time:
// a run that overruns is reported as such. Only something that could not run (a
// server that did not start or died, a redis-benchmark that gave no result, a
// server that answered errors) is an error.
//
// Run: node dist/bench/run.js --only redis-benchmark [--quick]

import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { ALL_CHILDREN, Child, CLI_PATH, describeExit, freePort, shellLine, waitForPort } from '../testkit/processes.js';
import { RespClient } from '../testkit/resp.js';

/** Parallel connections redis-benchmark opens (-c). */
export const CLIENT_COUNT = 50;
/** Distinct keys INCR hits (-r): counter:000000000000 .. counter:000000000999. */
export const KEYSPACE_SIZE = 1000;
/** Requests per measured run (-n), full and --quick. */
export const REQUESTS_FULL = 200_000;
export const REQUESTS_QUICK = 20_000;
/** Pipeline depths measured (-P). */
export const PIPELINE_DEPTHS: readonly number[] = [1, 16];
/** A redis-benchmark run taking longer than this is killed and reported as overrun. */
export const RUN_TIMEOUT_MS_DEFAULT = 120_000;
/** How long a server may take to accept connections. */
const SERVER_START_TIMEOUT_MS = 15_000;
/** SIGTERM first; SIGKILL after this grace period. */
const SERVER_STOP_GRACE_MS = 5_000;
/** A short untimed run before the measured ones, as a fraction of the measured size. */
const WARMUP_FRACTION = 0.05;
const WARMUP_REQUESTS_MIN = 2_000;
/** Bound on the consistency check (one MGET of every key). */
const CHECK_TIMEOUT_MS = 10_000;
/** redis-benchmark's stderr kept for error messages. */
const OUTPUT_KEPT_BYTES = 16 * 1024;

/** Something the benchmark needs could not run; the message says what. */
export class BenchSetupError extends Error {
  override readonly name = 'BenchSetupError';
}

export type Product = 'ordo' | 'redis';
export type Durability = 'durable' | 'volatile';

export interface ServerSpec {
  readonly product: Product;
  readonly durability: Durability;
  /** What the row calls it, e.g. "ordo --fsync always". */
  readonly label: string;
  readonly command: string;
  args(port: string, dataDir: string): string[];
}

export const SERVER_SPECS: readonly ServerSpec[] = [
  {
    product: 'ordo',
    durability: 'durable',
    label: 'ordo --fsync always',
    command: process.execPath,
    args: (port, dir) => [CLI_PATH, '--host', '127.0.0.1', '--port', port, '--data', dir, '--fsync', 'always'],
  },
  {
    product: 'redis',
    durability: 'durable',
    label: 'redis-server AOF, appendfsync always',
    command: 'redis-server',
    args: (port, dir) => ['--bind', '127.0.0.1', '--port', port, '--dir', dir, '--save', '', '--appendonly', 'yes', '--appendfsync', 'always'],
  },
  {
    product: 'ordo',
    durability: 'volatile',
    label: 'ordo --fsync never (NOT durable)',
    command: process.execPath,
    args: (port, dir) => [CLI_PATH, '--host', '127.0.0.1', '--port', port, '--data', dir, '--fsync', 'never'],
  },
  {
    product: 'redis',
    durability: 'volatile',
    label: 'redis-server, no persistence',
    command: 'redis-server',
    args: (port, dir) => ['--bind', '127.0.0.1', '--port', port, '--dir', dir, '--save', '', '--appendonly', 'no'],
  },
];

// ---------------------------------------------------------------------------
// Servers and temporary directories, cleaned up even on a crash (the testkit
// kills every child process when this one exits; the directories go here).

const liveDirs = new Set<string>();
let exitHookInstalled = false;

/** Kills every process this benchmark started and removes its directories, synchronously. */
export function killEverythingNow(): void {
  ALL_CHILDREN.killNow();
  for (const dir of liveDirs) rmSync(dir, { recursive: true, force: true });
  liveDirs.clear();
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', killEverythingNow);
}

export const commandLine = shellLine;

function lastBytes(text: string, bytes: number): string {
  return text.length <= bytes ? text : `...${text.slice(text.length - bytes)}`;
}

export class BenchServer {
  private constructor(
    readonly spec: ServerSpec,
    readonly port: number,
    readonly dataDir: string,
    private readonly child: Child,
  ) {}

  get label(): string {
    return this.spec.label;
  }

  get proc(): ChildProcess {
    return this.child.proc;
  }

  get commandText(): string {
    return this.child.commandLine;
  }

  /** Null while running; how it ended otherwise. */
  get exitDescription(): string | null {
    const exit = this.child.exit;
    return exit === null ? null : describeExit(exit);
  }

  get exited(): Promise<string> {
    return this.child.exited.then(describeExit);
  }

  output(): string {
    return this.child.output();
  }

  /** This server as a redis-benchmark target. */
  get target(): BenchmarkTarget {
    return {
      label: this.label,
      processes: [this.proc],
      deadServer: () => {
        const how = this.exitDescription;
        return how === null ? null : `${this.label} exited (${how}): ${this.output().trim()}`;
      },
    };
  }

  static async start(spec: ServerSpec, parentDir: string): Promise<BenchServer> {
    installExitHook();
    const port = await freePort();
    let dataDir: string;
    try {
      dataDir = mkdtempSync(join(parentDir, `ordo-bench-${spec.product}-`));
    } catch (e) {
      throw new BenchSetupError(`cannot create a data directory for ${spec.label} under ${parentDir}: ${(e as Error).message}`);
    }
    liveDirs.add(dataDir);
    const server = BenchServer.spawnOn(spec, port, dataDir);
    try {
      await waitForPort(port, SERVER_START_TIMEOUT_MS, () => {
        const how = server.exitDescription;
        return how === null ? null : `${spec.label} ${how}: ${server.output().trim()}`;
      });
    } catch (e) {
      await server.stop();
      throw new BenchSetupError(`${spec.label} did not start (${server.commandText}): ${(e as Error).message}`);
    }
    return server;
  }

  private static spawnOn(spec: ServerSpec, port: number, dataDir: string): BenchServer {
    return new BenchServer(spec, port, dataDir, new Child(spec.command, spec.args(String(port), dataDir)));
  }

  /**
   * The same server started again on the same port and data directory, once this
   * process has exited (see halt()). Returns right after the spawn, without waiting
   * for the port, so the caller can time the start. The data directory passes to
   * the returned server: stop that one, not this.
   */
  relaunch(): BenchServer {
    assert(this.exitDescription !== null, `${this.label} is still running; halt it before relaunching`);
    return BenchServer.spawnOn(this.spec, this.port, this.dataDir);
  }

  /**
   * Sends `signal` and resolves with how the process ended; SIGKILL when it has not
   * exited after `graceMs`. Keeps the data directory.
   */
  async halt(signal: 'SIGTERM' | 'SIGKILL', graceMs = SERVER_STOP_GRACE_MS): Promise<string> {
    return describeExit(await this.child.stop(graceMs, signal));
  }

  /** SIGTERM, SIGKILL after a grace period; removes the data directory. */
  async stop(): Promise<void> {
    await this.halt('SIGTERM');
    rmSync(this.dataDir, { recursive: true, force: true });
    liveDirs.delete(this.dataDir);
  }
}

// ---------------------------------------------------------------------------
// One redis-benchmark run.

/** `extra` goes before --csv (`--cluster`, say); `clients` is -c, `keyRange` -r. */
export function benchmarkArgs(
  port: string,
  depth: number,
  requests: number,
  clients = CLIENT_COUNT,
  extra: readonly string[] = [],
  keyRange = KEYSPACE_SIZE,
): string[] {
  return [
    '-h',
    '127.0.0.1',
    '-p',
    port,
    '-t',
    'incr',
    '-c',
    String(clients),
    '-n',
    String(requests),
    '-r',
    String(keyRange),
    '-P',
    String(depth),
    ...extra,
    '--csv',
  ];
}

export interface Measurement {
  readonly requestsPerSec: number;
  readonly p50Ms: number | null;
  readonly p99Ms: number | null;
  readonly wallSeconds: number;
}

export type RunOutcome = { readonly kind: 'ok'; readonly measurement: Measurement } | { readonly kind: 'overrun'; readonly wallSeconds: number };

function parseCsvLine(line: string): string[] {
  return line.split(',').map((cell) => cell.trim().replace(/^"(.*)"$/, '$1'));
}

/** The INCR row of redis-benchmark --csv output, by column name; null if there is none. */
export function parseBenchmarkCsv(stdout: string): Map<string, string> | null {
  const lines = stdout.split(/\r?\n/).filter((l) => l.trim() !== '');
  const headerAt = lines.findIndex((l) => parseCsvLine(l)[0] === 'test');
  if (headerAt < 0) return null;
  const header = parseCsvLine(lines[headerAt] ?? '');
  const row = lines
    .slice(headerAt + 1)
    .map(parseCsvLine)
    .find((cells) => cells[0] === 'INCR');
  if (row === undefined) return null;
  const byName = new Map<string, string>();
  header.forEach((name, i) => {
    const value = row[i];
    if (value !== undefined) byName.set(name, value);
  });
  return byName;
}

function numberOrNull(text: string | undefined): number | null {
  if (text === undefined) return null;
  const n = Number(text);
  return Number.isFinite(n) ? n : null;
}

/** What a redis-benchmark run is aimed at: one server, or the nodes of a cluster. */
export interface BenchmarkTarget {
  /** Named in messages. */
  readonly label: string;
  /** The server processes; the run is killed at once when one of them exits. */
  readonly processes: readonly ChildProcess[];
  /** Null while every server runs; otherwise which one ended, how, and what it printed. */
  deadServer(): string | null;
}

/**
 * Runs redis-benchmark once against `server`. Kills it when it overruns
 * `timeoutMs` (reported, not an error) or when the server exits (an error:
 * redis-benchmark would otherwise retry forever).
 */
export function runBenchmarkOnce(server: BenchServer, depth: number, requests: number, timeoutMs: number): Promise<RunOutcome> {
  return runBenchmark(server.target, benchmarkArgs(String(server.port), depth, requests), `redis-benchmark -P ${depth} against ${server.label}`, timeoutMs);
}

/**
 * Runs `redis-benchmark ARGS` once (`what` names it in messages). Kills it when
 * it overruns `timeoutMs` (reported, not an error) or when one of the target's
 * processes exits (an error: redis-benchmark would otherwise retry forever).
 */
export function runBenchmark(target: BenchmarkTarget, args: readonly string[], what: string, timeoutMs: number): Promise<RunOutcome> {
  return new Promise<RunOutcome>((resolve, reject) => {
    const dead = target.deadServer();
    if (dead !== null) {
      reject(new BenchSetupError(dead));
      return;
    }
    const started = performance.now();
    const child = spawn('redis-benchmark', [...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    ALL_CHILDREN.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (stderr = lastBytes(stderr + d.toString(), OUTPUT_KEPT_BYTES)));
    let stoppedBecause: 'overrun' | 'server exited' | null = null;
    const timer = setTimeout(() => {
      stoppedBecause = 'overrun';
      child.kill('SIGKILL');
    }, timeoutMs);
    const onServerExit = (): void => {
      stoppedBecause ??= 'server exited';
      child.kill('SIGKILL');
    };
    for (const proc of target.processes) proc.once('exit', onServerExit);
    let settled = false;
    const finish = (): boolean => {
      if (settled) return false;
      settled = true;
      clearTimeout(timer);
      for (const proc of target.processes) proc.off('exit', onServerExit);
      return true;
    };
    child.once('error', (e) => {
      if (finish()) reject(new BenchSetupError(`could not start redis-benchmark (is it installed?): ${e.message}`));
    });
    child.once('close', (code, signal) => {
      if (!finish()) return;
      const wallSeconds = (performance.now() - started) / 1000;
      if (stoppedBecause === 'server exited') {
        reject(new BenchSetupError(`${target.deadServer() ?? `${target.label} exited`}, during ${what}`));
        return;
      }
      if (stoppedBecause === 'overrun') {
        resolve({ kind: 'overrun', wallSeconds });
        return;
      }
      // redis-benchmark counts error replies as requests: a server answering
      // errors must not look fast.
      const errorLine = (stderr + '\n' + stdout).split(/\r?\n/).find((l) => /error/i.test(l) && !/Could not fetch server CONFIG/i.test(l));
      if (errorLine !== undefined) {
        reject(new BenchSetupError(`${what}: ${errorLine.trim()}`));
        return;
      }
      const row = parseBenchmarkCsv(stdout);
      const rps = numberOrNull(row?.get('rps'));
      if (code !== 0 || row === null || rps === null) {
        reject(new BenchSetupError(`${what} gave no result (${describeExit({ code, signal, error: null })}): ${(stderr + stdout).trim()}`));
        return;
      }
      resolve({
        kind: 'ok',
        measurement: {
          requestsPerSec: rps,
          p50Ms: numberOrNull(row.get('p50_latency_ms')),
          p99Ms: numberOrNull(row.get('p99_latency_ms')),
          wallSeconds,
        },
      });
    });
  });
}

// ---------------------------------------------------------------------------
// Consistency check: the counters must add up to the INCRs acknowledged.

export function counterKey(index: number): string {
  return `counter:${String(index).padStart(12, '0')}`;
}

/** Sum of every counter the benchmark touched, read with one MGET. */
export async function sumCounters(port: number): Promise<bigint> {
  const keys = Array.from({ length: KEYSPACE_SIZE }, (_, i) => counterKey(i));
  let reply;
  try {
    const client = await RespClient.connect(port, CHECK_TIMEOUT_MS);
    try {
      reply = await client.call(['MGET', ...keys], CHECK_TIMEOUT_MS);
    } finally {
      client.close();
    }
  } catch (e) {
    throw new BenchSetupError(`counter check on port ${port}: ${(e as Error).message}`);
  }
  if (!Array.isArray(reply)) throw new BenchSetupError(`counter check on port ${port}: MGET answered ${JSON.stringify(reply)}`);
  let sum = 0n;
  for (const value of reply) if (typeof value === 'string') sum += BigInt(value);
  return sum;
}

// ---------------------------------------------------------------------------
// The whole comparison.

export interface RedisBenchmarkOptions {
  /** Requests per measured run (default REQUESTS_FULL). */
  requests?: number;
  /** Measured runs per target and depth; the table shows the median (default 1). */
  rounds?: number;
  /** Bound on one redis-benchmark run (default RUN_TIMEOUT_MS_DEFAULT). */
  runTimeoutMs?: number;
  /** Where the temporary data directories go (default: the OS temp directory). */
  parentDir: string;
  /** Progress lines (default: to stderr). */
  log?: (line: string) => void;
}

export interface TargetResult {
  readonly label: string;
  /** One outcome per round, in the order they ran. */
  readonly outcomes: readonly RunOutcome[];
}

export interface ComparisonRow {
  readonly durability: Durability;
  readonly depth: number;
  readonly ordo: TargetResult;
  readonly redis: TargetResult;
}

export interface RedisBenchmarkReport {
  readonly rows: readonly ComparisonRow[];
  readonly commandLines: readonly string[];
  readonly requests: number;
  readonly rounds: number;
  readonly runTimeoutMs: number;
  /** Per server: "label: counters sum to N, N INCRs acknowledged". */
  readonly checks: readonly string[];
}

function median(values: readonly number[]): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[mid] ?? null) : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}

interface Summary {
  readonly requestsPerSec: number | null;
  readonly p50Ms: number | null;
  readonly p99Ms: number | null;
  readonly overruns: number;
}

export function summarize(result: TargetResult): Summary {
  const ok = result.outcomes.flatMap((o) => (o.kind === 'ok' ? [o.measurement] : []));
  const pick = (f: (m: Measurement) => number | null): number | null =>
    median(
      ok.flatMap((m) => {
        const v = f(m);
        return v === null ? [] : [v];
      }),
    );
  return {
    requestsPerSec: pick((m) => m.requestsPerSec),
    p50Ms: pick((m) => m.p50Ms),
    p99Ms: pick((m) => m.p99Ms),
    overruns: result.outcomes.length - ok.length,
  };
}

export function formatRate(rps: number): string {
  return Math.round(rps).toLocaleString('en-US');
}

/** Left-aligned first column, right-aligned numbers; a dashed rule under the header. */
export function formatTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const fmt = (cells: readonly string[]): string =>
    cells
      .map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return [fmt(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(fmt)].join('\n');
}

export function warmupRequestsFor(requests: number): number {
  return Math.max(WARMUP_REQUESTS_MIN, Math.round(requests * WARMUP_FRACTION));
}

/** Target the project holds itself to, with fsync on. */
export const DURABLE_RATIO_TARGET = 0.8;

function pairingName(durability: Durability): string {
  return durability === 'durable' ? 'durable' : 'NOT durable';
}

export function formatReport(report: RedisBenchmarkReport): string {
  const header = ['pairing', '-P', 'ordo req/s', 'ordo p50 ms', 'ordo p99 ms', 'redis req/s', 'redis p50 ms', 'redis p99 ms', 'ordo/redis', 'target'];
  const overrunText = `over ${Math.round(report.runTimeoutMs / 1000)} s`;
  const rateCell = (s: Summary): string => (s.requestsPerSec !== null ? formatRate(s.requestsPerSec) : s.overruns > 0 ? overrunText : 'n/a');
  const msCell = (v: number | null): string => (v === null ? '-' : v.toFixed(3));
  const rows = report.rows.map((row) => {
    const o = summarize(row.ordo);
    const r = summarize(row.redis);
    const ratio = o.requestsPerSec !== null && r.requestsPerSec !== null ? o.requestsPerSec / r.requestsPerSec : null;
    const target =
      row.durability === 'durable' && ratio !== null
        ? ratio >= DURABLE_RATIO_TARGET
          ? `>= ${DURABLE_RATIO_TARGET} met`
          : `< ${DURABLE_RATIO_TARGET} MISSED`
        : '';
    const pairing = `${pairingName(row.durability)} (${row.durability === 'durable' ? 'fsync always' : 'no fsync'})`;
    return [
      pairing,
      String(row.depth),
      rateCell(o),
      msCell(o.p50Ms),
      msCell(o.p99Ms),
      rateCell(r),
      msCell(r.p50Ms),
      msCell(r.p99Ms),
      ratio === null ? 'n/a' : ratio.toFixed(2),
      target,
    ];
  });
  const lines = [
    `INCR, ${CLIENT_COUNT} connections, ${KEYSPACE_SIZE} random keys, ${report.requests.toLocaleString('en-US')} requests per run, ` +
      `${report.rounds} round${report.rounds === 1 ? '' : 's'}${report.rounds > 1 ? ' (medians)' : ''}`,
    '  durable:     ordo --fsync always  vs  redis-server --appendonly yes --appendfsync always',
    '  NOT durable: ordo --fsync never   vs  redis-server --appendonly no --save ""',
    '',
    formatTable(header, rows),
  ];
  if (report.rounds > 1) {
    // ordo and redis-server ran back to back in each round, so a round's ratio
    // compares them under the same machine conditions.
    lines.push('', 'every round, in the order run (ordo req/s / redis req/s = ratio):');
    const rowName = (row: ComparisonRow): string => `${pairingName(row.durability)} -P ${row.depth}`;
    const pairingWidth = Math.max(...report.rows.map((row) => rowName(row).length));
    for (const row of report.rows) {
      const cells = row.ordo.outcomes.map((o, i) => {
        const r = row.redis.outcomes[i];
        const text = (x: RunOutcome | undefined): string => (x === undefined ? '?' : x.kind === 'ok' ? formatRate(x.measurement.requestsPerSec) : overrunText);
        const ratio = o.kind === 'ok' && r?.kind === 'ok' ? (o.measurement.requestsPerSec / r.measurement.requestsPerSec).toFixed(2) : 'n/a';
        return `${text(o)} / ${text(r)} = ${ratio}`;
      });
      lines.push(`  ${rowName(row).padEnd(pairingWidth)}   ${cells.join('    ')}`);
    }
  }
  if (report.checks.length > 0) lines.push('', 'consistency check (sum of all counters = INCRs acknowledged):', ...report.checks.map((c) => `  ${c}`));
  return lines.join('\n');
}

/** The command lines this comparison runs, with PORT and DIR standing for the free port and temporary directory. */
export function plannedCommandLines(requests: number): string[] {
  const lines = SERVER_SPECS.map((spec) => `${spec.label}:  ${commandLine(spec.command, spec.args('PORT', 'DIR'))}`);
  lines.push(`warm-up, not reported:  ${commandLine('redis-benchmark', benchmarkArgs('PORT', 16, warmupRequestsFor(requests)))}`);
  for (const depth of PIPELINE_DEPTHS) {
    lines.push(`measured -P ${depth}:  ${commandLine('redis-benchmark', benchmarkArgs('PORT', depth, requests))}`);
  }
  return lines;
}

/**
 * Starts the four servers, runs every (pairing, depth) alternating ordo and
 * redis-server, checks the counters, stops the servers. Throws BenchSetupError
 * when something could not run; servers are stopped either way.
 */
export async function runRedisBenchmarkComparison(options: RedisBenchmarkOptions): Promise<RedisBenchmarkReport> {
  const requests = options.requests ?? REQUESTS_FULL;
  const rounds = options.rounds ?? 1;
  const runTimeoutMs = options.runTimeoutMs ?? RUN_TIMEOUT_MS_DEFAULT;
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const warmupRequests = warmupRequestsFor(requests);

  const servers = new Map<string, BenchServer>();
  const key = (product: Product, durability: Durability): string => `${product}/${durability}`;
  try {
    for (const spec of SERVER_SPECS) {
      const server = await BenchServer.start(spec, options.parentDir);
      servers.set(key(spec.product, spec.durability), server);
    }
    const commandLines = [...servers.values()].map((s) => `${s.label}:\n    ${s.commandText}`);
    for (const line of commandLines) log(`started ${line}`);
    const get = (product: Product, durability: Durability): BenchServer => {
      const s = servers.get(key(product, durability));
      if (s === undefined) throw new Error(`no ${product} ${durability} server`);
      return s;
    };

    /** INCRs each server acknowledged in completed runs; null once a run overran (count unknown). */
    const acknowledged = new Map<BenchServer, number | null>();
    const count = (server: BenchServer, outcome: RunOutcome, n: number): void => {
      const before = acknowledged.has(server) ? (acknowledged.get(server) ?? null) : 0;
      acknowledged.set(server, before === null || outcome.kind === 'overrun' ? null : before + n);
    };

    // Warm-up: JIT for ordo, page cache and the 1000 keys for everybody. Not reported.
    for (const server of servers.values()) {
      log(`warm-up: ${warmupRequests} INCRs -P 16 against ${server.label}`);
      count(server, await runBenchmarkOnce(server, 16, warmupRequests, runTimeoutMs), warmupRequests);
    }

    const results = new Map<string, { ordo: RunOutcome[]; redis: RunOutcome[] }>();
    const durabilities: readonly Durability[] = ['durable', 'volatile'];
    for (let round = 0; round < rounds; round++) {
      for (const durability of durabilities) {
        for (const depth of PIPELINE_DEPTHS) {
          const cell = results.get(`${durability}/${depth}`) ?? { ordo: [], redis: [] };
          results.set(`${durability}/${depth}`, cell);
          // Alternate who goes first from round to round.
          const order: readonly Product[] = round % 2 === 0 ? ['ordo', 'redis'] : ['redis', 'ordo'];
          for (const product of order) {
            const server = get(product, durability);
            const outcome = await runBenchmarkOnce(server, depth, requests, runTimeoutMs);
            count(server, outcome, requests);
            cell[product].push(outcome);
            log(
              `round ${round + 1}/${rounds} -P ${depth} ${server.label}: ` +
                (outcome.kind === 'ok'
                  ? `${formatRate(outcome.measurement.requestsPerSec)} req/s, p50 ${outcome.measurement.p50Ms ?? '?'} ms (${outcome.measurement.wallSeconds.toFixed(1)} s)`
                  : `overran ${Math.round(runTimeoutMs / 1000)} s, killed`),
            );
          }
        }
      }
    }

    const checks: string[] = [];
    for (const server of servers.values()) {
      const expected = acknowledged.get(server) ?? null;
      const sum = await sumCounters(server.port);
      if (expected === null) {
        checks.push(`${server.label}: counters sum to ${sum} (a run overran, so the expected count is unknown)`);
      } else if (sum !== BigInt(expected)) {
        throw new BenchSetupError(`${server.label}: counters sum to ${sum}, but ${expected} INCRs were acknowledged`);
      } else {
        checks.push(`${server.label}: ${sum} = ${expected} ok`);
      }
    }

    const rows: ComparisonRow[] = [];
    for (const durability of durabilities) {
      for (const depth of PIPELINE_DEPTHS) {
        const cell = results.get(`${durability}/${depth}`) ?? { ordo: [], redis: [] };
        rows.push({
          durability,
          depth,
          ordo: { label: get('ordo', durability).label, outcomes: cell.ordo },
          redis: { label: get('redis', durability).label, outcomes: cell.redis },
        });
      }
    }
    return { rows, commandLines, requests, rounds, runTimeoutMs, checks };
  } finally {
    await Promise.all([...servers.values()].map((s) => s.stop()));
  }
}

/** First line of `command --version`, or null when it cannot be run. */
export function toolVersion(command: string): string | null {
  const r = spawnSync(command, ['--version'], { encoding: 'utf8', timeout: 10_000 });
  if (r.error !== undefined || r.status !== 0) return null;
  return r.stdout.split('\n')[0]?.trim() ?? null;
}
