// The fault suite: a real ordo cluster on loopback, concurrent clients, a
// seeded nemesis (kill -9, SIGSTOP, bus partitions, graceful restarts), a
// recorded history and the checkers of history.ts. Any anomaly fails the run.
//
//   npm run chaos -- [--time 60] [--seed S] [--nemesis kill,pause,partition,restart]
//                    [--nodes 3|5] [--groups G] [--window] [--out results/chaos-<seed>]
//
// docs/fault-testing.md describes the run, the checkers and the output.

import { mkdirSync, writeFileSync, createWriteStream } from 'node:fs';
import { resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { keySlot } from '../src/cluster/slots.js';
import { slotRanges } from '../src/cluster/topology.js';
import { prng, seedFrom } from '../testkit/random.js';
import { request } from '../testkit/resp.js';
import { sleep } from '../testkit/wait.js';
import { ChaosCluster, killAllNow } from './cluster.js';
import { isMain, positiveInt } from './common.js';
import { checkHistory, checkRecovery, HistoryRecorder, opToJson, type Anomaly, type KeyMode, type Op, type RecoveryProbe } from './history.js';
import { failoversFrom, LeaderMonitor, type LeaderSample } from './monitor.js';
import { Nemesis, parseFamilies, type FaultEvent, type NemesisFamily } from './nemesis.js';
import { formatSummary, reportHtml, timelineSvg, type RunSummaryInput } from './report.js';
import { classifyError, keysForGroups, Workload } from './workload.js';

/** After healing, every group must serve a write within this long. */
export const RECOVERY_LIMIT_MS = 5000;
/** How long the recovery probes keep trying past the limit (to report how late a group was). */
const RECOVERY_GIVE_UP_MS = 20_000;
/** The cluster must serve a write on every group within this long after it started. */
const SETUP_TIMEOUT_MS = 60_000;
/** Keys served in window mode start with this (the nodes run with --window-keys PREFIX*). */
export const WINDOW_KEY_PREFIX = 'chaos:w';
/** A small window, so windows run out and are reserved again often. */
const WINDOW_SIZE = 50;

/** One window key per group. */
function windowKeysForGroups(groups: number, groupOf: (key: string) => number): { key: string; group: number }[] {
  const out: { key: string; group: number }[] = [];
  for (let g = 1; g <= groups; g++) {
    for (let i = 0; ; i++) {
      const key = `${WINDOW_KEY_PREFIX}${g}:${i}`;
      if (groupOf(key) === g) {
        out.push({ key, group: g });
        break;
      }
    }
  }
  return out;
}

/** Clients keep running this long after the heal, so the timeline shows the recovery. */
const AFTER_HEAL_LOAD_MS = 2000;
/** How long the final reads may take, per key. */
const FINAL_READ_TIMEOUT_MS = 30_000;

export interface ChaosOptions {
  readonly seed: number;
  readonly timeS: number;
  readonly families: readonly NemesisFamily[];
  readonly nodes: number;
  readonly groups: number;
  /** Where the report goes; null writes nothing. */
  readonly outDir: string | null;
  readonly keysPerGroup?: number;
  /** Also one window-mode key per group (the nodes get --window-keys for them). */
  readonly windowKeys?: boolean;
  readonly plainPerNode?: number;
  readonly pipelinedPerNode?: number;
  readonly clusterClients?: number;
  readonly clusterLoops?: number;
  /** Quiet spell and fault length ranges, ms (defaults: 1-3 s quiet, 2-6 s faults). */
  readonly quietMs?: readonly [number, number];
  readonly faultMs?: readonly [number, number];
  readonly log?: (line: string) => void;
}

export interface ChaosResult {
  readonly seed: number;
  readonly anomalies: readonly Anomaly[];
  readonly history: readonly Op[];
  readonly events: readonly FaultEvent[];
  readonly recovery: readonly RecoveryProbe[];
  readonly summary: string;
  readonly replay: string;
  readonly outDir: string | null;
}

export function replayCommand(o: ChaosOptions): string {
  return `npm run chaos -- --seed ${o.seed} --time ${o.timeS} --nemesis ${o.families.join(',') || 'none'} --nodes ${o.nodes} --groups ${o.groups}${o.windowKeys === true ? ' --window' : ''}`;
}

/** One INCR on a fresh connection; resolves with the new value, or throws (an error reply as a ReplyError). */
async function writeOnce(port: number, key: string, timeoutMs: number): Promise<bigint> {
  const r = await request(port, ['INCR', key], timeoutMs);
  if (r.kind === '-') throw Object.assign(new Error(r.line), { name: 'ReplyError' });
  if (r.kind !== ':') throw new Error(`unexpected reply ${r.kind}${r.line}`);
  return BigInt(r.line);
}

/** What a failed probe write says about its outcome: a refused connection or a "not applied" reply did nothing. */
function probeOutcome(e: unknown): 'failed' | 'unknown' {
  if (e instanceof Error && /ECONNREFUSED/.test(e.message)) return 'failed';
  return classifyError(e, 'INCR').cls;
}

export async function runChaos(o: ChaosOptions): Promise<ChaosResult> {
  const log = o.log ?? ((): void => undefined);
  const replay = replayCommand(o);
  const random = prng(o.seed);
  if (o.outDir !== null) mkdirSync(o.outDir, { recursive: true });
  const ranges = slotRanges(o.groups);
  const groupOf = (key: string): number => {
    const slot = keySlot(key);
    return ranges.findIndex((r) => slot >= r.start && slot <= r.end) + 1;
  };
  const keyed = keysForGroups(o.groups, o.keysPerGroup ?? 3);
  if (o.windowKeys === true) keyed.push(...windowKeysForGroups(o.groups, groupOf));
  const keys = keyed.map((k) => k.key);
  const modeOf = (key: string): KeyMode => (key.startsWith(WINDOW_KEY_PREFIX) ? 'window' : 'strict');
  // Probe keys: one per group, named apart from the workload's.
  const probes: { group: number; key: string }[] = [];
  for (let g = 1; g <= o.groups; g++) {
    for (let i = 0; ; i++) {
      const key = `chaos:probe:g${g}:${i}`;
      if (groupOf(key) === g) {
        probes.push({ group: g, key });
        break;
      }
    }
  }

  const cluster = await ChaosCluster.start({
    nodes: o.nodes,
    groups: o.groups,
    ...(o.windowKeys === true ? { extraArgs: ['--window-keys', `${WINDOW_KEY_PREFIX}*`, '--window-size', String(WINDOW_SIZE)] } : {}),
    ...(o.outDir !== null ? { logDir: o.outDir } : {}),
  });
  const ports = cluster.nodes.map((n) => n.port);
  let workload: Workload | null = null;
  let nemesis: Nemesis | null = null;
  let monitor: LeaderMonitor | null = null;
  let keepData = false;
  try {
    log(
      `chaos: cluster up: ${cluster.nodes.map((n) => `node ${n.index} 127.0.0.1:${n.port} (bus ${n.busPort} -> ${n.realBusPort}) id ${n.id ?? '?'}`).join('; ')}`,
    );
    // Every group serves a write before the clients start.
    const setupStart = Date.now();
    await Promise.all(
      probes.map(async ({ group }, i) => {
        for (let attempt = 0; ; attempt++) {
          try {
            await writeOnce(ports[attempt % ports.length] ?? 0, `chaos:setup:g${group}:${i}`, 6000);
            return;
          } catch (e) {
            if (Date.now() - setupStart > SETUP_TIMEOUT_MS)
              throw new Error(`group ${group} served no write within ${SETUP_TIMEOUT_MS} ms of the start: ${e instanceof Error ? e.message : String(e)}`);
            await sleep(200);
          }
        }
      }),
    );
    log(`chaos: every group serves writes (${Date.now() - setupStart} ms after the start)`);

    const t0 = performance.now();
    const now = (): number => performance.now() - t0;
    const recorder = new HistoryRecorder();
    workload = new Workload({
      ports,
      keys,
      seed: o.seed,
      random,
      plainPerNode: o.plainPerNode ?? 2,
      pipelinedPerNode: o.pipelinedPerNode ?? 1,
      clusterClients: o.clusterClients ?? 1,
      clusterLoops: o.clusterLoops ?? 3,
      groupKeys: Array.from({ length: o.groups }, (_, g) => keyed.filter((k) => k.group === g + 1).map((k) => k.key)),
      recorder,
      now,
    });
    nemesis = new Nemesis(cluster, {
      families: o.families,
      random,
      now,
      untilMs: o.timeS * 1000,
      log,
      ...(o.quietMs !== undefined ? { quietMs: o.quietMs } : {}),
      ...(o.faultMs !== undefined ? { faultMs: o.faultMs } : {}),
    });
    const replicasByStart = await cluster.replicasBySlotStart();
    const replicasOf = (g: number): readonly number[] | undefined => {
      const range = ranges[g - 1];
      return range === undefined ? undefined : replicasByStart.get(range.start);
    };
    log(`chaos: replicas: ${Array.from({ length: o.groups }, (_, g) => `g${g + 1} [${replicasOf(g + 1)?.join(',') ?? '?'}]`).join(' ')}`);
    monitor = new LeaderMonitor(cluster, o.groups, now);
    await monitor.poll();
    monitor.start();
    const loadFromMs = now();
    workload.start();
    if (o.families.length > 0) nemesis.start();
    let lastProgress = 0;
    while (now() < o.timeS * 1000) {
      await sleep(250);
      if (now() - lastProgress >= 5000) {
        lastProgress = now();
        const ops = recorder.ops;
        const ok = ops.filter((x) => x.outcome === 'ok').length;
        log(`chaos: ${(now() / 1000).toFixed(0)}s: ${ops.length} ops (${ok} ok), ${workload.pending} in flight`);
      }
    }
    await nemesis.stop();
    await nemesis.healAll();
    const healMs = now();
    log(`chaos: healed at ${(healMs / 1000).toFixed(1)}s; probing every group`);

    // Recovery: a write to every group, through any node, within the limit.
    const recovery: RecoveryProbe[] = await Promise.all(
      probes.map(async ({ group, key }) => {
        let lastError = '';
        for (let attempt = 0; now() - healMs < RECOVERY_GIVE_UP_MS; attempt++) {
          const port = ports[attempt % ports.length] ?? 0;
          const invokeMs = now();
          try {
            const v = await writeOnce(port, key, 3000);
            recorder.add({ process: 'probe', kind: 'INCR', key, n: 1n, invokeMs, completeMs: now(), outcome: 'ok', range: [v, v] });
            return { group, ms: now() - healMs };
          } catch (e) {
            lastError = e instanceof Error ? e.message : String(e);
            // A probe whose answer is unknown may have applied: it stays in the history as such.
            recorder.add({ process: 'probe', kind: 'INCR', key, n: 1n, invokeMs, completeMs: now(), outcome: probeOutcome(e), error: lastError });
            await sleep(100);
          }
        }
        return { group, ms: null, detail: lastError };
      }),
    );
    log(`chaos: recovery ${recovery.map((r) => `g${r.group} ${r.ms === null ? 'none' : `${Math.round(r.ms)} ms`}`).join(', ')}`);
    while (now() < healMs + AFTER_HEAL_LOAD_MS) await sleep(100);
    const loadToMs = now();
    await workload.stop();
    const workloadAnomalies = workload.anomalies;
    workload = null;
    await monitor.stop();
    const leaderSamples = monitor.samples;
    monitor = null;

    // Final values: a GET of every key once all clients stopped.
    const finals = new Map<string, bigint>();
    const allKeys = [...keys, ...probes.map((p) => p.key)];
    await Promise.all(
      allKeys.map(async (key, i) => {
        const start = Date.now();
        for (let attempt = i; ; attempt++) {
          const invokeMs = now();
          try {
            const r = await request(ports[attempt % ports.length] ?? 0, ['GET', key], 5000);
            if (r.kind !== '$') throw new Error(`${r.kind}${r.line}`);
            const v = r.bulk === null ? 0n : BigInt(r.bulk);
            recorder.add({ process: 'final', kind: 'GET', key, n: 0n, invokeMs, completeMs: now(), outcome: 'ok', value: v });
            finals.set(key, v);
            return;
          } catch (e) {
            if (Date.now() - start > FINAL_READ_TIMEOUT_MS)
              throw new Error(`final GET ${key} failed for ${FINAL_READ_TIMEOUT_MS} ms: ${e instanceof Error ? e.message : String(e)}`);
            await sleep(200);
          }
        }
      }),
    );

    const history = recorder.ops;
    const anomalies: Anomaly[] = [
      ...workloadAnomalies,
      ...checkHistory(history, { finals, modeOf }),
      ...checkRecovery(recovery, RECOVERY_LIMIT_MS),
      ...nemesis.restartFailures.map((message): Anomaly => ({ kind: 'restart', message: `did not restart: ${message}`, ops: [] })),
    ];
    keepData = anomalies.length > 0;
    const notes: string[] = [];
    notes.push(
      `proxy: ${cluster.proxy.stats.connections} bus connections, ${(cluster.proxy.stats.bytesForwarded / 1e6).toFixed(1)} MB forwarded, ${cluster.proxy.stats.resets} reset`,
    );
    notes.push(`node starts: ${cluster.nodes.map((n) => `node ${n.index} ${n.starts}x`).join(', ')}`);
    const stops = await cluster.destroy(true, keepData);
    const unclean = [...stops].filter(([, how]) => how !== 'exit code 0');
    notes.push(`graceful stop at the end: ${unclean.length === 0 ? 'every node exited 0' : unclean.map(([i, how]) => `node ${i} ${how}`).join(', ')}`);
    if (nemesis.stopMs.length > 0)
      notes.push(`graceful stops (SIGTERM to exit) during the run: ${nemesis.stopMs.map((x) => `${Math.round(x)} ms`).join(', ')}`);
    if (nemesis.uncleanStops.length > 0) notes.push(`graceful stops during the run that did not exit 0: ${nemesis.uncleanStops.join('; ')}`);
    if (keepData) notes.push(`data directories kept in ${cluster.dataRoot}`);
    const input: RunSummaryInput = {
      seed: o.seed,
      nodes: o.nodes,
      groups: o.groups,
      timeS: o.timeS,
      families: o.families,
      windowKeys: o.windowKeys === true,
      history,
      anomalies,
      events: nemesis.events,
      groupOf,
      loadFromMs,
      loadToMs,
      healMs,
      recovery,
      recoveryLimitMs: RECOVERY_LIMIT_MS,
      leaderSamples,
      failovers: failoversFrom(leaderSamples, nemesis.events, o.groups, replicasOf),
      replay,
      outDir: o.outDir,
      notes,
    };
    const summary = formatSummary(input);
    if (o.outDir !== null) {
      const svg = timelineSvg(input);
      writeFileSync(resolve(o.outDir, 'timeline.svg'), svg);
      writeFileSync(resolve(o.outDir, 'report.html'), reportHtml(summary, svg));
      writeFileSync(resolve(o.outDir, 'summary.txt'), `${summary}\n`);
      writeFileSync(resolve(o.outDir, 'anomalies.json'), `${JSON.stringify(anomalies, null, 1)}\n`);
      await writeHistory(resolve(o.outDir, 'history.json'), o, history, nemesis.events, finals, recovery, healMs, leaderSamples);
    }
    return { seed: o.seed, anomalies, history, events: nemesis.events, recovery, summary, replay, outDir: o.outDir };
  } catch (e) {
    // A RangeError or TypeError is a bug in the suite itself: its stack says where.
    const why = e instanceof Error ? (e.constructor === Error ? e.message : (e.stack ?? e.message)) : String(e);
    throw new Error(
      `chaos run (seed ${o.seed}) stopped: ${why}\nnode data kept in ${cluster.dataRoot}${o.outDir === null ? '' : `, node logs in ${o.outDir}`}\nreplay: ${replay}`,
      {
        cause: e,
      },
    );
  } finally {
    if (workload !== null) await Promise.race([workload.stop(), sleep(15_000)]);
    if (monitor !== null) await monitor.stop();
    // A run that threw leaves its nodes to be killed here (a finished one stopped them already).
    if (cluster.nodes.some((n) => n.running)) await cluster.destroy(false, true);
  }
}

async function writeHistory(
  path: string,
  o: ChaosOptions,
  history: readonly Op[],
  events: readonly FaultEvent[],
  finals: ReadonlyMap<string, bigint>,
  recovery: readonly RecoveryProbe[],
  healMs: number,
  leaders: readonly LeaderSample[],
): Promise<void> {
  const out = createWriteStream(path);
  const write = (s: string): Promise<void> =>
    new Promise((resolveWrite) => {
      if (out.write(s)) resolveWrite();
      else out.once('drain', () => resolveWrite());
    });
  await write(
    `{"seed":${o.seed},"timeS":${o.timeS},"nodes":${o.nodes},"groups":${o.groups},"nemesis":${JSON.stringify(o.families)},"healMs":${Math.round(healMs)},\n` +
      `"events":${JSON.stringify(events)},\n"recovery":${JSON.stringify(recovery)},\n"leaders":${JSON.stringify(leaders)},\n` +
      `"finals":${JSON.stringify(Object.fromEntries([...finals].map(([k, v]) => [k, v.toString()])))},\n"ops":[\n`,
  );
  for (let i = 0; i < history.length; i++) {
    const op = history[i];
    if (op !== undefined) await write(`${JSON.stringify(opToJson(op))}${i + 1 < history.length ? ',' : ''}\n`);
  }
  await write(']}\n');
  await new Promise<void>((r) => out.end(() => r()));
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      time: { type: 'string' },
      seed: { type: 'string' },
      nemesis: { type: 'string' },
      nodes: { type: 'string' },
      groups: { type: 'string' },
      out: { type: 'string' },
      window: { type: 'boolean' },
    },
  });
  const seed = seedFrom(values.seed);
  // The seed first, so an interrupted run can still be replayed.
  console.log(`chaos seed: ${seed}`);
  const nodes = positiveInt('nodes', values.nodes, 3);
  if (nodes !== 3 && nodes !== 5) throw new Error(`--nodes must be 3 or 5, got ${nodes}`);
  const options: ChaosOptions = {
    seed,
    timeS: positiveInt('time', values.time, 60),
    families: parseFamilies(values.nemesis),
    nodes,
    groups: positiveInt('groups', values.groups, nodes),
    outDir: resolve(values.out ?? `results/chaos-${seed}`),
    windowKeys: values.window === true,
    log: (line) => console.log(line),
  };
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      console.log(`chaos: ${signal}: killing every node (seed ${seed})`);
      killAllNow();
      process.exit(130);
    });
  }
  const result = await runChaos(options);
  console.log(result.summary);
  process.exitCode = result.anomalies.length === 0 ? 0 : 1;
}

if (isMain(import.meta.url)) {
  main().catch((e: unknown) => {
    console.error(e);
    killAllNow();
    process.exit(2);
  });
}
