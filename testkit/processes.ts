// Real processes for tests, benchmarks and fault runs: an ordo node and a
// redis-server, each on a free loopback port with its own directory, ready
// once it prints its ready line. Nothing listens beyond 127.0.0.1, and no
// child outlives this process (see src/launcher/children.ts, shared with the
// local cluster launcher). Whoever starts a process stops it (`after`,
// `t.after` or try/finally); the exit hook is the safety net.

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ALL_CHILDREN, Child, ChildGroup, type ChildExit } from '../src/launcher/children.js';
import { LOOPBACK } from '../src/launcher/client.js';
import { CLI_PATH, readyText } from '../src/launcher/cluster.js';
import { sleep } from './wait.js';

export { ALL_CHILDREN, Child, ChildGroup, describeExit, shellLine, type ChildExit } from '../src/launcher/children.js';
export { LOOPBACK } from '../src/launcher/client.js';
export { CLI_PATH } from '../src/launcher/cluster.js';

/** How long an ordo node may take to print its ready line. */
export const ORDO_START_TIMEOUT_MS = 15_000;
/** How long redis-server may take to print its ready line. */
export const REDIS_START_TIMEOUT_MS = 10_000;
/** SIGTERM first; SIGKILL after this grace period. */
export const PROCESS_STOP_GRACE_MS = 5_000;
/** What redis-server prints once it accepts clients. */
const REDIS_READY_TEXT = 'Ready to accept connections';

/** A free loopback port (the kernel's pick; free when asked, not reserved). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, LOOPBACK, () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** `count` distinct free loopback ports. */
export async function freePorts(count: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < count) ports.add(await freePort());
  return [...ports];
}

/** A fresh directory under the OS temp directory, named ordo-PREFIX-*. */
export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `ordo-${prefix}-`));
}

