// Real ordo clusters on this machine: N node processes on loopback, each with
// its own data directory; wait until every group has a leader that accepts
// writes; kill -9, pause, stop and restart a node. `npm run cluster` is built
// on this, and the testkit starts its clusters through it. Every process
// started here is killed when this process exits (see children.ts).
//
// A node's command line:
//
//   node dist/src/cli.js --host 127.0.0.1 --port P --data DIR
//        --cluster 127.0.0.1:P1[@B1],127.0.0.1:P2[@B2],... [--groups G]
//        [--cluster-secret S] [--fsync always|never]
//
// The bus port is the client port + 10000 unless the address says
// `host:port@busport`; callers that pick free ports pass bus ports explicitly.

import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BUS_PORT_OFFSET } from '../cluster/members.js';
import { keySlot, SLOT_COUNT } from '../cluster/slots.js';
import type { PlainReply } from '../resp/client-codec.js';
import { Child, CHILD_STOP_GRACE_MS, describeExit, type ChildGroup } from './children.js';
import { command, LOOPBACK, REQUEST_TIMEOUT_MS, RespClient } from './client.js';
import { parseRaftGroups, type RaftGroupInfo } from './info.js';

/** The built CLI: dist/src/launcher → dist/src/cli.js */
export const CLI_PATH = join(dirname(fileURLToPath(import.meta.url)), '..', 'cli.js');
/** How long a node may take to print its ready line. */
export const NODE_START_TIMEOUT_MS = 20_000;
/** How long every group may take to elect a leader that accepts a write. */
export const LEADERS_TIMEOUT_MS = 30_000;
/** SIGTERM first; SIGKILL after this grace period. */
export const NODE_STOP_GRACE_MS = CHILD_STOP_GRACE_MS;
/** Keys tried when looking for one in a slot range (a range of one slot needs about 16384). */
const KEY_SEARCH_TRIES_MAX = 50_000_000;
/** Output of a node's earlier starts kept beside the current one's. */
const EARLIER_OUTPUT_KEPT_BYTES = 64 * 1024;
/** What a node that was never started says about its exit. */
const NOT_STARTED = 'not started';
/** Pause between two looks at the cluster while waiting for it. */
const POLL_INTERVAL_MS = 100;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** `ready on HOST:PORT`: what ordo prints once it accepts clients. */
export function readyText(port: number, host = LOOPBACK): string {
  return `ready on ${host}:${port}`;
}

// ---------------------------------------------------------------------------
// What the cluster says about itself.

export interface SlotRangeOwner {
  readonly start: number;
  readonly end: number;
  /** The master CLUSTER SLOTS names. */
  readonly masterPort: number;
  readonly masterId: string;
  /** Ports of every node listed for the range, the master first. */
  readonly replicaPorts: readonly number[];
}

