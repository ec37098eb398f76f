// The one seeded PRNG of tests, benchmarks and fault runs: the simulator's
// (sim/prng.ts), so a seed means the same thing everywhere. A run that fails
// prints its seed and repeats exactly with it. Small helpers on top: integers,
// picks, shuffles and a seed taken from the command line.

import { Prng } from '../sim/prng.js';

export { Prng };

/** Uniform floats in [0, 1). */
export type Random = () => number;

/** A seeded source of floats in [0, 1). */
export function prng(seed: number): Random {
  const generator = new Prng(seed);
  return () => generator.float();
}

/** A fresh seed for a child generator, drawn from `random`. */
export function childSeed(random: Random): number {
  return Math.floor(random() * 2 ** 32);
}

/** Uniform integer in [lo, hi] (inclusive). */
export function int(random: Random, lo: number, hi: number): number {
  return lo + Math.floor(random() * (hi - lo + 1));
}

/** One of `items` (not empty), uniformly. */
export function pick<T>(random: Random, items: readonly T[]): T {
  if (items.length === 0) throw new Error('pick from an empty list');
  return items[Math.floor(random() * items.length)] as T;
}

/** A shuffled copy of `items` (Fisher-Yates). */
export function shuffle<T>(random: Random, items: readonly T[]): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}

/** A seed from the command line, or a fresh one from the clock. */
export function seedFrom(text: string | undefined): number {
  if (text === undefined) return Date.now() % 1_000_000_000;
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`--seed must be a non-negative integer, got ${text}`);
  return n;
}
