// Real ordo clusters on loopback, for `npm run cluster`, the cluster benchmarks
// and the cluster process tests: start N nodes with their own data directories,
// wait until every group has a leader that accepts writes, kill -9 and restart
// a node, stop everything. Every process started here is also killed when this
// process exits, so a failing test or an interrupted benchmark leaves none
// behind.
//
// A node's command line:
//
//   node dist/src/cli.js --host 127.0.0.1 --port P --data DIR
//        --cluster 127.0.0.1:P1[@B1],127.0.0.1:P2[@B2],... [--groups G]
//        [--cluster-secret S] [--fsync always|never]
//
// The bus port is the client port + 10000 unless the address says
// `host:port@busport`; callers that pick free ports pass bus ports explicitly.

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { Socket } from 'node:net';
import { BUS_PORT_OFFSET } from '../src/cluster/members.js';
import { keySlot, SLOT_COUNT } from '../src/cluster/slots.js';
import { ChildGroup, CLI_PATH, freePort } from '../test/helpers/processes.js';
import { encodeCommand, RedisParser } from '../test/helpers/resp.js';

export const LOOPBACK = '127.0.0.1';
/** How long a node may take to print its ready line. */
export const NODE_START_TIMEOUT_MS = 20_000;
/** How long every group may take to elect a leader that accepts a write. */
export const LEADERS_TIMEOUT_MS = 30_000;
/** SIGTERM first; SIGKILL after this grace period. */
export const NODE_STOP_GRACE_MS = 10_000;
/** Bound on one request made by the launcher itself (a probe write waits up to 5 s for an election). */
export const REQUEST_TIMEOUT_MS = 8_000;
/** Node output kept for error messages. */
const OUTPUT_KEPT_BYTES = 32 * 1024;

// ---------------------------------------------------------------------------
// Every node process started here, killed when this process exits.

const liveProcesses = new ChildGroup();

/** SIGKILLs every node this module started and has not seen exit, synchronously. */
export function killAllNodesNow(): void {
  liveProcesses.killNow();
}

function lastBytes(text: string, bytes: number): string {
  return text.length <= bytes ? text : `...${text.slice(text.length - bytes)}`;
}

function describeExit(code: number | null, signal: NodeJS.Signals | null): string {
  return code !== null ? `exit code ${code}` : `signal ${signal ?? 'unknown'}`;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---------------------------------------------------------------------------
// A minimal RESP client: one connection, requests answered in order, each
// bounded in time. Replies are parsed by redis-parser (the parser ioredis uses).


/** A reply: bulk and simple strings and integers as strings, arrays, nil as null. */
export type RespReply = string | null | RespReply[];

/** The server answered with an error reply. */
export class RespErrorReply extends Error {
  override readonly name = 'RespErrorReply';
}

/** No reply: the connection failed or closed, or the request timed out. The outcome of a write is unknown. */
export class RespNoReply extends Error {
  override readonly name = 'RespNoReply';
}


function toReply(value: unknown): RespReply {
  if (value === null || value === undefined) return null;
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'bigint') return String(value);
  if (Buffer.isBuffer(value)) return value.toString('latin1');
  if (Array.isArray(value)) return value.map(toReply);
  if (value instanceof Error) return `(error) ${value.message}`;
  return String(value);
}

interface Pending {
  readonly resolve: (reply: RespReply) => void;
  readonly reject: (e: Error) => void;
  readonly timer: NodeJS.Timeout;
}

export class RespClient {
  private readonly pending: Pending[] = [];
  private readonly parser: RedisParser;
  private failure: Error | null = null;

  private constructor(
    readonly port: number,
    private readonly socket: Socket,
  ) {
    this.parser = new RedisParser({
      returnReply: (reply) => this.settle((p) => p.resolve(toReply(reply))),
      returnError: (error) => this.settle((p) => p.reject(new RespErrorReply(error.message))),
      returnFatalError: (error) => this.fail(new RespNoReply(`unparsable reply from port ${port}: ${error.message}`)),
      stringNumbers: true,
    });
    socket.on('data', (d: Buffer) => this.parser.execute(d));
    socket.on('error', (e) => this.fail(new RespNoReply(`port ${port}: ${e.message}`)));
    socket.on('close', () => this.fail(new RespNoReply(`port ${port}: connection closed`)));
  }

