// The ordo node: accepts clients, routes their commands through the command
// table to the keyspace, and stops gracefully. Every node runs its keyspace
// through Raft (one engine):
// - a node alone is a Raft cluster of one: one MultiRaftHost, one data group
//   whose only voter is this node, its log in the data directory, and an
//   in-memory bus with no other node on it;
// - a cluster member (--cluster, or a data directory that holds a member's
//   state): src/cluster/engine.ts, with data commands routed by
//   src/server/router.ts.
// Data directories of earlier versions (raft.mdb, ordo.mdb) are imported into
// the node's log once, at start (src/storage/upgrade.ts).

import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { createServer, type Server, type Socket } from 'node:net';
import type { Config } from '../config.js';
import { ERR, protocolError, unknownCommand, unknownSubcommand, wrongArity } from '../errors.js';
import { ClusterEngine, META_BOOTSTRAP, META_NODE_ID, openNodeStorage, type ClusterOpenOptions, type NodeStorage } from '../cluster/engine.js';
import { MultiRaftHost } from '../multiraft/host.js';
import { ArrivalOrderedGroup } from '../multiraft/ordered-group.js';
import type { Group } from '../multiraft/group.js';
import type { RaftGroup } from '../multiraft/raft-group.js';
import type { Reply } from '../resp/encoder.js';
import { R } from '../resp/encoder.js';
import { LEGACY_LOCAL_FILES } from '../storage/files.js';
import { DataDirectoryError } from '../storage/store.js';
import { importLegacyKeyspace } from '../storage/upgrade.js';
import { MemoryHub } from '../transport/memory.js';
import { arityOk, type CommandSpec, type CommandTable, type ServerContext, type ServerStats } from './command.js';
import { ADMIN_COMMANDS } from './commands/admin.js';
import { CLUSTER_COMMANDS } from './commands/cluster.js';
import { CONNECTION_COMMANDS } from './commands/connection.js';
import { SEQUENCE_COMMANDS } from './commands/sequences.js';
import { STRING_RANGE_COMMANDS } from './commands/string-ranges.js';
import { STRING_COMMANDS } from './commands/strings.js';
import { WindowAllocator } from '../multiraft/window.js';
import { Connection, type ConnectionHost } from './connection.js';
import { ClusterRouter } from './router.js';
import { VERSION } from '../version.js';

export function buildCommandTable(): CommandTable {
  const table = new Map<string, CommandSpec>();
  for (const spec of [...STRING_COMMANDS, ...STRING_RANGE_COMMANDS, ...SEQUENCE_COMMANDS, ...CONNECTION_COMMANDS, ...ADMIN_COMMANDS, ...CLUSTER_COMMANDS]) {
    if (table.has(spec.name)) throw new Error(`command ${spec.name} defined twice`);
    table.set(spec.name, spec);
  }
  return table;
}

const TOO_MANY_CLIENTS_REPLY = `-${ERR.tooManyClients}\r\n`;

/** A node alone: this node's id when the data directory records none yet (a new data directory). */
export const RAFT_DEFAULT_NODE_ID = 'n1';
/** Metadata key holding this node's id, written on first start (the cluster engine's META_NODE_ID). */
export const RAFT_NODE_ID_META_KEY = META_NODE_ID;
/** A node alone: the Raft group holding the keyspace. */
export const RAFT_DATA_GROUP_ID = 1;

/** What OrdoServer.start takes besides the configuration (tests only): what a cluster member opens with. */
export type ServerStartOptions = ClusterOpenOptions;

/**
 * Opens the node's storage (its log and keyspace), then the engine: a cluster member with
 * --cluster or when the data directory holds a member's state (a restart
 * needs only --data), else a node alone.
 */
async function openEngine(config: Config, options: ServerStartOptions): Promise<EngineHandle> {
  const storage = await openNodeStorage(config);
  try {
    const member = storage.log.getMeta(META_BOOTSTRAP) !== undefined;
    if (config.cluster !== null || member) {
      if (!member && (storage.log.getMeta(RAFT_NODE_ID_META_KEY) !== undefined || existsSync(join(config.dataDir, LEGACY_LOCAL_FILES.dataFile)))) {
        throw new DataDirectoryError(
          `${config.dataDir} holds the data of a node that runs alone; a cluster is bootstrapped on empty data directories (start it without --cluster, or choose another --data)`,
        );
      }
      const cluster = await ClusterEngine.open(config, storage, options);
      return { group: null, raftGroup: null, cluster, host: cluster.host, close: () => cluster.close() };
    }
    return await openNodeAlone(config, storage);
  } catch (e) {
    await storage.close();
    throw e;
  }
}

