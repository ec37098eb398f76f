// Real clients against real ordo processes: ioredis, node-redis v5 (RESP2 and
// RESP3) and redis-cli, doing what their users do and seeing what they see.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Redis, ReplyError } from 'ioredis';
import { createClient, ErrorReply } from 'redis';
import { encodeCommand } from '../testkit/resp.js';
import { removeDir, runProgram, startOrdo, tempDir, type ProgramRun, type RunningOrdo } from '../testkit/processes.js';

const PASSWORD = 's3cret-pass';
/** ioredis declares its ReplyError class untyped; this is what it is. */
const IoReplyError = ReplyError as abstract new (...args: never[]) => Error;

let ordo: RunningOrdo | undefined;
let securedOrdo: RunningOrdo | undefined;

function port(): number {
  assert.ok(ordo !== undefined, 'ordo started');
  return ordo.port;
}

function securedPort(): number {
  assert.ok(securedOrdo !== undefined, 'ordo with --requirepass started');
  return securedOrdo.port;
}

const dataDirs = [tempDir('clients'), tempDir('clients-auth')] as const;

before(async () => {
  const [plain, secured] = await Promise.allSettled([
    startOrdo({ dataDir: dataDirs[0] }),
    startOrdo({ dataDir: dataDirs[1], args: ['--requirepass', PASSWORD] }),
  ]);
  if (plain.status === 'fulfilled') ordo = plain.value;
  if (secured.status === 'fulfilled') securedOrdo = secured.value;
  for (const r of [plain, secured]) if (r.status === 'rejected') throw r.reason;
});

after(async () => {
  await Promise.all([ordo?.stop(), securedOrdo?.stop()]);
  for (const dir of dataDirs) removeDir(dir);
});

/** An ioredis client that connects once and never retries, so failures surface at once. */
function ioredis(p: number, password?: string): Redis {
  return new Redis({
    host: '127.0.0.1',
    port: p,
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    ...(password === undefined ? {} : { password }),
  });
}

function isReplyError(text: string): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(e instanceof IoReplyError, `expected a ReplyError, got ${String(e)}`);
    assert.equal(e.message, text);
    return true;
  };
}

