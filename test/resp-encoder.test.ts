import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { RedisParser } from '../testkit/resp.js';
import { R, encodeInto, encodeReply, formatDouble, joinParts, textMap, type Protocol, type Reply } from '../src/resp/encoder.js';

// ---------------------------------------------------------------- helpers

const b = (text: string): Buffer => Buffer.from(text, 'latin1');

function expectBytes(reply: Reply, resp2: string, resp3: string): void {
  assert.equal(encodeReply(reply, 2).toString('latin1'), resp2, 'RESP2');
  assert.equal(encodeReply(reply, 3).toString('latin1'), resp3, 'RESP3');
}

/**
 * printf("%.17g", value) computed exactly (the double's exact decimal value,
 * rounded half to even like glibc), as Redis 7.0 formats doubles. `tie` tells
 * whether the rounding was an exact tie.
 */
function printf17g(value: number): { text: string; tie: boolean } {
  if (Number.isNaN(value)) return { text: 'nan', tie: false };
  if (value === Infinity) return { text: 'inf', tie: false };
  if (value === -Infinity) return { text: '-inf', tie: false };
  const negative = value < 0 || Object.is(value, -0);
  const sign = negative ? '-' : '';
  if (value === 0) return { text: `${sign}0`, tie: false };
  // value = mantissa * 2^exp2, exactly.
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, Math.abs(value));
  const bits = view.getBigUint64(0);
  const biased = Number(bits >> 52n);
  const fraction = bits & ((1n << 52n) - 1n);
  const mantissa = biased === 0 ? fraction : fraction | (1n << 52n);
  const exp2 = (biased === 0 ? 1 : biased) - 1075;
  // value = digits * 10^scale, exactly.
  let digits: string;
  let scale: number;
  if (exp2 >= 0) {
    digits = (mantissa << BigInt(exp2)).toString();
    scale = 0;
  } else {
    digits = (mantissa * 5n ** BigInt(-exp2)).toString();
    scale = exp2;
  }
  const stripped = digits.replace(/0+$/, '');
  scale += digits.length - stripped.length;
  digits = stripped;
  let exp10 = digits.length - 1 + scale; // exponent of the leading digit
  let tie = false;
  if (digits.length > 17) {
    let head = BigInt(digits.slice(0, 17));
    const rest = digits.slice(17);
    tie = rest === '5';
    const up = rest[0] !== undefined && (rest[0] > '5' || (rest[0] === '5' && (rest.length > 1 || head % 2n === 1n)));
    if (up) head += 1n;
    let headText = head.toString();
    if (headText.length > 17) {
      headText = headText.slice(0, 17);
      exp10 += 1;
    }
    digits = headText.replace(/0+$/, '');
  }
  let text: string;
  if (exp10 < -4 || exp10 >= 17) {
    const mant = digits.length > 1 ? `${digits[0] ?? ''}.${digits.slice(1)}` : digits;
    text = `${mant}e${exp10 < 0 ? '-' : '+'}${String(Math.abs(exp10)).padStart(2, '0')}`;
  } else if (exp10 < 0) {
    text = `0.${'0'.repeat(-exp10 - 1)}${digits}`;
  } else if (digits.length <= exp10 + 1) {
    text = digits + '0'.repeat(exp10 + 1 - digits.length);
  } else {
    text = `${digits.slice(0, exp10 + 1)}.${digits.slice(exp10 + 1)}`;
  }
  return { text: sign + text, tie };
}

/** Everything redis-parser makes of `bytes`: replies, and errors as { error: message }. */
function parseWithRedisParser(bytes: Buffer, cuts: readonly number[] = []): unknown[] {
  const out: unknown[] = [];
  const parser = new RedisParser({
    returnReply: (reply) => out.push(normalize(reply)),
    returnError: (error) => out.push({ error: error.message }),
    returnFatalError: (error) => {
      throw error;
    },
    returnBuffers: true,
    stringNumbers: true,
  });
  let from = 0;
  for (const cut of [...cuts.map((c) => c % (bytes.length + 1)).sort((x, y) => x - y), bytes.length]) {
    if (cut > from) parser.execute(bytes.subarray(from, cut));
    from = Math.max(from, cut);
  }
  return out;
}

