// `npm run bench`: every benchmark, one after the other, numbers only.
//
//   npm run bench                          full run (a few minutes)
//   npm run bench -- --quick               smaller runs, a smoke test
//   npm run bench -- --only redis-benchmark|sequences|resp|raft|cluster|failover|storage
//   npm run bench -- --rounds 5            measured runs per target and depth (default 3; medians shown)
//   npm run bench -- --kills 20            leader kills in the failover benchmark (default 20; --quick: 5)
//   npm run bench -- --timeout-s 120       bound on one redis-benchmark run
//   npm run bench -- --dir PATH            where the servers' temporary data directories go
//
// Exits 0 whatever the numbers are; 1 when a benchmark could not run (saying
// why), 2 on a bad flag.

import { spawnSync } from 'node:child_process';
import { arch, cpus, loadavg, platform, release, tmpdir, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { VERSION } from '../src/version.js';
import {
  FAILOVER_KILLS_FULL,
  FAILOVER_KILLS_QUICK,
  formatClusterThroughput,
  formatFailover,
  plannedClusterBenchLines,
  removeBenchClustersNow,
  runClusterThroughput,
  runFailoverBench,
} from './cluster.js';
import { runRaftBench, type RaftBenchResult } from './raft.js';
import {
  BenchSetupError,
  formatRate,
  formatReport,
  formatTable,
  killEverythingNow,
  plannedCommandLines,
  REQUESTS_FULL,
  REQUESTS_QUICK,
  RUN_TIMEOUT_MS_DEFAULT,
  runRedisBenchmarkComparison,
  toolVersion,
} from './redis-benchmark.js';
import { runRespBench } from './resp.js';
import { formatSequenceBench, runSequenceBench } from './sequences.js';
import { formatStorageReport, plannedStorageCommandLines, runStorageBench, STORAGE_REQUESTS_FULL, STORAGE_REQUESTS_QUICK } from './storage.js';

/**
 * Measured redis-benchmark runs per target and depth. fsync latency on a shared
 * or virtual disk swings by several times from minute to minute, so one run per
 * cell can mislead; alternating three and taking medians steadies the ratio.
 */
const ROUNDS_DEFAULT = 3;

const SECTIONS = ['redis-benchmark', 'sequences', 'resp', 'raft', 'cluster', 'failover', 'storage'] as const;
type Section = (typeof SECTIONS)[number];

const USAGE = `Usage: npm run bench -- [--quick] [--only ${SECTIONS.join('|')}] [--rounds N] [--kills N] [--timeout-s S] [--dir PATH]
  --quick        ${REQUESTS_QUICK.toLocaleString('en-US')} requests per redis-benchmark run instead of ${REQUESTS_FULL.toLocaleString('en-US')}, shorter micro-benchmarks,
                 storage: ${STORAGE_REQUESTS_QUICK.toLocaleString('en-US')} INCRs instead of ${STORAGE_REQUESTS_FULL.toLocaleString('en-US')}
  --only NAME    run one benchmark: ${SECTIONS.join(', ')}
  --rounds N     measured redis-benchmark runs per target and depth, alternating (default ${ROUNDS_DEFAULT}; --quick: 1)
  --kills N      leader kills in the failover benchmark (default ${FAILOVER_KILLS_FULL}; --quick: ${FAILOVER_KILLS_QUICK})
  --timeout-s S  kill a redis-benchmark run after S seconds and report it as overrun (default ${RUN_TIMEOUT_MS_DEFAULT / 1000})
  --dir PATH     parent of the servers' temporary data directories (default: the OS temp directory)
`;

class UsageError extends Error {}

interface BenchOptions {
  quick: boolean;
  only: Section | null;
  rounds: number;
  kills: number;
  runTimeoutMs: number;
  parentDir: string;
}

function positiveInteger(flag: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 1) throw new UsageError(`${flag} wants a positive integer, got "${text}"`);
  return n;
}

