// Waiting in tests, benchmarks and fault runs: a sleep, and waitFor, which
// polls a condition until it holds or a deadline passes (every wait bounded,
// and a timeout names what was waited for).

/** Default bound on waitFor. */
export const WAIT_TIMEOUT_MS = 5_000;
/** Default pause between two polls of waitFor. */
export const WAIT_INTERVAL_MS = 5;

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `cond` until it holds; throws `timed out waiting for WHAT` after `timeoutMs` (a throwing check fails at once). */
export async function waitFor(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = WAIT_TIMEOUT_MS, intervalMs = WAIT_INTERVAL_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(intervalMs);
  }
}
