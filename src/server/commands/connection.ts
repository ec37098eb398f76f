// Connection commands: PING ECHO HELLO AUTH SELECT CLIENT QUIT RESET.

import { clientInfoSpaces, ERR, helloOptionSyntax, unknownClientType, unknownSubcommand, unrecognizedOption, wrongArity } from '../../errors.js';
import { R, textMap, type Reply } from '../../resp/encoder.js';
import { parseInt64 } from '../../sequencer/numbers.js';
import { command, type CommandSpec, type ServerContext } from '../command.js';
import { lower } from './common.js';
import type { Connection } from '../connection.js';

/** The Redis version ordo answers as: the one whose replies it matches. */
export const REDIS_COMPAT_VERSION = '7.0.15';

const text = (arg: Buffer | undefined): string => (arg === undefined ? '' : arg.toString('latin1'));
const CONN = { group: 'connection', aclCategories: ['@fast', '@connection'] } as const;

/** Checks a password for `user`; ordo has one user, "default". */
function checkAuth(ctx: ServerContext, user: string, password: string): boolean {
  const required = ctx.config.requirepass;
  if (user !== 'default') return false;
  return required === null || password === required;
}

/** Redis allows client names made of printable ASCII without spaces. */
function validName(name: string): boolean {
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c < 33 || c > 126) return false;
  }
  return true;
}

export function clientInfoLine(ctx: ServerContext, c: Connection): string {
  const nowMs = Date.now();
  const fields: [string, string | number][] = [
    ['id', c.id],
    ['addr', c.remoteAddress],
    ['laddr', c.localAddress],
    ['fd', -1],
    ['name', c.name ?? ''],
    ['age', Math.floor((nowMs - c.createdAtMs) / 1000)],
    ['idle', Math.floor((nowMs - c.lastCommandAtMs) / 1000)],
    ['flags', 'N'],
    ['db', 0],
    ['sub', 0],
    ['psub', 0],
    ['ssub', 0],
    ['multi', -1],
    ['qbuf', c.queryBufferBytes],
    ['qbuf-free', Math.max(0, ctx.config.queryBufferBytesMax - c.queryBufferBytes)],
    ['argv-mem', 0],
    ['multi-mem', 0],
    ['rbs', 0],
    ['rbp', 0],
    ['obl', 0],
    ['oll', c.pendingReplies],
    ['omem', c.outputBufferBytes],
    ['tot-mem', c.queryBufferBytes + c.outputBufferBytes],
    ['events', 'r'],
    ['cmd', c.lastCommandName],
    ['user', 'default'],
    ['redir', -1],
    ['resp', c.proto],
    ['lib-name', c.libName],
    ['lib-ver', c.libVersion],
  ];
  return fields.map(([k, v]) => `${k}=${v}`).join(' ');
}

function helloReply(ctx: ServerContext, conn: Connection): Reply {
  return textMap([
    ['server', R.bulk('redis')],
    ['version', R.bulk(REDIS_COMPAT_VERSION)],
    ['proto', R.int(conn.proto)],
    ['id', R.int(conn.id)],
    ['mode', R.bulk(ctx.cluster === null ? 'standalone' : 'cluster')],
    ['role', R.bulk('master')],
    ['modules', R.array([])],
  ]);
}

const CLIENT_HELP = [
  'CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:',
  'GETNAME',
  '    Return the name of the current connection.',
  'ID',
  '    Return the ID of the current connection.',
  'INFO',
  '    Return information about the current client connection.',
  'KILL <ip:port>',
  '    Kill connection made from <ip:port>.',
  'KILL <option> <value> [<option> <value> [...]]',
  '    Kill connections. Options are: ID <client-id>, ADDR <ip:port>, LADDR <ip:port>, SKIPME (YES|NO).',
  'LIST [options ...]',
  '    Return information about client connections. Options: TYPE (NORMAL|MASTER|REPLICA|PUBSUB), ID id [id ...].',
  'SETNAME <name>',
  '    Assign the name <name> to the current connection.',
  'SETINFO <LIB-NAME|LIB-VER> <value>',
  '    Set client meta attributes.',
  'NO-EVICT (ON|OFF)',
  '    Accepted for compatibility; ordo never evicts.',
  'NO-TOUCH (ON|OFF)',
  '    Accepted for compatibility.',
  'HELP',
  '    Print this help.',
];

function sub(
  name: string,
  arity: number,
  handler: CommandSpec['handler'],
  summary: string,
  flags: readonly string[] = ['noscript', 'loading', 'stale'],
): CommandSpec {
  return command({ name: `client|${name}`, arity, flags, ...CONN, summary, handler });
}

const onOff = (arg: Buffer | undefined): boolean => {
  const v = lower(arg);
  return v === 'on' || v === 'off';
};

