// The ordo node: accepts clients, routes their commands through the command
// table to the group, and stops gracefully. The group is served by one of two
// engines (--engine): `local`, a LocalGroup on DIR/ordo.mdb, or `raft`
// (experimental), a Raft cluster of one on the path clusters will use: one
// MultiRaftHost, one data group whose only voter is this node, its log in
// DIR/raft.mdb, and an in-memory bus with no other node on it.

import { randomBytes } from 'node:crypto';
import { createServer, type Server, type Socket } from 'node:net';
import { resolve } from 'node:path';
import type { Config } from '../config.js';
import { ERR, unknownCommand, unknownSubcommand, wrongArity } from '../errors.js';
import { MultiRaftHost } from '../multiraft/host.js';
import { LocalGroup } from '../multiraft/local-group.js';
import type { Group, GroupStats, ReadOutcome } from '../multiraft/group.js';
import { DEFAULT_PROPOSALS_IN_FLIGHT_MAX, DEFAULT_READ_WAITERS_MAX, DEFAULT_REQUEST_TIMEOUT_MS, type RaftGroup } from '../multiraft/raft-group.js';
import type { Reply } from '../resp/encoder.js';
import { R } from '../resp/encoder.js';
import { StateMachine, type Op, type OpResult, type StoredValue } from '../sequencer/state-machine.js';
import { LmdbStore } from '../storage/lmdb.js';
import { checkDataDirFor, LOCAL_ENGINE, RAFT_ENGINE } from '../storage/files.js';
import { RaftLogStore } from '../storage/raft-lmdb.js';
import { DataDirectoryError, type KeyspaceStore } from '../storage/store.js';
import { MemoryHub } from '../transport/memory.js';
import { arityOk, type CommandSpec, type CommandTable, type ServerContext, type ServerStats } from './command.js';
import { ADMIN_COMMANDS } from './commands/admin.js';
import { CONNECTION_COMMANDS } from './commands/connection.js';
import { SEQUENCE_COMMANDS } from './commands/sequences.js';
import { STRING_COMMANDS } from './commands/strings.js';
import { WindowAllocator } from '../multiraft/window.js';
import { Connection, type ConnectionHost } from './connection.js';
import { VERSION } from '../version.js';

export function buildCommandTable(): CommandTable {
  const table = new Map<string, CommandSpec>();
  for (const spec of [...STRING_COMMANDS, ...SEQUENCE_COMMANDS, ...CONNECTION_COMMANDS, ...ADMIN_COMMANDS]) {
    if (table.has(spec.name)) throw new Error(`command ${spec.name} defined twice`);
    table.set(spec.name, spec);
  }
  return table;
}

const MAX_CLIENTS_REPLY = `-${ERR.maxClients}\r\n`;

/** With --engine raft: this node's id when raft.mdb records none yet (a new data directory). */
export const RAFT_DEFAULT_NODE_ID = 'n1';
/** raft.mdb metadata key holding this node's id, written on first start. */
export const RAFT_NODE_ID_META_KEY = 'node-id';
/** With --engine raft: the Raft group holding the keyspace. */
export const RAFT_DATA_GROUP_ID = 1;

/** Requests the arrival-order gate below may hold before it answers `overloaded`. */
export const ORDER_GATE_HELD_MAX = DEFAULT_PROPOSALS_IN_FLIGHT_MAX + DEFAULT_READ_WAITERS_MAX;

interface HeldRequest {
  readonly isWrite: boolean;
  /** When it arrived: a request held longer than the request timeout is refused, never started. */
  readonly arrivedMs: number;
  readonly start: () => void;
  readonly refuse: () => void;
}

/**
 * Keeps the local engine's promise that a command sees exactly the writes
 * that arrived before it: `SET x 5`, `INCR x`, `GET x`, `DEL x` pipelined on
 * one connection read 6. A RaftGroup applies a write when its entry commits
 * and serves a read once its read index is applied, in a later loop turn, so
 * a read could miss the writes just before it or see writes sent after it.
 * Requests therefore go to the group in arrival order, in phases: writes
 * (any number at once) while no read is in flight, reads (any number at once)
 * while no write is in flight. A write-only or read-only load passes straight
 * through; a mixed one pays a loop turn per switch.
 */
export class ArrivalOrderedGroup implements Group {
  private writesInFlight = 0;
  private readsInFlight = 0;
  private readonly held: HeldRequest[] = [];
  private heldHead = 0;
  private pumping = false;

  constructor(private readonly inner: RaftGroup) {}

  /** The Raft group underneath (INFO reads its term and indexes). */
  get raftGroup(): RaftGroup {
    return this.inner;
  }

