// Protocol fuzzing against one real ordo process: random and mutated RESP
// frames over several concurrent connections, reconnecting whenever the server
// closes one (a protocol error). Throughout, the server's memory is sampled and
// a fresh connection must get PONG; at the end it must still be alive, within
// its memory bound, and answering. Everything random comes from one seed.
//
//   npm run fuzz -- [--frames N] [--seconds S] [--seed X] [--connections C]

import { parseArgs } from 'node:util';
import { Socket } from 'node:net';
import { removeDir, startOrdo } from '../testkit/processes.js';
import { childSeed, int, pick, prng, seedFrom, type Random } from '../testkit/random.js';
import { encodeCommand, ReplyDecoder, type WireReply } from '../testkit/resp.js';
import { sleep } from '../testkit/wait.js';
import { isMain, pingProbe, positiveInt, rssKb } from './common.js';

/** The server's resident memory must stay below this for the whole run. */
export const RSS_BYTES_MAX = 512 * 1024 * 1024;
export const RSS_SAMPLE_INTERVAL_MS = 500;
export const PING_INTERVAL_MS = 1000;
export const PING_TIMEOUT_MS = 2000;
/** Frames per batch (a random count up to this). */
const BATCH_FRAMES_MAX = 32;
/** After a batch, silence this long means the server is waiting for more bytes of a request left open. */
const QUIET_MS = 100;
/** A connection with no progress (reply, drain, close) for this long is abandoned and counted as stalled. */
const STALL_MS = 3000;
const KEYS = 200;

export interface FuzzOptions {
  frames: number;
  seconds: number;
  seed: number;
  connections: number;
  /** Called with progress lines; defaults to nothing. */
  log?: (line: string) => void;
}

export interface FuzzResult {
  readonly seed: number;
  readonly framesSent: number;
  readonly bytesSent: number;
  readonly protocolErrors: number;
  readonly reconnects: number;
  readonly abandoned: number;
  readonly stalled: number;
  readonly repliesByKind: Readonly<Record<string, number>>;
  readonly pingsOk: number;
  readonly rssBytesMax: number;
  readonly elapsedMs: number;
  readonly failures: readonly string[];
  readonly replay: string;
}

function randomBytes(r: Random, n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = int(r, 0, 255);
  return b;
}

function randomNumberText(r: Random): string {
  return pick(r, [
    () => String(int(r, -5, 100)),
    () => String(int(r, -1_000_000, 1_000_000)),
    () => '9223372036854775807',
    () => '-9223372036854775808',
    () => '9223372036854775808',
    () => (r() * 1e6 - 5e5).toFixed(int(r, 0, 8)),
    () => pick(r, ['1e10', 'inf', '-inf', 'nan', '+1', ' 1', '0x10', '', '1.5e308', '-0', '00012']),
  ])();
}

function randomArg(r: Random): string | Buffer {
  return pick<() => string | Buffer>(r, [
    () => randomNumberText(r),
    () => `k:${int(r, 0, KEYS)}`,
    () => pick(r, ['NX', 'XX', 'GET', 'KEEPTTL', 'EX', 'PX', 'EXAT', 'PXAT', 'COUNT', 'TOKEN', 'STEP', 'MODE']),
    () => randomBytes(r, int(r, 0, 24)),
    () => 'v'.repeat(int(r, 0, 2000)),
  ])();
}

function randomKey(r: Random): string {
  return r() < 0.9 ? `k:${int(r, 0, KEYS)}` : `{t${int(r, 0, 9)}}:${int(r, 0, 20)}`;
}

