// What a command is: its table entry (name, arity, flags, key positions, docs),
// which is also what COMMAND returns, and its handler.

import type { MultiRaftHost } from '../multiraft/host.js';
import type { ClusterEngine } from '../cluster/engine.js';
import type { Config } from '../config.js';
import type { Group } from '../multiraft/group.js';
import type { WindowAllocator, WindowStats } from '../multiraft/window.js';
import type { Reply } from '../resp/encoder.js';
import type { Connection } from './connection.js';

export interface ServerContext {
  readonly config: Config;
  readonly group: Group;
  /** Serves window-mode sequences from memory on this node. */
  readonly windows: WindowAllocator;
  /** Window counters of the whole node (in a cluster, summed over its groups' allocators), for INFO. */
  readonly windowStats: () => WindowStats;
  readonly startedAtMs: number;
  /** Milliseconds since the Unix epoch, as data commands record it (token records); injected so a simulation replays. */
  readonly wallClockMs: () => number;
  readonly version: string;
  readonly runId: string;
  readonly stats: ServerStats;
  readonly connections: ReadonlySet<Connection>;
  /** The port actually listened on (differs from config when it was 0). */
  readonly port: number;
  readonly commands: CommandTable;
  /** This node's cluster membership; null when it runs alone (no --cluster). */
  readonly cluster: ClusterEngine | null;
  /** Every Raft group of this node (alone or a cluster member), for INFO. */
  readonly host: MultiRaftHost;
}

export interface ServerStats {
  connectionsReceived: number;
  commandsProcessed: number;
  rejectedConnections: number;
  protocolErrors: number;
  errorReplies: number;
}

export type Respond = (reply: Reply) => void;

export type Handler = (ctx: ServerContext, conn: Connection, args: readonly Buffer[], respond: Respond) => void;

/**
 * A data command's handler: it reads or writes the keyspace of `ctx.group`
 * and needs no client connection, so a node can run it for a command another
 * node forwarded (cluster mode).
 */
export type DataHandler = (ctx: ServerContext, args: readonly Buffer[], respond: Respond) => void;

export interface CommandSpec {
  /** Lower-case; subcommands are `container|sub`. */
  readonly name: string;
  /** Redis arity: N means exactly N arguments (name included), -N at least N. */
  readonly arity: number;
  readonly flags: readonly string[];
  readonly firstKey: number;
  readonly lastKey: number;
  readonly keyStep: number;
  readonly aclCategories: readonly string[];
  readonly group: string;
  readonly summary: string;
  readonly since: string;
  readonly complexity: string;
  readonly handler: Handler;
  /** Set for data commands (the keyspace's commands), which cluster mode routes to the key's group. */
  readonly data?: DataHandler;
  readonly subcommands?: ReadonlyMap<string, CommandSpec>;
}

export type CommandTable = ReadonlyMap<string, CommandSpec>;

type SpecInput = Omit<CommandSpec, 'firstKey' | 'lastKey' | 'keyStep' | 'aclCategories' | 'since' | 'complexity' | 'subcommands' | 'handler' | 'data'> &
  Partial<Pick<CommandSpec, 'firstKey' | 'lastKey' | 'keyStep' | 'aclCategories' | 'since' | 'complexity'>> & {
    readonly subcommands?: readonly CommandSpec[];
  } & ({ readonly handler: Handler; readonly data?: never } | { readonly data: DataHandler; readonly handler?: never });

/** Builds a table entry; keyless unless key positions are given. */
export function command(input: SpecInput): CommandSpec {
  const { subcommands, handler, data, ...rest } = input;
  const spec: CommandSpec = {
    firstKey: 0,
    lastKey: 0,
    keyStep: 0,
    aclCategories: [],
    since: '1.0.0',
    complexity: 'O(1)',
    ...rest,
    ...(data === undefined
      ? { handler }
      : { data, handler: (ctx: ServerContext, _conn: Connection, args: readonly Buffer[], respond: Respond) => data(ctx, args, respond) }),
    ...(subcommands === undefined ? {} : { subcommands: new Map(subcommands.map((s) => [s.name.split('|')[1] ?? s.name, s])) }),
  };
  return spec;
}

/** Key argument indexes of one call, per the spec's first/last/step. */
export function keyIndexes(spec: CommandSpec, argc: number): number[] {
  if (spec.firstKey === 0) return [];
  const last = spec.lastKey < 0 ? argc + spec.lastKey : spec.lastKey;
  const out: number[] = [];
  for (let i = spec.firstKey; i <= last && i < argc; i += Math.max(1, spec.keyStep)) out.push(i);
  return out;
}

export function arityOk(spec: CommandSpec, argc: number): boolean {
  return spec.arity >= 0 ? argc === spec.arity : argc >= -spec.arity;
}