function killClients(ctx: ServerContext, conn: Connection, args: readonly Buffer[]): Reply {
  if (args.length === 3) {
    const addr = text(args[2]);
    const target = [...ctx.connections].find((c) => c.remoteAddress === addr);
    if (target === undefined) return R.error(ERR.noSuchClient);
    target.kill('CLIENT KILL');
    return R.ok;
  }
  if (args.length % 2 !== 0) return R.error(ERR.syntax);
  let id: number | null = null;
  let addr: string | null = null;
  let laddr: string | null = null;
  let skipMe = true;
  for (let i = 2; i < args.length; i += 2) {
    const opt = lower(args[i]);
    const value = args[i + 1];
    if (opt === 'id') {
      const n = parseInt64(value ?? '');
      if (n === null || n <= 0n) return R.error(ERR.clientIdNotPositive);
      id = Number(n);
    } else if (opt === 'addr') addr = text(value);
    else if (opt === 'laddr') laddr = text(value);
    else if (opt === 'skipme') {
      const v = lower(value);
      if (v !== 'yes' && v !== 'no') return R.error(ERR.syntax);
      skipMe = v === 'yes';
    } else return R.error(ERR.syntax);
  }
  let killed = 0;
  for (const c of ctx.connections) {
    if (id !== null && c.id !== id) continue;
    if (addr !== null && c.remoteAddress !== addr) continue;
    if (laddr !== null && c.localAddress !== laddr) continue;
    if (skipMe && c === conn) continue;
    c.kill('CLIENT KILL');
    killed++;
  }
  return R.int(killed);
}

const CLIENT_SUBCOMMANDS: readonly CommandSpec[] = [
  sub('id', 2, (_ctx, conn, _a, respond) => respond(R.int(conn.id)), 'Returns the unique client ID of the connection.'),
  sub('getname', 2, (_ctx, conn, _a, respond) => respond(conn.name === null ? R.nil : R.bulk(conn.name)), 'Returns the name of the connection.'),
  sub(
    'setname',
    3,
    (_ctx, conn, args, respond) => {
      const name = text(args[2]);
      if (!validName(name)) return respond(R.error(ERR.clientNameSpaces));
      conn.name = name === '' ? null : name;
      respond(R.ok);
    },
    'Sets the connection name.',
  ),
  sub(
    'setinfo',
    4,
    (_ctx, conn, args, respond) => {
      const attr = lower(args[2]);
      const value = text(args[3]);
      if (attr !== 'lib-name' && attr !== 'lib-ver') return respond(R.error(unrecognizedOption(text(args[2]))));
      if (!validName(value) && value !== '') {
        return respond(R.error(clientInfoSpaces(attr)));
      }
      if (attr === 'lib-name') conn.libName = value;
      else conn.libVersion = value;
      respond(R.ok);
    },
    'Sets information specific to the client or connection.',
  ),
  sub('info', 2, (ctx, conn, _a, respond) => respond(R.verbatim(`${clientInfoLine(ctx, conn)}\n`)), 'Returns information about the connection.'),
  sub(
    'list',
    -2,
    (ctx, _conn, args, respond) => {
      let ids: Set<number> | null = null;
      for (let i = 2; i < args.length; i++) {
        const opt = lower(args[i]);
        if (opt === 'type' && i + 1 < args.length) {
          const type = lower(args[++i]);
          if (!['normal', 'master', 'replica', 'slave', 'pubsub'].includes(type)) {
            return respond(R.error(unknownClientType(text(args[i]))));
          }
          if (type !== 'normal') ids = new Set();
        } else if (opt === 'id' && i + 1 < args.length) {
          ids = new Set();
          for (i = i + 1; i < args.length; i++) {
            const n = parseInt64(args[i] as Buffer);
            if (n === null || n <= 0n) return respond(R.error(ERR.invalidClientId));
            ids.add(Number(n));
          }
        } else return respond(R.error(ERR.syntax));
      }
      const lines = [...ctx.connections].filter((c) => ids === null || ids.has(c.id)).map((c) => `${clientInfoLine(ctx, c)}\n`);
      respond(R.verbatim(lines.join('')));
    },
    'Lists open connections.',
  ),
  sub('kill', -3, (ctx, conn, args, respond) => respond(killClients(ctx, conn, args)), 'Terminates open connections.'),
  sub('no-evict', 3, (_c, _conn, args, respond) => respond(onOff(args[2]) ? R.ok : R.error(ERR.syntax)), 'Accepted; ordo never evicts.'),
  sub('no-touch', 3, (_c, _conn, args, respond) => respond(onOff(args[2]) ? R.ok : R.error(ERR.syntax)), 'Accepted for compatibility.'),
  sub('getredir', 2, (_c, _conn, _a, respond) => respond(R.int(-1)), "Returns the client ID to which the connection's tracking notifications are redirected."),
  sub('help', 2, (_c, _conn, _a, respond) => respond(R.array(CLIENT_HELP.map((l) => R.simple(l)))), 'Returns helpful text about the different subcommands.'),
];

