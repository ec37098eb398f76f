// Short forms of the fault runs in chaos/: protocol fuzzing of one real ordo
// process (100k frames or 15 s), and kill -9 / restart cycles on one data
// directory (5 cycles). The full-size runs are `npm run fuzz` and `npm run crash`.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatCrashResult, runCrash } from '../../chaos/crash.js';
import { formatFuzzResult, RSS_BYTES_MAX, runFuzz } from '../../chaos/fuzz.js';

const seed = Number(process.env['ORDO_TEST_SEED'] ?? Date.now() % 1_000_000);

describe('fault runs (short)', () => {
  it('fuzzing with random and mutated frames: the server survives, stays bounded and keeps answering', async (t) => {
    const result = await runFuzz({ frames: 100_000, seconds: 15, seed, connections: 8 });
    const summary = formatFuzzResult(result);
    for (const line of summary.split('\n')) t.diagnostic(line);
    assert.deepEqual(result.failures, [], summary);
    assert.ok(result.framesSent >= 10_000, `only ${result.framesSent} frames sent\n${summary}`);
    assert.ok(result.protocolErrors > 100, `protocol errors seen: ${result.protocolErrors}\n${summary}`);
    assert.ok(result.reconnects > 0, summary);
    // The final PING alone makes 1: at least one health check must also have run during the fuzzing.
    assert.ok(result.pingsOk >= 2, summary);
    assert.ok(result.rssBytesMax > 0 && result.rssBytesMax < RSS_BYTES_MAX, summary);
    assert.ok((result.repliesByKind[':'] ?? 0) > 0 && (result.repliesByKind['+'] ?? 0) > 0, summary);
  });

  it('kill -9 under pipelined INCR/INCRBY/SEQNEXT load, 5 cycles: restarts succeed, nothing acknowledged is lost or repeated', async (t) => {
    const result = await runCrash({ cycles: 5, seed });
    const summary = formatCrashResult(result);
    for (const line of summary.split('\n')) t.diagnostic(line);
    assert.deepEqual(result.anomalies, [], summary);
    assert.ok(result.acks > 0, summary);
  });
});