/** Removes a directory and everything in it (a test's data directory). */
export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/** Resolves once something accepts connections on the loopback port; rejects after the timeout or when `exited` names a reason. */
export async function waitForPort(port: number, timeoutMs = 10_000, exited?: () => string | null): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const why = exited?.() ?? null;
    if (why !== null) throw new Error(why);
    const ok = await new Promise<boolean>((resolve) => {
      const s = new Socket();
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
      s.connect(port, LOOPBACK);
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listening on port ${port} after ${timeoutMs} ms`);
    await sleep(25);
  }
}

/** An exit as tests compare it: the exit code, else the signal name. */
function exitValue(exit: ChildExit): number | string {
  if (exit.error !== null) return 'spawn failed';
  return exit.code ?? exit.signal ?? 'unknown';
}

export interface RunningProcess {
  readonly port: number;
  readonly proc: Child['proc'];
  /** Output so far (stdout and stderr; the last CHILD_OUTPUT_KEPT_BYTES), for assertions and failure messages. */
  output(): string;
  /** Resolves with the exit code (or signal name) once the process has exited. */
  readonly exited: Promise<number | string>;
  /** SIGTERM, then SIGKILL after a grace period; resolves when it has exited. */
  stop(): Promise<number | string>;
  kill(signal: NodeJS.Signals): void;
}

function running(child: Child, port: number): RunningProcess {
  return {
    port,
    proc: child.proc,
    output: () => child.output(),
    exited: child.exited.then(exitValue),
    kill: (signal) => child.signal(signal),
    stop: async () => exitValue(await child.stop(PROCESS_STOP_GRACE_MS)),
  };
}

/** Waits for the child's ready line; on failure stops it and throws what it printed. */
async function readyOrThrow(child: Child, name: string, timeoutMs: number): Promise<void> {
  const outcome = await child.waitUntilReady(timeoutMs);
  if (outcome === 'ready') return;
  await child.stop(PROCESS_STOP_GRACE_MS);
  const why = outcome === 'timeout' ? `printed no ready line within ${timeoutMs} ms` : `exited (${exitValue(outcome.exited)})`;
  throw new Error(`${name} ${why}: ${child.output()}`);
}

export interface OrdoOptions {
  dataDir?: string;
  port?: number;
  args?: readonly string[];
  /** Do not wait for the ready line (for tests expecting a refusal to start). */
  noWait?: boolean;
  /** The group that kills it when this process exits; default: every child. */
  group?: ChildGroup;
}

export interface RunningOrdo extends RunningProcess {
  readonly dataDir: string;
}

/** Starts `node dist/src/cli.js` on a free loopback port with its own data directory. */
export async function startOrdo(options: OrdoOptions = {}): Promise<RunningOrdo> {
  const port = options.port ?? (await freePort());
  const dataDir = options.dataDir ?? tempDir('data');
  const child = new Child(process.execPath, [CLI_PATH, '--host', LOOPBACK, '--port', String(port), '--data', dataDir, ...(options.args ?? [])], {
    readyText: readyText(port),
    ...(options.group === undefined ? {} : { group: options.group }),
  });
  if (options.noWait !== true) await readyOrThrow(child, 'ordo', ORDO_START_TIMEOUT_MS);
  return { ...running(child, port), dataDir };
}

/** The redis-server command line the testkit uses: loopback, one database, no persistence unless `args` say so. */
export function redisArgs(port: number, dir: string, args: readonly string[] = []): string[] {
  return ['--port', String(port), '--bind', LOOPBACK, '--databases', '1', '--save', '', '--appendonly', 'no', '--dir', dir, ...args];
}

/** Starts a real redis-server on a free loopback port in a directory of its own (removed by stop()). */
export async function startRedis(args: readonly string[] = []): Promise<RunningProcess & { readonly dir: string }> {
  const port = await freePort();
  const dir = tempDir('redis');
  const child = new Child('redis-server', redisArgs(port, dir, args), { readyText: REDIS_READY_TEXT });
  try {
    await readyOrThrow(child, 'redis-server', REDIS_START_TIMEOUT_MS);
  } catch (e) {
    removeDir(dir);
    throw e;
  }
  const base = running(child, port);
  return {
    ...base,
    dir,
    stop: async () => {
      const r = await base.stop();
      removeDir(dir);
      return r;
    },
  };
}

/** Output of a program run to completion kept per stream (the last bytes). */
export const PROGRAM_OUTPUT_KEPT_BYTES = 16 * 1024 * 1024;

export interface ProgramRun {
  /** Exit code, or null when a signal ended it. */
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  /** True when it was killed for running past its time bound. */
  readonly timedOut: boolean;
  readonly seconds: number;
}

export interface ProgramOptions {
  /** Written to its stdin, which is then closed; without it stdin is not connected. */
  readonly input?: string | Buffer;
  /** SIGKILL after this long (default 20 s). */
  readonly timeoutMs?: number;
}

function keepTail(text: string): string {
  return text.length <= PROGRAM_OUTPUT_KEPT_BYTES ? text : text.slice(text.length - PROGRAM_OUTPUT_KEPT_BYTES);
}

/**
 * Runs a program (redis-cli, redis-benchmark, the CLI with flags it must
 * refuse) to completion, bounded in time; resolves once it exited and its
 * output was read. Rejects only when it could not be started.
 */
export function runProgram(command: string, args: readonly string[], options: ProgramOptions = {}): Promise<ProgramRun> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const input = options.input;
    const proc = spawn(command, [...args], { stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    ALL_CHILDREN.add(proc);
    let stdout = '';
    let stderr = '';
    proc.stdout?.on('data', (d: Buffer) => (stdout = keepTail(stdout + d.toString())));
    proc.stderr?.on('data', (d: Buffer) => (stderr = keepTail(stderr + d.toString())));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      proc.kill('SIGKILL');
    }, options.timeoutMs ?? 20_000);
    proc.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    proc.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, timedOut, seconds: (performance.now() - started) / 1000 });
    });
    if (input !== undefined && proc.stdin !== null) {
      // The program may exit before reading everything; its output tells what happened.
      proc.stdin.on('error', () => undefined);
      proc.stdin.end(input);
    }
  });
}

/** Runs a program to completion (bounded: SIGKILL after `timeoutMs`); its exit code (or signal name) and all it printed. */
export async function runToExit(command: string, args: readonly string[], timeoutMs = 20_000): Promise<{ code: number | string; output: string }> {
  const run = await runProgram(command, args, { timeoutMs });
  return { code: run.code ?? run.signal ?? 'unknown', output: run.stdout + run.stderr };
}
