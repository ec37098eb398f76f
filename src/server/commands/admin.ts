// Introspection and server commands: INFO, CONFIG, COMMAND, TIME, and the
// cluster commands' answers while cluster mode is off.

import { arch, platform, release } from 'node:os';
import { ERR, unknownSubcommand } from '../../errors.js';
import { globMatch } from '../../glob.js';
import { RaftGroup } from '../../multiraft/raft-group.js';
import { R, textMap, type Reply } from '../../resp/encoder.js';
import { arityOk, command, keyIndexes, type CommandSpec, type ServerContext } from '../command.js';
import { lower } from './common.js';
import { REDIS_COMPAT_VERSION } from './connection.js';

const ADMIN = { group: 'server', aclCategories: ['@admin', '@slow', '@dangerous'] } as const;

// INFO

type Section = [name: string, fields: [string, string | number][]];

function humanBytes(bytes: number): string {
  const units = ['B', 'K', 'M', 'G', 'T'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes}B` : `${value.toFixed(2)}${units[unit]}`;
}

function infoSections(ctx: ServerContext): Section[] {
  const nowMs = Date.now();
  const uptimeS = Math.floor((nowMs - ctx.startedAtMs) / 1000);
  const mem = process.memoryUsage();
  const cpu = process.cpuUsage();
  const stats = ctx.group.stats;
  const host = ctx.host.stats();
  let largestInputBytes = 0;
  let largestOutputBytes = 0;
  for (const c of ctx.connections) {
    largestInputBytes = Math.max(largestInputBytes, c.queryBufferBytes);
    largestOutputBytes = Math.max(largestOutputBytes, c.outputBufferBytes);
  }
  const keys = ctx.group.keyCount;
  return [
    [
      'server',
      [
        ['redis_version', REDIS_COMPAT_VERSION],
        ['redis_git_sha1', '00000000'],
        ['redis_git_dirty', 0],
        ['redis_build_id', '0'],
        ['redis_mode', ctx.cluster === null ? 'standalone' : 'cluster'],
        ['os', `${platform()} ${release()} ${arch()}`],
        ['arch_bits', 64],
        ['multiplexing_api', 'epoll'],
        ['process_id', process.pid],
        ['run_id', ctx.runId],
        ['tcp_port', ctx.port],
        ['server_time_usec', nowMs * 1000],
        ['uptime_in_seconds', uptimeS],
        ['uptime_in_days', Math.floor(uptimeS / 86400)],
        ['hz', 10],
        ['executable', process.argv[1] ?? ''],
        ['config_file', ''],
        ['ordo_version', ctx.version],
        ['node_version', process.version],
      ],
    ],
    [
      'clients',
      [
        ['connected_clients', ctx.connections.size],
        ['maxclients', ctx.config.clientsMax],
        ['client_recent_max_input_buffer', largestInputBytes],
        ['client_recent_max_output_buffer', largestOutputBytes],
        ['blocked_clients', 0],
      ],
    ],
    [
      'memory',
      [
        ['used_memory', mem.heapUsed + mem.external],
        ['used_memory_human', humanBytes(mem.heapUsed + mem.external)],
        ['used_memory_rss', mem.rss],
        ['used_memory_rss_human', humanBytes(mem.rss)],
        ['maxmemory', 0],
        ['maxmemory_policy', 'noeviction'],
      ],
    ],
    [
      'persistence',
      [
        ['loading', 0],
        ['async_loading', 0],
        ['rdb_bgsave_in_progress', 0],
        ['aof_enabled', 0],
        ['aof_rewrite_in_progress', 0],
      ],
    ],
    [
      'stats',
      [
        ['total_connections_received', ctx.stats.connectionsReceived],
        ['total_commands_processed', ctx.stats.commandsProcessed],
        ['rejected_connections', ctx.stats.rejectedConnections],
        ['total_error_replies', ctx.stats.errorReplies],
        ['total_protocol_errors', ctx.stats.protocolErrors],
      ],
    ],
    [
      'replication',
      [
        ['role', 'master'],
        ['connected_slaves', 0],
      ],
    ],
    [
      'cpu',
      [
        ['used_cpu_sys', (cpu.system / 1e6).toFixed(6)],
        ['used_cpu_user', (cpu.user / 1e6).toFixed(6)],
      ],
    ],
    ['cluster', [['cluster_enabled', ctx.cluster === null ? 0 : 1]]],
    ['keyspace', keys > 0 ? [['db0', `keys=${keys},expires=0,avg_ttl=0`]] : []],
    ['raft', ctx.cluster?.infoLines() ?? []],
    [
      'ordo',
      [
        ['ordo_version', ctx.version],
        ['mode', ctx.cluster === null ? 'single' : 'cluster'],
        ['engine', ctx.cluster === null ? 'raft' : 'cluster'],
        ...raftFields(ctx),
        ['fsync', ctx.config.fsync],
        ['data_dir', ctx.config.dataDir],
        ['batches_persisted', stats.batchesPersisted],
        ['ops_persisted', stats.opsPersisted],
        ['ops_per_batch_avg', stats.batchesPersisted === 0 ? '0.00' : (stats.opsPersisted / stats.batchesPersisted).toFixed(2)],
        ['batches_in_flight', stats.batchesInFlight],
        ['persist_failures', stats.persistFailures],
        ['disk_full', host.diskFull ? 1 : 0],
        ['checkpoints', host.checkpoints],
        ['keys_in_memory', host.keysInMemory],
        ['default_mode', ctx.config.defaultMode],
        ['window_keys', ctx.config.windowKeys.join(',')],
        ['window_sequences_served', ctx.windowStats().keys],
        ['window_reservations', ctx.windowStats().reservations],
        ['window_allocations', ctx.windowStats().served],
      ],
    ],
  ];
}

/** A node alone: the data group as this node sees it. */
function raftFields(ctx: ServerContext): [string, string | number][] {
  // The server may wrap the group (server.ts, ArrivalOrderedGroup); the wrapper names it `raftGroup`.
  const group = ctx.group instanceof RaftGroup ? ctx.group : (ctx.group as { readonly raftGroup?: unknown }).raftGroup;
  if (!(group instanceof RaftGroup)) return [];
  const st = group.node.status();
  return [
    ['raft_node_id', st.id],
    ['raft_group', group.groupId],
    ['raft_role', st.role],
    ['raft_leader', st.leader ?? ''],
    ['raft_term', st.term],
    ['raft_commit_index', st.commit],
    ['raft_applied_index', group.appliedIndex],
    ['raft_last_index', st.lastIndex],
  ];
}

const DEFAULT_SECTIONS = new Set(['server', 'clients', 'memory', 'persistence', 'stats', 'replication', 'cpu', 'cluster', 'keyspace', 'ordo']);

export function infoText(ctx: ServerContext, requested: readonly string[]): string {
  const wanted = new Set<string>();
  for (const name of requested.length === 0 ? ['default'] : requested) {
    if (name === 'default' || name === 'all' || name === 'everything') for (const s of DEFAULT_SECTIONS) wanted.add(s);
    if (name === 'all' || name === 'everything') wanted.add('raft');
    else wanted.add(name);
  }
  const blocks: string[] = [];
  for (const [name, fields] of infoSections(ctx)) {
    if (!wanted.has(name)) continue;
    const title = name === 'cpu' ? 'CPU' : name[0]?.toUpperCase() + name.slice(1);
    blocks.push([`# ${title}`, ...fields.map(([k, v]) => `${k}:${v}`)].join('\r\n'));
  }
  return blocks.length === 0 ? '' : `${blocks.join('\r\n\r\n')}\r\n`;
}