  static connect(port: number, timeoutMs = REQUEST_TIMEOUT_MS): Promise<RespClient> {
    return new Promise((resolve, reject) => {
      const socket = new Socket();
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new RespNoReply(`port ${port}: no connection after ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once('error', (e) => {
        clearTimeout(timer);
        reject(new RespNoReply(`port ${port}: ${e.message}`));
      });
      socket.connect(port, LOOPBACK, () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        socket.setNoDelay(true);
        resolve(new RespClient(port, socket));
      });
    });
  }

  get closed(): boolean {
    return this.failure !== null;
  }

  /** Sends one command; rejects with RespErrorReply on an error reply, RespNoReply when none came in time. */
  call(args: readonly string[], timeoutMs = REQUEST_TIMEOUT_MS): Promise<RespReply> {
    if (this.failure !== null) return Promise.reject(this.failure);
    return new Promise<RespReply>((resolve, reject) => {
      const timer = setTimeout(
        () => this.fail(new RespNoReply(`port ${this.port}: no reply to ${args[0] ?? '?'} after ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.pending.push({ resolve, reject, timer });
      this.socket.write(encodeCommand(args));
    });
  }

  close(): void {
    this.fail(new RespNoReply(`port ${this.port}: closed by the client`));
  }

  private settle(f: (p: Pending) => void): void {
    const p = this.pending.shift();
    if (p === undefined) {
      this.fail(new RespNoReply(`port ${this.port}: a reply without a request`));
      return;
    }
    clearTimeout(p.timer);
    f(p);
  }

  /** Rejects every waiting request and closes the connection; later calls reject at once. */
  private fail(e: Error): void {
    this.failure ??= e;
    this.socket.destroy();
    for (const p of this.pending.splice(0)) {
      clearTimeout(p.timer);
      p.reject(this.failure);
    }
  }
}

/** Opens a connection, sends one command, closes. */
export async function command(port: number, args: readonly string[], timeoutMs = REQUEST_TIMEOUT_MS): Promise<RespReply> {
  const client = await RespClient.connect(port, timeoutMs);
  try {
    return await client.call(args, timeoutMs);
  } finally {
    client.close();
  }
}

// ---------------------------------------------------------------------------
// What the cluster says about itself.

export interface SlotRangeOwner {
  readonly start: number;
  readonly end: number;
  /** The master CLUSTER SLOTS names. */
  readonly masterPort: number;
  readonly masterId: string;
}

/** CLUSTER SLOTS as ranges sorted by start; throws when the reply is malformed. */
export function parseClusterSlots(reply: RespReply): SlotRangeOwner[] {
  if (!Array.isArray(reply)) throw new Error(`CLUSTER SLOTS: not an array: ${JSON.stringify(reply)}`);
  const ranges = reply.map((entry) => {
    if (!Array.isArray(entry) || entry.length < 3) throw new Error(`CLUSTER SLOTS: bad entry ${JSON.stringify(entry)}`);
    const [start, end, master] = entry;
    if (!Array.isArray(master) || master.length < 3) throw new Error(`CLUSTER SLOTS: bad master ${JSON.stringify(master)}`);
    return { start: Number(start), end: Number(end), masterPort: Number(master[1]), masterId: String(master[2]) };
  });
  return ranges.sort((a, b) => a.start - b.start);
}

/** Null when the ranges cover 0..16383 exactly once; otherwise what is wrong. */
export function slotCoverageProblem(ranges: readonly SlotRangeOwner[]): string | null {
  let next = 0;
  for (const r of ranges) {
    if (!Number.isSafeInteger(r.start) || !Number.isSafeInteger(r.end) || r.end < r.start) return `bad range ${r.start}-${r.end}`;
    if (r.start > next) return `slots ${next}-${r.start - 1} are missing`;
    if (r.start < next) return `slot ${r.start} is covered twice`;
    next = r.end + 1;
  }
  return next === SLOT_COUNT ? null : `slots ${next}-${SLOT_COUNT - 1} are missing`;
}

export interface RaftGroupInfo {
  readonly group: number;
  readonly role: string;
  readonly term: number;
  /** Node id of the leader this node knows, or null (`-`). */
  readonly leader: string | null;
  readonly commit: number;
  readonly applied: number;
  readonly lag: number;
}

/** The `raft_group_<g>:role=..,term=..,leader=..,commit=..,applied=..,lag=..` lines of INFO raft. */
export function parseInfoRaft(text: string): Map<number, RaftGroupInfo> {
  const groups = new Map<number, RaftGroupInfo>();
  for (const line of text.split(/\r?\n/)) {
    const m = /^raft_group_(\d+):(.*)$/.exec(line.trim());
    if (m === null) continue;
    const fields = new Map<string, string>();
    for (const pair of (m[2] ?? '').split(',')) {
      const eq = pair.indexOf('=');
      if (eq > 0) fields.set(pair.slice(0, eq), pair.slice(eq + 1));
    }
    const num = (name: string): number => Number(fields.get(name) ?? 'NaN');
    const leader = fields.get('leader') ?? '-';
    const group = Number(m[1]);
    groups.set(group, {
      group,
      role: fields.get('role') ?? '?',
      term: num('term'),
      leader: leader === '-' || leader === '' ? null : leader,
      commit: num('commit'),
      applied: num('applied'),
      lag: num('lag'),
    });
  }
  return groups;
}

/** A key (`prefix{tag}`) whose slot lies in start..end; `skip` picks the skip+1-th such key. */
export function keyInSlots(start: number, end: number, prefix = 'key:', skip = 0): string {
  let found = 0;
  for (let i = 0; i < 50_000_000; i++) {
    const key = `${prefix}{${i.toString(36)}}`;
    const slot = keySlot(key);
    if (slot >= start && slot <= end) {
      if (found === skip) return key;
      found++;
    }
  }
  throw new Error(`no key found for slots ${start}-${end}`);
}

/** `count` distinct keys whose slots lie in start..end. */
export function keysInSlots(start: number, end: number, count: number, prefix = 'key:'): string[] {
  const keys: string[] = [];
  for (let i = 0; keys.length < count; i++) {
    const key = `${prefix}{${i.toString(36)}}`;
    const slot = keySlot(key);
    if (slot >= start && slot <= end) keys.push(key);
  }
  return keys;
}

// ---------------------------------------------------------------------------
// One node.

export interface ClusterNodeSpec {
  readonly port: number;
  /** The bus port written into the cluster list as host:port@busport; null: port + 10000. */
  readonly busPort: number | null;
  readonly dataDir: string;
}

export class ClusterNode {
  private procValue: ChildProcess | null = null;
  private outputText = '';
  private exitText: string | null = 'not started';
  private exitedPromise: Promise<string> = Promise.resolve('not started');
  private readyPromise: Promise<void> = Promise.resolve();
  /** Set by the ready line; a node's id once asked (CLUSTER MYID). */
  private idValue: string | null = null;
  /** Called when the node exits without stop() or kill9() having been asked for. */
  onUnexpectedExit: ((node: ClusterNode, how: string) => void) | null = null;
  /** Called with every line the node prints. */
  onOutputLine: ((node: ClusterNode, line: string) => void) | null = null;
  private stopping = false;