/** redis-parser output as plain data: Buffers as { bytes: hex }, nested errors as { error }. */
function normalize(value: unknown): unknown {
  if (Buffer.isBuffer(value)) return { bytes: value.toString('hex') };
  if (Array.isArray(value)) return value.map(normalize);
  if (value instanceof Error) return { error: value.message };
  return value;
}

/** What a RESP2 client sees for `reply`, in the shape `normalize` gives. */
function resp2View(reply: Reply): unknown {
  switch (reply.kind) {
    case 'simple':
      return { bytes: b(reply.value).toString('hex') };
    case 'error':
      return { error: reply.value };
    case 'integer':
      return String(reply.value);
    case 'bulk':
      return { bytes: reply.value.toString('hex') };
    case 'null':
    case 'nullArray':
      return null;
    case 'array':
    case 'set':
      return reply.items.map(resp2View);
    case 'map':
      return reply.entries.flatMap(([k, v]) => [resp2View(k), resp2View(v)]);
    case 'double':
      return { bytes: b(formatDouble(reply.value)).toString('hex') };
    case 'boolean':
      return reply.value ? '1' : '0';
    case 'verbatim':
      return { bytes: Buffer.from(reply.value, 'utf8').toString('hex') };
    case 'encoded':
      return { encoded: reply.bytes.toString('hex') };
  }
}

/**
 * A strict RESP3 reader for the test: reads one value at `pos`, checking every
 * length and line end, and returns it in the same tagged shape as `resp3View`.
 */
function readResp3(buf: Buffer, start: number): { value: unknown; end: number } {
  const lineEnd = buf.indexOf('\r\n', start, 'latin1');
  assert.ok(lineEnd > start, `no line at ${start}`);
  const type = String.fromCharCode(buf[start] ?? 0);
  const line = buf.toString('latin1', start + 1, lineEnd);
  let pos = lineEnd + 2;
  const readItems = (n: number): unknown[] => {
    const items: unknown[] = [];
    for (let i = 0; i < n; i++) {
      const item = readResp3(buf, pos);
      items.push(item.value);
      pos = item.end;
    }
    return items;
  };
  const count = (): number => {
    assert.match(line, /^(0|[1-9][0-9]*)$/, `bad length ${line}`);
    return Number(line);
  };
  switch (type) {
    case '+':
      return { value: { simple: line }, end: pos };
    case '-':
      return { value: { error: line }, end: pos };
    case ':':
      assert.match(line, /^-?(0|[1-9][0-9]*)$/);
      return { value: { integer: line }, end: pos };
    case ',':
      return { value: { double: line }, end: pos };
    case '#':
      assert.ok(line === 't' || line === 'f');
      return { value: { boolean: line === 't' }, end: pos };
    case '_':
      assert.equal(line, '');
      return { value: null, end: pos };
    case '$':
    case '=': {
      const n = count();
      const body = buf.subarray(pos, pos + n);
      assert.equal(body.length, n);
      assert.equal(buf.toString('latin1', pos + n, pos + n + 2), '\r\n', 'bulk not followed by CRLF');
      const value = type === '$' ? { bulk: body.toString('hex') } : { verbatim: body.toString('latin1', 0, 4) + body.subarray(4).toString('hex') };
      return { value, end: pos + n + 2 };
    }
    case '*':
      return { value: { array: readItems(count()) }, end: pos };
    case '~':
      return { value: { set: readItems(count()) }, end: pos };
    case '%': {
      const items = readItems(2 * count());
      return { value: { map: items }, end: pos };
    }
    default:
      assert.fail(`unknown RESP3 type ${JSON.stringify(type)}`);
  }
}