// CONFIG

function configParameters(ctx: ServerContext): [string, string][] {
  const c = ctx.config;
  return [
    ['bind', c.host],
    ['port', String(ctx.port)],
    ['dir', c.dataDir],
    ['requirepass', c.requirepass ?? ''],
    ['databases', '1'],
    ['maxclients', String(c.clientsMax)],
    ['proto-max-bulk-len', String(c.bulkBytesMax)],
    ['client-query-buffer-limit', String(c.queryBufferBytesMax)],
    ['appendonly', 'no'],
    ['appendfsync', c.fsync === 'always' ? 'always' : 'no'],
    ['save', ''],
    ['timeout', '0'],
    ['cluster-enabled', ctx.cluster === null ? 'no' : 'yes'],
    ['maxmemory', '0'],
    ['maxmemory-policy', 'noeviction'],
  ];
}

// COMMAND

function keySpecs(spec: CommandSpec): Reply {
  if (spec.firstKey === 0) return R.array([]);
  const write = spec.flags.includes('write');
  return R.array([
    textMap([
      ['flags', R.set((write ? ['RW', 'UPDATE'] : ['RO', 'ACCESS']).map((f) => R.simple(f)))],
      [
        'begin_search',
        textMap([
          ['type', R.bulk('index')],
          ['spec', textMap([['index', R.int(spec.firstKey)]])],
        ]),
      ],
      [
        'find_keys',
        textMap([
          ['type', R.bulk('range')],
          [
            'spec',
            textMap([
              ['lastkey', R.int(spec.lastKey < 0 ? spec.lastKey : spec.lastKey - spec.firstKey)],
              ['keystep', R.int(spec.keyStep)],
              ['limit', R.int(0)],
            ]),
          ],
        ]),
      ],
    ]),
  ]);
}

