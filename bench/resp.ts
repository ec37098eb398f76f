// Request decoding speed: ordo's RequestDecoder against redis-parser (the
// parser ioredis and node-redis v3 use) on the same bytes. redis-parser parses
// replies, but a request is an array of bulk strings, which it parses the same
// way (with returnBuffers it yields Buffers, as our decoder does).
//
// Run: node dist/bench/resp.js. Reports numbers only; it never fails on time.

import { pathToFileURL } from 'node:url';
import { RequestDecoder } from '../src/resp/decoder.js';
import { RedisParser } from '../testkit/resp.js';

const INCR_FRAME = Buffer.from('*2\r\n$4\r\nINCR\r\n$7\r\ncounter\r\n', 'latin1');

export interface RespBenchRow {
  /** What was measured, e.g. "16 frames per chunk". */
  scenario: string;
  framesPerRound: number;
  ordoNsPerFrame: number;
  redisParserNsPerFrame: number;
  /** redis-parser time over ours: above 1 means ordo is faster. */
  speedup: number;
}

interface Scenario {
  name: string;
  chunks: Buffer[];
  frames: number;
}

/** About `totalFrames` INCR frames, cut into chunks of `framesPerChunk` whole frames. */
function wholeFrameChunks(framesPerChunk: number, totalFrames: number): Scenario {
  const chunkCount = Math.max(1, Math.round(totalFrames / framesPerChunk));
  const chunks: Buffer[] = [];
  for (let i = 0; i < chunkCount; i++) {
    // A fresh Buffer per chunk, as a socket delivers them.
    chunks.push(Buffer.concat(Array.from({ length: framesPerChunk }, () => INCR_FRAME)));
  }
  const label = framesPerChunk === 1 ? '1 frame per chunk' : `${framesPerChunk} frames per chunk`;
  return { name: label, chunks, frames: chunkCount * framesPerChunk };
}

/** The same stream cut every `chunkBytes` bytes, so frames straddle chunks. */
function cutChunks(chunkBytes: number, totalFrames: number): Scenario {
  const stream = Buffer.concat(Array.from({ length: totalFrames }, () => INCR_FRAME));
  const chunks: Buffer[] = [];
  for (let i = 0; i < stream.length; i += chunkBytes) {
    chunks.push(Buffer.from(stream.subarray(i, Math.min(stream.length, i + chunkBytes))));
  }
  return { name: `${chunkBytes / 1024} KiB chunks, frames cut`, chunks, frames: totalFrames };
}

function runOrdo(scenario: Scenario): number {
  const decoder = new RequestDecoder();
  let frames = 0;
  for (const chunk of scenario.chunks) {
    decoder.feed(chunk);
    while (decoder.next() !== null) frames++;
  }
  return frames;
}

function runRedisParser(scenario: Scenario): number {
  let frames = 0;
  const parser = new RedisParser({
    returnReply: () => {
      frames++;
    },
    returnError: (error) => {
      throw error;
    },
    returnFatalError: (error) => {
      throw error;
    },
    returnBuffers: true,
  });
  for (const chunk of scenario.chunks) parser.execute(chunk);
  return frames;
}

/** Best of `rounds` timed runs, in ns per frame, after a warm-up. */
function measure(run: (s: Scenario) => number, scenario: Scenario, rounds: number): number {
  for (let i = 0; i < 3; i++) run(scenario);
  let best = Number.POSITIVE_INFINITY;
  for (let i = 0; i < rounds; i++) {
    const t0 = process.hrtime.bigint();
    const frames = run(scenario);
    const elapsed = Number(process.hrtime.bigint() - t0);
    if (frames !== scenario.frames) {
      throw new Error(`${scenario.name}: decoded ${frames} frames, expected ${scenario.frames}`);
    }
    best = Math.min(best, elapsed / frames);
  }
  return best;
}

function formatTable(rows: readonly RespBenchRow[]): string {
  const header = ['scenario', 'ordo ns/frame', 'ordo frames/s', 'redis-parser ns/frame', 'redis-parser frames/s', 'speedup'];
  const lines = rows.map((r) => [
    r.scenario,
    r.ordoNsPerFrame.toFixed(1),
    Math.round(1e9 / r.ordoNsPerFrame).toLocaleString('en-US'),
    r.redisParserNsPerFrame.toFixed(1),
    Math.round(1e9 / r.redisParserNsPerFrame).toLocaleString('en-US'),
    `${r.speedup.toFixed(2)}x`,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => (l[i] ?? '').length)));
  const fmt = (cells: readonly string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ');
  return [fmt(header), widths.map((w) => '-'.repeat(w)).join('  '), ...lines.map(fmt)].join('\n');
}

export interface RespBenchOptions {
  /** INCR frames decoded per timed round (default 200k). */
  framesPerRound?: number;
  /** Timed rounds per scenario and parser; the best counts (default 7). */
  rounds?: number;
  /** Print the table (default true). */
  print?: boolean;
}

/** Decodes INCR frames with both parsers in several chunkings; returns (and prints) ns per frame. */
export async function runRespBench(options: RespBenchOptions = {}): Promise<RespBenchRow[]> {
  const total = options.framesPerRound ?? 200_000;
  const rounds = options.rounds ?? 7;
  const scenarios = [wholeFrameChunks(1, total), wholeFrameChunks(16, total), wholeFrameChunks(1000, total), cutChunks(64 * 1024, total)];
  const rows: RespBenchRow[] = [];
  for (const scenario of scenarios) {
    const ordo = measure(runOrdo, scenario, rounds);
    const redisParser = measure(runRedisParser, scenario, rounds);
    rows.push({
      scenario: scenario.name,
      framesPerRound: scenario.frames,
      ordoNsPerFrame: ordo,
      redisParserNsPerFrame: redisParser,
      speedup: redisParser / ordo,
    });
    // Let other work (and the event loop) breathe between scenarios.
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  if (options.print ?? true) {
    console.log(`RESP request decoding, INCR frames (${INCR_FRAME.length} bytes), best of ${rounds} rounds, Node ${process.version}`);
    console.log(formatTable(rows));
  }
  return rows;
}

const entry = process.argv[1];
if (entry !== undefined && import.meta.url === pathToFileURL(entry).href) {
  await runRespBench();
}