function parseOptions(argv: readonly string[]): BenchOptions | 'help' {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      options: {
        quick: { type: 'boolean', default: false },
        only: { type: 'string' },
        rounds: { type: 'string' },
        kills: { type: 'string' },
        'timeout-s': { type: 'string' },
        dir: { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
      allowPositionals: false,
    });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const v = parsed.values;
  if (v.help === true) return 'help';
  let only: Section | null = null;
  if (v.only !== undefined) {
    const found = SECTIONS.find((s) => s === v.only);
    if (found === undefined) throw new UsageError(`--only wants one of ${SECTIONS.join(', ')}, got "${v.only}"`);
    only = found;
  }
  return {
    quick: v.quick === true,
    only,
    rounds: positiveInteger('--rounds', v.rounds, v.quick === true ? 1 : ROUNDS_DEFAULT),
    kills: positiveInteger('--kills', v.kills, v.quick === true ? FAILOVER_KILLS_QUICK : FAILOVER_KILLS_FULL),
    runTimeoutMs: positiveInteger('--timeout-s', v['timeout-s'], RUN_TIMEOUT_MS_DEFAULT / 1000) * 1000,
    parentDir: v.dir ?? tmpdir(),
  };
}

/** The source this build came from: short commit, and whether tracked files had changes. */
function sourceRevision(): string {
  const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
  const head = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: repoRoot, encoding: 'utf8', timeout: 5_000 });
  if (head.error !== undefined || head.status !== 0) return 'unknown commit';
  const dirty = spawnSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: repoRoot, encoding: 'utf8', timeout: 5_000 });
  const changed = dirty.status === 0 && dirty.stdout.trim() !== '';
  return `commit ${head.stdout.trim()}${changed ? ' with uncommitted changes' : ''}`;
}

/** Load average (1, 5, 15 min), flagged when other work is taking a good share of the cores. */
function loadText(): string {
  const load = loadavg();
  const text = load.map((l) => l.toFixed(2)).join(', ');
  const busy = (load[0] ?? 0) > cpus().length / 2;
  return busy ? `${text}  (BUSY: other processes compete with the benchmark; expect noise)` : text;
}

/** INCRs per server in the storage section's growing keyspace. */
function storageRequests(options: BenchOptions): number {
  return options.quick ? STORAGE_REQUESTS_QUICK : STORAGE_REQUESTS_FULL;
}

function printHeader(options: BenchOptions, requests: number): void {
  const cpuList = cpus();
  const model = cpuList[0]?.model.trim() ?? 'unknown cpu';
  const lines = [
    `ordo benchmarks, ${new Date().toISOString()}${options.quick ? ' (--quick: smoke run, numbers not comparable to a full run)' : ''}`,
    `machine:          ${model}, ${cpuList.length} cores, ${(totalmem() / 2 ** 30).toFixed(1)} GiB RAM, ${platform()} ${release()} ${arch()}`,
    `load average:     ${loadText()}`,
    `node:             ${process.version}`,
    `ordo:             ${VERSION} (${sourceRevision()})`,
  ];
  const runs = (section: Section): boolean => options.only === null || options.only === section;
  if (runs('redis-benchmark') || runs('cluster') || runs('failover') || runs('storage')) {
    lines.push(
      `redis-server:     ${toolVersion('redis-server') ?? 'NOT FOUND'}`,
      `redis-benchmark:  ${toolVersion('redis-benchmark') ?? 'NOT FOUND'}`,
      `data directories: temporary, under ${options.parentDir}`,
    );
  }
  if (runs('redis-benchmark')) {
    lines.push('command lines (PORT: a free loopback port, DIR: a fresh temporary directory):', ...plannedCommandLines(requests).map((l) => `  ${l}`));
  }
  if (runs('cluster') || runs('failover')) {
    lines.push(
      'cluster command lines (Pi, Bi: free loopback client and bus ports, DIR: a fresh temporary directory, D: 1 and 16):',
      ...plannedClusterBenchLines(requests).map((l) => `  ${l}`),
    );
  }
  if (runs('storage')) {
    lines.push(
      'storage command lines (PORT: a free loopback port, DIR: a fresh temporary directory):',
      ...plannedStorageCommandLines(storageRequests(options)).map((l) => `  ${l}`),
    );
  }
  console.log(lines.join('\n'));
}

