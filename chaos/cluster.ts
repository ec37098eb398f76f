// A real ordo cluster on loopback for the fault runs: N node processes (the
// testkit's ClusterNode, each with its own data directory, client port and
// bus port) and a BusProxy in front of every bus port so links can be cut.
// Node i is started as
//
//   node dist/src/cli.js --host 127.0.0.1 --port P_i --data DIR_i
//        --cluster 127.0.0.1:P_1@B_1,...  --groups G --bus-port R_i
//
// where B_i is the proxy's port (what the other nodes dial) and R_i the port
// node i listens on. A restart uses the same command line. Nodes can be
// killed (SIGKILL), paused (SIGSTOP/SIGCONT), stopped gracefully and
// restarted; here they also carry the state the nemesis needs (up, paused,
// ...) and the id the proxy routes by. Every process started here is
// SIGKILLed when this process exits, whatever the reason.

import { appendFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { command } from '../testkit/resp.js';
import { ClusterNode, nodeArgs, NODE_STOP_GRACE_MS, parseClusterSlots, type ClusterOptions as NodeOptions } from '../testkit/cluster.js';
import type { RaftGroupInfo } from '../testkit/info.js';
import { ChildGroup, freePorts, LOOPBACK } from '../testkit/processes.js';
import { sleep } from '../testkit/wait.js';
import { BusProxy } from './proxy.js';

/** How long a starting node may take to print its ready line. */
export const NODE_READY_TIMEOUT_MS = 30_000;

// Every node process started here, killed when this process exits.
const children = new ChildGroup();

/** SIGKILLs every node process started here that has not exited (synchronous: safe in an 'exit' handler). */
export function killAllNow(): void {
  children.killNow();
}

export type NodeState = 'down' | 'starting' | 'up' | 'paused' | 'stopping';

/** One node of the fault run: the process, and what the nemesis knows of it. */
export class ChaosNode {
  state: NodeState = 'down';
  /** The node's id (CLUSTER MYID), once known. */
  id: string | null = null;
  starts = 0;
  /** Bumped by every start, so that the exit of an old process does not touch the state of a new one. */
  generation = 0;

  constructor(
    readonly index: number,
    readonly process: ClusterNode,
    /** Bus port the node listens on (behind the proxy). */
    readonly realBusPort: number,
  ) {}

  get port(): number {
    return this.process.port;
  }

  /** Bus port the others dial: the proxy's. */
  get busPort(): number {
    return this.process.busPort;
  }

  get dataDir(): string {
    return this.process.dataDir;
  }

  /** A process of this node is running (up, paused, starting or stopping). */
  get running(): boolean {
    return this.process.running;
  }

  /** Recent output of the node, every start. */
  get output(): string {
    return this.process.output();
  }
}

export interface ClusterOptions {
  nodes: number;
  groups: number;
  /** Extra flags for every node. */
  extraArgs?: readonly string[];
  /** Node output goes to <logDir>/node-<i>.log when set. */
  logDir?: string;
}

export type GroupState = RaftGroupInfo;

export class ChaosCluster {
  readonly proxy: BusProxy;

  private constructor(
    readonly options: ClusterOptions,
    readonly nodes: readonly ChaosNode[],
    private readonly baseDir: string,
  ) {
    this.proxy = new BusProxy(
      nodes.map((n) => ({ listenPort: n.busPort, targetPort: n.realBusPort })),
      LOOPBACK,
    );
  }

  /** Picks free ports, starts the proxy and every node, and learns the node ids. */
  static async start(options: ClusterOptions): Promise<ChaosCluster> {
    const baseDir = mkdtempSync(join(tmpdir(), 'ordo-chaos-'));
    const ports = await freePorts(3 * options.nodes);
    const at = (i: number): number => ports[i] ?? 0;
    const count = options.nodes;
    const clientPorts = Array.from({ length: count }, (_, i) => at(i));
    const proxyPorts = Array.from({ length: count }, (_, i) => at(count + i));
    const realBusPorts = Array.from({ length: count }, (_, i) => at(2 * count + i));
    const nodeOptions: NodeOptions = {
      ports: clientPorts,
      busPorts: proxyPorts,
      dataDirs: clientPorts.map((_, i) => join(baseDir, `node-${i}`)),
      groups: options.groups,
      extraArgs: options.extraArgs ?? [],
      nodeExtraArgs: (i) => ['--bus-port', String(at(2 * count + i))],
    };
    const nodes = clientPorts.map((port, i) => {
      const dataDir = nodeOptions.dataDirs[i] ?? '';
      mkdirSync(dataDir, { recursive: true });
      const member = new ClusterNode({ port, busPort: at(count + i), dataDir }, nodeArgs(nodeOptions, i), false, children);
      return new ChaosNode(i, member, realBusPorts[i] ?? 0);
    });
    const cluster = new ChaosCluster(options, nodes, baseDir);
    try {
      await cluster.proxy.start();
      await Promise.all(nodes.map((n) => cluster.startNode(n.index)));
      await cluster.learnIds(10_000);
    } catch (e) {
      await cluster.destroy(false);
      throw e;
    }
    return cluster;
  }

  get dataRoot(): string {
    return this.baseDir;
  }

  /** The command line of node i (for reports). */
  commandLine(i: number): string {
    return this.node(i).process.commandLine();
  }

  node(i: number): ChaosNode {
    const n = this.nodes[i];
    if (n === undefined) throw new Error(`no node ${i}`);
    return n;
  }

  private log(i: number): ((text: string) => void) | null {
    const dir = this.options.logDir;
    if (dir === undefined) return null;
    const file = join(dir, `node-${i}.log`);
    return (text) => appendFileSync(file, text);
  }

  /** Starts node i (it must be down) and resolves once it prints its ready line. */
  async startNode(i: number): Promise<void> {
    const node = this.node(i);
    if (node.state !== 'down') throw new Error(`node ${i} is ${node.state}, not down`);
    node.state = 'starting';
    node.starts++;
    const generation = ++node.generation;
    const log = this.log(i);
    log?.(`==== ${new Date().toISOString()} start #${node.starts}: ${this.commandLine(i)}\n`);
    node.process.onOutputLine = log === null ? null : (_n, line) => log(`${line}\n`);
    node.process.launch();
    void node.process.exited.then((how) => {
      log?.(`==== ${new Date().toISOString()} exited: ${how}\n`);
      if (node.generation === generation) node.state = 'down';
    });
    const outcome = await node.process.waitUntilReady(NODE_READY_TIMEOUT_MS);
    if (outcome === 'timeout') {
      await node.process.kill9();
      throw new Error(`node ${i} printed no ready line within ${NODE_READY_TIMEOUT_MS} ms:\n${node.output}`);
    }
    if (outcome !== 'ready') throw new Error(`node ${i} exited (${outcome.exited}) before it was ready:\n${node.output}`);
    if (node.generation === generation && node.running) node.state = 'up';
  }

  /** SIGKILL; resolves once the process is gone. */
  async kill(i: number): Promise<void> {
    await this.node(i).process.kill9();
  }

  /** SIGTERM (SIGKILL after a grace period); resolves once the process is gone, with how it ended. */
  async stop(i: number): Promise<string> {
    const node = this.node(i);
    if (!node.running) return 'not running';
    node.state = 'stopping';
    return node.process.stop(NODE_STOP_GRACE_MS);
  }

  pause(i: number): void {
    const node = this.node(i);
    if (!node.running || node.state !== 'up') return;
    node.process.signal('SIGSTOP');
    node.state = 'paused';
  }

  resume(i: number): void {
    const node = this.node(i);
    if (!node.running || node.state !== 'paused') return;
    node.process.signal('SIGCONT');
    node.state = 'up';
  }

  isUp(i: number): boolean {
    return this.node(i).state === 'up';
  }

  /** Asks every node that is up for CLUSTER MYID until all are known; tells the proxy. */
  async learnIds(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      await Promise.all(
        this.nodes.map(async (n) => {
          if (n.id !== null || n.state !== 'up') return;
          try {
            const id = await n.process.id(2000);
            if (id.length > 0) {
              n.id = id;
              this.proxy.learn(n.index, id);
            }
          } catch {
            // not yet
          }
        }),
      );
      if (this.nodes.every((n) => n.id !== null)) return;
      if (Date.now() > deadline) {
        const missing = this.nodes.filter((n) => n.id === null).map((n) => n.index);
        throw new Error(`CLUSTER MYID did not answer on node(s) ${missing.join(', ')}`);
      }
      await sleep(100);
    }
  }

  /**
   * The replicas (node indexes) of each data group, from CLUSTER SLOTS of a
   * node that answers (while every node is up, it lists them all), keyed by
   * the first slot of the group's range.
   */
  async replicasBySlotStart(timeoutMs = 2000): Promise<Map<number, number[]>> {
    for (const n of this.nodes) {
      if (n.state !== 'up') continue;
      try {
        const ranges = parseClusterSlots(await command(n.port, ['CLUSTER', 'SLOTS'], timeoutMs));
        const indexOfPort = (port: number): number[] => {
          const i = this.nodes.findIndex((m) => m.port === port);
          return i < 0 ? [] : [i];
        };
        return new Map(ranges.map((r) => [r.start, r.replicaPorts.flatMap(indexOfPort)]));
      } catch {
        // try the next node
      }
    }
    return new Map();
  }

  indexOfId(id: string): number | null {
    const i = this.nodes.findIndex((n) => n.id === id);
    return i < 0 ? null : i;
  }

  /** INFO raft of node i, or null when it does not answer in time. */
  async raftInfo(i: number, timeoutMs = 1000): Promise<GroupState[] | null> {
    const node = this.node(i);
    if (node.state !== 'up') return null;
    try {
      return [...(await node.process.raftInfo(timeoutMs)).values()];
    } catch {
      return null;
    }
  }

  /**
   * The leader (node index) of every data group 1..G as the nodes that answer
   * report it: the claim of the highest term wins. A group nobody names is absent.
   */
  async leaders(timeoutMs = 1000): Promise<Map<number, number>> {
    const infos = await Promise.all(this.nodes.map((n) => this.raftInfo(n.index, timeoutMs)));
    const best = new Map<number, { term: number; leader: number }>();
    infos.forEach((groups, i) => {
      for (const g of groups ?? []) {
        if (g.group === 0) continue;
        const leader = g.role === 'leader' ? i : g.leader === null ? null : this.indexOfId(g.leader);
        if (leader === null) continue;
        const prev = best.get(g.group);
        if (prev === undefined || g.term > prev.term || (g.term === prev.term && g.role === 'leader')) best.set(g.group, { term: g.term, leader });
      }
    });
    return new Map([...best].map(([g, b]) => [g, b.leader]));
  }

  /** Stops every node (gracefully when `graceful`, else SIGKILL), closes the proxy, removes the data unless kept. */
  async destroy(graceful: boolean, keepData = false): Promise<Map<number, string>> {
    const how = new Map<number, string>();
    await Promise.all(
      this.nodes.map(async (n) => {
        if (!n.running) return;
        if (graceful) how.set(n.index, await this.stop(n.index));
        else {
          await this.kill(n.index);
          how.set(n.index, 'killed');
        }
      }),
    );
    await this.proxy.close();
    if (!keepData) rmSync(this.baseDir, { recursive: true, force: true });
    return how;
  }
}