  constructor(
    readonly spec: ClusterNodeSpec,
    /** The command line it starts with (without the node executable and script). */
    public args: readonly string[],
    /**
     * Start it in a process group of its own, so that a Ctrl-C in the terminal
     * reaches only this process, which then stops the node itself (instead of
     * the node seeing both the terminal's SIGINT and our SIGTERM).
     */
    readonly ownProcessGroup = false,
  ) {}

  get port(): number {
    return this.spec.port;
  }

  get busPort(): number {
    return this.spec.busPort ?? this.spec.port + BUS_PORT_OFFSET;
  }

  get dataDir(): string {
    return this.spec.dataDir;
  }

  get proc(): ChildProcess | null {
    return this.procValue;
  }

  /** Null while running; how it ended otherwise. */
  get exitDescription(): string | null {
    return this.exitText;
  }

  get running(): boolean {
    return this.exitText === null;
  }

  /** Resolves with how the current process ended. */
  get exited(): Promise<string> {
    return this.exitedPromise;
  }

  /** The last bytes the node printed (stdout and stderr, every start). */
  output(): string {
    return this.outputText;
  }

  /** `node dist/src/cli.js ARGS` as a shell command line. */
  commandLine(args: readonly string[] = this.args): string {
    return ['node', 'dist/src/cli.js', ...args].join(' ');
  }

