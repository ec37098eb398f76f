// Counters and strings: the keyspace commands. Writes become ops proposed to
// the group; reads run against its linearizable view. Argument checks happen
// here, before anything is proposed, in the order Redis makes them.

import { ERR, wrongArity } from '../../errors.js';
import { globMatch } from '../../glob.js';
import { R, type Reply } from '../../resp/encoder.js';
import { INT64_MIN, parseInt64 } from '../../sequencer/numbers.js';
import { command, type CommandSpec, type Respond, type ServerContext } from '../command.js';
import { bulkOrNil, err, keyOf, lower, propose, read } from './common.js';
import { allocateFromWindow, visibleValue } from './sequences.js';

export { keyOf, resultReply } from './common.js';

/** INCR and friends: a window sequence (or a key the operator made windowed) is served from its window. */
function incrBy(ctx: ServerContext, key: Buffer, delta: bigint, respond: Respond): void {
  const k = keyOf(key);
  const viaLog = (): void => propose(ctx, { type: 'incrby', key: k, delta }, respond);
  if (delta < 1n) return viaLog();
  allocateFromWindow(ctx, k, delta, (a) => respond(a.ok ? R.int(a.last) : err(a.error)), viaLog);
}

const WRITE = ['write', 'denyoom', 'fast'];
const READ = ['readonly', 'fast'];
const ONE_KEY = { firstKey: 1, lastKey: 1, keyStep: 1 } as const;
const ALL_KEYS = { firstKey: 1, lastKey: -1, keyStep: 1 } as const;
const STRING = { group: 'string', aclCategories: ['@write', '@string', '@fast'] } as const;
const STRING_READ = { group: 'string', aclCategories: ['@read', '@string', '@fast'] } as const;
const KEYSPACE = { group: 'generic', aclCategories: ['@keyspace'] } as const;

/** Options of SET after the value; null when the syntax is wrong. */
interface SetOptions {
  condition: 'always' | 'nx' | 'xx';
  get: boolean;
  expiry: Buffer | null;
}

function parseSetOptions(args: readonly Buffer[]): SetOptions | null {
  const opts: SetOptions = { condition: 'always', get: false, expiry: null };
  let sawExpiryKind = false;
  let keepTtl = false;
  for (let j = 3; j < args.length; j++) {
    const opt = lower(args[j]);
    const next = args[j + 1];
    if (opt === 'nx' && opts.condition !== 'xx') opts.condition = 'nx';
    else if (opt === 'xx' && opts.condition !== 'nx') opts.condition = 'xx';
    else if (opt === 'get') opts.get = true;
    else if (opt === 'keepttl' && !sawExpiryKind) keepTtl = true;
    else if ((opt === 'ex' || opt === 'px' || opt === 'exat' || opt === 'pxat') && !keepTtl && !sawExpiryKind && next !== undefined) {
      sawExpiryKind = true;
      opts.expiry = next;
      j++;
    } else return null;
  }
  return opts;
}

/** The reply Redis gives to a bad expiry before it would set one; ordo then says it has no expiry. */
function expiryError(expiry: Buffer): Reply {
  const n = parseInt64(expiry);
  if (n === null) return err('notInteger');
  if (n <= 0n) return R.error(ERR.invalidExpire);
  return err('notSupportedExpiry');
}

/**
 * A SCAN cursor as Redis reads it with strtoul: optional sign, decimal digits,
 * the empty text is 0, a negative number wraps around 2^64; null when invalid.
 */
function parseScanCursor(text: string): bigint | null {
  const m = /^([-+]?)(\d*)$/.exec(text);
  if (m === null) return null;
  const digits = m[2] ?? '';
  if (digits === '') return m[1] === '' ? 0n : null;
  const value = BigInt(digits);
  if (value > 0xffffffffffffffffn) return null;
  return m[1] === '-' && value !== 0n ? (1n << 64n) - value : value;
}

