// A real ordo cluster on loopback for the fault runs: N node processes, each
// with its own data directory, client port and bus port, and a BusProxy in
// front of every bus port so links can be cut. Node i is started as
//
//   node dist/src/cli.js --host 127.0.0.1 --port P_i --data DIR_i
//        --cluster 127.0.0.1:P_1@B_1,...  --bus-port R_i [--groups G]
//
// where B_i is the proxy's port (what the other nodes dial) and R_i the port
// node i listens on. A restart uses the same command line. Nodes can be
// killed (SIGKILL), paused (SIGSTOP/SIGCONT), stopped gracefully and restarted.
// Every process started here is SIGKILLed when this process exits, whatever
// the reason.

import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LOOPBACK, NODE_STOP_GRACE_MS } from '../bench/cluster-launcher.js';
import { ChildGroup, CLI_PATH, freePort } from '../test/helpers/processes.js';
import { encodeCommand, ReplyScanner, type Reply } from './common.js';
import { BusProxy } from './proxy.js';

/** How long a starting node may take to print its ready line. */
export const NODE_READY_TIMEOUT_MS = 30_000;
/** Node output kept in memory for error messages (all of it goes to the log file when there is one). */
const OUTPUT_KEPT_CHARS = 16 * 1024;

// Every node process started here, killed when this process exits.
const children = new ChildGroup();

/** SIGKILLs every node process started here that has not exited (synchronous: safe in an 'exit' handler). */
export function killAllNow(): void {
  children.killNow();
}

export type NodeState = 'down' | 'starting' | 'up' | 'paused' | 'stopping';

export interface ChaosNode {
  readonly index: number;
  readonly port: number;
  /** Bus port the others dial: the proxy's. */
  readonly busPort: number;
  /** Bus port the node listens on. */
  readonly realBusPort: number;
  readonly dataDir: string;
  state: NodeState;
  proc: ChildProcess | null;
  /** Resolves when the current process exits. */
  exited: Promise<string> | null;
  /** The node's id (CLUSTER MYID), once known. */
  id: string | null;
  /** Recent output of the current process. */
  output: string;
  starts: number;
}

export interface ClusterOptions {
  nodes: number;
  groups: number;
  /** Extra flags for every node. */
  extraArgs?: readonly string[];
  /** Node output goes to <logDir>/node-<i>.log when set. */
  logDir?: string;
}

export interface GroupState {
  readonly group: number;
  readonly role: string;
  readonly term: number;
  readonly leader: string | null;
  readonly commit: number;
  readonly applied: number;
}

/** Sends one command on a fresh connection; resolves with the reply, rejects on error or timeout. */
export function request(port: number, args: readonly string[], timeoutMs: number): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const socket = new Socket();
    const scanner = new ReplyScanner();
    let settled = false;
    const finish = (error: Error | null, reply?: Reply): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (error !== null) reject(error);
      else if (reply !== undefined) resolve(reply);
    };
    const timer = setTimeout(() => finish(new Error(`no reply to ${args[0] ?? ''} within ${timeoutMs} ms`)), timeoutMs);
    socket.on('error', (e) => finish(e));
    socket.on('close', () => finish(new Error('connection closed before the reply')));
    socket.on('data', (d: Buffer) => {
      const [reply] = scanner.push(d);
      if (reply !== undefined) finish(null, reply);
    });
    socket.connect(port, LOOPBACK, () => socket.write(encodeCommand(args)));
  });
}

/** Parses the `raft_group_<g>:role=...,term=...,leader=...,commit=...,applied=...` lines of INFO. */
export function parseRaftInfo(text: string): GroupState[] {
  const out: GroupState[] = [];
  for (const line of text.split(/\r?\n/)) {
    const m = /^raft_group_(\d+):(.*)$/.exec(line.trim());
    if (m === null) continue;
    const fields = new Map<string, string>();
    for (const kv of (m[2] ?? '').split(',')) {
      const eq = kv.indexOf('=');
      if (eq > 0) fields.set(kv.slice(0, eq), kv.slice(eq + 1));
    }
    const leader = fields.get('leader') ?? '-';
    out.push({
      group: Number(m[1]),
      role: fields.get('role') ?? '?',
      term: Number(fields.get('term') ?? 0),
      leader: leader === '-' || leader === '' ? null : leader,
      commit: Number(fields.get('commit') ?? 0),
      applied: Number(fields.get('applied') ?? 0),
    });
  }
  return out;
}

export class ChaosCluster {
  readonly nodes: ChaosNode[] = [];
  readonly proxy: BusProxy;
  private readonly baseDir: string;

  private constructor(
    readonly options: ClusterOptions,
    nodes: ChaosNode[],
    baseDir: string,
  ) {
    this.nodes = nodes;
    this.baseDir = baseDir;
    this.proxy = new BusProxy(nodes.map((n) => ({ listenPort: n.busPort, targetPort: n.realBusPort })), LOOPBACK);
  }

