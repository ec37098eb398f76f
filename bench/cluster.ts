// A 3-node ordo cluster against redis-server, side by side in one run, both
// with fsync on every write, measured by the stock `redis-benchmark`: INCR on
// 1000 random keys, without pipelining and 16 deep. Three ways to reach the
// cluster:
//
//   one node:  50 connections to one node, which forwards what it does not lead
//   spread:    three redis-benchmark processes at once, 17 connections each, one
//              per node (every node forwards what it does not lead)
//   --cluster: `redis-benchmark --cluster`, which reads CLUSTER NODES and sends
//              each key straight to its group's leader
//
// And failover: kill -9 the leader of one group, again and again (restarting it
// after each), and time from the kill to the first successful INCR on that
// group through a surviving node.
//
// Numbers only: nothing here fails on time. Every process listens on 127.0.0.1
// on a free port, with its own temporary data directory, and is stopped (the
// directory removed) at the end, also on failure.
//
// Run: node dist/bench/run.js --only cluster|failover [--quick]

import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { freeClusterPorts, keyInSlots, LocalCluster, waitForCatchUp, waitForStableLeaders, type ClusterNode } from '../testkit/cluster.js';
import { ALL_CHILDREN } from '../testkit/processes.js';
import { RespClient, RespErrorReply, RespNoReply } from '../testkit/resp.js';
import {
  BenchServer,
  BenchSetupError,
  benchmarkArgs,
  CLIENT_COUNT,
  commandLine,
  counterKey,
  formatRate,
  formatTable,
  KEYSPACE_SIZE,
  PIPELINE_DEPTHS,
  REQUESTS_FULL,
  RUN_TIMEOUT_MS_DEFAULT,
  runBenchmark,
  runBenchmarkOnce,
  SERVER_SPECS,
  summarize,
  warmupRequestsFor,
  type BenchmarkTarget,
  type Measurement,
  type RunOutcome,
} from './redis-benchmark.js';

/** Nodes in the benchmarked cluster. */
export const CLUSTER_NODE_COUNT = 3;
/** The project's target for the cluster against redis-server, fsync on, at both depths. */
export const CLUSTER_RATIO_TARGET = 1.0;
/** Leader kills in the failover benchmark, full and --quick. */
export const FAILOVER_KILLS_FULL = 20;
export const FAILOVER_KILLS_QUICK = 5;
/** The project's failover target: p50 and p99 from kill to the first successful write. */
export const FAILOVER_TARGET_MS = 1500;
/** A kill with no successful write after this long is reported as such. */
const FAILOVER_BOUND_MS = 30_000;
/** Bound on one INCR attempt of the failover client (a node waits up to 5 s for an election). */
const FAILOVER_ATTEMPT_TIMEOUT_MS = 10_000;
/** Pause after an error reply before the failover client retries. */
const FAILOVER_RETRY_PAUSE_MS = 5;
/** Bound on the final counter check. */
const CHECK_TIMEOUT_MS = 30_000;

type Setup = 'redis' | 'one-node' | 'spread' | 'cluster-mode';
const ORDO_SETUPS: readonly Setup[] = ['one-node', 'spread', 'cluster-mode'];

const SETUP_LABELS: Record<Setup, string> = {
  redis: 'redis-server --appendfsync always',
  'one-node': `ordo, ${CLUSTER_NODE_COUNT} nodes, ${CLIENT_COUNT} clients on one node`,
  spread: `ordo, ${CLUSTER_NODE_COUNT} nodes, 3 x 17 clients, one process per node`,
  'cluster-mode': `ordo, ${CLUSTER_NODE_COUNT} nodes, redis-benchmark --cluster -c ${CLIENT_COUNT}`,
};

/** Connections per redis-benchmark process in the spread setup (3 x 17 = 51, the nearest to 50). */
const SPREAD_CLIENTS = Math.ceil(CLIENT_COUNT / CLUSTER_NODE_COUNT);

// ---------------------------------------------------------------------------
// A cluster for benchmarking: free ports, a temporary parent directory.

