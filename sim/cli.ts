// Command line for the simulator.
//   node dist/sim/cli.js --seeds N [--from S]   run seeds S..S+N-1
//   node dist/sim/cli.js --seed S --trace       replay one seed with a readable trace
// With --multiraft, the same for the multiraft simulation (sim/multiraft.ts):
//   node dist/sim/cli.js --multiraft --seeds N [--from S]
//   node dist/sim/cli.js --multiraft --seed S --trace
// With --cluster, whole cluster members (engine, router, forwarding,
// balancing) with clients (sim/nodes.ts):
//   node dist/sim/cli.js --cluster --seeds N [--from S]
//   node dist/sim/cli.js --cluster --seed S --trace
// and, as test/sim-nodes.test.ts runs them (shorter seeds):
//   node dist/sim/cli.js --cluster --fault-ms 3000 --short --seed S --trace

import { parseArgs } from 'node:util';
import type { SimResult } from './base.js';
import { runMultiraftSeed } from './multiraft.js';
import { NodesSimulation, type NodesSimOptions } from './nodes.js';
import { runSeed } from './simulation.js';

interface SeedOutcome {
  readonly ok: boolean;
  readonly error?: string;
  /** Where it failed, for the report line. */
  readonly where: string;
  readonly summary: string;
}

type Mode = 'raft' | 'multiraft' | 'cluster';

/** A seed of the virtual-time simulations (sim/base.ts) as a report line sees it. */
function outcomeOf<S>(res: SimResult<S>, summary: (s: S) => string): SeedOutcome {
  return { ok: res.ok, ...(res.error === undefined ? {} : { error: res.error }), where: `at ${res.atMs.toFixed(2)} ms`, summary: summary(res.stats) };
}

/** How a --cluster seed runs besides its seed and trace (the defaults of sim/nodes.ts when not given). */
type ClusterRun = Pick<NodesSimOptions, 'faultMs' | 'short'>;

async function runOne(mode: Mode, seed: number, trace: ((line: string) => void) | undefined, cluster: ClusterRun): Promise<SeedOutcome> {
  if (mode === 'cluster') {
    return outcomeOf(
      await new NodesSimulation({ seed, ...(trace === undefined ? {} : { trace }), ...cluster }).run(),
      (s) =>
        `${s.events} events, ${s.acked} INCR and ${s.reads} GET acked, ${s.refused} refused, ${s.unknown} unknown, ${s.moved} MOVED, ` +
        `${s.crashes} kills, ${s.pauses} pauses, slowest reply ${s.replyMsMax.toFixed(0)} ms`,
    );
  }
  if (mode === 'multiraft') {
    return outcomeOf(
      await runMultiraftSeed(seed, trace),
      (s) =>
        `${s.events} events, ${s.strictAcked} INCR and ${s.windowAcked} SEQNEXT acked (${s.windowValues} window values), ` +
        `${s.crashes} crashes, ${s.pauses} pauses, ${s.staleLeaderRequests} requests to stale leaders, ${s.leaseTimeouts} lease waits timed out`,
    );
  }
  const res = runSeed(seed, trace);
  return {
    ok: res.ok,
    ...(res.error === undefined ? {} : { error: res.error }),
    where: `at tick ${res.atTick}`,
    summary: `${res.stats.events} events, ${res.stats.committed} committed, ${res.stats.acked} acked`,
  };
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      seeds: { type: 'string' },
      from: { type: 'string' },
      seed: { type: 'string' },
      trace: { type: 'boolean', default: false },
      multiraft: { type: 'boolean', default: false },
      cluster: { type: 'boolean', default: false },
      'fault-ms': { type: 'string' },
      short: { type: 'boolean', default: false },
    },
    strict: true,
  });
  const mode: Mode = values.cluster === true ? 'cluster' : values.multiraft === true ? 'multiraft' : 'raft';
  const faultMs = values['fault-ms'] === undefined ? undefined : Number(values['fault-ms']);
  if (faultMs !== undefined && (mode !== 'cluster' || !Number.isSafeInteger(faultMs) || faultMs < 0)) throw new Error('--fault-ms N goes with --cluster');
  const short = values.short === true;
  if (short && mode !== 'cluster') throw new Error('--short goes with --cluster');
  const cluster: ClusterRun = { ...(faultMs === undefined ? {} : { faultMs }), short };
  const replay = `npm run sim --${mode === 'raft' ? '' : ` --${mode}`}${faultMs === undefined ? '' : ` --fault-ms ${faultMs}`}${short ? ' --short' : ''}`;
  if (values.seed !== undefined) {
    const seed = Number(values.seed);
    if (!Number.isSafeInteger(seed)) throw new Error(`bad --seed ${values.seed}`);
    const trace = values.trace === true ? (line: string): void => console.log(line) : undefined;
    const res = await runOne(mode, seed, trace, cluster);
    if (res.ok) {
      console.log(`seed ${seed} passed (${res.summary})`);
      return 0;
    }
    console.log(`seed ${seed} FAILED ${res.where}: ${res.error}`);
    return 1;
  }
  const count = Number(values.seeds ?? '100');
  const from = Number(values.from ?? '1');
  if (!Number.isSafeInteger(count) || !Number.isSafeInteger(from) || count < 1) throw new Error('bad --seeds/--from');
  const failed: number[] = [];
  const t0 = performance.now();
  for (let s = from; s < from + count; s++) {
    const res = await runOne(mode, s, undefined, cluster);
    if (!res.ok) {
      failed.push(s);
      const firstLine = (res.error ?? '').split('\n')[0];
      console.log(`seed ${s} FAILED ${res.where}: ${firstLine}`);
      console.log(`  replay: ${replay} --seed ${s} --trace`);
    }
  }
  const secs = ((performance.now() - t0) / 1000).toFixed(1);
  if (failed.length === 0) {
    console.log(`${count} seeds passed (${from}..${from + count - 1}, ${secs} s)`);
    return 0;
  }
  console.log(`${failed.length} of ${count} seeds failed (${secs} s); first failing seed ${failed[0]}: ${replay} --seed ${failed[0]} --trace`);
  return 1;
}

process.exitCode = await main();