/** A command from the table with plausible (and sometimes implausible) arguments. */
function validCommand(r: Random): (string | Buffer)[] {
  const key = randomKey(r);
  const cmd: (string | Buffer)[] = pick<() => (string | Buffer)[]>(r, [
    () => ['PING'],
    () => ['PING', randomArg(r)],
    () => ['ECHO', randomArg(r)],
    () => ['GET', key],
    () => ['INCR', key],
    () => ['DECR', key],
    () => ['INCRBY', key, randomNumberText(r)],
    () => ['DECRBY', key, randomNumberText(r)],
    () => ['INCRBYFLOAT', key, randomNumberText(r)],
    () => ['SET', key, r() < 0.5 ? randomNumberText(r) : randomArg(r)],
    () => [
      'SET',
      key,
      randomArg(r),
      ...Array.from({ length: int(r, 1, 4) }, () => pick(r, ['NX', 'XX', 'GET', 'KEEPTTL', 'EX', 'PX', 'EXAT', 'PXAT', randomNumberText(r)])),
    ],
    () => ['SETNX', key, randomArg(r)],
    () => ['SEQNEXT', key],
    () => ['SEQNEXT', key, 'COUNT', randomNumberText(r)],
    () => ['SEQNEXT', key, 'TOKEN', randomArg(r)],
    () => ['SEQNEXT', key, 'COUNT', String(int(r, 1, 1000)), 'TOKEN', `tok${int(r, 0, 50)}`],
    () => ['SEQNEXT', key, ...Array.from({ length: int(r, 0, 4) }, () => randomArg(r))],
    () => ['SEQCURRENT', key],
    () => [
      'SEQCREATE',
      key,
      ...Array.from({ length: int(r, 0, 4) }, () => pick(r, ['MODE', 'window', 'strict', 'STEP', 'START', 'MAX', 'WINDOW', randomNumberText(r)])),
    ],
    () => ['APPEND', key, randomArg(r)],
    () => ['SETRANGE', key, r() < 0.8 ? String(int(r, -2, 5000)) : randomNumberText(r), randomArg(r)],
    () => [pick(r, ['GETRANGE', 'SUBSTR']), key, randomNumberText(r), randomNumberText(r)],
    () => ['SETBIT', key, r() < 0.8 ? String(int(r, -2, 40_000)) : randomNumberText(r), pick(r, ['0', '1', randomNumberText(r)])],
    () => ['GETBIT', key, randomNumberText(r)],
    () => ['BITCOUNT', key, ...Array.from({ length: int(r, 0, 3) }, () => pick(r, ['BIT', 'BYTE', randomNumberText(r)]))],
    () => [
      'BITPOS',
      key,
      pick(r, ['0', '1', randomNumberText(r)]),
      ...Array.from({ length: int(r, 0, 3) }, () => pick(r, ['BIT', 'BYTE', randomNumberText(r)])),
    ],
    () => ['MSETNX', key, randomArg(r), randomKey(r), randomArg(r)],
    // LCS on keys of its own, kept short: a table of lengths may take up to 512 MB, as in Redis, past the RSS bound here.
    () => ['SET', `lcs:${int(r, 0, 3)}`, randomBytes(r, int(r, 0, 300))],
    () => [
      'LCS',
      `lcs:${int(r, 0, 3)}`,
      `lcs:${int(r, 0, 3)}`,
      ...Array.from({ length: int(r, 0, 3) }, () => pick(r, ['LEN', 'IDX', 'MINMATCHLEN', 'WITHMATCHLEN', randomNumberText(r)])),
    ],
    () => ['EXISTS', key, randomKey(r)],
    () => ['DEL', key],
    () => ['MGET', key, randomKey(r), randomKey(r)],
    () => ['COMMAND', pick(r, ['COUNT', 'INFO', 'GETKEYS', 'DOCS', 'LIST']), ...(r() < 0.5 ? ['SEQNEXT', key] : [])],
    () => ['INFO', pick(r, ['server', 'clients', 'memory', 'everything', 'nosuch'])],
    () => ['CLUSTER', pick(r, ['SLOTS', 'SHARDS', 'NODES', 'KEYSLOT', 'INFO', 'MYID']), key],
    () => ['CLIENT', pick(r, ['SETNAME', 'GETNAME', 'ID', 'INFO', 'NOPE']), `n${int(r, 0, 9)}`],
    () => ['HELLO', pick(r, ['2', '3', '4', 'x'])],
    () => ['SELECT', randomNumberText(r)],
    () => ['DBSIZE'],
    () => [pick(r, ['NOSUCHCMD', 'incr', 'Get', 'set', 'seqnext', '']), key],
    () => Array.from({ length: int(r, 1, 8) }, () => randomArg(r)),
  ])();
  return cmd;
}