function resp3View(reply: Reply): unknown {
  switch (reply.kind) {
    case 'simple':
      return { simple: reply.value };
    case 'error':
      return { error: reply.value };
    case 'integer':
      return { integer: String(reply.value) };
    case 'bulk':
      return { bulk: reply.value.toString('hex') };
    case 'null':
    case 'nullArray':
      return null;
    case 'array':
      return { array: reply.items.map(resp3View) };
    case 'set':
      return { set: reply.items.map(resp3View) };
    case 'map':
      return { map: reply.entries.flatMap(([k, v]) => [resp3View(k), resp3View(v)]) };
    case 'double':
      return { double: formatDouble(reply.value) };
    case 'boolean':
      return { boolean: reply.value };
    case 'verbatim':
      return { verbatim: `${reply.format}:` + Buffer.from(reply.value, 'utf8').toString('hex') };
    case 'encoded':
      return { encoded: reply.bytes.toString('hex') };
  }
}

// Text that is valid in a simple string or error: printable latin1, no CR/LF.
const lineText = fc.string({ maxLength: 20 }).map((s) => s.replace(/[^\x20-\x7e]/g, '_'));
const leafReply: fc.Arbitrary<Reply> = fc.oneof(
  lineText.map((s) => R.simple(s)),
  lineText.map((s) => R.error(`ERR ${s}`)),
  fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }).map((n) => R.int(n)),
  fc.integer().map((n) => R.int(n)),
  fc.uint8Array({ maxLength: 50 }).map((a) => R.bulk(Buffer.from(a))),
  fc.string({ maxLength: 10 }).map((s) => R.bulk(s)),
  fc.constant(R.nil),
  fc.constant(R.nilArray),
  fc.double().map((d) => R.double(d)),
  fc.boolean().map((v) => R.bool(v)),
  fc.string({ maxLength: 20 }).map((s) => R.verbatim(s)),
);
const { reply: anyReply } = fc.letrec<{ reply: Reply }>((tie) => ({
  reply: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    leafReply,
    fc.array(tie('reply'), { maxLength: 4 }).map((items) => R.array(items)),
    fc.array(tie('reply'), { maxLength: 4 }).map((items) => R.set(items)),
    fc.array(fc.tuple(tie('reply'), tie('reply')), { maxLength: 3 }).map((entries) => R.map(entries)),
  ),
}));

// ---------------------------------------------------------------- exact bytes