export interface BenchCluster {
  readonly cluster: LocalCluster;
  readonly parentDir: string;
  readonly target: BenchmarkTarget;
  /** Stops every node and removes the directory. */
  stop(): Promise<void>;
}

const liveClusterDirs = new Set<string>();

/** Kills every node and removes the clusters' data directories, synchronously (on a signal or exit). */
export function removeBenchClustersNow(): void {
  ALL_CHILDREN.killNow();
  for (const dir of liveClusterDirs) rmSync(dir, { recursive: true, force: true });
  liveClusterDirs.clear();
}

export async function startBenchCluster(parentDir: string, groups?: number): Promise<BenchCluster> {
  let dir: string;
  try {
    dir = mkdtempSync(join(parentDir, 'ordo-bench-cluster-'));
  } catch (e) {
    throw new BenchSetupError(`cannot create a data directory under ${parentDir}: ${(e as Error).message}`);
  }
  if (liveClusterDirs.size === 0) process.once('exit', removeBenchClustersNow);
  liveClusterDirs.add(dir);
  const { ports, busPorts } = await freeClusterPorts(CLUSTER_NODE_COUNT);
  let cluster: LocalCluster;
  try {
    cluster = await LocalCluster.start({
      ports,
      busPorts,
      dataDirs: ports.map((p) => join(dir, String(p))),
      fsync: 'always',
      ...(groups === undefined ? {} : { groups }),
    });
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    liveClusterDirs.delete(dir);
    throw new BenchSetupError(`the cluster did not start: ${(e as Error).message}`);
  }
  const stop = async (): Promise<void> => {
    await cluster.stopAll();
    rmSync(dir, { recursive: true, force: true });
    liveClusterDirs.delete(dir);
  };
  try {
    await waitForStableLeaders(cluster);
  } catch (e) {
    const outputs = cluster.nodes.map((n) => `node ${n.port}:\n${n.output().trim()}`).join('\n');
    await stop();
    throw new BenchSetupError(`${(e as Error).message}\n${outputs}`);
  }
  const target: BenchmarkTarget = {
    label: `ordo ${CLUSTER_NODE_COUNT}-node cluster`,
    processes: cluster.nodes.flatMap((n) => (n.proc === null ? [] : [n.proc])),
    deadServer: () => {
      const dead = cluster.nodes.find((n) => !n.running);
      return dead === undefined ? null : `ordo node ${dead.port} exited (${dead.exitDescription ?? '?'}): ${dead.output().trim()}`;
    },
  };
  return { cluster, parentDir: dir, target, stop };
}

/** The node command lines with ports and directories as placeholders. */
export function plannedClusterCommandLines(groups?: number): string[] {
  const names = Array.from({ length: CLUSTER_NODE_COUNT }, (_, i) => i + 1);
  const list = names.map((i) => `127.0.0.1:P${i}@B${i}`).join(',');
  return names.map(
    (i) =>
      `node dist/src/cli.js --host 127.0.0.1 --port P${i} --data DIR/P${i} --cluster ${list}${groups === undefined ? '' : ` --groups ${groups}`} --fsync always`,
  );
}

// ---------------------------------------------------------------------------
// Throughput.

export interface ClusterBenchOptions {
  requests?: number;
  rounds?: number;
  runTimeoutMs?: number;
  parentDir: string;
  /** --groups for the nodes; default: the node's own default. */
  groups?: number;
  log?: (line: string) => void;
}

/** A run, or the error replies that spoilt it (redis-benchmark counts them as requests, so its numbers mean nothing). */
export type CellOutcome = RunOutcome | { readonly kind: 'error'; readonly message: string };

export interface SetupResult {
  readonly setup: Setup;
  readonly depth: number;
  readonly outcomes: CellOutcome[];
}

function runsOf(outcomes: readonly CellOutcome[]): RunOutcome[] {
  return outcomes.flatMap((o) => (o.kind === 'error' ? [] : [o]));
}

