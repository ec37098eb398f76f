// Hash slots: CRC16-XMODEM and the hash-tag rule, checked on known values and
// against a real redis-server's CLUSTER KEYSLOT (cluster mode on).

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { SLOT_COUNT, crc16, hashedRange, isSlot, keySlot } from '../src/cluster/slots.js';
import { RawClient, encodeCommand } from '../testkit/resp.js';
import { freePort, startRedis, type RunningProcess } from '../testkit/processes.js';
import { prng } from '../testkit/random.js';

describe('crc16', () => {
  it('is CRC16-XMODEM', () => {
    assert.equal(crc16('123456789'), 0x31c3);
    assert.equal(crc16(Buffer.from('123456789')), 0x31c3);
    assert.equal(crc16(''), 0);
    assert.equal(crc16(Buffer.alloc(0)), 0);
  });

  it('hashes a part of the input when given bounds', () => {
    assert.equal(crc16('xx123456789yy', 2, 11), 0x31c3);
    assert.equal(crc16(Buffer.from('xx123456789yy'), 2, 11), 0x31c3);
  });

  it('gives the same answer for a Buffer and its latin1 string', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        const b = Buffer.from(bytes);
        assert.equal(crc16(b), crc16(b.toString('latin1')));
        assert.equal(keySlot(b), keySlot(b.toString('latin1')));
      }),
    );
  });
});

describe('keySlot', () => {
  it('matches Redis on known keys', () => {
    assert.equal(SLOT_COUNT, 16384);
    assert.equal(keySlot('foo'), 12182);
    assert.equal(keySlot('123456789'), 0x31c3 & 16383);
    assert.equal(keySlot(''), 0);
  });

  it('applies the hash-tag rule', () => {
    const same = (a: string, b: string): void => assert.equal(keySlot(a), keySlot(b), `${a} vs ${b}`);
    same('{user1000}.following', '{user1000}.followers');
    same('{user1000}.following', 'user1000');
    same('a{b}c{d}', 'b'); // the first tag only
    same('{{a}}', '{a'); // from the first '{' to the first '}' after it
    same('x{a}}', 'a');
    assert.deepEqual(hashedRange('{}'), [0, 2]); // empty tag: the whole key
    assert.deepEqual(hashedRange('{}{a}'), [0, 5]); // empty first tag: still the whole key
    assert.deepEqual(hashedRange('{'), [0, 1]);
    assert.deepEqual(hashedRange('}{'), [0, 2]);
    assert.deepEqual(hashedRange('{a'), [0, 2]);
    assert.deepEqual(hashedRange('a{b}c'), [2, 3]);
    assert.deepEqual(hashedRange(Buffer.from('a{b}c')), [2, 3]);
  });

  it('always gives a slot in range', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 40 }), (bytes) => isSlot(keySlot(Buffer.from(bytes)))));
    assert.equal(isSlot(16384), false);
    assert.equal(isSlot(-1), false);
    assert.equal(isSlot(1.5), false);
  });
});

/** Random keys: binary bytes, with braces likely, plus the tricky hand-picked ones. */
function testKeys(count: number, seed: number): Buffer[] {
  const random = prng(seed);
  const alphabet = [0x7b, 0x7d, 0x61, 0x62, 0x00, 0xff, 0x0d, 0x0a, 0x20];
  const keys: Buffer[] = ['{}', '{{a}}', 'a{b}c{d}', '{', '}{', '{a', 'a}', '{}{a}', '{a}{b}', '', 'foo', '{user1000}.following'].map((k) =>
    Buffer.from(k, 'latin1'),
  );
  while (keys.length < count) {
    const length = Math.floor(random() * 24);
    const key = Buffer.alloc(length);
    for (let i = 0; i < length; i++) {
      key[i] = random() < 0.5 ? (alphabet[Math.floor(random() * alphabet.length)] as number) : Math.floor(random() * 256);
    }
    keys.push(key);
  }
  return keys;
}

describe('keySlot against redis-server', () => {
  let redis: RunningProcess | null = null;

  before(async () => {
    const busPort = await freePort();
    redis = await startRedis(['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-port', String(busPort)]);
  });
  after(async () => {
    await redis?.stop();
  });

  it('gives the same slot as CLUSTER KEYSLOT for 2000 keys', async () => {
    assert.ok(redis);
    const keys = testKeys(2000, 0x5107);
    const conn = await RawClient.connect(redis.port);
    try {
      await conn.write(Buffer.concat(keys.map((k) => encodeCommand(['CLUSTER', 'KEYSLOT', k]))));
      const replies = await conn.read(keys.length);
      keys.forEach((key, i) => {
        const reply = (replies[i] as Buffer).toString('latin1');
        assert.equal(reply, `:${keySlot(key)}\r\n`, `key ${key.toString('hex')}`);
      });
    } finally {
      conn.close();
    }
  });
});