function mutate(r: Random, frame: Buffer): Buffer {
  const f = Buffer.from(frame);
  switch (int(r, 0, 6)) {
    case 0: {
      const flips = int(r, 1, 4);
      for (let i = 0; i < flips && f.length > 0; i++) {
        const at = int(r, 0, f.length - 1);
        f[at] = (f[at] ?? 0) ^ (1 << int(r, 0, 7));
      }
      return f;
    }
    case 1:
      return f.subarray(0, int(r, 0, Math.max(0, f.length - 1)));
    case 2: {
      // Duplicate a CRLF.
      const at = f.indexOf('\r\n', int(r, 0, f.length));
      return at < 0 ? f : Buffer.concat([f.subarray(0, at), Buffer.from('\r\n'), f.subarray(at)]);
    }
    case 3: {
      // Remove a CRLF (or only its CR or LF).
      const at = f.indexOf('\r\n', int(r, 0, f.length));
      if (at < 0) return f;
      const cut = pick(r, [
        [0, 2],
        [0, 1],
        [1, 2],
      ] as const);
      return Buffer.concat([f.subarray(0, at + cut[0]), f.subarray(at + cut[1])]);
    }
    case 4: {
      // Replace a random byte by random bytes.
      const at = int(r, 0, f.length);
      return Buffer.concat([f.subarray(0, at), randomBytes(r, int(r, 1, 8)), f.subarray(at + 1)]);
    }
    case 5:
      return Buffer.concat([f, f.subarray(0, int(r, 0, f.length))]);
    default: {
      // Change the declared length of one bulk.
      const text = f.toString('latin1');
      const heads = [...text.matchAll(/[$*](-?\d+)\r\n/g)];
      if (heads.length === 0) return f;
      const h = pick(r, heads);
      const start = (h.index ?? 0) + 1;
      const end = start + (h[1]?.length ?? 0);
      return Buffer.concat([f.subarray(0, start), Buffer.from(badLength(r)), f.subarray(end)]);
    }
  }
}

function badLength(r: Random): string {
  return pick(r, [
    '-1',
    '-2',
    '-9999',
    '0',
    '1',
    String(int(r, 2, 100)),
    '99999999999',
    '9223372036854775808',
    '99999999999999999999999',
    '2000000',
    '600000000',
    'x',
    '1x',
    '',
    '+5',
    ' 3',
    '3 ',
    '0x10',
    '1.5',
    String(int(r, 100000, 50_000_000)),
  ]);
}

function headerFrame(r: Random): Buffer {
  return pick<() => Buffer>(r, [
    () => Buffer.from(`*${badLength(r)}\r\n`),
    () => Buffer.from(`*1\r\n$${badLength(r)}\r\n`),
    () => Buffer.from(`*2\r\n$3\r\nGET\r\n$${badLength(r)}\r\nxyz\r\n`),
    () => Buffer.from(`*${int(r, 1, 3)}\r\n${pick(r, ['+', ':', '-', '*', '%', 'x', '$$'])}3\r\nGET\r\n`),
    () => Buffer.from(`*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$${int(r, 0, 6)}\r\nvalue\r\n`),
  ])();
}

function inlineFrame(r: Random): Buffer {
  return Buffer.from(
    pick<() => string>(r, [
      () => 'PING\r\n',
      () => `INCR k:${int(r, 0, KEYS)}\r\n`,
      () => `SET k:${int(r, 0, KEYS)} "a b c"\r\n`,
      () => `SET k "unbalanced\r\n`,
      () => `SET k 'x'y\r\n`,
      () => `SET k "a\\x4${pick(r, ['1', 'g', ''])}"\r\n`,
      () => `ECHO "${'q'.repeat(int(r, 0, 50))}\r\n`,
      () => `GET 'k\r\n`,
      () => `  \r\n`,
      () => `\n`,
      () => `SEQNEXT k:${int(r, 0, KEYS)} COUNT ${randomNumberText(r)}\n`,
    ])(),
    'latin1',
  );
}

/** One frame of the fuzz stream. */
export function fuzzFrame(r: Random): Buffer {
  const x = r();
  if (x < 0.6) return encodeCommand(validCommand(r));
  if (x < 0.8) return mutate(r, encodeCommand(validCommand(r)));
  if (x < 0.88) return headerFrame(r);
  if (x < 0.93) return randomBytes(r, int(r, 1, 300));
  return inlineFrame(r);
}

interface Counters {
  framesSent: number;
  bytesSent: number;
  protocolErrors: number;
  reconnects: number;
  abandoned: number;
  stalled: number;
  repliesByKind: Record<string, number>;
}