export interface ClusterThroughputReport {
  readonly requests: number;
  readonly rounds: number;
  readonly runTimeoutMs: number;
  readonly results: readonly SetupResult[];
  readonly commandLines: readonly string[];
  /** Groups, their slot ranges and leaders when the runs began. */
  readonly layout: readonly string[];
  /** Why a setup could not be measured (the --cluster one, when redis-benchmark cannot drive ordo that way). */
  readonly skipped: ReadonlyMap<Setup, string>;
  readonly checks: readonly string[];
}

/** Combines the concurrent runs of the spread setup: all requests over the longest run. */
function combineConcurrent(outcomes: readonly RunOutcome[], requestsEach: readonly number[]): { outcome: RunOutcome; sumOfRates: number | null } {
  const ok: Measurement[] = [];
  for (const o of outcomes) {
    if (o.kind !== 'ok')
      return {
        outcome: { kind: 'overrun', wallSeconds: Math.max(...outcomes.map((x) => (x.kind === 'ok' ? x.measurement.wallSeconds : x.wallSeconds))) },
        sumOfRates: null,
      };
    ok.push(o.measurement);
  }
  const total = requestsEach.reduce((a, b) => a + b, 0);
  const longestSeconds = Math.max(...ok.map((m, i) => (requestsEach[i] ?? 0) / m.requestsPerSec));
  const p50s = ok.flatMap((m) => (m.p50Ms === null ? [] : [m.p50Ms])).sort((a, b) => a - b);
  const p99s = ok.flatMap((m) => (m.p99Ms === null ? [] : [m.p99Ms]));
  return {
    outcome: {
      kind: 'ok',
      measurement: {
        requestsPerSec: total / longestSeconds,
        p50Ms: p50s.length === 0 ? null : (p50s[Math.floor(p50s.length / 2)] ?? null),
        p99Ms: p99s.length === 0 ? null : Math.max(...p99s),
        wallSeconds: Math.max(...ok.map((m) => m.wallSeconds)),
      },
    },
    sumOfRates: ok.reduce((a, m) => a + m.requestsPerSec, 0),
  };
}

/**
 * Requests for each of k concurrent processes: n / k rounded up to a multiple
 * of the pipeline depth (redis-benchmark sends whole pipelines, so it would
 * round up itself, and the counter check needs the exact number).
 */
function split(n: number, k: number, depth: number): number[] {
  return Array.from({ length: k }, () => Math.ceil(n / k / depth) * depth);
}

/** Sum of counter:000000000000 .. counter:000000000999 read with GETs through one node (MGET would be CROSSSLOT). */
async function sumCountersThrough(port: number): Promise<bigint> {
  const client = await RespClient.connect(port);
  try {
    const replies = await Promise.all(Array.from({ length: KEYSPACE_SIZE }, (_, i) => client.call(['GET', counterKey(i)], CHECK_TIMEOUT_MS)));
    let sum = 0n;
    for (const r of replies) if (typeof r === 'string') sum += BigInt(r);
    return sum;
  } catch (e) {
    throw new BenchSetupError(`counter check through port ${port}: ${(e as Error).message}`);
  } finally {
    client.close();
  }
}

