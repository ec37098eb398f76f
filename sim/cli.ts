// Command line for the simulator.
//   node dist/sim/cli.js --seeds N [--from S]   run seeds S..S+N-1
//   node dist/sim/cli.js --seed S --trace       replay one seed with a readable trace

import { parseArgs } from "node:util";
import { runSeed } from "./simulation.js";

function main(): number {
  const { values } = parseArgs({
    options: {
      seeds: { type: "string" },
      from: { type: "string" },
      seed: { type: "string" },
      trace: { type: "boolean", default: false },
    },
    strict: true,
  });
  if (values.seed !== undefined) {
    const seed = Number(values.seed);
    if (!Number.isSafeInteger(seed)) throw new Error(`bad --seed ${values.seed}`);
    const trace = values.trace === true ? (line: string): void => console.log(line) : undefined;
    const res = runSeed(seed, trace);
    if (res.ok) {
      console.log(`seed ${seed} passed (${res.stats.events} events, ${res.stats.committed} committed, ${res.stats.acked} acked)`);
      return 0;
    }
    console.log(`seed ${seed} FAILED at tick ${res.atTick}: ${res.error}`);
    return 1;
  }
  const count = Number(values.seeds ?? "100");
  const from = Number(values.from ?? "1");
  if (!Number.isSafeInteger(count) || !Number.isSafeInteger(from) || count < 1) throw new Error("bad --seeds/--from");
  const failed: number[] = [];
  const t0 = performance.now();
  for (let s = from; s < from + count; s++) {
    const res = runSeed(s);
    if (!res.ok) {
      failed.push(s);
      const firstLine = (res.error ?? "").split("\n")[0];
      console.log(`seed ${s} FAILED at tick ${res.atTick}: ${firstLine}`);
      console.log(`  replay: npm run sim -- --seed ${s} --trace`);
    }
  }
  const secs = ((performance.now() - t0) / 1000).toFixed(1);
  if (failed.length === 0) {
    console.log(`${count} seeds passed (${from}..${from + count - 1}, ${secs} s)`);
    return 0;
  }
  console.log(`${failed.length} of ${count} seeds failed (${secs} s); first failing seed ${failed[0]}: npm run sim -- --seed ${failed[0]} --trace`);
  return 1;
}

process.exitCode = main();
