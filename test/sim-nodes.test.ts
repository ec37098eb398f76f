// The whole-cluster simulation as a test: seeds of real cluster members
// (engine, router, forwarding, relaying, balancing) on virtual time, with
// plain and cluster-aware clients, under partitions, cut links, kills,
// pauses, slow disks and loss. The checker judges what clients saw (see
// sim/nodes.ts). A failing seed replays with the command its failure prints.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NodesSimulation, runNodesSeed, type NodesSimResult, type NodesSimStats } from '../sim/nodes.js';
import { ClusterRouter } from '../src/server/router.js';

/**
 * Seeds run here (about two minutes on two cores); `npm run sim -- --cluster
 * --seeds N` runs more, and longer ones.
 */
const SEED_COUNT = 200;
const CHUNK = 25;
/**
 * Virtual milliseconds of faults per seed here (the command line's default is
 * longer). The seeds are short ones (NodesSimOptions.short): the same faults,
 * checks and bounds, without most of the healthy traffic before the faults
 * and after the heal, which is most of a full seed's events.
 */
const FAULT_MS = 3000;
const REPLAY = `npm run sim -- --cluster --fault-ms ${FAULT_MS} --short`;

function runTestSeed(seed: number): Promise<NodesSimResult> {
  return new NodesSimulation({ seed, faultMs: FAULT_MS, short: true }).run();
}

const totals: NodesSimStats = { events: 0, acked: 0, reads: 0, refused: 0, unknown: 0, moved: 0, crashes: 0, pauses: 0, replyMsMax: 0 };

for (let from = 1; from <= SEED_COUNT; from += CHUNK) {
  const to = Math.min(SEED_COUNT, from + CHUNK - 1);
  test(`whole-cluster simulated seeds ${from}..${to}`, async () => {
    const failures: string[] = [];
    for (let seed = from; seed <= to; seed++) {
      const res = await runTestSeed(seed);
      for (const k of Object.keys(totals) as (keyof NodesSimStats)[]) {
        totals[k] = k === 'replyMsMax' ? Math.max(totals[k], res.stats[k]) : totals[k] + res.stats[k];
      }
      if (!res.ok) failures.push(`seed ${seed} (${res.atMs.toFixed(2)} ms): ${(res.error ?? '').split('\n')[0]} — replay: ${REPLAY} --seed ${seed} --trace`);
    }
    assert.deepEqual(failures, []);
  });
}

test('the seeds exercised what they claim: kills, pauses, MOVED, reads, refusals and unknown outcomes', () => {
  assert.ok(totals.crashes > 0 && totals.pauses > 0, `${totals.crashes} kills, ${totals.pauses} pauses`);
  assert.ok(totals.moved > 0, 'cluster-aware clients were redirected');
  assert.ok(totals.acked > 5000 && totals.reads > 500, `${totals.acked} INCR, ${totals.reads} GET acknowledged`);
  assert.ok(totals.refused > 0 && totals.unknown > 0, `${totals.refused} refused, ${totals.unknown} unknown`);
  // Some request waited for most of its timeout: the deadline bound was really tested.
  assert.ok(totals.replyMsMax > 900, `slowest reply ${totals.replyMsMax} ms`);
});

test('a whole-cluster seed replays exactly', async () => {
  const traces: string[][] = [[], []];
  for (const lines of traces) {
    const res = await runNodesSeed(7, (line) => lines.push(line), 1500);
    assert.ok(res.ok, res.error);
  }
  assert.ok((traces[0] as string[]).length > 1000, 'the trace shows the run');
  assert.deepEqual(traces[0], traces[1]);
});

test('the simulation finds a planted routing bug: a write refused for lost leadership answered instead of retried', async (t) => {
  const proto = ClusterRouter.prototype as unknown as { refusedForLostLeadership: (reply: unknown) => boolean };
  const real = proto.refusedForLostLeadership;
  t.after(() => {
    proto.refusedForLostLeadership = real;
  });
  proto.refusedForLostLeadership = () => false; // the bug: the group's refusal goes to the client as it is
  let caught: { seed: number; error: string } | null = null;
  for (let seed = 1; seed <= 40 && caught === null; seed++) {
    const res = await runTestSeed(seed);
    if (!res.ok) caught = { seed, error: res.error ?? '' };
  }
  assert.ok(caught !== null, 'some seed fails with the bug planted');
  assert.match(caught.error, /reached a client/);
  proto.refusedForLostLeadership = real;
  const fixed = await runTestSeed(caught.seed);
  assert.ok(fixed.ok, `seed ${caught.seed} passes once the bug is gone: ${fixed.error}`);
});