export const CONNECTION_COMMANDS: readonly CommandSpec[] = [
  command({
    name: 'ping',
    arity: -1,
    flags: ['fast', 'sentinel'],
    ...CONN,
    summary: "Returns the server's liveliness response.",
    handler: (_ctx, _conn, args, respond) => {
      if (args.length > 2) return respond(R.error(wrongArity('ping')));
      respond(args.length === 2 ? R.bulk(args[1] as Buffer) : R.simple('PONG'));
    },
  }),
  command({
    name: 'echo',
    arity: 2,
    flags: ['fast'],
    ...CONN,
    summary: 'Returns the given string.',
    handler: (_ctx, _conn, args, respond) => respond(R.bulk(args[1] as Buffer)),
  }),
  command({
    name: 'quit',
    arity: -1,
    flags: ['allow_busy', 'noscript', 'loading', 'stale', 'fast', 'no_auth'],
    ...CONN,
    summary: 'Closes the connection.',
    handler: (_ctx, conn, _args, respond) => {
      conn.closeAfterReplies();
      respond(R.ok);
    },
  }),
  command({
    name: 'reset',
    arity: 1,
    flags: ['noscript', 'loading', 'stale', 'fast', 'no_auth', 'allow_busy'],
    ...CONN,
    since: '6.2.0',
    summary: 'Resets the connection.',
    handler: (ctx, conn, _args, respond) => {
      conn.proto = 2;
      conn.name = null;
      conn.clusterAware = false;
      conn.authenticated = ctx.config.requirepass === null;
      respond(R.simple('RESET'));
    },
  }),
  command({
    name: 'select',
    arity: 2,
    flags: ['loading', 'stale', 'fast'],
    ...CONN,
    summary: 'Changes the selected database.',
    handler: (_ctx, _conn, args, respond) => {
      // Redis reads the index as a C int: first as a 64-bit integer, then checks the int range.
      const index = parseInt64(args[1] as Buffer);
      if (index === null) return respond(R.error(ERR.notInteger));
      if (index > 2147483647n || index < -2147483648n) return respond(R.error(ERR.intOutOfRange));
      respond(index === 0n ? R.ok : R.error(ERR.dbIndexOutOfRange));
    },
  }),
  command({
    name: 'auth',
    arity: -2,
    flags: ['noscript', 'loading', 'stale', 'fast', 'no_auth', 'sentinel', 'allow_busy'],
    ...CONN,
    summary: 'Authenticates the connection.',
    handler: (ctx, conn, args, respond) => {
      if (args.length > 3) return respond(R.error(ERR.syntax));
      if (args.length === 2 && ctx.config.requirepass === null) return respond(R.error(ERR.authNotConfigured));
      const user = args.length === 3 ? text(args[1]) : 'default';
      const password = text(args[args.length - 1]);
      if (!checkAuth(ctx, user, password)) return respond(R.error(ERR.wrongPass));
      conn.authenticated = true;
      respond(R.ok);
    },
  }),
  command({
    name: 'hello',
    arity: -1,
    flags: ['noscript', 'loading', 'stale', 'fast', 'no_auth', 'sentinel', 'allow_busy'],
    ...CONN,
    since: '6.0.0',
    summary: 'Handshakes with the Redis server.',
    handler: (ctx, conn, args, respond) => {
      let proto = conn.proto;
      if (args.length >= 2) {
        const ver = parseInt64(args[1] as Buffer);
        if (ver === null) return respond(R.error(ERR.helloProtoNotInteger));
        if (ver < 2n || ver > 3n) return respond(R.error(ERR.noProto));
        proto = Number(ver) as 2 | 3;
      }
      let auth: [string, string] | null = null;
      for (let j = 2; j < args.length; j++) {
        const opt = lower(args[j]);
        const more = args.length - j - 1;
        if (opt === 'auth' && more >= 2) {
          auth = [text(args[j + 1]), text(args[j + 2])];
          j += 2;
        } else if (opt === 'setname' && more >= 1) {
          // Redis 7.0 names the client as soon as it reads the option, even when a later option fails.
          const name = text(args[j + 1]);
          if (!validName(name)) return respond(R.error(ERR.clientNameSpaces));
          conn.name = name === '' ? null : name;
          j += 1;
        } else return respond(R.error(helloOptionSyntax(text(args[j]))));
      }
      if (auth !== null) {
        if (!checkAuth(ctx, auth[0], auth[1])) return respond(R.error(ERR.wrongPass));
        conn.authenticated = true;
      }
      if (!conn.authenticated) return respond(R.error(ERR.helloNoAuth));
      conn.proto = proto;
      respond(helloReply(ctx, conn));
    },
  }),
  command({
    name: 'client',
    arity: -2,
    flags: ['sentinel'],
    ...CONN,
    summary: 'A container for client connection commands.',
    subcommands: CLIENT_SUBCOMMANDS,
    handler: (_ctx, _conn, args, respond) => respond(R.error(unknownSubcommand(text(args[1]), 'client'))),
  }),
];