  /** Picks free ports, starts the proxy and every node, and learns the node ids. */
  static async start(options: ClusterOptions): Promise<ChaosCluster> {
    const baseDir = mkdtempSync(join(tmpdir(), 'ordo-chaos-'));
    const used = new Set<number>();
    const port = async (): Promise<number> => {
      for (;;) {
        const p = await freePort();
        if (!used.has(p)) {
          used.add(p);
          return p;
        }
      }
    };
    const nodes: ChaosNode[] = [];
    for (let i = 0; i < options.nodes; i++) {
      const dataDir = join(baseDir, `node-${i}`);
      mkdirSync(dataDir, { recursive: true });
      nodes.push({
        index: i,
        port: await port(),
        busPort: await port(),
        realBusPort: await port(),
        dataDir,
        state: 'down',
        proc: null,
        exited: null,
        id: null,
        output: '',
        starts: 0,
      });
    }
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

  private args(node: ChaosNode): string[] {
    const members = this.nodes.map((n) => `${LOOPBACK}:${n.port}@${n.busPort}`).join(',');
    return [
      CLI_PATH,
      '--host',
      LOOPBACK,
      '--port',
      String(node.port),
      '--data',
      node.dataDir,
      '--cluster',
      members,
      '--bus-port',
      String(node.realBusPort),
      '--groups',
      String(this.options.groups),
      ...(this.options.extraArgs ?? []),
    ];
  }

  /** The command line of node i (for reports). */
  commandLine(i: number): string {
    return ['node', ...this.args(this.node(i)).map((a) => (a === CLI_PATH ? 'dist/src/cli.js' : a))].join(' ');
  }

  node(i: number): ChaosNode {
    const n = this.nodes[i];
    if (n === undefined) throw new Error(`no node ${i}`);
    return n;
  }

  /** Starts node i (it must be down) and resolves once it prints its ready line. */
  async startNode(i: number): Promise<void> {
    const node = this.node(i);
    if (node.state !== 'down') throw new Error(`node ${i} is ${node.state}, not down`);
    node.state = 'starting';
    node.starts++;
    node.output = '';
    const proc = spawn(process.execPath, this.args(node), { stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(proc);
    node.proc = proc;
    const logFile = this.options.logDir === undefined ? null : join(this.options.logDir, `node-${i}.log`);
    if (logFile !== null) appendFileSync(logFile, `==== ${new Date().toISOString()} start #${node.starts}: ${this.commandLine(i)}\n`);
    const readyText = `ready on ${LOOPBACK}:${node.port}`;
    let ready = false;
    let onReady: (() => void) | null = null;
    const keep = (d: Buffer): void => {
      const text = d.toString();
      node.output = (node.output + text).slice(-OUTPUT_KEPT_CHARS);
      if (logFile !== null) appendFileSync(logFile, text);
      if (!ready && node.output.includes(readyText)) {
        ready = true;
        onReady?.();
      }
    };
    proc.stdout?.on('data', keep);
    proc.stderr?.on('data', keep);
    node.exited = new Promise<string>((resolve) => {
      proc.once('exit', (code, signal) => {
        const how = code !== null ? `exit code ${code}` : `signal ${signal ?? '?'}`;
        if (logFile !== null) appendFileSync(logFile, `==== ${new Date().toISOString()} exited: ${how}\n`);
        if (node.proc === proc) {
          node.proc = null;
          node.state = 'down';
        }
        resolve(how);
      });
    });
    const exited = node.exited;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`node ${i} printed no ready line within ${NODE_READY_TIMEOUT_MS} ms:\n${node.output}`)), NODE_READY_TIMEOUT_MS);
      onReady = (): void => {
        clearTimeout(timer);
        resolve();
      };
      if (ready) onReady();
      void exited.then((how) => {
        clearTimeout(timer);
        if (!ready) reject(new Error(`node ${i} exited (${how}) before it was ready:\n${node.output}`));
      });
    });
    if (node.proc === proc) node.state = 'up';
  }

  /** SIGKILL; resolves once the process is gone. */
  async kill(i: number): Promise<void> {
    const node = this.node(i);
    const proc = node.proc;
    if (proc === null) return;
    proc.kill('SIGKILL');
    await node.exited;
  }

  /** SIGTERM (SIGKILL after a grace period); resolves once the process is gone, with how it ended. */
  async stop(i: number): Promise<string> {
    const node = this.node(i);
    const proc = node.proc;
    if (proc === null || node.exited === null) return 'not running';
    if (node.state === 'paused') proc.kill('SIGCONT');
    node.state = 'stopping';
    proc.kill('SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), NODE_STOP_GRACE_MS);
    const how = await node.exited;
    clearTimeout(timer);
    return how;
  }

  pause(i: number): void {
    const node = this.node(i);
    if (node.proc === null || node.state !== 'up') return;
    node.proc.kill('SIGSTOP');
    node.state = 'paused';
  }

  resume(i: number): void {
    const node = this.node(i);
    if (node.proc === null || node.state !== 'paused') return;
    node.proc.kill('SIGCONT');
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
            const r = await request(n.port, ['CLUSTER', 'MYID'], 2000);
            const id = r.kind === '$' ? r.bulk : r.kind === '+' ? r.line : null;
            if (id !== null && id.length > 0) {
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
      await new Promise((r) => setTimeout(r, 100));
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
        const r = await request(n.port, ['CLUSTER', 'SLOTS'], timeoutMs);
        if (r.kind !== '*') continue;
        const out = new Map<number, number[]>();
        for (const entry of r.items) {
          const start = Number(entry.items[0]?.line);
          const replicas = entry.items.slice(2).flatMap((node) => {
            const port = Number(node.items[1]?.line);
            const i = this.nodes.findIndex((m) => m.port === port);
            return i < 0 ? [] : [i];
          });
          out.set(start, replicas);
        }
        return out;
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
      const r = await request(node.port, ['INFO', 'raft'], timeoutMs);
      if (r.kind !== '$' && r.kind !== '=') return null;
      return parseRaftInfo(r.bulk ?? '');
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
        if (n.proc === null) return;
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