  propose(op: Op, done: (result: OpResult) => void): void {
    this.enqueue({
      isWrite: true,
      arrivedMs: Date.now(),
      start: () => {
        this.writesInFlight++;
        this.inner.propose(op, (result) => {
          this.writesInFlight--;
          done(result);
          this.pump();
        });
      },
      refuse: () => done({ type: 'error', error: 'overloaded' }),
    });
  }

  read<T>(query: (sm: StateMachine) => T, done: (outcome: ReadOutcome<T>) => void): void {
    this.enqueue({
      isWrite: false,
      arrivedMs: Date.now(),
      start: () => {
        this.readsInFlight++;
        this.inner.read(query, (outcome) => {
          this.readsInFlight--;
          done(outcome);
          this.pump();
        });
      },
      // As the group itself answers past its bound on waiting reads.
      refuse: () => done({ ok: false, error: 'overloaded' }),
    });
  }

  private enqueue(request: HeldRequest): void {
    if (this.held.length - this.heldHead >= ORDER_GATE_HELD_MAX) {
      request.refuse();
      return;
    }
    this.held.push(request);
    this.pump();
  }

  /** Starts held requests, oldest first, while the head may run beside what is in flight. */
  private pump(): void {
    if (this.pumping) return; // the running loop sees the change
    this.pumping = true;
    try {
      const staleBeforeMs = Date.now() - DEFAULT_REQUEST_TIMEOUT_MS;
      while (this.heldHead < this.held.length) {
        const head = this.held[this.heldHead] as HeldRequest;
        if (head.arrivedMs < staleBeforeMs) {
          // Held past the request timeout behind other phases: refused, and never reached the group.
          this.heldHead++;
          head.refuse();
          continue;
        }
        if (head.isWrite ? this.readsInFlight > 0 : this.writesInFlight > 0) break;
        this.heldHead++;
        head.start();
      }
      if (this.heldHead === this.held.length) {
        this.held.length = 0;
        this.heldHead = 0;
      } else if (this.heldHead > 1024 && this.heldHead * 2 > this.held.length) {
        this.held.splice(0, this.heldHead);
        this.heldHead = 0;
      }
    } finally {
      this.pumping = false;
    }
  }

  peek(key: string): StoredValue | undefined {
    return this.inner.peek(key);
  }

  get stats(): GroupStats {
    return this.inner.stats;
  }

  get keyCount(): number {
    return this.inner.keyCount;
  }

  isLeader(): boolean {
    return this.inner.isLeader();
  }