/** One fuzzing connection, reconnecting until `shouldStop()`. */
async function connectionLoop(
  port: number,
  random: Random,
  counters: Counters,
  options: FuzzOptions,
  shouldStop: () => boolean,
  failures: string[],
): Promise<void> {
  let first = true;
  while (!shouldStop()) {
    if (!first) counters.reconnects++;
    first = false;
    const socket = new Socket();
    const connected = await new Promise<boolean>((resolve) => {
      socket.once('error', () => resolve(false));
      socket.connect(port, '127.0.0.1', () => resolve(true));
    });
    if (!connected) {
      socket.destroy();
      // The health check reports a server that stopped listening; back off briefly.
      await sleep(50);
      continue;
    }
    socket.on('error', () => undefined);
    const decoder = new ReplyDecoder();
    let lastProgress = Date.now();
    let closed = false;
    let markerSeen = false;
    let marker = '';
    let wake: (() => void) | null = null;
    const poke = (): void => {
      const w = wake;
      wake = null;
      w?.();
    };
    const waitForEvent = (ms: number): Promise<void> =>
      new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, ms);
      });
    socket.on('data', (d: Buffer) => {
      lastProgress = Date.now();
      let replies: WireReply[];
      try {
        replies = decoder.push(d);
      } catch (e) {
        failures.push(`the server sent bytes that are not a reply: ${(e as Error).message}`);
        socket.destroy();
        return;
      }
      for (const reply of replies) {
        if (reply.kind === '$' && reply.bulk === marker) {
          markerSeen = true;
          continue;
        }
        counters.repliesByKind[reply.kind] = (counters.repliesByKind[reply.kind] ?? 0) + 1;
        if (reply.kind === '-' && reply.line.startsWith('ERR Protocol error')) counters.protocolErrors++;
      }
      poke();
    });
    socket.on('close', () => {
      closed = true;
      poke();
    });
    socket.on('drain', () => {
      lastProgress = Date.now();
      poke();
    });
    let batchNumber = 0;
    while (!closed && !shouldStop()) {
      // A batch of frames, then a marker (ECHO of a unique text): its reply means the server has
      // read the whole batch. Without it, frames would pile up in socket buffers and be thrown away
      // unread at the next protocol error.
      const frames = Math.min(int(random, 1, BATCH_FRAMES_MAX), options.frames - counters.framesSent);
      if (frames <= 0) break;
      const parts: Buffer[] = [];
      for (let i = 0; i < frames; i++) parts.push(fuzzFrame(random));
      const bytes = parts.reduce((n, b) => n + b.length, 0);
      counters.framesSent += frames;
      counters.bytesSent += bytes;
      marker = `marker:${++batchNumber}:${counters.framesSent}`;
      markerSeen = false;
      parts.push(encodeCommand(['ECHO', marker]));
      if (!socket.write(Buffer.concat(parts))) {
        // Backpressure: wait for the drain (or a close, or a stall).
        while (!closed && socket.writableNeedDrain && Date.now() - lastProgress <= STALL_MS) await waitForEvent(250);
        if (!closed && socket.writableNeedDrain) {
          counters.stalled++;
          break;
        }
      }
      lastProgress = Date.now();
      // Wait for the marker, a close, or a quiet spell (a request left open swallowed the marker).
      while (!closed && !markerSeen && Date.now() - lastProgress < QUIET_MS) await waitForEvent(QUIET_MS);
      if (!closed && !markerSeen) {
        // Whatever follows would only feed the open request: start over on a new connection.
        counters.abandoned++;
        break;
      }
    }
    socket.destroy();
    if (failures.length > 0) return;
  }
}