export function commandInfo(spec: CommandSpec): Reply {
  return R.array([
    R.bulk(spec.name),
    R.int(spec.arity),
    R.set(spec.flags.map((f) => R.simple(f))),
    R.int(spec.firstKey),
    R.int(spec.lastKey),
    R.int(spec.keyStep),
    R.set(spec.aclCategories.map((c) => R.simple(c))),
    R.array([]),
    keySpecs(spec),
    R.array([...(spec.subcommands?.values() ?? [])].map(commandInfo)),
  ]);
}

function commandDocs(spec: CommandSpec): Reply {
  const entries: [string, Reply][] = [
    ['summary', R.bulk(spec.summary)],
    ['since', R.bulk(spec.since)],
    ['group', R.bulk(spec.group)],
    ['complexity', R.bulk(spec.complexity)],
  ];
  if (spec.subcommands !== undefined) {
    entries.push(['subcommands', R.map([...spec.subcommands.values()].map((s) => [R.bulk(s.name), commandDocs(s)] as const))]);
  }
  return textMap(entries);
}

function lookup(ctx: ServerContext, name: string): CommandSpec | undefined {
  const [top = '', subName] = name.toLowerCase().split('|');
  const spec = ctx.commands.get(top);
  return subName === undefined ? spec : spec?.subcommands?.get(subName);
}