/** What serves the keyspace, and how to stop it once every accepted write is answered. */
interface EngineHandle {
  /** The keyspace's group; null for a cluster member, whose router serves each group. */
  readonly group: Group | null;
  /** The data group of a node alone. */
  readonly raftGroup: RaftGroup | null;
  /** The cluster membership, in cluster mode. */
  readonly cluster: ClusterEngine | null;
  /** Every Raft group of this node. */
  readonly host: MultiRaftHost;
  close(): Promise<void>;
}

/**
 * A Raft cluster of one: one MultiRaftHost, one data group whose only voter is
 * this node (so it leads at once), its log in the data directory, and an
 * in-memory bus that has no other node on it.
 */
async function openNodeAlone(config: Config, storage: NodeStorage): Promise<EngineHandle> {
  const store = storage.log;
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
    await importLegacyKeyspace(config.dataDir, store, nodeId, RAFT_DATA_GROUP_ID);
    hub = new MemoryHub();
    const openedHub = hub;
    host = new MultiRaftHost({ nodeId, transport: hub.transport(nodeId), store, keyspace: storage.keyspace, random: Math.random });
    const openedHost = host;
    const group = host.addGroup(RAFT_DATA_GROUP_ID, [nodeId]);
    return {
      group: new ArrivalOrderedGroup(group),
      raftGroup: group,
      cluster: null,
      host: openedHost,
      close: async () => {
        await openedHost.close();
        await storage.close();
        await openedHub.close();
      },
    };
  } catch (e) {
    host?.halt();
    await hub?.close();
    throw e;
  }
}

export class OrdoServer implements ConnectionHost {
  readonly context: ServerContext;
  readonly group: Group;
  private readonly router: ClusterRouter | null;
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
    engine: EngineHandle,
    readonly port: number,
  ) {
    const commands = buildCommandTable();
    this.router = engine.cluster === null ? null : new ClusterRouter(engine.cluster, commands);
    const group = this.router?.nodeGroup ?? engine.group;
    if (group === null) throw new Error('an engine without a group must be a cluster member');
    this.group = group;
    this.closeEngine = () => engine.close();
    const windows = new WindowAllocator(group);
    const router = this.router;
    this.context = {
      config,
      group,
      windows,
      windowStats: router === null ? () => windows.stats : () => router.windowStats(),
      startedAtMs: Date.now(),
      wallClockMs: () => Date.now(),
      version: VERSION,
      runId: randomBytes(20).toString('hex'),
      stats: this.stats,
      connections: this.connections,
      port,
      commands,
      cluster: engine.cluster,
      host: engine.host,
    };
    this.router?.attach(this.context);
    net.on('connection', (socket) => this.accept(socket));
  }

  /** Stops the engine once every accepted write is durable and answered. */
  private readonly closeEngine: () => Promise<void>;

  /** Opens storage, recovers state and listens. Throws DataDirectoryError for an unusable data directory. */
  static async start(config: Config, options: ServerStartOptions = {}): Promise<OrdoServer> {
    const engine = await openEngine(config, options);
    const listen = engine.cluster?.listen ?? { host: config.host, port: config.port };
    const net = createServer({ noDelay: true });
    try {
      await new Promise<void>((resolve, reject) => {
        net.once('error', reject);
        net.listen(listen.port, listen.host, () => {
          net.off('error', reject);
          resolve();
        });
      });
    } catch (e) {
      await engine.close();
      throw e;
    }
    const address = net.address();
    const port = typeof address === 'object' && address !== null ? address.port : listen.port;
    const server = new OrdoServer(config, net, engine, port);
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
    if (this.connections.size >= this.config.clientsMax) {
      this.stats.rejectedConnections++;
      socket.end(TOO_MANY_CLIENTS_REPLY);
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
      if (reply.value.startsWith(protocolError(''))) this.stats.protocolErrors++;
    }
  }

  dispatch(conn: Connection, args: Buffer[], respond: (reply: Reply) => void): void {
    if (this.stopping !== null) {
      // The engine is closing: what was accepted before is answered, nothing new reaches it.
      respond(R.error(ERR.shuttingDown));
      return;
    }
    this.stats.commandsProcessed++;
    const first = args[0] as Buffer;
    const name = first.toString('latin1').toLowerCase();
    let spec = this.context.commands.get(name);
    if (spec === undefined) {
      respond(
        R.error(
          unknownCommand(
            first.toString('latin1'),
            args.slice(1).map((a) => a.toString('latin1')),
          ),
        ),
      );
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
    if (this.router !== null && spec.data !== undefined) this.router.route(spec, args, conn.proto, conn.clusterAware, respond);
    else spec.handler(this.context, conn, args, respond);
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