  leaderId(): string | null {
    return this.inner.leaderId();
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

/** What serves the keyspace, and how to stop it once every accepted write is answered. */
interface EngineHandle {
  readonly group: Group;
  /** The Raft group, with --engine raft. */
  readonly raftGroup: RaftGroup | null;
  close(): Promise<void>;
}

async function openLocalEngine(config: Config, store?: KeyspaceStore): Promise<EngineHandle> {
  const keyspace = store ?? LmdbStore.open(config.dataDir, config.fsync);
  const sm = new StateMachine();
  try {
    keyspace.recover(sm);
  } catch (e) {
    await keyspace.close();
    throw e;
  }
  const group = new LocalGroup(sm, keyspace);
  return { group, raftGroup: null, close: () => group.close() };
}

/**
 * A Raft cluster of one: one MultiRaftHost, one data group whose only voter is
 * this node (so it leads at once), its log in DIR/raft.mdb, and an in-memory
 * bus that has no other node on it.
 */
async function openRaftEngine(config: Config): Promise<EngineHandle> {
  // Before raft.mdb is created or opened: not a local engine's directory, nor a wrong --data.
  checkDataDirFor(resolve(config.dataDir), RAFT_ENGINE, LOCAL_ENGINE);
  const store = RaftLogStore.open(config.dataDir, { fsync: config.fsync });
  let host: MultiRaftHost | null = null;
  let hub: MemoryHub | null = null;
  try {
    const recorded = store.getMeta(RAFT_NODE_ID_META_KEY);
    let nodeId = RAFT_DEFAULT_NODE_ID;
    if (recorded === undefined) {
      store.putMeta(RAFT_NODE_ID_META_KEY, Buffer.from(nodeId, 'utf8')); // written with the first turn
    } else {
      nodeId = Buffer.from(recorded).toString('utf8');
      if (nodeId === '') throw new DataDirectoryError(`${store.description}: empty node id recorded; refusing to start`);
    }
    hub = new MemoryHub();
    const openedHub = hub;
    host = new MultiRaftHost({ nodeId, transport: hub.transport(nodeId), store, random: Math.random });
    const openedHost = host;
    const group = host.addGroup(RAFT_DATA_GROUP_ID, [nodeId]);
    return {
      group: new ArrivalOrderedGroup(group),
      raftGroup: group,
      close: async () => {
        await openedHost.close();
        await store.close();
        await openedHub.close();
      },
    };
  } catch (e) {
    host?.halt();
    await store.close();
    await hub?.close();
    throw e;
  }
}

export class OrdoServer implements ConnectionHost {
  readonly context: ServerContext;
  private readonly connections = new Set<Connection>();
  private readonly stats: ServerStats = {
    connectionsReceived: 0,
    commandsProcessed: 0,
    rejectedConnections: 0,
    protocolErrors: 0,
    errorReplies: 0,
  };
  private nextClientId = 1;
  private stopping: Promise<void> | null = null;

  private constructor(
    readonly config: Config,
    private readonly net: Server,
    readonly group: Group,
    readonly port: number,
    /** Stops the engine once every accepted write is durable and answered. */
    private readonly closeEngine: () => Promise<void>,
  ) {
    this.context = {
      config,
      group,
      windows: new WindowAllocator(group),
      startedAtMs: Date.now(),
      version: VERSION,
      runId: randomBytes(20).toString('hex'),
      stats: this.stats,
      connections: this.connections,
      port,
      commands: buildCommandTable(),
    };
    net.on('connection', (socket) => this.accept(socket));
  }

  /** Opens storage, recovers state and listens. Throws DataDirectoryError for an unusable data directory. */
  static async start(config: Config, store?: KeyspaceStore): Promise<OrdoServer> {
    const engine = config.engine === 'raft' && store === undefined ? await openRaftEngine(config) : await openLocalEngine(config, store);
    const net = createServer({ noDelay: true });
    try {
      await new Promise<void>((resolve, reject) => {
        net.once('error', reject);
        net.listen(config.port, config.host, () => {
          net.off('error', reject);
          resolve();
        });
      });
    } catch (e) {
      await engine.close();
      throw e;
    }
    const address = net.address();
    const port = typeof address === 'object' && address !== null ? address.port : config.port;
    const server = new OrdoServer(config, net, engine.group, port, () => engine.close());
    // Another node may hand out a window key's values once this one stops leading.
    engine.raftGroup?.onLeadershipChange((isLeader) => {
      if (!isLeader) server.context.windows.reset();
    });
    return server;
  }

  private accept(socket: Socket): void {
    if (this.stopping !== null) {
      socket.destroy();
      return;
    }
    this.stats.connectionsReceived++;
    if (this.connections.size >= this.config.maxClients) {
      this.stats.rejectedConnections++;
      socket.end(MAX_CLIENTS_REPLY);
      return;
    }
    this.connections.add(new Connection(socket, this.nextClientId++, this));
  }

  onClose(conn: Connection): void {
    this.connections.delete(conn);
  }

  onReply(reply: Reply): void {
    if (reply.kind === 'error') {
      this.stats.errorReplies++;
      if (reply.value.startsWith('ERR Protocol error')) this.stats.protocolErrors++;
    }
  }

  dispatch(conn: Connection, args: Buffer[], respond: (reply: Reply) => void): void {
    this.stats.commandsProcessed++;
    const first = args[0] as Buffer;
    const name = first.toString('latin1').toLowerCase();
    let spec = this.context.commands.get(name);
    if (spec === undefined) {
      respond(R.error(unknownCommand(first.toString('latin1'), args.slice(1).map((a) => a.toString('latin1')))));
      return;
    }
    if (spec.subcommands !== undefined && args.length >= 2) {
      const sub = spec.subcommands.get((args[1] as Buffer).toString('latin1').toLowerCase());
      if (sub === undefined) {
        respond(R.error(unknownSubcommand((args[1] as Buffer).toString('latin1'), spec.name)));
        return;
      }
      if (sub !== undefined) spec = sub;
    }
    if (!arityOk(spec, args.length)) {
      respond(R.error(wrongArity(spec.name)));
      return;
    }
    if (!conn.authenticated && !spec.flags.includes('no_auth')) {
      respond(R.error(ERR.noAuth));
      return;
    }
    conn.lastCommandName = spec.name;
    spec.handler(this.context, conn, args, respond);
  }

  /** Stops accepting, lets in-flight writes become durable and be answered, then closes. */
  stop(): Promise<void> {
    if (this.stopping === null) {
      this.stopping = (async () => {
        const closed = new Promise<void>((resolve) => this.net.close(() => resolve()));
        await this.closeEngine();
        // Replies released by the last persist are written before sockets end.
        await new Promise<void>((resolve) => setImmediate(resolve));
        for (const conn of this.connections) {
          conn.flush();
          conn.socket.end();
        }
        const deadline = setTimeout(() => {
          for (const conn of this.connections) conn.socket.destroy();
        }, 2000);
        await closed;
        clearTimeout(deadline);
      })();
    }
    return this.stopping;
  }
}
