// The ordo node: accepts clients, routes their commands through the command
// table to the group, and stops gracefully.

import { randomBytes } from 'node:crypto';
import { createServer, type Server, type Socket } from 'node:net';
import type { Config } from '../config.js';
import { ERR, unknownCommand, unknownSubcommand, wrongArity } from '../errors.js';
import { LocalGroup } from '../multiraft/local-group.js';
import type { Group } from '../multiraft/group.js';
import type { Reply } from '../resp/encoder.js';
import { R } from '../resp/encoder.js';
import { StateMachine } from '../sequencer/state-machine.js';
import { LmdbStore } from '../storage/lmdb.js';
import type { KeyspaceStore } from '../storage/store.js';
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
    const keyspace = store ?? LmdbStore.open(config.dataDir, config.fsync);
    const sm = new StateMachine();
    try {
      keyspace.recover(sm);
    } catch (e) {
      await keyspace.close();
      throw e;
    }
    const group = new LocalGroup(sm, keyspace);
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
      await group.close();
      throw e;
    }
    const address = net.address();
    const port = typeof address === 'object' && address !== null ? address.port : config.port;
    return new OrdoServer(config, net, group, port);
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
        await this.group.close();
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