export async function runClusterThroughput(options: ClusterBenchOptions): Promise<ClusterThroughputReport> {
  const requests = options.requests ?? REQUESTS_FULL;
  const rounds = options.rounds ?? 1;
  const runTimeoutMs = options.runTimeoutMs ?? RUN_TIMEOUT_MS_DEFAULT;
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const warmupRequests = warmupRequestsFor(requests);
  const redisSpec = SERVER_SPECS.find((s) => s.product === 'redis' && s.durability === 'durable');
  if (redisSpec === undefined) throw new Error('no durable redis-server spec');

  let redis: BenchServer | null = null;
  let bench: BenchCluster | null = null;
  try {
    redis = await BenchServer.start(redisSpec, options.parentDir);
    bench = await startBenchCluster(options.parentDir, options.groups);
    const { cluster, target } = bench;
    const commandLines = [`${redis.label}:\n    ${redis.commandText}`, ...cluster.commandLines().map((l) => `ordo node:\n    ${l}`)];
    for (const line of commandLines) log(`started ${line}`);
    const first = cluster.nodes[0];
    if (first === undefined) throw new Error('no node');
    const { state, balanced } = await waitForStableLeaders(cluster);
    if (!balanced) log('the leaders did not spread evenly over the nodes; measuring anyway');
    const layout = state.groups.map(
      (g) => `group ${g.group}, slots ${g.start}-${g.end}: leader on node ${g.leader.port}${g.leader === first ? " (the one-node setup's node)" : ''}`,
    );

    const ports = cluster.nodes.map((n) => n.port);
    const runSetup = async (setup: Setup, depth: number, n: number): Promise<RunOutcome> => {
      const what = `${SETUP_LABELS[setup]} -P ${depth}`;
      if (setup === 'redis') return runBenchmarkOnce(redis as BenchServer, depth, n, runTimeoutMs);
      if (setup === 'one-node') return runBenchmark(target, benchmarkArgs(String(first.port), depth, n), what, runTimeoutMs);
      if (setup === 'cluster-mode') return runBenchmark(target, benchmarkArgs(String(first.port), depth, n, CLIENT_COUNT, ['--cluster']), what, runTimeoutMs);
      const each = split(n, ports.length, depth);
      // All three finish before anything is reported, also when one fails.
      const settled = await Promise.allSettled(
        ports.map((p, i) => runBenchmark(target, benchmarkArgs(String(p), depth, each[i] ?? 0, SPREAD_CLIENTS), `${what} (node ${p})`, runTimeoutMs)),
      );
      const outcomes = settled.map((r) => {
        if (r.status === 'rejected') throw r.reason;
        return r.value;
      });
      const { outcome, sumOfRates } = combineConcurrent(outcomes, each);
      if (sumOfRates !== null) {
        const rates = outcomes.map((o) => (o.kind === 'ok' ? formatRate(o.measurement.requestsPerSec) : 'overrun'));
        log(
          `  spread: per node ${rates.join(' + ')} = ${formatRate(sumOfRates)} req/s summed; all requests / longest run = ${outcome.kind === 'ok' ? formatRate(outcome.measurement.requestsPerSec) : '?'}`,
        );
      }
      return outcome;
    };

    // INCRs on counter:* keys acknowledged; null once a run overran. The
    // --cluster runs use keys with hash tags of their own, not counted here.
    let acknowledged: number | null = 0;
    const count = (setup: Setup, outcome: CellOutcome, n: number): void => {
      if (setup === 'one-node' || setup === 'spread') acknowledged = acknowledged === null || outcome.kind !== 'ok' ? null : acknowledged + n;
    };

    const skipped = new Map<Setup, string>();
    log(`warm-up: ${warmupRequests} INCRs -P 16 against ${redis.label}`);
    await runSetup('redis', 16, warmupRequests);
    for (const setup of ['one-node', 'cluster-mode'] as const) {
      log(`warm-up: ${warmupRequests} INCRs -P 16, ${SETUP_LABELS[setup]}`);
      try {
        count(setup, await runSetup(setup, 16, warmupRequests), warmupRequests);
      } catch (e) {
        if (setup !== 'cluster-mode' || target.deadServer() !== null) throw e;
        skipped.set(setup, (e as Error).message);
        log(`  redis-benchmark --cluster does not work against ordo: ${(e as Error).message}`);
      }
    }

    const results = new Map<string, SetupResult>();
    const setups: Setup[] = ['redis', ...ORDO_SETUPS.filter((s) => !skipped.has(s))];
    for (let round = 0; round < rounds; round++) {
      for (const depth of PIPELINE_DEPTHS) {
        const order = round % 2 === 0 ? setups : [...setups].reverse();
        for (const setup of order) {
          const key = `${setup}/${depth}`;
          const cell = results.get(key) ?? { setup, depth, outcomes: [] };
          results.set(key, cell);
          let outcome: CellOutcome;
          try {
            outcome = await runSetup(setup, depth, requests);
          } catch (e) {
            // Error replies spoil this run only; a server that died ends the benchmark.
            if (!(e instanceof BenchSetupError) || target.deadServer() !== null || redis.exitDescription !== null) throw e;
            outcome = { kind: 'error', message: e.message };
          }
          count(setup, outcome, setup === 'spread' ? split(requests, CLUSTER_NODE_COUNT, depth).reduce((a, b) => a + b, 0) : requests);
          cell.outcomes.push(outcome);
          log(
            `round ${round + 1}/${rounds} -P ${depth} ${SETUP_LABELS[setup]}: ` +
              (outcome.kind === 'ok'
                ? `${formatRate(outcome.measurement.requestsPerSec)} req/s, p50 ${outcome.measurement.p50Ms ?? '?'} ms (${outcome.measurement.wallSeconds.toFixed(1)} s)`
                : outcome.kind === 'overrun'
                  ? `overran ${Math.round(runTimeoutMs / 1000)} s, killed`
                  : `error replies: ${outcome.message}`),
          );
        }
      }
    }

    const checks: string[] = [];
    const sum = await sumCountersThrough(first.port);
    const expected: number | null = acknowledged;
    if (expected === null) checks.push(`ordo cluster: counters sum to ${sum} (a run overran, so the expected count is unknown)`);
    else if (sum !== BigInt(expected)) throw new BenchSetupError(`ordo cluster: counters sum to ${sum}, but ${expected} INCRs were acknowledged`);
    else checks.push(`ordo cluster: ${sum} = ${expected} INCRs acknowledged by the one-node and spread runs, ok`);

    const ordered: SetupResult[] = [];
    for (const depth of PIPELINE_DEPTHS)
      for (const setup of setups) {
        const r = results.get(`${setup}/${depth}`);
        if (r !== undefined) ordered.push(r);
      }
    return { requests, rounds, runTimeoutMs, results: ordered, commandLines, layout, skipped, checks };
  } finally {
    await Promise.all([redis?.stop(), bench?.stop()]);
  }
}