  /**
   * Starts the process with `args` (default: its command line) and waits for
   * `ready on 127.0.0.1:PORT`. Rejects (process killed) when it exits first or
   * takes longer than the timeout.
   */
  async start(args: readonly string[] = this.args, timeoutMs = NODE_START_TIMEOUT_MS): Promise<void> {
    this.launch(args);
    const outcome = await this.waitUntilReady(timeoutMs);
    if (outcome === 'ready') return;
    if (outcome === 'timeout') {
      await this.kill9();
      throw new Error(`node ${this.port} printed no "${this.readyText}" within ${timeoutMs} ms (${this.commandLine(args)}):\n${this.output()}`);
    }
    throw new Error(`node ${this.port} exited (${outcome.exited}) before it was ready (${this.commandLine(args)}):\n${this.output()}`);
  }

  private get readyText(): string {
    return `ready on ${LOOPBACK}:${this.port}`;
  }

  /** Starts the process with `args` (default: its command line) and returns at once. */
  launch(args: readonly string[] = this.args): void {
    if (this.running) throw new Error(`node ${this.port} is already running`);
    this.stopping = false;
    this.idValue = null;
    const proc = spawn(process.execPath, [CLI_PATH, ...args], { stdio: ['ignore', 'pipe', 'pipe'], detached: this.ownProcessGroup });
    liveProcesses.add(proc);
    this.procValue = proc;
    this.exitText = null;
    const readyText = this.readyText;
    let pendingLine = '';
    let markReady: () => void = () => undefined;
    this.readyPromise = new Promise<void>((resolve) => (markReady = resolve));
    const onData = (d: Buffer): void => {
      const text = d.toString();
      this.outputText = lastBytes(this.outputText + text, OUTPUT_KEPT_BYTES);
      pendingLine += text;
      const lines = pendingLine.split('\n');
      pendingLine = lines.pop() ?? '';
      for (const line of lines) {
        if (line.includes(readyText)) markReady();
        this.onOutputLine?.(this, line);
      }
    };
    proc.stdout?.on('data', onData);
    proc.stderr?.on('data', onData);
    this.exitedPromise = new Promise<string>((resolve) => {
      const done = (how: string): void => {
        if (this.procValue !== proc || this.exitText !== null) return;
        this.exitText = how;
        if (pendingLine !== '') this.onOutputLine?.(this, pendingLine);
        if (!this.stopping) this.onUnexpectedExit?.(this, how);
        resolve(how);
      };
      proc.once('error', (e) => done(`could not be started: ${e.message}`));
      proc.once('exit', (code, signal) => done(describeExit(code, signal)));
    });
  }