describe('ioredis', () => {
  test('connects (INFO ready check) and runs the string commands', async (t) => {
    const client = ioredis(port());
    t.after(() => client.disconnect());
    await client.connect();
    assert.equal(client.status, 'ready');
    assert.equal(await client.incr('io:a'), 1);
    assert.equal(await client.incr('io:a'), 2);
    assert.equal(await client.incrby('io:a', 40), 42);
    assert.equal(await client.decrby('io:a', 2), 40);
    assert.equal(await client.get('io:a'), '40');
    assert.equal(await client.set('io:s', 'hello'), 'OK');
    assert.equal(await client.get('io:s'), 'hello');
    assert.equal(await client.get('io:missing'), null);
    assert.equal(await client.mset('io:m1', '1', 'io:m2', 'two'), 'OK');
    assert.deepEqual(await client.mget('io:m1', 'io:m2', 'io:missing'), ['1', 'two', null]);
    assert.equal(await client.exists('io:m1', 'io:m2', 'io:missing'), 2);
    assert.equal(await client.del('io:m1', 'io:m2', 'io:missing'), 2);
    assert.equal(await client.exists('io:m1'), 0);
    assert.equal(await client.incrbyfloat('io:f', '1.5'), '1.5');
  });

  test('the string range, bitmap and LCS commands', async (t) => {
    const client = ioredis(port());
    t.after(() => client.disconnect());
    await client.connect();
    assert.equal(await client.append('io:r', 'Hello'), 5);
    assert.equal(await client.append('io:r', ' World'), 11);
    assert.equal(await client.setrange('io:r', 6, 'Redis'), 11);
    assert.equal(await client.getrange('io:r', -5, -1), 'Redis');
    assert.equal(await client.substr('io:r', 0, 4), 'Hello');
    assert.equal(await client.strlen('io:r'), 11);
    assert.equal(await client.msetnx('io:n1', 'a', 'io:n2', 'b'), 1);
    assert.equal(await client.msetnx('io:n2', 'c', 'io:n3', 'd'), 0);
    assert.equal(await client.setbit('io:bits', 10, 1), 0);
    assert.equal(await client.getbit('io:bits', 10), 1);
    assert.equal(await client.bitcount('io:bits'), 1);
    assert.equal(await client.bitcount('io:bits', 0, 9, 'BIT'), 0);
    assert.equal(await client.bitpos('io:bits', 1), 10);
    assert.equal(await client.bitpos('io:bits', 0, 1, -1, 'BYTE'), 8);
    await client.mset('io:l1', 'ohmytext', 'io:l2', 'mynewtext');
    assert.equal(await client.lcs('io:l1', 'io:l2'), 'mytext');
    assert.equal(await client.lcs('io:l1', 'io:l2', 'LEN'), 6);
    assert.deepEqual(await client.lcs('io:l1', 'io:l2', 'IDX', 'MINMATCHLEN', 4, 'WITHMATCHLEN'), ['matches', [[[4, 7], [5, 8], 4]], 'len', 6]);
  });

  test('a pipeline of 1000 INCRs on one key returns 1..1000 in order', async (t) => {
    const client = ioredis(port());
    t.after(() => client.disconnect());
    await client.connect();
    const pipeline = client.pipeline();
    for (let i = 0; i < 1000; i++) pipeline.incr('io:pipelined');
    const results = await pipeline.exec();
    assert.ok(results !== null);
    assert.equal(results.length, 1000);
    results.forEach(([error, value], i) => {
      assert.equal(error, null);
      assert.equal(value, i + 1);
    });
    assert.equal(await client.get('io:pipelined'), '1000');
  });

  test('errors surface as ReplyError with the Redis text', async (t) => {
    const client = ioredis(port());
    t.after(() => client.disconnect());
    await client.connect();
    await client.set('io:text', 'abc');
    await assert.rejects(client.incr('io:text'), isReplyError('ERR value is not an integer or out of range'));
    await assert.rejects(client.incrbyfloat('io:text', '1'), isReplyError('ERR value is not a valid float'));
    await client.set('io:max', '9223372036854775807');
    await assert.rejects(client.incr('io:max'), isReplyError('ERR increment or decrement would overflow'));
    await assert.rejects(client.call('NOSUCHCOMMAND', 'a', 'b'), isReplyError("ERR unknown command 'NOSUCHCOMMAND', with args beginning with: 'a' 'b' "));
    await assert.rejects(client.call('INCR'), isReplyError("ERR wrong number of arguments for 'incr' command"));
    await assert.rejects(client.call('SET', 'k', 'v', 'NX', 'XX'), isReplyError('ERR syntax error'));
    // The connection stays usable after errors.
    assert.equal(await client.incr('io:after-errors'), 1);
  });

  test('CLIENT SETNAME and SELECT 0', async (t) => {
    const client = ioredis(port());
    t.after(() => client.disconnect());
    await client.connect();
    assert.equal(await client.client('SETNAME', 'io-worker'), 'OK');
    assert.equal(await client.client('GETNAME'), 'io-worker');
    assert.equal(await client.select(0), 'OK');
    await assert.rejects(client.select(1), isReplyError('ERR DB index is out of range'));
    assert.equal(await client.incr('io:selected'), 1);
  });

  test('the connectionName and db options work at connect', async (t) => {
    const client = new Redis({ host: '127.0.0.1', port: port(), lazyConnect: true, retryStrategy: () => null, connectionName: 'named-at-connect', db: 0 });
    t.after(() => client.disconnect());
    await client.connect();
    assert.equal(await client.client('GETNAME'), 'named-at-connect');
  });

  test('with --requirepass: the password works, no password gets NOAUTH, a wrong one WRONGPASS', async (t) => {
    const good = ioredis(securedPort(), PASSWORD);
    t.after(() => good.disconnect());
    await good.connect();
    assert.equal(good.status, 'ready');
    assert.equal(await good.incr('io:secured'), 1);

    const none = new Redis({
      host: '127.0.0.1',
      port: securedPort(),
      lazyConnect: true,
      enableReadyCheck: false,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    t.after(() => none.disconnect());
    await none.connect();
    await assert.rejects(none.get('io:secured'), isReplyError('NOAUTH Authentication required.'));
    await assert.rejects(none.incr('io:secured'), isReplyError('NOAUTH Authentication required.'));
    assert.equal(await none.auth(PASSWORD), 'OK');
    assert.equal(await none.get('io:secured'), '1');

    const wrong = ioredis(securedPort(), 'not-the-password');
    t.after(() => wrong.disconnect());
    const errors: string[] = [];
    wrong.on('error', (e: Error) => errors.push(e.message));
    await assert.rejects(wrong.connect());
    assert.ok(
      errors.some((m) => m.includes('WRONGPASS invalid username-password pair or user is disabled.')),
      `ioredis errors: ${JSON.stringify(errors)}`,
    );
  });
});

describe('node-redis v5', () => {
  // RESP2 is node-redis v5's default: no RESP option, as most users write it.
  const respOption = (resp: 2 | 3): { RESP?: 3 } => (resp === 3 ? { RESP: 3 } : {});
  for (const resp of [2, 3] as const) {
    test(`RESP${resp}: connect, incr, get, set NX, mget, hello, info`, async (t) => {
      const client = createClient({ url: `redis://127.0.0.1:${port()}`, ...respOption(resp), socket: { reconnectStrategy: false } });
      const errors: unknown[] = [];
      client.on('error', (e: unknown) => errors.push(e));
      t.after(async () => {
        if (client.isOpen) await client.close();
      });
      await client.connect();
      const key = `nr${resp}:counter`;
      assert.equal(await client.incr(key), 1);
      assert.equal(await client.incrBy(key, 9), 10);
      assert.equal(await client.get(key), '10');
      assert.equal(await client.set(`nr${resp}:once`, 'first', { condition: 'NX' }), 'OK');
      assert.equal(await client.set(`nr${resp}:once`, 'second', { condition: 'NX' }), null);
      assert.equal(await client.get(`nr${resp}:once`), 'first');
      assert.deepEqual(await client.mGet([key, `nr${resp}:once`, `nr${resp}:missing`]), ['10', 'first', null]);
      const hello = await client.hello(resp);
      assert.equal(hello.server, 'redis');
      assert.equal(hello.proto, resp);
      assert.equal(hello.mode, 'standalone');
      assert.equal(hello.role, 'master');
      assert.equal(typeof hello.id, 'number');
      const info = await client.info('server');
      assert.match(info, /^# Server\r\n/);
      assert.match(info, /\r\nredis_version:\d+\.\d+\.\d+\r\n/);
      assert.match(await client.info(), /\r\nloading:0\r\n/);
      assert.equal(await client.sendCommand(['PING']), 'PONG');
      assert.deepEqual(errors, []);
    });

    test(`RESP${resp}: the string range, bitmap and LCS commands`, async (t) => {
      const client = createClient({ url: `redis://127.0.0.1:${port()}`, ...respOption(resp), socket: { reconnectStrategy: false } });
      t.after(async () => {
        if (client.isOpen) await client.close();
      });
      await client.connect();
      const k = (name: string): string => `nr${resp}:${name}`;
      assert.equal(await client.append(k('r'), 'abc'), 3);
      assert.equal(await client.setRange(k('r'), 5, 'z'), 6);
      assert.equal(await client.getRange(k('r'), 0, -1), 'abc\0\0z');
      assert.equal(await client.mSetNX([k('a'), '1', k('b'), '2']), 1);
      assert.equal(await client.setBit(k('bits'), 3, 1), 0);
      assert.equal(await client.getBit(k('bits'), 3), 1);
      assert.equal(await client.bitCount(k('bits'), { start: 0, end: -1, mode: 'BIT' }), 1);
      assert.equal(await client.bitPos(k('bits'), 1), 3);
      await client.mSet([k('l1'), 'ohmytext', k('l2'), 'mynewtext']);
      assert.equal(await client.lcs(k('l1'), k('l2')), 'mytext');
      assert.equal(await client.lcsLen(k('l1'), k('l2')), 6);
      const idx = await client.lcsIdxWithMatchLen(k('l1'), k('l2'), { MINMATCHLEN: 4 });
      assert.equal(idx.len, 6);
      assert.deepEqual(idx.matches, [[[4, 7], [5, 8], 4]]);
    });

    test(`RESP${resp}: errors carry the Redis text`, async (t) => {
      const client = createClient({ url: `redis://127.0.0.1:${port()}`, ...respOption(resp), socket: { reconnectStrategy: false } });
      client.on('error', () => undefined);
      t.after(async () => {
        if (client.isOpen) await client.close();
      });
      await client.connect();
      const errorText =
        (text: string) =>
        (e: unknown): boolean => {
          assert.ok(e instanceof ErrorReply, `expected an ErrorReply, got ${String(e)}`);
          assert.equal(e.message, text);
          return true;
        };
      await client.set(`nr${resp}:text`, 'abc');
      await assert.rejects(client.incr(`nr${resp}:text`), errorText('ERR value is not an integer or out of range'));
      await assert.rejects(client.incrByFloat(`nr${resp}:f`, Infinity), errorText('ERR increment would produce NaN or Infinity'));
      await assert.rejects(client.sendCommand(['DECRBY', `nr${resp}:d`, '-9223372036854775808']), errorText('ERR decrement would overflow'));
      await assert.rejects(client.sendCommand(['NOPE']), errorText("ERR unknown command 'NOPE', with args beginning with: "));
      await assert.rejects(client.sendCommand(['HELLO', '4']), errorText('NOPROTO unsupported protocol version'));
      assert.equal(await client.incr(`nr${resp}:still-usable`), 1);
    });

    test(`RESP${resp}: password in the url`, async (t) => {
      const client = createClient({ url: `redis://:${PASSWORD}@127.0.0.1:${securedPort()}`, ...respOption(resp), socket: { reconnectStrategy: false } });
      client.on('error', () => undefined);
      t.after(async () => {
        if (client.isOpen) await client.close();
      });
      await client.connect();
      assert.equal(await client.incr(`nr${resp}:secured`), 1);

      const wrong = createClient({ url: `redis://:wrong@127.0.0.1:${securedPort()}`, ...respOption(resp), socket: { reconnectStrategy: false } });
      wrong.on('error', () => undefined);
      t.after(() => {
        if (wrong.isOpen) wrong.destroy();
      });
      await assert.rejects(wrong.connect(), (e: unknown) => {
        assert.ok(e instanceof Error);
        assert.match(e.message, /WRONGPASS invalid username-password pair or user is disabled\./);
        return true;
      });

      const none = createClient({ url: `redis://127.0.0.1:${securedPort()}`, ...respOption(resp), socket: { reconnectStrategy: false } });
      none.on('error', () => undefined);
      t.after(() => {
        if (none.isOpen) none.destroy();
      });
      if (resp === 3) {
        // HELLO 3 without AUTH is refused before the connection is ready.
        await assert.rejects(none.connect(), /NOAUTH HELLO must be called with the client already authenticated/);
      } else {
        await none.connect();
        await assert.rejects(none.get(`nr${resp}:secured`), (e: unknown) => e instanceof ErrorReply && e.message === 'NOAUTH Authentication required.');
      }
    });
  }
});

function redisCli(args: readonly string[], input?: string | Buffer): Promise<ProgramRun> {
  return runProgram('redis-cli', ['-h', '127.0.0.1', ...args], { timeoutMs: 10_000, ...(input === undefined ? {} : { input }) });
}

function resp(args: readonly string[]): string {
  return encodeCommand(args).toString('utf8');
}

describe('redis-cli', () => {
  test('one command per run, raw and formatted output', async () => {
    const p = String(port());
    assert.equal((await redisCli(['-p', p, 'INCR', 'cli:k'])).stdout, '1\n');
    assert.equal((await redisCli(['-p', p, 'INCRBY', 'cli:k', '41'])).stdout, '42\n');
    assert.equal((await redisCli(['-p', p, '--no-raw', 'INCR', 'cli:k'])).stdout, '(integer) 43\n');
    assert.equal((await redisCli(['-p', p, '--no-raw', 'GET', 'cli:k'])).stdout, '"43"\n');
    assert.equal((await redisCli(['-p', p, '--no-raw', 'GET', 'cli:missing'])).stdout, '(nil)\n');
    assert.equal((await redisCli(['-p', p, '--no-raw', 'SET', 'cli:s', 'v', 'NX'])).stdout, 'OK\n');
    assert.equal((await redisCli(['-p', p, '--no-raw', 'MGET', 'cli:k', 'cli:s'])).stdout, '1) "43"\n2) "v"\n');
    const error = await redisCli(['-p', p, '--no-raw', 'INCR', 'cli:s']);
    assert.equal(error.stdout, '(error) ERR value is not an integer or out of range\n');
  });

  test('-3 speaks RESP3', async () => {
    const p = String(port());
    const hello = await redisCli(['-3', '-p', p, 'HELLO', '3']);
    assert.match(hello.stdout, /^server redis$/m);
    assert.match(hello.stdout, /^proto 3$/m);
    assert.match(hello.stdout, /^mode standalone$/m);
    assert.equal((await redisCli(['-3', '-p', p, '--no-raw', 'INCR', 'cli:r3'])).stdout, '(integer) 1\n');
    assert.equal((await redisCli(['-3', '-p', p, '--no-raw', 'GET', 'cli:r3-missing'])).stdout, '(nil)\n');
    const info = await redisCli(['-3', '-p', p, 'CLIENT', 'INFO']);
    assert.match(info.stdout, / resp=3 /);
  });

  test('--pipe with raw protocol reports 0 errors and every reply', async () => {
    const commands = [resp(['SET', 'cli:pipe', '0'])];
    for (let i = 0; i < 2000; i++) commands.push(resp(['INCR', 'cli:pipe']));
    commands.push(resp(['MSET', 'cli:pipe-a', '1', 'cli:pipe-b', '2']));
    const result = await redisCli(['-p', String(port()), '--pipe'], commands.join(''));
    assert.equal(result.code, 0, result.stdout + result.stderr);
    assert.match(result.stdout, /errors: 0, replies: 2002\s*$/);
    assert.equal((await redisCli(['-p', String(port()), 'GET', 'cli:pipe'])).stdout, '2000\n');
  });

  test('--pipe counts error replies', async () => {
    const input = [resp(['INCR', 'cli:pipe-err']), resp(['NOSUCH']), resp(['INCR', 'cli:pipe-err'])].join('');
    const result = await redisCli(['-p', String(port()), '--pipe'], input);
    assert.equal(result.code, 1);
    assert.match(result.stdout + result.stderr, /ERR unknown command 'NOSUCH'/);
    assert.match(result.stdout, /errors: 1, replies: 3\s*$/);
  });

  test('-a with --requirepass', async () => {
    const p = String(securedPort());
    const ok = await redisCli(['-p', p, '--no-auth-warning', '-a', PASSWORD, 'INCR', 'cli:secured']);
    assert.equal(ok.stdout, '1\n');
    assert.equal(ok.stderr, '');
    const none = await redisCli(['-p', p, '--no-raw', 'INCR', 'cli:secured']);
    assert.equal(none.stdout, '(error) NOAUTH Authentication required.\n');
    const wrong = await redisCli(['-p', p, '--no-auth-warning', '-a', 'wrong', '--no-raw', 'INCR', 'cli:secured']);
    assert.match(wrong.stderr + wrong.stdout, /WRONGPASS invalid username-password pair or user is disabled\./);
    assert.equal((await redisCli(['-p', p, '--no-auth-warning', '-a', PASSWORD, 'GET', 'cli:secured'])).stdout, '1\n');
  });

  test('INFO server contains redis_version', async () => {
    const info = await redisCli(['-p', String(port()), 'INFO', 'server']);
    assert.equal(info.code, 0);
    assert.match(info.stdout, /^# Server/);
    assert.match(info.stdout, /^redis_version:\d+\.\d+\.\d+\r?$/m);
  });
});