export function formatClusterThroughput(report: ClusterThroughputReport): string {
  const overrunText = `over ${Math.round(report.runTimeoutMs / 1000)} s`;
  const redisRate = (depth: number): number | null =>
    summarize({ label: 'redis', outcomes: runsOf(report.results.find((r) => r.setup === 'redis' && r.depth === depth)?.outcomes ?? []) }).requestsPerSec;
  const header = ['setup (fsync always)', '-P', 'req/s', 'p50 ms', 'p99 ms', 'vs redis', 'target'];
  const msCell = (v: number | null): string => (v === null ? '-' : v.toFixed(3));
  const rows = report.results.map((r) => {
    const s = summarize({ label: r.setup, outcomes: runsOf(r.outcomes) });
    const errors = r.outcomes.length - runsOf(r.outcomes).length;
    const base = redisRate(r.depth);
    const ratio = r.setup !== 'redis' && s.requestsPerSec !== null && base !== null ? s.requestsPerSec / base : null;
    return [
      SETUP_LABELS[r.setup],
      String(r.depth),
      s.requestsPerSec !== null ? formatRate(s.requestsPerSec) : s.overruns > 0 ? overrunText : errors > 0 ? 'errors' : 'n/a',
      msCell(s.p50Ms),
      msCell(s.p99Ms),
      ratio === null ? '' : ratio.toFixed(2),
      ratio === null ? '' : ratio >= CLUSTER_RATIO_TARGET ? `>= ${CLUSTER_RATIO_TARGET.toFixed(1)} met` : `< ${CLUSTER_RATIO_TARGET.toFixed(1)} MISSED`,
    ];
  });
  const lines = [
    `INCR, ${KEYSPACE_SIZE} random keys, ${report.requests.toLocaleString('en-US')} requests per run, ` +
      `${report.rounds} round${report.rounds === 1 ? '' : 's'}${report.rounds > 1 ? ' (medians)' : ''}; ` +
      `spread: all requests over the longest of the 3 concurrent runs, middle p50, largest p99`,
    ...report.layout.map((l) => `  ${l}`),
    '',
    formatTable(header, rows),
  ];
  for (const [setup, why] of report.skipped) lines.push('', `${SETUP_LABELS[setup]}: not measured: ${why}`);
  if (report.rounds > 1) {
    lines.push('', 'every round, in the order run (req/s, ratio to redis-server in the same round):');
    const width = Math.max(...report.results.map((r) => `${SETUP_LABELS[r.setup]} -P ${r.depth}`.length));
    for (const r of report.results) {
      const redisOutcomes = report.results.find((x) => x.setup === 'redis' && x.depth === r.depth)?.outcomes ?? [];
      const cells = r.outcomes.map((o, i) => {
        if (o.kind === 'error') return 'errors';
        if (o.kind !== 'ok') return overrunText;
        const base = redisOutcomes[i];
        const ratio = r.setup !== 'redis' && base?.kind === 'ok' ? ` (${(o.measurement.requestsPerSec / base.measurement.requestsPerSec).toFixed(2)})` : '';
        return `${formatRate(o.measurement.requestsPerSec)}${ratio}`;
      });
      lines.push(`  ${`${SETUP_LABELS[r.setup]} -P ${r.depth}`.padEnd(width)}   ${cells.join('    ')}`);
    }
  }
  const spoilt = report.results.flatMap((r) =>
    r.outcomes.flatMap((o) => (o.kind === 'error' ? [`  ${SETUP_LABELS[r.setup]} -P ${r.depth}: ${o.message}`] : [])),
  );
  if (spoilt.length > 0) lines.push('', 'runs spoilt by error replies (left out of the medians):', ...spoilt);
  if (report.checks.length > 0) lines.push('', 'consistency check:', ...report.checks.map((c) => `  ${c}`));
  return lines.join('\n');
}

