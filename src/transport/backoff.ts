// Reconnect delays: exponential, capped, with "equal jitter" (half the delay
// fixed, half random) so that the delay still grows visibly while peers that
// lost each other at the same moment do not redial in lockstep.

import assert from 'node:assert/strict';

/**
 * Delay before redial number `attempt` (0 for the first redial after a
 * failure): d = min(delayMsMax, baseMs * 2^attempt), then d/2 + random() * d/2.
 * `random` returns a number in [0, 1).
 */
export function backoffDelayMs(attempt: number, baseMs: number, delayMsMax: number, random: () => number): number {
  assert.ok(Number.isSafeInteger(attempt) && attempt >= 0, 'attempt must be a non-negative integer');
  assert.ok(baseMs > 0 && delayMsMax >= baseMs, 'need 0 < baseMs <= delayMsMax');
  const r = random();
  assert.ok(r >= 0 && r < 1, 'random() must return a number in [0, 1)');
  // 2^31 is past any sane cap; avoid overflowing to Infinity for huge attempt counts.
  const ceiling = Math.min(delayMsMax, baseMs * 2 ** Math.min(attempt, 31));
  return Math.round(ceiling / 2 + (r * ceiling) / 2);
}