describe('encodeReply: exact bytes per reply type', () => {
  it('simple strings', () => {
    expectBytes(R.simple('PONG'), '+PONG\r\n', '+PONG\r\n');
    expectBytes(R.ok, '+OK\r\n', '+OK\r\n');
    expectBytes(R.simple(''), '+\r\n', '+\r\n');
  });

  it('errors', () => {
    expectBytes(R.error('ERR syntax error'), '-ERR syntax error\r\n', '-ERR syntax error\r\n');
    expectBytes(
      R.error("ERR unknown command 'foo', with args beginning with: 'a' 'b' "),
      "-ERR unknown command 'foo', with args beginning with: 'a' 'b' \r\n",
      "-ERR unknown command 'foo', with args beginning with: 'a' 'b' \r\n",
    );
  });

  it('error text never breaks the frame: CR and LF become spaces, as Redis does', () => {
    assert.equal(encodeReply(R.error("ERR unknown command 'fo\r\no'"), 2).toString('latin1'), "-ERR unknown command 'fo  o'\r\n");
  });

  it('error text is written as latin1, so argument bytes echoed back come back as sent', () => {
    const arg = Buffer.from([0x66, 0xe9, 0xff]).toString('latin1');
    assert.deepEqual(
      encodeReply(R.error(`ERR unknown command '${arg}'`), 2),
      Buffer.concat([b("-ERR unknown command '"), Buffer.from([0x66, 0xe9, 0xff]), b("'\r\n")]),
    );
  });

  it('integers, including the signed 64-bit extremes', () => {
    expectBytes(R.int(0), ':0\r\n', ':0\r\n');
    expectBytes(R.zero, ':0\r\n', ':0\r\n');
    expectBytes(R.one, ':1\r\n', ':1\r\n');
    expectBytes(R.int(-42), ':-42\r\n', ':-42\r\n');
    expectBytes(R.int(9223372036854775807n), ':9223372036854775807\r\n', ':9223372036854775807\r\n');
    expectBytes(R.int(-9223372036854775808n), ':-9223372036854775808\r\n', ':-9223372036854775808\r\n');
    expectBytes(R.int(Number.MAX_SAFE_INTEGER), ':9007199254740991\r\n', ':9007199254740991\r\n');
  });

  it('bulk strings: binary safe, empty, and text as UTF-8', () => {
    expectBytes(R.bulk(b('a\r\nb')), '$4\r\na\r\nb\r\n', '$4\r\na\r\nb\r\n');
    expectBytes(R.bulk(''), '$0\r\n\r\n', '$0\r\n\r\n');
    assert.deepEqual(encodeReply(R.bulk('é€'), 2), Buffer.concat([b('$5\r\n'), Buffer.from('é€', 'utf8'), b('\r\n')]));
    const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    assert.deepEqual(encodeReply(R.bulk(all), 3), Buffer.concat([b('$256\r\n'), all, b('\r\n')]));
  });

  it('null: $-1 in RESP2, _ in RESP3', () => {
    expectBytes(R.nil, '$-1\r\n', '_\r\n');
  });

  it('null array: *-1 in RESP2, _ in RESP3', () => {
    expectBytes(R.nilArray, '*-1\r\n', '_\r\n');
  });

  it('arrays, empty and nested', () => {
    expectBytes(R.array([]), '*0\r\n', '*0\r\n');
    expectBytes(
      R.array([R.int(1), R.array([R.bulk('a'), R.nil]), R.simple('x')]),
      '*3\r\n:1\r\n*2\r\n$1\r\na\r\n$-1\r\n+x\r\n',
      '*3\r\n:1\r\n*2\r\n$1\r\na\r\n_\r\n+x\r\n',
    );
  });

  it('maps: a flat array of keys and values in RESP2, % in RESP3', () => {
    expectBytes(R.map([]), '*0\r\n', '%0\r\n');
    expectBytes(
      R.map([
        [R.bulk('proto'), R.int(3)],
        [R.bulk('modules'), R.array([])],
      ]),
      '*4\r\n$5\r\nproto\r\n:3\r\n$7\r\nmodules\r\n*0\r\n',
      '%2\r\n$5\r\nproto\r\n:3\r\n$7\r\nmodules\r\n*0\r\n',
    );
    expectBytes(textMap([['server', R.bulk('redis')]]), '*2\r\n$6\r\nserver\r\n$5\r\nredis\r\n', '%1\r\n$6\r\nserver\r\n$5\r\nredis\r\n');
  });

  it('sets: an array in RESP2, ~ in RESP3', () => {
    expectBytes(R.set([R.bulk('a'), R.bulk('b')]), '*2\r\n$1\r\na\r\n$1\r\nb\r\n', '~2\r\n$1\r\na\r\n$1\r\nb\r\n');
    expectBytes(R.set([]), '*0\r\n', '~0\r\n');
  });

  it('doubles: a bulk string in RESP2, , in RESP3, formatted like Redis 7.0 (%.17g)', () => {
    expectBytes(R.double(1.5), '$3\r\n1.5\r\n', ',1.5\r\n');
    expectBytes(R.double(3), '$1\r\n3\r\n', ',3\r\n');
    expectBytes(R.double(0.1), '$19\r\n0.10000000000000001\r\n', ',0.10000000000000001\r\n');
    expectBytes(R.double(Infinity), '$3\r\ninf\r\n', ',inf\r\n');
    expectBytes(R.double(-Infinity), '$4\r\n-inf\r\n', ',-inf\r\n');
    // What redis-server 7.0 answers to ZSCORE under HELLO 3 for these scores.
    const fromRedis: [number, string][] = [
      [1.1, '1.1000000000000001'],
      [1e16, '10000000000000000'],
      [1e17, '1e+17'],
      [5e-324, '4.9406564584124654e-324'],
      [1.7976931348623157e308, '1.7976931348623157e+308'],
      [1e-5, '1.0000000000000001e-05'],
      [0.0001, '0.0001'],
      [123456789.123, '123456789.123'],
      [1e21, '1e+21'],
      [12345678901234567890, '1.2345678901234567e+19'],
      [-2.5, '-2.5'],
      [1 / 3, '0.33333333333333331'],
    ];
    for (const [value, text] of fromRedis) assert.equal(formatDouble(value), text, String(value));
  });

  it('formatDouble agrees with an exact %.17g for any double (property)', () => {
    fc.assert(
      fc.property(fc.double({ noNaN: true }), (value) => {
        const expected = printf17g(value);
        assert.equal(formatDouble(value), expected.text);
      }),
      { numRuns: 2000 },
    );
  });

  it('formatDouble rounds exact ties to even like printf', () => {
    for (const value of [1000000000000000.25, -1000000000000000.25]) {
      const expected = printf17g(value);
      assert.ok(expected.tie);
      assert.equal(formatDouble(value), expected.text);
    }
  });

  it('formatDouble gives all 17 digits of integers between 2^53 and 1e17', () => {
    // What redis-server 7.0 answers to ZSCORE under HELLO 3 for these scores.
    assert.equal(formatDouble(99999999999999990), '99999999999999984');
    assert.equal(formatDouble(-34036690253493670), '-34036690253493672');
  });

  it('booleans: :1 / :0 in RESP2, #t / #f in RESP3', () => {
    expectBytes(R.bool(true), ':1\r\n', '#t\r\n');
    expectBytes(R.bool(false), ':0\r\n', '#f\r\n');
  });

  it('verbatim strings: a bulk string in RESP2, = with the format in RESP3', () => {
    expectBytes(R.verbatim('Some string'), '$11\r\nSome string\r\n', '=15\r\ntxt:Some string\r\n');
    expectBytes(
      R.verbatim('# Server\r\nredis_version:7.0.0\r\n'),
      '$31\r\n# Server\r\nredis_version:7.0.0\r\n\r\n',
      '=35\r\ntxt:# Server\r\nredis_version:7.0.0\r\n\r\n',
    );
    expectBytes(R.verbatim('', 'mkd'), '$0\r\n\r\n', '=4\r\nmkd:\r\n');
    // The length counts bytes, not chars.
    assert.equal(encodeReply(R.verbatim('é'), 3).toString('latin1', 0, 4), '=6\r\n');
  });
});

