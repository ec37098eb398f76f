// Short forms of the fault suite (`npm run chaos`): two runs of a real 3-node
// cluster on loopback under concurrent clients, one with kill -9 and graceful
// restarts, one with pauses and bus partitions, each with its own seed. Any
// anomaly fails. Every node is stopped when a run ends, also when it fails;
// a failed run keeps its report (the path is in the failure message).
// ORDO_TEST_SEED=<n> fixes the seeds (the second run uses n + 1).

import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { killAllNow } from '../../chaos/cluster.js';
import type { NemesisFamily } from '../../chaos/nemesis.js';
import { runChaos } from '../../chaos/run.js';

const seed = Number(process.env['ORDO_TEST_SEED'] ?? Date.now() % 1_000_000);
const RUN_S = 32;

async function shortRun(t: { diagnostic(message: string): void }, runSeed: number, families: readonly NemesisFamily[]): Promise<void> {
  const outDir = join(tmpdir(), `ordo-chaos-test-${runSeed}-${process.pid}`);
  t.diagnostic(`chaos seed ${runSeed}, nemesis ${families.join(',')}`);
  let passed = false;
  try {
    const result = await runChaos({
      seed: runSeed,
      timeS: RUN_S,
      families,
      nodes: 3,
      groups: 3,
      outDir,
      plainPerNode: 1,
      pipelinedPerNode: 1,
      clusterClients: 1,
      clusterLoops: 2,
      quietMs: [800, 2000],
      faultMs: [1500, 4000],
    });
    for (const line of result.summary.split('\n')) t.diagnostic(line);
    const writesOk = result.history.filter((op) => op.kind !== 'GET' && op.outcome === 'ok').length;
    assert.deepEqual(result.anomalies, [], `${result.summary}\nreport kept in ${outDir}`);
    assert.ok(result.events.length >= 3, `only ${result.events.length} faults injected\n${result.summary}`);
    // A sanity check that the clients ran, loose enough for a slow or busy machine.
    assert.ok(writesOk > 100, `only ${writesOk} writes acknowledged\n${result.summary}`);
    passed = true;
  } finally {
    killAllNow();
    if (passed) rmSync(outDir, { recursive: true, force: true });
  }
}

describe('chaos (short runs against a real 3-node cluster)', () => {
  it('kill -9 (one, a majority, all) and graceful restarts: nothing lost, nothing handed out twice', { timeout: 150_000 }, async (t) => {
    await shortRun(t, seed, ['kill', 'restart']);
  });

  it(
    'SIGSTOP of leaders and majorities and bus partitions (isolation, splits, one-way cuts, flapping): nothing lost, nothing handed out twice',
    { timeout: 150_000 },
    async (t) => {
      await shortRun(t, seed + 1, ['pause', 'partition']);
    },
  );
});