  /** Waits for the ready line of the process launched last: 'ready', 'timeout', or how it exited first. */
  async waitUntilReady(timeoutMs = NODE_START_TIMEOUT_MS): Promise<'ready' | 'timeout' | { exited: string }> {
    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      this.readyPromise.then(() => 'ready' as const),
      this.exitedPromise.then((how) => ({ exited: how })),
      new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), timeoutMs))),
    ]);
    clearTimeout(timer);
    return outcome;
  }

  /** Starts it again with the same command line (or `args`). */
  restart(args: readonly string[] = this.args): Promise<void> {
    return this.start(args);
  }

  /** SIGKILL; resolves once it has exited. */
  async kill9(): Promise<string> {
    const proc = this.procValue;
    if (proc === null || !this.running) return this.exitText ?? 'not running';
    this.stopping = true;
    proc.kill('SIGKILL');
    return this.exitedPromise;
  }

  /** Sends a signal without waiting (SIGSTOP, SIGCONT, or SIGKILL to time a failover from the moment it is sent). */
  signal(signal: NodeJS.Signals): void {
    if (signal === 'SIGKILL' || signal === 'SIGTERM') this.stopping = true;
    if (this.running) this.procValue?.kill(signal);
  }

  /** SIGTERM (a graceful stop), SIGKILL after the grace period; resolves with how it exited. */
  async stop(graceMs = NODE_STOP_GRACE_MS): Promise<string> {
    const proc = this.procValue;
    if (proc === null || !this.running) return this.exitText ?? 'not running';
    this.stopping = true;
    proc.kill('SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), graceMs);
    const how = await this.exitedPromise;
    clearTimeout(timer);
    return how;
  }

  /** CLUSTER MYID, remembered until the next start. */
  async id(): Promise<string> {
    if (this.idValue !== null) return this.idValue;
    const reply = await command(this.port, ['CLUSTER', 'MYID']);
    if (typeof reply !== 'string') throw new Error(`CLUSTER MYID on ${this.port}: ${JSON.stringify(reply)}`);
    this.idValue = reply;
    return reply;
  }

  /** INFO raft, parsed. */
  async raftInfo(): Promise<Map<number, RaftGroupInfo>> {
    const reply = await command(this.port, ['INFO', 'raft']);
    if (typeof reply !== 'string') throw new Error(`INFO raft on ${this.port}: ${JSON.stringify(reply)}`);
    return parseInfoRaft(reply);
  }
}

// ---------------------------------------------------------------------------
// A cluster of nodes.

export interface ClusterOptions {
  /** Client ports, one per node, in cluster-list order. */
  readonly ports: readonly number[];
  /** Data directories, one per node (created when missing). */
  readonly dataDirs: readonly string[];
  /** Bus ports, one per node, written into the list as host:port@busport; default port + 10000. */
  readonly busPorts?: readonly number[];
  /** --groups; default: the node's own default. */
  readonly groups?: number;
  /** --cluster-secret for every node, or per node (null: none). */
  readonly secret?: string | readonly (string | null)[];
  /** --fsync; default: the node's own default (always). */
  readonly fsync?: 'always' | 'never';
  /** More flags for every node. */
  readonly extraArgs?: readonly string[];
  /** Each node in a process group of its own (see ClusterNode); default false. */
  readonly ownProcessGroups?: boolean;
}

/** `127.0.0.1:P1[@B1],127.0.0.1:P2[@B2],...` */
export function clusterList(ports: readonly number[], busPorts?: readonly number[]): string {
  return ports.map((p, i) => (busPorts?.[i] === undefined ? `${LOOPBACK}:${p}` : `${LOOPBACK}:${p}@${busPorts[i]}`)).join(',');
}

export function nodeArgs(options: ClusterOptions, index: number): string[] {
  const port = options.ports[index];
  const dataDir = options.dataDirs[index];
  if (port === undefined || dataDir === undefined) throw new Error(`no port or data directory for node ${index}`);
  const args = ['--host', LOOPBACK, '--port', String(port), '--data', dataDir, '--cluster', clusterList(options.ports, options.busPorts)];
  if (options.groups !== undefined) args.push('--groups', String(options.groups));
  const secret = typeof options.secret === 'string' ? options.secret : (options.secret?.[index] ?? null);
  if (secret !== null) args.push('--cluster-secret', secret);
  if (options.fsync !== undefined) args.push('--fsync', options.fsync);
  args.push(...(options.extraArgs ?? []));
  return args;
}

/** `count` distinct free loopback ports. */
export async function freePorts(count: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < count) ports.add(await freePort());
  return [...ports];
}