// ---------------------------------------------------------------- streams of replies

describe('encodeInto and joinParts', () => {
  it('appending several replies gives the concatenation of their encodings', () => {
    const replies = [R.ok, R.int(7), R.bulk('x'), R.nil, R.array([R.bool(true)])];
    for (const proto of [2, 3] as const) {
      const parts: (string | Buffer)[] = [];
      for (const r of replies) encodeInto(r, proto, parts);
      assert.deepEqual(joinParts(parts), Buffer.concat(replies.map((r) => encodeReply(r, proto))));
    }
  });

  it('joinParts writes strings as latin1 and copies buffers', () => {
    assert.deepEqual(joinParts(['a\xff', Buffer.from([1, 2]), '']), Buffer.from([0x61, 0xff, 1, 2]));
    assert.equal(joinParts([]).length, 0);
  });
});

// ---------------------------------------------------------------- round trips

describe('round trips', () => {
  it('RESP2: redis-parser reads back every reply, however the bytes are cut (property)', () => {
    fc.assert(
      fc.property(fc.array(anyReply, { minLength: 1, maxLength: 5 }), fc.array(fc.nat(), { maxLength: 10 }), (replies, cuts) => {
        const bytes = Buffer.concat(replies.map((r) => encodeReply(r, 2)));
        assert.deepEqual(parseWithRedisParser(bytes, cuts), replies.map(resp2View));
      }),
      { numRuns: 300 },
    );
  });

  it('RESP3: a strict reader reads back every reply with the right types and lengths (property)', () => {
    fc.assert(
      fc.property(anyReply, (reply) => {
        const bytes = encodeReply(reply, 3 satisfies Protocol);
        const { value, end } = readResp3(bytes, 0);
        assert.equal(end, bytes.length);
        assert.deepEqual(value, resp3View(reply));
      }),
      { numRuns: 300 },
    );
  });
});