const COMMAND_SUBCOMMANDS: readonly CommandSpec[] = [
  command({
    name: 'command|count',
    arity: 2,
    flags: ['loading', 'stale'],
    group: 'server',
    summary: 'Returns a count of commands.',
    handler: (ctx, _conn, _args, respond) => respond(R.int(ctx.commands.size)),
  }),
  command({
    name: 'command|list',
    arity: -2,
    flags: ['loading', 'stale'],
    group: 'server',
    summary: 'Returns a list of command names.',
    handler: (ctx, _conn, args, respond) => {
      let names = [...ctx.commands.keys()];
      if (args.length > 2) {
        if (args.length !== 5 || lower(args[2]) !== 'filterby') return respond(R.error(ERR.syntax));
        const kind = lower(args[3]);
        const value = lower(args[4]);
        if (kind === 'pattern') names = names.filter((n) => globMatch(value, n));
        else if (kind === 'aclcat') names = names.filter((n) => ctx.commands.get(n)?.aclCategories.includes(`@${value}`));
        else if (kind === 'module') names = [];
        else return respond(R.error(ERR.syntax));
      }
      respond(R.array(names.map((n) => R.bulk(n))));
    },
  }),
  command({
    name: 'command|info',
    arity: -2,
    flags: ['loading', 'stale'],
    group: 'server',
    summary: 'Returns information about one, multiple or all commands.',
    handler: (ctx, _conn, args, respond) => {
      const specs = args.length === 2 ? [...ctx.commands.values()] : args.slice(2).map((a) => lookup(ctx, a.toString('latin1')));
      respond(R.array(specs.map((s) => (s === undefined ? R.nilArray : commandInfo(s)))));
    },
  }),
  command({
    name: 'command|docs',
    arity: -2,
    flags: ['loading', 'stale'],
    group: 'server',
    summary: 'Returns documentary information about one, multiple or all commands.',
    handler: (ctx, _conn, args, respond) => {
      const specs = args.length === 2 ? [...ctx.commands.values()] : args.slice(2).map((a) => lookup(ctx, a.toString('latin1')));
      respond(R.map(specs.filter((s): s is CommandSpec => s !== undefined).map((s) => [R.bulk(s.name), commandDocs(s)] as const)));
    },
  }),
  command({
    name: 'command|getkeys',
    arity: -3,
    flags: ['loading', 'stale'],
    group: 'server',
    summary: 'Extracts the key names from an arbitrary command.',
    handler: (ctx, _conn, args, respond) => {
      const rest = args.slice(2);
      let spec = ctx.commands.get(lower(rest[0]));
      if (spec?.subcommands !== undefined && rest.length > 1) spec = spec.subcommands.get(lower(rest[1])) ?? spec;
      if (spec === undefined) return respond(R.error(ERR.getKeysInvalidCommand));
      if (!arityOk(spec, rest.length)) return respond(R.error(ERR.getKeysInvalidArity));
      const indexes = keyIndexes(spec, rest.length);
      if (indexes.length === 0) return respond(R.error(ERR.getKeysNoKeys));
      respond(R.array(indexes.map((i) => R.bulk(rest[i] as Buffer))));
    },
  }),
  command({
    name: 'command|help',
    arity: 2,
    flags: ['loading', 'stale'],
    group: 'server',
    summary: 'Returns helpful text about the different subcommands.',
    handler: (_ctx, _conn, _args, respond) =>
      respond(
        R.array(
          [
            'COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:',
            '(no subcommand)',
            '    Return details about all commands.',
            'COUNT',
            '    Return the total number of commands in this server.',
            'LIST [FILTERBY (MODULE <module-name>|ACLCAT <category>|PATTERN <pattern>)]',
            '    Return a list of all commands in this server.',
            'INFO [<command-name> ...]',
            '    Return details about multiple commands.',
            'DOCS [<command-name> ...]',
            '    Return documentation details about multiple commands.',
            'GETKEYS <full-command>',
            '    Return the keys from a full command.',
            'HELP',
            '    Print this help.',
          ].map((l) => R.simple(l)),
        ),
      ),
  }),
];