/** Free client ports and bus ports for `count` nodes, all distinct. */
export async function freeClusterPorts(count: number): Promise<{ ports: number[]; busPorts: number[] }> {
  const all = await freePorts(2 * count);
  return { ports: all.slice(0, count), busPorts: all.slice(count) };
}

/** What waitForLeaders found: every group's range, leader and leading node. */
export interface ClusterState {
  /** Data groups, in slot order: group i + 1 owns ranges[i]. */
  readonly groups: readonly {
    readonly group: number;
    readonly start: number;
    readonly end: number;
    /** The node INFO raft names as leader (role=leader there). */
    readonly leader: ClusterNode;
    /** The master CLUSTER SLOTS names. */
    readonly slotsMasterPort: number;
  }[];
}

export class LocalCluster {
  private constructor(readonly nodes: readonly ClusterNode[]) {}

  /** Creates the nodes (not started). */
  static create(options: ClusterOptions): LocalCluster {
    if (options.ports.length !== options.dataDirs.length) throw new Error('one data directory per port');
    return new LocalCluster(
      options.ports.map(
        (port, i) =>
          new ClusterNode(
            { port, busPort: options.busPorts?.[i] ?? null, dataDir: options.dataDirs[i] ?? '' },
            nodeArgs(options, i),
            options.ownProcessGroups ?? false,
          ),
      ),
    );
  }