// ---------------------------------------------------------------------------
// Failover.

export interface FailoverOptions {
  kills?: number;
  parentDir: string;
  groups?: number;
  log?: (line: string) => void;
}

export interface FailoverSample {
  /** Port of the node killed. */
  readonly killedPort: number;
  /** Port the clients wrote through. */
  readonly viaPort: number;
  /** Kill to the first successful INCR of a fresh connection, opened every PROBE_INTERVAL_MS; null: none within the bound. */
  readonly resumeMs: number | null;
  /** Kill to the first successful INCR of the client retrying on its one connection; null: none within the bound. */
  readonly retryingClientMs: number | null;
  /** Error replies and lost replies the retrying client saw first, by first word. */
  readonly errors: ReadonlyMap<string, number>;
}

export interface FailoverReport {
  readonly group: number;
  readonly slots: string;
  readonly samples: readonly FailoverSample[];
  readonly commandLines: readonly string[];
}

/** Nearest-rank percentile. */
export function percentile(sorted: readonly number[], q: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] ?? null;
}

function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** How often the failover benchmark opens a fresh connection and sends one INCR while waiting for the group. */
const PROBE_INTERVAL_MS = 50;

/**
 * The client a simple application is: INCR on one connection, again as soon as
 * an attempt fails (after a short pause on an error reply, on a new connection
 * after a lost one). Resolves with ms from `killedAt` to its first success.
 */
async function retryingClient(client: RespClient, port: number, key: string, killedAt: number, errors: Map<string, number>): Promise<number | null> {
  const note = (what: string): void => void errors.set(what, (errors.get(what) ?? 0) + 1);
  let current = client;
  try {
    for (;;) {
      if (performance.now() - killedAt > FAILOVER_BOUND_MS) return null;
      try {
        if (current.closed) current = await RespClient.connect(port);
        await current.call(['INCR', key], FAILOVER_ATTEMPT_TIMEOUT_MS);
        return performance.now() - killedAt;
      } catch (e) {
        if (e instanceof RespErrorReply) note(e.message.split(' ')[0] ?? e.message);
        else if (e instanceof RespNoReply) note('no reply');
        else throw e;
        await pause(FAILOVER_RETRY_PAUSE_MS);
      }
    }
  } finally {
    current.close();
  }
}