function formatRaft(r: RaftBenchResult): string {
  const header = ['scenario', 'entries', 'seconds', 'entries/s', 'ops/s', 'messages'];
  const row = [
    `${r.replicas} replicas, ${r.opsPerEntry} ops/entry, in-memory`,
    r.entries.toLocaleString('en-US'),
    r.seconds.toFixed(2),
    formatRate(r.entriesPerSec),
    formatRate(r.opsPerSec),
    r.messages.toLocaleString('en-US'),
  ];
  return `Raft core throughput (one process, messages handed over directly)\n${formatTable(header, [row])}`;
}

async function main(): Promise<number> {
  let options: BenchOptions | 'help';
  try {
    options = parseOptions(process.argv.slice(2));
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`bench: ${e.message}\n${USAGE}`);
      return 2;
    }
    throw e;
  }
  if (options === 'help') {
    process.stdout.write(USAGE);
    return 0;
  }
  const requests = options.quick ? REQUESTS_QUICK : REQUESTS_FULL;
  printHeader(options, requests);

  const failures: string[] = [];
  const runSection = async (section: Section, body: () => Promise<void>): Promise<void> => {
    if (options.only !== null && options.only !== section) return;
    console.log(`\n== ${section} ==`);
    try {
      await body();
    } catch (e) {
      const message = e instanceof BenchSetupError ? e.message : e instanceof Error ? (e.stack ?? e.message) : String(e);
      console.log(`${section}: could not run: ${message}`);
      failures.push(`${section}: ${message}`);
    }
  };

  /** A redis-benchmark comparison (single node or cluster): its servers' command lines, then its table. */
  const comparison = async <R extends { readonly commandLines: readonly string[] }>(
    run: (o: { requests: number; rounds: number; runTimeoutMs: number; parentDir: string; log: (line: string) => void }) => Promise<R>,
    format: (report: R) => string,
  ): Promise<void> => {
    const report = await run({
      requests,
      rounds: options.rounds,
      runTimeoutMs: options.runTimeoutMs,
      parentDir: options.parentDir,
      log: (line) => process.stderr.write(`  ${line}\n`),
    });
    console.log(['exact command lines of the servers:', ...report.commandLines.map((l) => `  ${l}`), ''].join('\n'));
    console.log(format(report));
  };

  await runSection('redis-benchmark', () => comparison(runRedisBenchmarkComparison, formatReport));
  await runSection('sequences', async () => {
    console.log(formatSequenceBench(await runSequenceBench((line) => process.stderr.write(`  ${line}\n`))));
  });
  await runSection('resp', async () => {
    await runRespBench(options.quick ? { framesPerRound: 20_000, rounds: 3 } : {});
  });
  await runSection('raft', async () => {
    console.log(formatRaft(await runRaftBench()));
  });
  await runSection('cluster', () => comparison(runClusterThroughput, formatClusterThroughput));
  await runSection('failover', async () => {
    const report = await runFailoverBench({
      kills: options.kills,
      parentDir: options.parentDir,
      log: (line) => process.stderr.write(`  ${line}\n`),
    });
    console.log(['exact command lines of the nodes:', ...report.commandLines.map((l) => `  ${l}`), ''].join('\n'));
    console.log(formatFailover(report));
  });
  await runSection('storage', () => comparison((o) => runStorageBench({ ...o, requests: storageRequests(options) }), formatStorageReport));

  console.log(`\nload average at the end: ${loadText()}`);
  if (failures.length > 0) {
    process.stderr.write(`\nbench: ${failures.length} benchmark(s) could not run:\n${failures.map((f) => `  ${f}`).join('\n')}\n`);
    return 1;
  }
  return 0;
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    process.stderr.write(`bench: ${signal}, stopping the servers\n`);
    killEverythingNow();
    removeBenchClustersNow();
    process.exit(130);
  });
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`bench: fatal: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    killEverythingNow();
    removeBenchClustersNow();
    process.exit(1);
  },
);
