// Child processes that never outlive the process that started them: every one
// is SIGKILLed when this process exits, however it exits. A `Child` is one
// started program (an ordo node, a redis-server, a benchmark tool) with its
// output kept (the last bytes, and line by line to a listener), the line that
// says it is ready, how it ended, and a graceful stop that turns into SIGKILL
// after a grace period. The local cluster launcher and the testkit both start
// their processes through here.

import { spawn, type ChildProcess } from 'node:child_process';

/** Output of one child kept in memory, for error messages and assertions. */
export const CHILD_OUTPUT_KEPT_BYTES = 1024 * 1024;
/** SIGTERM first; SIGKILL after this grace period. */
export const CHILD_STOP_GRACE_MS = 10_000;

/**
 * Processes that must not outlive this one: each is SIGKILLed when this
 * process exits, or at once with killNow(). A child is forgotten once it exits.
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

/** Every child started through this module, unless the caller names another group. */
export const ALL_CHILDREN = new ChildGroup();

/** How a child ended: an exit code, a signal, or a start that failed (`error`). */
export interface ChildExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly error: string | null;
}

export function describeExit(exit: ChildExit): string {
  if (exit.error !== null) return `could not be started: ${exit.error}`;
  return exit.code !== null ? `exit code ${exit.code}` : `signal ${exit.signal ?? 'unknown'}`;
}

function lastBytes(text: string, bytes: number): string {
  return text.length <= bytes ? text : `...${text.slice(text.length - bytes)}`;
}

/** `command args...` quoted for a shell where needed. */
export function shellLine(command: string, args: readonly string[]): string {
  const quote = (arg: string): string => (/^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`);
  return [command, ...args].map(quote).join(' ');
}

export interface ChildOptions {
  /** A line containing this text means the program is ready. */
  readonly readyText?: string;
  /** Start it in a process group of its own (a terminal's Ctrl-C then reaches only us). */
  readonly detached?: boolean;
  /** The group that kills it when this process exits; default ALL_CHILDREN. */
  readonly group?: ChildGroup;
  /** Called with every whole line it prints (stdout and stderr), and with a last unterminated one at exit. */
  readonly onLine?: (line: string) => void;
  /** Environment; default this process's. */
  readonly env?: NodeJS.ProcessEnv;
}

export type ReadyOutcome = 'ready' | 'timeout' | { readonly exited: ChildExit };

/** One started program. */
export class Child {
  readonly proc: ChildProcess;
  private outputText = '';
  private exitValue: ChildExit | null = null;
  private readonly exitedPromise: Promise<ChildExit>;
  private readonly readyPromise: Promise<void>;

  constructor(
    readonly command: string,
    readonly args: readonly string[],
    options: ChildOptions = {},
  ) {
    this.proc = spawn(command, [...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: options.detached ?? false,
      ...(options.env === undefined ? {} : { env: options.env }),
    });
    (options.group ?? ALL_CHILDREN).add(this.proc);
    const readyText = options.readyText ?? null;
    let markReady: () => void = () => undefined;
    this.readyPromise = new Promise<void>((resolve) => (markReady = resolve));
    let pendingLine = '';
    const onData = (d: Buffer): void => {
      const text = d.toString();
      this.outputText = lastBytes(this.outputText + text, CHILD_OUTPUT_KEPT_BYTES);
      pendingLine += text;
      const lines = pendingLine.split('\n');
      pendingLine = lines.pop() ?? '';
      for (const line of lines) {
        if (readyText !== null && line.includes(readyText)) markReady();
        options.onLine?.(line);
      }
    };
    this.proc.stdout?.on('data', onData);
    this.proc.stderr?.on('data', onData);
    this.exitedPromise = new Promise<ChildExit>((resolve) => {
      const done = (exit: ChildExit): void => {
        if (this.exitValue !== null) return;
        this.exitValue = exit;
        if (pendingLine !== '') options.onLine?.(pendingLine);
        resolve(exit);
      };
      this.proc.once('error', (e) => done({ code: null, signal: null, error: e.message }));
      this.proc.once('exit', (code, signal) => done({ code, signal, error: null }));
    });
  }

  /** The command line as a shell would take it. */
  get commandLine(): string {
    return shellLine(this.command, this.args);
  }

  /** Null while running; how it ended otherwise. */
  get exit(): ChildExit | null {
    return this.exitValue;
  }

  get running(): boolean {
    return this.exitValue === null;
  }

  /** Resolves with how it ended. */
  get exited(): Promise<ChildExit> {
    return this.exitedPromise;
  }

  /** The last bytes it printed (stdout and stderr interleaved as they came). */
  output(): string {
    return this.outputText;
  }

  /** Waits for the ready line: 'ready', 'timeout', or how it exited first. */
  async waitUntilReady(timeoutMs: number): Promise<ReadyOutcome> {
    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      this.readyPromise.then(() => 'ready' as const),
      this.exitedPromise.then((exit) => ({ exited: exit })),
      new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), timeoutMs))),
    ]);
    clearTimeout(timer);
    return outcome;
  }

  /** Sends a signal (nothing once it has exited). */
  signal(signal: NodeJS.Signals): void {
    if (this.running) this.proc.kill(signal);
  }

  /** SIGKILL; resolves once it has exited. */
  kill9(): Promise<ChildExit> {
    this.signal('SIGKILL');
    return this.exitedPromise;
  }

  /** `signal` (SIGTERM: a graceful stop), SIGKILL after the grace period; resolves with how it ended. */
  async stop(graceMs = CHILD_STOP_GRACE_MS, signal: NodeJS.Signals = 'SIGTERM'): Promise<ChildExit> {
    if (!this.running) return this.exitedPromise;
    // A paused process would never see the SIGTERM.
    this.proc.kill('SIGCONT');
    this.proc.kill(signal);
    const timer = setTimeout(() => this.signal('SIGKILL'), graceMs);
    const exit = await this.exitedPromise;
    clearTimeout(timer);
    return exit;
  }
}
