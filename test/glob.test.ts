// Glob matching (KEYS, SCAN MATCH, CONFIG GET) with Redis's rules, checked on
// hand-picked cases and against a real redis-server's KEYS.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { Redis } from 'ioredis';
import { globMatch } from '../src/glob.js';
import { startRedis, type RunningProcess } from '../testkit/processes.js';

describe('globMatch', () => {
  const cases: [pattern: string, text: string, expected: boolean][] = [
    ['*', '', true],
    ['*', 'anything', true],
    ['', '', true],
    ['', 'a', false],
    ['a', 'a', true],
    ['a', 'b', false],
    ['a', 'aa', false],
    ['h?llo', 'hello', true],
    ['h?llo', 'hllo', false],
    ['h*llo', 'hllo', true],
    ['h*llo', 'heeeello', true],
    ['h*llo', 'hello!', false],
    ['h[ae]llo', 'hallo', true],
    ['h[ae]llo', 'hillo', false],
    ['h[^e]llo', 'hallo', true],
    ['h[^e]llo', 'hello', false],
    ['h[a-b]llo', 'hbllo', true],
    ['h[a-b]llo', 'hcllo', false],
    ['h[b-a]llo', 'hallo', true], // reversed range
    ['h\\*llo', 'h*llo', true],
    ['h\\*llo', 'hello', false],
    ['h[\\]]llo', 'h]llo', true],
    ['user:*:name', 'user:42:name', true],
    ['user:*:name', 'user:42:email', false],
    ['a*b*c', 'aXXbYYc', true],
    ['a*b*c', 'aXXcYYb', false],
    ['***', 'abc', true],
    ['a**', 'a', true],
    ['a\\', 'a\\', true], // a trailing backslash matches itself
    ['[abc', 'a', true], // an unterminated class ends with the pattern
    ['[abc', 'd', false],
    ['?', '', false],
    ['[a]', '', false],
    // Redis quirks: an empty key matches only "" and "*"; `[a-]` is the range a..]
    ['**', '', false],
    ['a*', '', false],
    ['[a-]', ']', true],
    ['[a-]', '_', true],
    ['[a-]', '-', false],
  ];
  for (const [pattern, text, expected] of cases) {
    it(`${JSON.stringify(pattern)} ${expected ? 'matches' : 'does not match'} ${JSON.stringify(text)}`, () => {
      assert.equal(globMatch(pattern, text), expected);
    });
  }

  it('works on bytes: ? matches one byte, classes compare byte values', () => {
    const twoBytes = Buffer.from('é', 'utf8').toString('latin1');
    assert.equal(globMatch('?', twoBytes), false);
    assert.equal(globMatch('??', twoBytes), true);
    assert.equal(globMatch('[\u0000-\u00ff][\u0000-\u00ff]', twoBytes), true);
  });

  it('a literal pattern matches only itself', () => {
    const plain = fc.string({ unit: fc.constantFrom('a', 'b', 'c', ':', '-', '_') });
    fc.assert(
      fc.property(plain, plain, (p, s) => globMatch(p, s) === (p === s)),
      { seed: 11, numRuns: 500 },
    );
  });

  it('stays fast on a pathological pattern', () => {
    const started = Date.now();
    assert.equal(globMatch('a*a*a*a*a*a*a*a*a*a*a*b', 'a'.repeat(60)), false);
    assert.ok(Date.now() - started < 2000);
  });
});

describe('globMatch against redis-server KEYS', () => {
  let redis: RunningProcess;
  let client: Redis;
  const alphabet = ['a', 'b', '-', ']', '[', '\\', '^', '*', '?'];
  const keys: string[] = [];

  before(async () => {
    redis = await startRedis();
    client = new Redis({ port: redis.port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0 });
    await client.connect();
    const grow = (prefix: string, depth: number): void => {
      keys.push(prefix);
      if (depth === 0) return;
      for (const c of alphabet) grow(prefix + c, depth - 1);
    };
    grow('', 3);
    const pipeline = client.pipeline();
    for (const k of keys) pipeline.set(k, '1');
    await pipeline.exec();
  });

  after(async () => {
    client?.disconnect();
    await redis?.stop();
  });

  it('gives the same keys as Redis for random patterns', async () => {
    const patterns = new Set<string>(['*', '**', '[a-]', '[-a]', '[]]', '[^]]', '[\\', '\\', '[a-\\]]', 'a*', '*?', '[^', '[]']);
    fc.sample(fc.string({ unit: fc.constantFrom(...alphabet), maxLength: 6 }), { seed: 7, numRuns: 400 }).forEach((p) => patterns.add(p));
    const list = [...patterns];
    const pipeline = client.pipeline();
    for (const p of list) pipeline.keys(p);
    const results = (await pipeline.exec()) ?? [];
    const mismatches: string[] = [];
    list.forEach((pattern, i) => {
      const [err, value] = results[i] ?? [new Error('no reply'), null];
      assert.equal(err, null);
      const fromRedis = new Set(value as string[]);
      const ours = keys.filter((k) => globMatch(pattern, k));
      const ourSet = new Set(ours);
      const missing = [...fromRedis].filter((k) => !ourSet.has(k));
      const extra = ours.filter((k) => !fromRedis.has(k));
      if (missing.length > 0 || extra.length > 0) {
        mismatches.push(`${JSON.stringify(pattern)}: missing ${JSON.stringify(missing.slice(0, 5))} extra ${JSON.stringify(extra.slice(0, 5))}`);
      }
    });
    assert.deepEqual(mismatches, []);
  });
});