  /** Creates and starts every node at once; stops them all when one fails to start. */
  static async start(options: ClusterOptions): Promise<LocalCluster> {
    const cluster = LocalCluster.create(options);
    for (const dir of options.dataDirs) mkdirSync(dir, { recursive: true });
    const results = await Promise.allSettled(cluster.nodes.map((n) => n.start()));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed !== undefined) {
      await cluster.stopAll();
      throw failed.reason;
    }
    return cluster;
  }

  get running(): ClusterNode[] {
    return this.nodes.filter((n) => n.running);
  }

  node(port: number): ClusterNode {
    const n = this.nodes.find((x) => x.port === port);
    if (n === undefined) throw new Error(`no node on port ${port}`);
    return n;
  }

  /** Command lines of every node. */
  commandLines(): string[] {
    return this.nodes.map((n) => n.commandLine());
  }

  /** The node whose CLUSTER MYID is `id` (asking running nodes), or null. */
  async nodeById(id: string): Promise<ClusterNode | null> {
    for (const n of this.running) {
      try {
        if ((await n.id()) === id) return n;
      } catch {
        // not answering: not that one
      }
    }
    return null;
  }

  /** One state check: CLUSTER SLOTS from `via`, INFO raft from every running node. Throws what is missing. */
  async state(via: ClusterNode): Promise<ClusterState> {
    const ranges = parseClusterSlots(await command(via.port, ['CLUSTER', 'SLOTS']));
    const coverage = slotCoverageProblem(ranges);
    if (coverage !== null) throw new Error(`CLUSTER SLOTS on ${via.port}: ${coverage}`);
    // A deposed leader that has not heard of the new term yet may still say
    // leader: the highest term wins.
    const leaders = new Map<number, { node: ClusterNode; term: number }>();
    for (const n of this.running) {
      const info = await n.raftInfo();
      for (const g of info.values()) {
        const known = leaders.get(g.group);
        if (g.role === 'leader' && (known === undefined || g.term > known.term)) leaders.set(g.group, { node: n, term: g.term });
      }
    }
    const groups = ranges.map((r, i) => {
      const leader = leaders.get(i + 1)?.node;
      if (leader === undefined) throw new Error(`group ${i + 1} (slots ${r.start}-${r.end}) has no leader in INFO raft`);
      return { group: i + 1, start: r.start, end: r.end, leader, slotsMasterPort: r.masterPort };
    });
    return { groups };
  }

  /**
   * Waits until CLUSTER SLOTS covers every slot, a probe write (INCR on a key of
   * each group, through a plain connection to a running node, forwarded to the
   * leader) succeeds on every group, and every group's master in CLUSTER SLOTS
   * is its leader in INFO raft. Throws after the timeout saying what was missing.
   */
  async waitForLeaders(timeoutMs = LEADERS_TIMEOUT_MS, probePrefix = 'ordo:probe:'): Promise<ClusterState> {
    const deadline = Date.now() + timeoutMs;
    let problem = 'no node is running';
    for (let attempt = 0; ; attempt++) {
      const via = this.running[attempt % Math.max(1, this.running.length)];
      if (via !== undefined) {
        try {
          const before = await this.state(via);
          const client = await RespClient.connect(via.port);
          try {
            for (const g of before.groups) {
              await client.call(['INCR', keyInSlots(g.start, g.end, probePrefix)], Math.max(1000, Math.min(REQUEST_TIMEOUT_MS, deadline - Date.now())));
            }
          } finally {
            client.close();
          }
          const after = await this.state(via);
          const disagree = after.groups.find((g) => g.slotsMasterPort !== g.leader.port);
          if (disagree === undefined) return after;
          problem = `group ${disagree.group}: CLUSTER SLOTS names ${disagree.slotsMasterPort}, INFO raft ${disagree.leader.port}`;
        } catch (e) {
          problem = (e as Error).message;
        }
      }
      if (Date.now() > deadline) throw new Error(`the cluster has no leader for every group after ${timeoutMs} ms: ${problem}`);
      await sleep(100);
    }
  }

  /**
   * Waits for waitForLeaders, then until the leaders have stopped moving: the
   * same leader for every group for `quietMs`, and the groups spread over the
   * running nodes within one of each other (leader balancing moves leaders for
   * a few seconds after a start or restart, and a write caught by a move can be
   * answered TRYAGAIN). After `timeoutMs` it settles for the quiet period alone
   * and says so (`balanced: false`).
   */
  async waitForStableLeaders(quietMs = 2000, timeoutMs = LEADERS_TIMEOUT_MS): Promise<{ state: ClusterState; balanced: boolean }> {
    const deadline = Date.now() + timeoutMs;
    let state = await this.waitForLeaders(timeoutMs);
    const signature = (s: ClusterState): string => s.groups.map((g) => g.leader.port).join(',');
    let since = Date.now();
    for (;;) {
      const counts = new Map<ClusterNode, number>(this.running.map((n) => [n, 0]));
      for (const g of state.groups) counts.set(g.leader, (counts.get(g.leader) ?? 0) + 1);
      const balanced = Math.max(...counts.values()) - Math.min(...counts.values()) <= 1;
      const quiet = Date.now() - since >= quietMs;
      if (quiet && (balanced || Date.now() > deadline)) return { state, balanced };
      await sleep(200);
      const next = await this.waitForLeaders(Math.max(1000, deadline - Date.now()));
      if (signature(next) !== signature(state)) since = Date.now();
      state = next;
    }
  }

  /**
   * Waits until `node` has applied, in every group it replicates, at least the
   * commit index the group's leader reported when the wait began.
   */
  async waitForCatchUp(node: ClusterNode, timeoutMs = LEADERS_TIMEOUT_MS): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const targets = new Map<number, number>();
    for (const n of this.running) {
      const info = await n.raftInfo();
      for (const g of info.values()) if (g.role === 'leader') targets.set(g.group, g.commit);
    }
    let problem = '';
    for (;;) {
      try {
        const mine = await node.raftInfo();
        const behind = [...mine.values()].filter((g) => g.applied < (targets.get(g.group) ?? 0));
        if (behind.length === 0) return;
        problem = behind.map((g) => `group ${g.group} applied ${g.applied} < ${targets.get(g.group) ?? '?'}`).join(', ');
      } catch (e) {
        problem = (e as Error).message;
      }
      if (Date.now() > deadline) throw new Error(`node ${node.port} has not caught up after ${timeoutMs} ms: ${problem}`);
      await sleep(100);
    }
  }

  /** Stops every node gracefully at once (SIGKILL after the grace period). */
  async stopAll(graceMs = NODE_STOP_GRACE_MS): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.stop(graceMs)));
  }

  /** SIGKILLs every node at once. */
  async killAll(): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.kill9()));
  }
}