function scanReply(ctx: ServerContext, args: readonly Buffer[], respond: Respond): void {
  const cursorValue = parseScanCursor(args[1]?.toString('latin1') ?? '');
  if (cursorValue === null) {
    respond(err('invalidCursor'));
    return;
  }
  const cursor = Number(cursorValue > 0xffffffffn ? 0x100000000n : cursorValue);
  let count = 10;
  let pattern: string | null = null;
  let type: string | null = null;
  for (let j = 2; j < args.length; j++) {
    const opt = lower(args[j]);
    const next = args[j + 1];
    if (next === undefined) {
      respond(err('syntax'));
      return;
    }
    if (opt === 'count') {
      const n = parseInt64(next);
      if (n === null) {
        respond(err('notInteger'));
        return;
      }
      if (n < 1n) {
        respond(err('syntax'));
        return;
      }
      count = n > 100_000n ? 100_000 : Number(n);
    } else if (opt === 'match') pattern = keyOf(next);
    else if (opt === 'type') type = lower(next);
    else {
      respond(err('syntax'));
      return;
    }
    j++;
  }
  read(
    ctx,
    (sm) => {
      if (cursor > 0xffffffff) return { next: 0, keys: [] as string[] };
      const step = sm.scan(cursor, count);
      const keys = step.keys.filter((k) => (pattern === null || globMatch(pattern, k)) && (type === null || type === 'string'));
      return { next: step.next, keys };
    },
    respond,
    ({ next, keys }) => R.array([R.bulk(String(next)), R.array(keys.map((k) => R.bulk(Buffer.from(k, 'latin1'))))]),
  );
}

const NOT_SUPPORTED_EXPIRY = (_ctx: ServerContext, _args: readonly Buffer[], respond: Respond): void => respond(err('notSupportedExpiry'));