/** CLUSTER SLOTS as ranges sorted by start; throws when the reply is malformed. */
export function parseClusterSlots(reply: PlainReply): SlotRangeOwner[] {
  if (!Array.isArray(reply)) throw new Error(`CLUSTER SLOTS: not an array: ${JSON.stringify(reply)}`);
  const ranges = reply.map((entry) => {
    if (!Array.isArray(entry) || entry.length < 3) throw new Error(`CLUSTER SLOTS: bad entry ${JSON.stringify(entry)}`);
    const [start, end, master, ...others] = entry;
    if (!Array.isArray(master) || master.length < 3) throw new Error(`CLUSTER SLOTS: bad master ${JSON.stringify(master)}`);
    const replicaPorts = [master, ...others].map((node) => (Array.isArray(node) ? Number(node[1]) : Number.NaN));
    return { start: Number(start), end: Number(end), masterPort: Number(master[1]), masterId: String(master[2]), replicaPorts };
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

/** `count` distinct keys (`prefix{tag}`) whose slots lie in start..end, skipping the first `skip`. */
export function keysInSlots(start: number, end: number, count: number, prefix = 'key:', skip = 0): string[] {
  const keys: string[] = [];
  let found = 0;
  for (let i = 0; keys.length < count; i++) {
    if (i >= KEY_SEARCH_TRIES_MAX) throw new Error(`no ${count} keys found for slots ${start}-${end}`);
    const key = `${prefix}{${i.toString(36)}}`;
    const slot = keySlot(key);
    if (slot < start || slot > end) continue;
    if (found++ >= skip) keys.push(key);
  }
  return keys;
}

/** A key (`prefix{tag}`) whose slot lies in start..end; `skip` picks the skip+1-th such key. */
export function keyInSlots(start: number, end: number, prefix = 'key:', skip = 0): string {
  const [key] = keysInSlots(start, end, 1, prefix, skip);
  if (key === undefined) throw new Error(`no key found for slots ${start}-${end}`);
  return key;
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
  private child: Child | null = null;
  private outputBefore = '';
  /** The node's id (CLUSTER MYID), remembered until the next start. */
  private idValue: string | null = null;
  /** Called when the node exits without stop(), kill9() or a SIGTERM/SIGKILL having been asked for. */
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
    /** The group that kills it when this process exits; default: every child. */
    private readonly group?: ChildGroup,
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

  /** The current process, or null before the first start. */
  get proc(): Child['proc'] | null {
    return this.child?.proc ?? null;
  }

  /** Null while running; how it ended otherwise. */
  get exitDescription(): string | null {
    if (this.child === null) return NOT_STARTED;
    const exit = this.child.exit;
    return exit === null ? null : describeExit(exit);
  }

  get running(): boolean {
    return this.child?.running ?? false;
  }

  /** Resolves with how the current process ended. */
  get exited(): Promise<string> {
    return this.child === null ? Promise.resolve(NOT_STARTED) : this.child.exited.then(describeExit);
  }

  /** The last bytes the node printed (stdout and stderr, every start). */
  output(): string {
    return this.outputBefore + (this.child?.output() ?? '');
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
      throw new Error(`node ${this.port} printed no "${readyText(this.port)}" within ${timeoutMs} ms (${this.commandLine(args)}):\n${this.output()}`);
    }
    throw new Error(`node ${this.port} exited (${outcome.exited}) before it was ready (${this.commandLine(args)}):\n${this.output()}`);
  }

  /** Starts the process with `args` (default: its command line) and returns at once. */
  launch(args: readonly string[] = this.args): void {
    if (this.running) throw new Error(`node ${this.port} is already running`);
    this.stopping = false;
    this.idValue = null;
    if (this.child !== null) this.outputBefore = this.output().slice(-EARLIER_OUTPUT_KEPT_BYTES);
    const child = new Child(process.execPath, [CLI_PATH, ...args], {
      readyText: readyText(this.port),
      detached: this.ownProcessGroup,
      ...(this.group === undefined ? {} : { group: this.group }),
      onLine: (line) => this.onOutputLine?.(this, line),
    });
    this.child = child;
    void child.exited.then((exit) => {
      if (this.child === child && !this.stopping) this.onUnexpectedExit?.(this, describeExit(exit));
    });
  }

  /** Waits for the ready line of the process launched last: 'ready', 'timeout', or how it exited first. */
  async waitUntilReady(timeoutMs = NODE_START_TIMEOUT_MS): Promise<'ready' | 'timeout' | { exited: string }> {
    if (this.child === null) return { exited: NOT_STARTED };
    const outcome = await this.child.waitUntilReady(timeoutMs);
    return typeof outcome === 'string' ? outcome : { exited: describeExit(outcome.exited) };
  }

  /** Starts it again with the same command line (or `args`). */
  restart(args: readonly string[] = this.args): Promise<void> {
    return this.start(args);
  }

  /** SIGKILL; resolves once it has exited. */
  async kill9(): Promise<string> {
    if (this.child === null) return NOT_STARTED;
    this.stopping = true;
    return describeExit(await this.child.kill9());
  }

  /** Sends a signal without waiting (SIGSTOP, SIGCONT, or SIGKILL to time a failover from the moment it is sent). */
  signal(signal: NodeJS.Signals): void {
    if (signal === 'SIGKILL' || signal === 'SIGTERM') this.stopping = true;
    this.child?.signal(signal);
  }

  /** SIGTERM (a graceful stop), SIGKILL after the grace period; resolves with how it exited. */
  async stop(graceMs = NODE_STOP_GRACE_MS): Promise<string> {
    if (this.child === null) return NOT_STARTED;
    if (this.running) this.stopping = true;
    return describeExit(await this.child.stop(graceMs));
  }

  /** CLUSTER MYID, remembered until the next start. */
  async id(timeoutMs = REQUEST_TIMEOUT_MS): Promise<string> {
    if (this.idValue !== null) return this.idValue;
    const reply = await command(this.port, ['CLUSTER', 'MYID'], timeoutMs);
    if (typeof reply !== 'string') throw new Error(`CLUSTER MYID on ${this.port}: ${JSON.stringify(reply)}`);
    this.idValue = reply;
    return reply;
  }

  /** The id learned by id() since the last start, or null. */
  get knownId(): string | null {
    return this.idValue;
  }

  /** INFO raft, parsed. */
  async raftInfo(timeoutMs = REQUEST_TIMEOUT_MS): Promise<Map<number, RaftGroupInfo>> {
    const reply = await command(this.port, ['INFO', 'raft'], timeoutMs);
    if (typeof reply !== 'string') throw new Error(`INFO raft on ${this.port}: ${JSON.stringify(reply)}`);
    return parseRaftGroups(reply);
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
  /** More flags for node i alone (after extraArgs). */
  readonly nodeExtraArgs?: (index: number) => readonly string[];
  /** Each node in a process group of its own (see ClusterNode); default false. */
  readonly ownProcessGroups?: boolean;
  /** The group that kills the nodes when this process exits; default: every child. */
  readonly childGroup?: ChildGroup;
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
  args.push(...(options.extraArgs ?? []), ...(options.nodeExtraArgs?.(index) ?? []));
  return args;
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
            options.childGroup,
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
      await sleep(POLL_INTERVAL_MS);
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