const CONFIG_SUBCOMMANDS: readonly CommandSpec[] = [
  command({
    name: 'config|get',
    arity: -3,
    flags: ['admin', 'noscript', 'loading', 'stale'],
    ...ADMIN,
    summary: 'Returns the effective values of configuration parameters.',
    handler: (ctx, _conn, args, respond) => {
      // Redis echoes a parameter asked for by its exact name as it was written (CONFIG GET DATABASES).
      const asked = args.slice(2).map((a) => a.toString('latin1'));
      const entries: (readonly [Reply, Reply])[] = [];
      for (const [name, value] of configParameters(ctx)) {
        const exact = asked.find((p) => p.toLowerCase() === name);
        if (exact !== undefined) entries.push([R.bulk(exact), R.bulk(value)]);
        else if (asked.some((p) => globMatch(p.toLowerCase(), name))) entries.push([R.bulk(name), R.bulk(value)]);
      }
      respond(R.map(entries));
    },
  }),
  command({
    name: 'config|set',
    arity: -4,
    flags: ['admin', 'noscript', 'loading', 'stale'],
    ...ADMIN,
    summary: 'Not supported: ordo is configured at start.',
    handler: (_ctx, _conn, _args, respond) => respond(R.error(ERR.configSetUnsupported)),
  }),
  command({
    name: 'config|resetstat',
    arity: 2,
    flags: ['admin', 'noscript', 'loading', 'stale'],
    ...ADMIN,
    summary: "Resets the server's statistics.",
    handler: (ctx, _conn, _args, respond) => {
      ctx.stats.commandsProcessed = 0;
      ctx.stats.connectionsReceived = 0;
      ctx.stats.rejectedConnections = 0;
      ctx.stats.errorReplies = 0;
      ctx.stats.protocolErrors = 0;
      respond(R.ok);
    },
  }),
  command({
    name: 'config|help',
    arity: 2,
    flags: ['loading', 'stale'],
    ...ADMIN,
    summary: 'Returns helpful text about the different subcommands.',
    handler: (_ctx, _conn, _args, respond) =>
      respond(
        R.array(
          [
            'CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:',
            'GET <pattern>',
            '    Return parameters matching the glob-like <pattern> and their values.',
            'SET <directive> <value>',
            '    Not supported by ordo: restart the node with the option changed.',
            'RESETSTAT',
            '    Reset statistics reported by the INFO command.',
            'HELP',
            '    Print this help.',
          ].map((l) => R.simple(l)),
        ),
      ),
  }),
];

export const ADMIN_COMMANDS: readonly CommandSpec[] = [
  command({
    name: 'info',
    arity: -1,
    flags: ['loading', 'stale', 'sentinel'],
    group: 'server',
    aclCategories: ['@slow', '@dangerous'],
    summary: 'Returns information and statistics about the server.',
    handler: (ctx, _conn, args, respond) =>
      respond(
        R.verbatim(
          infoText(
            ctx,
            args.slice(1).map((a) => lower(a)),
          ),
        ),
      ),
  }),
  command({
    name: 'time',
    arity: 1,
    flags: ['loading', 'stale', 'fast'],
    group: 'server',
    aclCategories: ['@fast'],
    since: '2.6.0',
    summary: 'Returns the server time.',
    handler: (_ctx, _conn, _args, respond) => {
      const micros = BigInt(Date.now()) * 1000n + BigInt(Math.floor((performance.now() % 1) * 1000));
      respond(R.array([R.bulk(String(micros / 1000000n)), R.bulk(String(micros % 1000000n))]));
    },
  }),
  command({
    name: 'command',
    arity: -1,
    flags: ['loading', 'stale'],
    group: 'server',
    aclCategories: ['@slow', '@connection'],
    since: '2.8.13',
    complexity: 'O(N) where N is the total number of Redis commands',
    summary: 'Returns detailed information about all commands.',
    subcommands: COMMAND_SUBCOMMANDS,
    handler: (ctx, _conn, args, respond) => {
      if (args.length === 1) return respond(R.array([...ctx.commands.values()].map(commandInfo)));
      respond(R.error(unknownSubcommand(args[1]?.toString('latin1') ?? '', 'command')));
    },
  }),
  command({
    name: 'config',
    arity: -2,
    flags: [],
    ...ADMIN,
    summary: 'A container for server configuration commands.',
    subcommands: CONFIG_SUBCOMMANDS,
    handler: (_ctx, _conn, args, respond) => respond(R.error(unknownSubcommand(args[1]?.toString('latin1') ?? '', 'config'))),
  }),
];
