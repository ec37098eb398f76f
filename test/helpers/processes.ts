// Real processes for tests: an ordo node and a redis-server, each on a free
// loopback port, each stopped by the test that started it (use `after`/`t.after`
// or try/finally). Nothing listens beyond 127.0.0.1.

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

/**
 * Child processes that must not outlive this one: each is SIGKILLed when this
 * process exits, however it exits, or at once with killNow(). A child is
 * forgotten once it exits.
 */
export class ChildGroup {
  private readonly live = new Set<ChildProcess>();
  private exitHooked = false;

  add(proc: ChildProcess): void {
    if (!this.exitHooked) {
      this.exitHooked = true;
      process.once('exit', () => this.killNow());
    }
    this.live.add(proc);
    const forget = (): void => {
      this.live.delete(proc);
    };
    proc.once('exit', forget);
    proc.once('error', forget); // never started
  }

  /** SIGKILLs every child that has not exited (synchronous: safe in an 'exit' handler). */
  killNow(): void {
    for (const proc of this.live) {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    }
    this.live.clear();
  }
}
/** The built CLI: dist/test/helpers → dist/src/cli.js */
export const CLI_PATH = join(here, '..', '..', 'src', 'cli.js');

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `ordo-${prefix}-`));
}

/** Resolves once something accepts connections on the port, or rejects after the timeout. */
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
      s.connect(port, '127.0.0.1');
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listening on port ${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

export interface RunningProcess {
  readonly port: number;
  readonly proc: ChildProcess;
  /** Output so far (stdout and stderr), for assertions and failure messages. */
  output(): string;
  /** Resolves with the exit code (or signal name) once the process has exited. */
  readonly exited: Promise<number | string>;
  /** SIGTERM, then SIGKILL after a grace period; resolves when it has exited. */
  stop(): Promise<number | string>;
  kill(signal: NodeJS.Signals): void;
}

function track(proc: ChildProcess, port: number, name: string): RunningProcess {
  let out = '';
  proc.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  let exitedWith: number | string | null = null;
  const exited = new Promise<number | string>((resolve) => {
    proc.once('exit', (code, signal) => {
      exitedWith = code ?? signal ?? 'unknown';
      resolve(exitedWith);
    });
  });
  const running: RunningProcess = {
    port,
    proc,
    output: () => out,
    exited,
    kill: (signal) => {
      if (exitedWith === null) proc.kill(signal);
    },
    stop: async () => {
      if (exitedWith !== null) return exitedWith;
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
      const result = await exited;
      clearTimeout(timer);
      return result;
    },
  };
  void name;
  return running;
}

export interface OrdoOptions {
  dataDir?: string;
  port?: number;
  args?: readonly string[];
  /** Do not wait for the port (for tests expecting a refusal to start). */
  noWait?: boolean;
}

export interface RunningOrdo extends RunningProcess {
  readonly dataDir: string;
}

/** Starts `node dist/src/cli.js` on a free loopback port with its own data directory. */
export async function startOrdo(options: OrdoOptions = {}): Promise<RunningOrdo> {
  const port = options.port ?? (await freePort());
  const dataDir = options.dataDir ?? tempDir('data');
  const proc = spawn(process.execPath, [CLI_PATH, '--host', '127.0.0.1', '--port', String(port), '--data', dataDir, ...(options.args ?? [])], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const running = track(proc, port, 'ordo');
  if (!options.noWait) {
    let exitCode: number | string | null = null;
    void running.exited.then((c) => (exitCode = c));
    try {
      await waitForPort(port, 15_000, () => (exitCode === null ? null : `ordo exited (${exitCode}): ${running.output()}`));
    } catch (e) {
      await running.stop();
      throw e;
    }
  }
  return { ...running, dataDir };
}

/** Starts a real redis-server (Debian package) on a free loopback port, no persistence unless args say so. */
export async function startRedis(args: readonly string[] = []): Promise<RunningProcess & { readonly dir: string }> {
  const port = await freePort();
  const dir = tempDir('redis');
  const proc = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--databases', '1', '--save', '', '--appendonly', 'no', '--dir', dir, ...args],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const running = track(proc, port, 'redis-server');
  let exitCode: number | string | null = null;
  void running.exited.then((c) => (exitCode = c));
  proc.once('error', () => (exitCode = 'spawn failed'));
  try {
    await waitForPort(port, 10_000, () => (exitCode === null ? null : `redis-server exited (${exitCode}): ${running.output()}`));
  } catch (e) {
    await running.stop();
    throw e;
  }
  return {
    ...running,
    dir,
    stop: async () => {
      const r = await running.stop();
      rmSync(dir, { recursive: true, force: true });
      return r;
    },
  };
}

/** Removes a test's data directory. */
export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/**
 * A minimal raw RESP client for tests that need exact bytes: send bytes,
 * read until a predicate on everything received is true.
 */
export class RawClient {
  private received = Buffer.alloc(0);
  private waiters: (() => void)[] = [];
  closed = false;

  private constructor(readonly socket: Socket) {
    socket.on('data', (d: Buffer) => {
      this.received = Buffer.concat([this.received, d]);
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => undefined);
  }

  static connect(port: number): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = new Socket();
      s.once('error', reject);
      s.connect(port, '127.0.0.1', () => {
        s.off('error', reject);
        resolve(new RawClient(s));
      });
    });
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  send(data: string | Buffer): void {
    this.socket.write(data);
  }

  /** Everything received so far. */
  get bytes(): Buffer {
    return this.received;
  }

  /** Waits until `done(received)` holds, the socket closes, or the timeout passes; returns what arrived. */
  async until(done: (received: Buffer) => boolean, timeoutMs = 5000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (!done(this.received) && !this.closed) {
      const left = deadline - Date.now();
      if (left <= 0) break;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.received;
  }

  /** Returns everything received so far and forgets it. */
  take(): Buffer {
    const r = this.received;
    this.received = Buffer.alloc(0);
    return r;
  }

  close(): void {
    this.socket.destroy();
  }
}
