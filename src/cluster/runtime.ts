// A cluster node's time, timers and randomness, injected: the engine, the
// router, forwarding, the balancer and the start-up probe read the clock and
// arm timers only through a NodeRuntime. Node's real clocks and timers are
// one implementation (realRuntime); the whole-cluster simulator (sim/nodes.ts)
// gives each node a virtual one, so what these layers decide replays from a
// seed.

import { realHostScheduler, type HostScheduler } from '../multiraft/host.js';
import { realScheduler, type MemoryScheduler } from '../transport/memory.js';

/** End of turn, one-shot and repeating timers. */
export interface NodeScheduler extends HostScheduler, MemoryScheduler {}

export interface NodeRuntime {
  /** Monotonic milliseconds: deadlines, waits and grace periods. */
  readonly now: () => number;
  /** Milliseconds since the Unix epoch: what a command records as the time of day (token records). */
  readonly wallClockMs: () => number;
  readonly scheduler: NodeScheduler;
  /** Uniform in [0, 1): election timeouts. */
  readonly random: () => number;
}

export const realRuntime: NodeRuntime = {
  now: () => performance.now(),
  wallClockMs: () => Date.now(),
  scheduler: { endOfTurn: realHostScheduler.endOfTurn, every: realHostScheduler.every, after: realScheduler.after },
  random: Math.random,
};

/** Resolves after `ms` of the runtime's time. */
export function sleepOn(runtime: NodeRuntime, ms: number): Promise<void> {
  return new Promise((resolve) => runtime.scheduler.after(ms, resolve));
}