export const STRING_COMMANDS: readonly CommandSpec[] = [
  command({
    name: 'incr',
    arity: 2,
    flags: WRITE,
    ...ONE_KEY,
    ...STRING,
    summary: 'Increments the integer value of a key by one.',
    data: (ctx, args, respond) => incrBy(ctx, args[1] as Buffer, 1n, respond),
  }),
  command({
    name: 'decr',
    arity: 2,
    flags: WRITE,
    ...ONE_KEY,
    ...STRING,
    summary: 'Decrements the integer value of a key by one.',
    data: (ctx, args, respond) => incrBy(ctx, args[1] as Buffer, -1n, respond),
  }),
  command({
    name: 'incrby',
    arity: 3,
    flags: WRITE,
    ...ONE_KEY,
    ...STRING,
    summary: 'Increments the integer value of a key by a number.',
    data: (ctx, args, respond) => {
      const delta = parseInt64(args[2] as Buffer);
      if (delta === null) respond(err('notInteger'));
      else incrBy(ctx, args[1] as Buffer, delta, respond);
    },
  }),
  command({
    name: 'decrby',
    arity: 3,
    flags: WRITE,
    ...ONE_KEY,
    ...STRING,
    summary: 'Decrements a number from the integer value of a key.',
    data: (ctx, args, respond) => {
      const delta = parseInt64(args[2] as Buffer);
      if (delta === null) respond(err('notInteger'));
      else if (delta === INT64_MIN) respond(err('decrOverflow'));
      else incrBy(ctx, args[1] as Buffer, -delta, respond);
    },
  }),
  command({
    name: 'incrbyfloat',
    arity: 3,
    flags: WRITE,
    ...ONE_KEY,
    ...STRING,
    since: '2.6.0',
    summary: 'Increment the floating point value of a key by a number.',
    data: (ctx, args, respond) => propose(ctx, { type: 'incrbyfloat', key: keyOf(args[1] as Buffer), increment: Buffer.from(args[2] as Buffer) }, respond),
  }),
  command({
    name: 'get',
    arity: 2,
    flags: READ,
    ...ONE_KEY,
    ...STRING_READ,
    summary: 'Returns the string value of a key.',
    data: (ctx, args, respond) => {
      const key = keyOf(args[1] as Buffer);
      read(ctx, (sm) => visibleValue(ctx, sm, key), respond, bulkOrNil);
    },
  }),
  command({
    name: 'set',
    arity: -3,
    flags: ['write', 'denyoom'],
    ...ONE_KEY,
    ...STRING,
    complexity: 'O(1)',
    summary: "Sets the string value of a key, ignoring its type. The key is created if it doesn't exist.",
    data: (ctx, args, respond) => {
      const opts = parseSetOptions(args);
      if (opts === null) return respond(err('syntax'));
      if (opts.expiry !== null) return respond(expiryError(opts.expiry));
      propose(ctx, { type: 'set', key: keyOf(args[1] as Buffer), value: Buffer.from(args[2] as Buffer), condition: opts.condition, get: opts.get }, respond);
    },
  }),
  command({
    name: 'setnx',
    arity: 3,
    flags: WRITE,
    ...ONE_KEY,
    ...STRING,
    summary: "Set the string value of a key only when the key doesn't exist.",
    data: (ctx, args, respond) =>
      propose(ctx, { type: 'set', key: keyOf(args[1] as Buffer), value: Buffer.from(args[2] as Buffer), condition: 'nx', get: false }, respond, (r) =>
        r.type === 'ok' ? R.one : R.zero,
      ),
  }),
  command({
    name: 'getset',
    arity: 3,
    flags: WRITE,
    ...ONE_KEY,
    ...STRING,
    summary: 'Returns the previous string value of a key after setting it to a new value.',
    data: (ctx, args, respond) =>
      propose(ctx, { type: 'set', key: keyOf(args[1] as Buffer), value: Buffer.from(args[2] as Buffer), condition: 'always', get: true }, respond),
  }),
  command({
    name: 'mget',
    arity: -2,
    flags: READ,
    ...ALL_KEYS,
    ...STRING_READ,
    complexity: 'O(N) where N is the number of keys to retrieve.',
    summary: 'Atomically returns the string values of one or more keys.',
    data: (ctx, args, respond) => {
      const keys = args.slice(1).map(keyOf);
      read(
        ctx,
        (sm) => keys.map((k) => visibleValue(ctx, sm, k)),
        respond,
        (values) => R.array(values.map(bulkOrNil)),
      );
    },
  }),
  command({
    name: 'mset',
    arity: -3,
    flags: ['write', 'denyoom'],
    firstKey: 1,
    lastKey: -1,
    keyStep: 2,
    ...STRING,
    since: '1.0.1',
    complexity: 'O(N) where N is the number of keys to set.',
    summary: 'Atomically creates or modifies the string values of one or more keys.',
    data: (ctx, args, respond) => {
      if (args.length % 2 === 0) return respond(R.error(wrongArity('mset')));
      const keys: string[] = [];
      const values: Buffer[] = [];
      for (let i = 1; i < args.length; i += 2) {
        keys.push(keyOf(args[i] as Buffer));
        values.push(Buffer.from(args[i + 1] as Buffer));
      }
      propose(ctx, { type: 'mset', keys, values }, respond);
    },
  }),
  command({
    name: 'msetnx',
    arity: -3,
    flags: ['write', 'denyoom'],
    firstKey: 1,
    lastKey: -1,
    keyStep: 2,
    group: 'string',
    aclCategories: ['@write', '@string', '@slow'],
    since: '1.0.1',
    complexity: 'O(N) where N is the number of keys to set.',
    summary: 'Atomically sets the string values of one or more keys, only when none of the keys exists.',
    data: (ctx, args, respond) => {
      if (args.length % 2 === 0) return respond(R.error(wrongArity('msetnx')));
      const keys: string[] = [];
      const values: Buffer[] = [];
      for (let i = 1; i < args.length; i += 2) {
        keys.push(keyOf(args[i] as Buffer));
        values.push(Buffer.from(args[i + 1] as Buffer));
      }
      propose(ctx, { type: 'msetnx', keys, values }, respond);
    },
  }),
  command({
    name: 'del',
    arity: -2,
    flags: ['write'],
    ...ALL_KEYS,
    ...KEYSPACE,
    complexity: 'O(N) where N is the number of keys that will be removed.',
    summary: 'Deletes one or more keys.',
    data: (ctx, args, respond) => propose(ctx, { type: 'del', keys: args.slice(1).map(keyOf) }, respond),
  }),
  command({
    name: 'exists',
    arity: -2,
    flags: READ,
    ...ALL_KEYS,
    ...KEYSPACE,
    since: '1.0.0',
    complexity: 'O(N) where N is the number of keys to check.',
    summary: 'Determines whether one or more keys exist.',
    data: (ctx, args, respond) => {
      const keys = args.slice(1).map(keyOf);
      read(ctx, (sm) => keys.filter((k) => sm.has(k)).length, respond, R.int);
    },
  }),
  command({
    name: 'type',
    arity: 2,
    flags: READ,
    ...ONE_KEY,
    ...KEYSPACE,
    summary: 'Determines the type of value stored at a key.',
    data: (ctx, args, respond) => {
      const key = keyOf(args[1] as Buffer);
      read(
        ctx,
        (sm) => sm.has(key),
        respond,
        (exists) => R.simple(exists ? 'string' : 'none'),
      );
    },
  }),
  command({
    name: 'strlen',
    arity: 2,
    flags: READ,
    ...ONE_KEY,
    ...STRING_READ,
    since: '2.2.0',
    summary: 'Returns the length of a string value.',
    data: (ctx, args, respond) => {
      const key = keyOf(args[1] as Buffer);
      read(ctx, (sm) => sm.strlen(key), respond, R.int);
    },
  }),
  command({
    name: 'dbsize',
    arity: 1,
    flags: READ,
    ...KEYSPACE,
    summary: 'Returns the number of keys in the database.',
    data: (ctx, _args, respond) => read(ctx, (sm) => sm.size, respond, R.int),
  }),
  command({
    name: 'keys',
    arity: 2,
    flags: ['readonly'],
    ...KEYSPACE,
    complexity: 'O(N) with N being the number of keys in the database',
    summary: 'Returns all key names that match a pattern.',
    data: (ctx, args, respond) => {
      const pattern = keyOf(args[1] as Buffer);
      read(
        ctx,
        (sm) => [...sm.keys()].filter((k) => globMatch(pattern, k)),
        respond,
        (keys) => R.array(keys.map((k) => R.bulk(Buffer.from(k, 'latin1')))),
      );
    },
  }),
  command({
    name: 'scan',
    arity: -2,
    flags: ['readonly'],
    ...KEYSPACE,
    since: '2.8.0',
    complexity: 'O(1) for every call. O(N) for a complete iteration.',
    summary: 'Iterates over the key names in the database.',
    data: (ctx, args, respond) => scanReply(ctx, args, respond),
  }),
  ...['flushall', 'flushdb'].map((name) =>
    command({
      name,
      arity: -1,
      flags: ['write'],
      group: 'server',
      aclCategories: ['@keyspace', '@write', '@slow', '@dangerous'],
      complexity: 'O(N) where N is the total number of keys',
      summary: name === 'flushall' ? 'Removes all keys from all databases.' : 'Remove all keys from the current database.',
      data: (ctx, args, respond) => {
        const mode = lower(args[1]);
        if (args.length > 2 || (args.length === 2 && mode !== 'async' && mode !== 'sync')) return respond(err('syntax'));
        propose(ctx, { type: 'flushall' }, respond);
      },
    }),
  ),
  // No key expires in ordo: TTL questions have exact answers, setting a TTL is refused.
  ...['ttl', 'pttl', 'expiretime', 'pexpiretime'].map((name) =>
    command({
      name,
      arity: 2,
      flags: READ,
      ...ONE_KEY,
      ...KEYSPACE,
      summary: 'Returns the expiration of a key: ordo keys never expire.',
      data: (ctx, args, respond) => {
        const key = keyOf(args[1] as Buffer);
        read(
          ctx,
          (sm) => sm.has(key),
          respond,
          (exists) => R.int(exists ? -1 : -2),
        );
      },
    }),
  ),
  command({
    name: 'persist',
    arity: 2,
    flags: ['write', 'fast'],
    ...ONE_KEY,
    ...KEYSPACE,
    summary: 'Removes the expiration time of a key: ordo keys have none.',
    data: (ctx, _args, respond) => read(ctx, () => 0, respond, R.int),
  }),
  ...[
    ['expire', -3],
    ['pexpire', -3],
    ['expireat', -3],
    ['pexpireat', -3],
    ['setex', 4],
    ['psetex', 4],
    ['getex', -2],
  ].map(([name, arity]) =>
    command({
      name: name as string,
      arity: arity as number,
      flags: ['write'],
      ...ONE_KEY,
      ...KEYSPACE,
      summary: 'Key expiry: not supported by ordo yet.',
      data: NOT_SUPPORTED_EXPIRY,
    }),
  ),
];