/**
 * When the group takes writes again: every PROBE_INTERVAL_MS a fresh
 * connection sends one INCR, without waiting for the earlier ones. Resolves
 * with ms from `killedAt` to the first success (the others are abandoned).
 */
async function writesResume(port: number, key: string, killedAt: number): Promise<number | null> {
  return new Promise<number | null>((resolve) => {
    let done = false;
    const open = new Set<RespClient>();
    const finish = (ms: number | null): void => {
      if (done) return;
      done = true;
      clearInterval(timer);
      clearTimeout(bound);
      for (const c of open) c.close();
      resolve(ms);
    };
    const probe = async (): Promise<void> => {
      let client: RespClient | null = null;
      try {
        client = await RespClient.connect(port);
        if (done) return;
        open.add(client);
        await client.call(['INCR', key], FAILOVER_BOUND_MS);
        finish(performance.now() - killedAt);
      } catch {
        // an error or no reply: a later probe will tell
      } finally {
        if (client !== null) {
          open.delete(client);
          client.close();
        }
      }
    };
    const timer = setInterval(() => void probe(), PROBE_INTERVAL_MS);
    const bound = setTimeout(() => finish(null), FAILOVER_BOUND_MS);
    void probe();
  });
}

/** SIGKILLs `leader` and times both clients writing `key` through `via`; waits for the process to be gone. */
async function timeFailover(leader: ClusterNode, via: ClusterNode, key: string): Promise<Omit<FailoverSample, 'killedPort' | 'viaPort'>> {
  const errors = new Map<string, number>();
  const client = await RespClient.connect(via.port);
  try {
    await client.call(['INCR', key]);
  } catch (e) {
    client.close();
    throw new BenchSetupError(`INCR through node ${via.port} before the kill: ${(e as Error).message}`);
  }
  const killedAt = performance.now();
  leader.signal('SIGKILL');
  const [retryingClientMs, resumeMs] = await Promise.all([retryingClient(client, via.port, key, killedAt, errors), writesResume(via.port, key, killedAt)]);
  await leader.exited;
  return { resumeMs, retryingClientMs, errors };
}

export async function runFailoverBench(options: FailoverOptions): Promise<FailoverReport> {
  const kills = options.kills ?? FAILOVER_KILLS_FULL;
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const bench = await startBenchCluster(options.parentDir, options.groups);
  try {
    const { cluster } = bench;
    const commandLines = cluster.commandLines();
    for (const line of commandLines) log(`started ordo node: ${line}`);
    const group = 1;
    let slots = '?';
    const samples: FailoverSample[] = [];
    const msText = (ms: number | null): string => (ms === null ? `more than ${FAILOVER_BOUND_MS} ms` : `${ms.toFixed(0)} ms`);
    for (let i = 0; i < kills; i++) {
      // Leader balancing moves leaders back to a restarted node: kill only once it is done.
      const { state } = await waitForStableLeaders(cluster);
      const g = state.groups.find((x) => x.group === group);
      if (g === undefined) throw new BenchSetupError(`no group ${group}`);
      slots = `${g.start}-${g.end}`;
      const via = cluster.running.find((n) => n !== g.leader);
      if (via === undefined) throw new BenchSetupError('no surviving node to write through');
      const key = keyInSlots(g.start, g.end, 'failover:');
      const sample = { killedPort: g.leader.port, viaPort: via.port, ...(await timeFailover(g.leader, via, key)) };
      samples.push(sample);
      const errorText = [...sample.errors].map(([k, v]) => `${v} x ${k}`).join(', ');
      log(
        `kill ${i + 1}/${kills}: leader of group ${group} on node ${g.leader.port} killed; through node ${via.port}: ` +
          `writes resumed after ${msText(sample.resumeMs)}, the retrying client's first success after ${msText(sample.retryingClientMs)}` +
          `${errorText === '' ? '' : ` (before it: ${errorText})`}`,
      );
      await g.leader.restart();
      await cluster.waitForLeaders();
      await waitForCatchUp(cluster, g.leader);
    }
    return { group, slots, samples, commandLines };
  } finally {
    await bench.stop();
  }
}