export async function runFuzz(options: FuzzOptions): Promise<FuzzResult> {
  const log = options.log ?? ((): void => undefined);
  const replay = `npm run fuzz -- --seed ${options.seed} --frames ${options.frames} --seconds ${options.seconds} --connections ${options.connections}`;
  const counters: Counters = { framesSent: 0, bytesSent: 0, protocolErrors: 0, reconnects: 0, abandoned: 0, stalled: 0, repliesByKind: {} };
  const failures: string[] = [];
  const ordo = await startOrdo();
  const pid = ordo.proc.pid ?? 0;
  let exitedWith: number | string | null = null;
  void ordo.exited.then((c) => (exitedWith = c));
  const started = Date.now();
  const deadline = started + options.seconds * 1000;
  let rssBytesMax = 0;
  let pingsOk = 0;
  const shouldStop = (): boolean => counters.framesSent >= options.frames || Date.now() >= deadline || exitedWith !== null || failures.length > 0;
  const sampleRss = (): void => {
    const kb = rssKb(pid);
    if (kb === null) return;
    rssBytesMax = Math.max(rssBytesMax, kb * 1024);
    if (kb * 1024 > RSS_BYTES_MAX && !failures.some((f) => f.startsWith('RSS')))
      failures.push(`RSS ${Math.round(kb / 1024)} MB passed the bound of ${RSS_BYTES_MAX / 1024 / 1024} MB`);
  };
  const rssTimer = setInterval(sampleRss, RSS_SAMPLE_INTERVAL_MS);
  let pinging = false;
  const pingTimer = setInterval(() => {
    if (pinging || exitedWith !== null) return;
    pinging = true;
    void pingProbe(ordo.port, PING_TIMEOUT_MS).then((why) => {
      pinging = false;
      if (why === null) pingsOk++;
      else if (!shouldStop() || exitedWith !== null) failures.push(`health check at ${Date.now() - started} ms: ${why}`);
    });
  }, PING_INTERVAL_MS);
  const progressTimer = setInterval(
    () => log(`fuzz: ${counters.framesSent} frames, ${counters.protocolErrors} protocol errors, RSS max ${Math.round(rssBytesMax / 1024 / 1024)} MB`),
    5000,
  );
  try {
    const root = prng(options.seed);
    await Promise.all(
      Array.from({ length: options.connections }, () => connectionLoop(ordo.port, prng(childSeed(root)), counters, options, shouldStop, failures)),
    );
    clearInterval(pingTimer);
    while (pinging) await new Promise((r) => setTimeout(r, 20));
    sampleRss();
    if (exitedWith !== null) failures.push(`the server exited (${String(exitedWith)}): ${ordo.output().slice(-2000)}`);
    else {
      const why = await pingProbe(ordo.port, PING_TIMEOUT_MS);
      if (why !== null) failures.push(`final PING: ${why}`);
      else pingsOk++;
    }
  } finally {
    clearInterval(rssTimer);
    clearInterval(pingTimer);
    clearInterval(progressTimer);
    const code = await ordo.stop();
    if (code !== 0 && exitedWith === null) failures.push(`graceful stop exited with ${String(code)}: ${ordo.output().slice(-2000)}`);
    removeDir(ordo.dataDir);
  }
  return {
    seed: options.seed,
    framesSent: counters.framesSent,
    bytesSent: counters.bytesSent,
    protocolErrors: counters.protocolErrors,
    reconnects: counters.reconnects,
    abandoned: counters.abandoned,
    stalled: counters.stalled,
    repliesByKind: counters.repliesByKind,
    pingsOk,
    rssBytesMax,
    elapsedMs: Date.now() - started,
    failures,
    replay,
  };
}

export function formatFuzzResult(r: FuzzResult): string {
  const kinds = Object.entries(r.repliesByKind)
    .sort((a, b) => b[1] - a[1])
    .map(([k, n]) => `${k} ${n}`)
    .join(', ');
  return [
    `fuzz ${r.failures.length === 0 ? 'passed' : 'FAILED'} in ${(r.elapsedMs / 1000).toFixed(1)} s`,
    `  frames sent:      ${r.framesSent} (${(r.bytesSent / 1024 / 1024).toFixed(1)} MB)`,
    `  protocol errors:  ${r.protocolErrors}`,
    `  reconnects:       ${r.reconnects} (abandoned waiting for a reply: ${r.abandoned}, stalled: ${r.stalled})`,
    `  replies by kind:  ${kinds}`,
    `  health checks ok: ${r.pingsOk}`,
    `  RSS max:          ${(r.rssBytesMax / 1024 / 1024).toFixed(1)} MB (bound ${RSS_BYTES_MAX / 1024 / 1024} MB)`,
    `  seed:             ${r.seed}`,
    `  replay:           ${r.replay}`,
    ...r.failures.map((f) => `  FAILURE: ${f}`),
  ].join('\n');
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { frames: { type: 'string' }, seconds: { type: 'string' }, seed: { type: 'string' }, connections: { type: 'string' } },
  });
  const result = await runFuzz({
    frames: positiveInt('frames', values.frames, 1_000_000),
    seconds: positiveInt('seconds', values.seconds, 60),
    seed: seedFrom(values.seed),
    connections: positiveInt('connections', values.connections, 8),
    log: (line) => console.log(line),
  });
  console.log(formatFuzzResult(result));
  process.exitCode = result.failures.length === 0 ? 0 : 1;
}

if (isMain(import.meta.url)) {
  main().catch((e: unknown) => {
    console.error(e);
    process.exit(2);
  });
}