export function formatFailover(report: FailoverReport): string {
  const header = ['measured from the kill to', 'kills', 'p50 ms', 'p99 ms', 'min ms', 'max ms', `target <= ${FAILOVER_TARGET_MS} ms`];
  const cell = (v: number | null): string => (v === null ? 'n/a' : v.toFixed(0));
  const verdict = (v: number | null): string => (v === null ? 'n/a' : v <= FAILOVER_TARGET_MS ? 'met' : 'MISSED');
  const row = (name: string, values: readonly (number | null)[]): string[] => {
    const times = values.flatMap((v) => (v === null ? [] : [v])).sort((a, b) => a - b);
    const missing = values.length - times.length;
    const over = `> ${FAILOVER_BOUND_MS}`;
    const p50 = percentile(times, 0.5);
    const p99 = missing > 0 ? null : percentile(times, 0.99);
    return [
      name,
      String(values.length),
      cell(p50),
      missing > 0 ? over : cell(p99),
      cell(times[0] ?? null),
      missing > 0 ? over : cell(times[times.length - 1] ?? null),
      `p50 ${verdict(p50)}, p99 ${missing > 0 ? 'MISSED' : verdict(p99)}`,
    ];
  };
  const resume = report.samples.map((s) => s.resumeMs);
  const retrying = report.samples.map((s) => s.retryingClientMs);
  const list = (values: readonly (number | null)[]): string => values.map((v) => (v === null ? `>${FAILOVER_BOUND_MS}` : v.toFixed(0))).join(' ');
  const lines = [
    `Failover: kill -9 the leader of group ${report.group} (slots ${report.slots}), restart it, ${report.samples.length} times; ` +
      'INCR on a key of that group through a surviving node (nearest-rank percentiles: with 20 kills p99 is the slowest)',
    `  first write: a fresh connection sends one INCR every ${PROBE_INTERVAL_MS} ms; the first success`,
    '  retrying client: one connection, INCR again as soon as the previous attempt fails; its first success',
    '',
    formatTable(header, [row('first write on the group', resume), row('success of a retrying client', retrying)]),
    '',
    `every kill, first write, ms:      ${list(resume)}`,
    `every kill, retrying client, ms:  ${list(retrying)}`,
  ];
  const errors = new Map<string, number>();
  for (const s of report.samples) for (const [k, v] of s.errors) errors.set(k, (errors.get(k) ?? 0) + v);
  if (errors.size > 0)
    lines.push(`replies the retrying client got before its first success, all kills: ${[...errors].map(([k, v]) => `${v} x ${k}`).join(', ')}`);
  return lines.join('\n');
}

/** Command lines the cluster benchmarks run, PORT/DIR standing for free ports and temporary directories. */
export function plannedClusterBenchLines(requests: number, groups?: number): string[] {
  return [
    ...plannedClusterCommandLines(groups).map((l) => `ordo node:  ${l}`),
    `one node, measured -P D:  ${commandLine('redis-benchmark', benchmarkArgs('P1', 1, requests)).replace('-P 1', '-P D')}`,
    ...PIPELINE_DEPTHS.map(
      (d) =>
        `spread -P ${d}, at once on P1, P2, P3:  ${commandLine('redis-benchmark', benchmarkArgs('Pi', d, split(requests, CLUSTER_NODE_COUNT, d)[0] ?? 0, SPREAD_CLIENTS))}`,
    ),
    `--cluster:  ${commandLine('redis-benchmark', benchmarkArgs('P1', 1, requests, CLIENT_COUNT, ['--cluster'])).replace('-P 1', '-P D')}`,
  ];
}
