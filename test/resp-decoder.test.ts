import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { DEFAULT_DECODER_LIMITS, ProtocolError, RequestDecoder, splitInlineArgs, type DecoderLimits } from '../src/resp/decoder.js';

// ---------------------------------------------------------------- helpers

const b = (text: string): Buffer => Buffer.from(text, 'latin1');

function multibulk(args: readonly Uint8Array[]): Buffer {
  const parts: Buffer[] = [b(`*${args.length}\r\n`)];
  for (const arg of args) parts.push(b(`$${arg.length}\r\n`), Buffer.from(arg), b('\r\n'));
  return Buffer.concat(parts);
}

/** An inline line that spells every argument in double quotes, escaping anything not plainly printable. */
function inlineQuoted(args: readonly Uint8Array[], lineEnd: '\r\n' | '\n'): Buffer {
  const words = args.map((arg) => {
    let word = '"';
    for (const byte of arg) {
      const printable = byte >= 0x21 && byte <= 0x7e && byte !== 0x22 && byte !== 0x5c;
      word += printable ? String.fromCharCode(byte) : `\\x${byte.toString(16).padStart(2, '0')}`;
    }
    return `${word}"`;
  });
  return b(words.join(' ') + lineEnd);
}

interface Outcome {
  commands: string[][];
  error: string | null;
  pendingBytes: number;
}

/** Feeds `input` cut at `cuts`, draining after every feed like the server does. */
function decode(input: Buffer, cuts: readonly number[] = [], limits?: Partial<DecoderLimits>): Outcome {
  const decoder = new RequestDecoder(limits);
  const commands: string[][] = [];
  const points = [...new Set(cuts.map((c) => c % (input.length + 1)))].sort((x, y) => x - y);
  points.push(input.length);
  let from = 0;
  try {
    for (const to of points) {
      if (to > from) decoder.feed(input.subarray(from, to));
      from = to;
      for (let cmd = decoder.next(); cmd !== null; cmd = decoder.next()) {
        commands.push(cmd.map((arg) => arg.toString('hex')));
      }
    }
  } catch (err) {
    assert.ok(err instanceof ProtocolError, `unexpected ${String(err)}`);
    return { commands, error: err.message, pendingBytes: -1 };
  }
  return { commands, error: null, pendingBytes: decoder.pendingBytes };
}

const hex = (...args: string[]): string[] => args.map((a) => b(a).toString('hex'));

function byteByByte(input: Buffer): number[] {
  return Array.from({ length: input.length }, (_, i) => i);
}

function expectError(input: string, message: string, limits?: Partial<DecoderLimits>): void {
  const whole = decode(b(input), [], limits);
  assert.equal(whole.error, message, `whole input ${JSON.stringify(input.slice(0, 40))}`);
  const split = decode(b(input), byteByByte(b(input)), limits);
  assert.equal(split.error, message, `byte by byte ${JSON.stringify(input.slice(0, 40))}`);
}

const anyArg = fc.oneof(
  fc.uint8Array({ maxLength: 40 }),
  fc.constantFrom(b(''), b('\r\n'), b('\r'), b('\n'), b('*1\r\n$1\r\nx\r\n'), b('$3\r\n'), b('"\'\\')).map((x) => new Uint8Array(x)),
  fc.uint8Array({ minLength: 200, maxLength: 3000 }),
);
const anyCommand = fc.array(anyArg, { minLength: 1, maxLength: 8 });
const cutPoints = fc.array(fc.nat(), { maxLength: 40 });

// ---------------------------------------------------------------- multibulk

describe('RequestDecoder: multibulk requests', () => {
  it('decodes one request', () => {
    const d = new RequestDecoder();
    d.feed(b('*2\r\n$4\r\nINCR\r\n$7\r\ncounter\r\n'));
    assert.deepEqual(d.next()?.map(String), ['INCR', 'counter']);
    assert.equal(d.next(), null);
    assert.equal(d.pendingBytes, 0);
  });

  it('returns null until the request is complete, and keeps the rest pending', () => {
    const d = new RequestDecoder();
    const frame = b('*2\r\n$4\r\nINCR\r\n$7\r\ncounter\r\n');
    for (let i = 0; i < frame.length - 1; i++) {
      d.feed(frame.subarray(i, i + 1));
      assert.equal(d.next(), null, `after ${i + 1} bytes`);
      assert.equal(d.pendingBytes, i + 1);
    }
    d.feed(frame.subarray(frame.length - 1));
    assert.deepEqual(d.next()?.map(String), ['INCR', 'counter']);
    assert.equal(d.pendingBytes, 0);
  });

  it('decodes many requests from one chunk, in order', () => {
    const frames: Buffer[] = [];
    for (let i = 0; i < 1000; i++) frames.push(multibulk([b('INCR'), b(`key:${i}`)]));
    const out = decode(Buffer.concat(frames));
    assert.equal(out.error, null);
    assert.equal(out.commands.length, 1000);
    out.commands.forEach((cmd, i) => assert.deepEqual(cmd, hex('INCR', `key:${i}`)));
  });

  it('is binary safe: arguments may hold CR, LF, NUL and any byte', () => {
    const arg = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    const out = decode(Buffer.concat([multibulk([b('SET'), b('k\r\n'), arg]), multibulk([b('\r\n\r\n')])]));
    assert.deepEqual(out.commands, [[b('SET').toString('hex'), b('k\r\n').toString('hex'), arg.toString('hex')], hex('\r\n\r\n')]);
  });

  it('accepts empty arguments', () => {
    assert.deepEqual(decode(b('*2\r\n$0\r\n\r\n$0\r\n\r\n')).commands, [hex('', '')]);
  });

  it('skips *0 and negative counts, as Redis does', () => {
    const out = decode(b('*0\r\n*-1\r\n*-5\r\n*1\r\n$4\r\nPING\r\n*0\r\n'));
    assert.deepEqual(out.commands, [hex('PING')]);
    assert.equal(out.pendingBytes, 0);
  });

  it('like Redis, takes the byte after a header CR and the two bytes after a payload as line ends without checking them', () => {
    assert.deepEqual(decode(b('*1\rx$4\r\nPING\r\n')).commands, [hex('PING')]);
    assert.deepEqual(decode(b('*1\r\n$4\r\nPINGxxPING\r\n')).commands, [hex('PING'), hex('PING')]);
  });

  it('returns payloads that lie inside one chunk without copying them', () => {
    const chunk = b('*2\r\n$3\r\nGET\r\n$5\r\nhello\r\n');
    const d = new RequestDecoder();
    d.feed(chunk);
    const cmd = d.next();
    assert.ok(cmd !== null);
    const key = cmd[1];
    assert.ok(key !== undefined);
    assert.equal(key.buffer, chunk.buffer);
    assert.equal(key.byteOffset, chunk.byteOffset + 17);
  });

  it('never overwrites arguments it returned, however much is fed after', () => {
    const d = new RequestDecoder();
    const kept: { arg: Buffer; expected: string }[] = [];
    // Frames cut mid-way so the decoder has to gather them into its own buffer.
    const stream = Buffer.concat(Array.from({ length: 3000 }, (_, i) => multibulk([b('SET'), b(`key-${i}`), b('v'.repeat(i % 50))])));
    for (let i = 0; i < stream.length; i += 777) {
      d.feed(stream.subarray(i, Math.min(stream.length, i + 777)));
      for (let cmd = d.next(); cmd !== null; cmd = d.next()) {
        const key = cmd[1];
        assert.ok(key !== undefined);
        kept.push({ arg: key, expected: key.toString('latin1') });
      }
    }
    assert.equal(kept.length, 3000);
    for (const [i, { arg, expected }] of kept.entries()) {
      assert.equal(expected, `key-${i}`);
      assert.equal(arg.toString('latin1'), expected);
    }
  });

  it('decodes a request with many arguments fed a few bytes at a time', () => {
    const args = Array.from({ length: 20000 }, (_, i) => b(`member:${i}`));
    const frame = multibulk([b('SADD'), b('s'), ...args]);
    const d = new RequestDecoder();
    let cmd: Buffer[] | null = null;
    for (let i = 0; i < frame.length; i += 7) {
      d.feed(frame.subarray(i, i + 7));
      const got = d.next();
      if (got !== null) cmd = got;
      else assert.equal(d.pendingBytes, Math.min(frame.length, i + 7));
    }
    assert.ok(cmd !== null);
    assert.equal(cmd.length, 20002);
    assert.equal(cmd[20001]?.toString(), 'member:19999');
    assert.equal(d.pendingBytes, 0);
  });

  it('ignores empty chunks', () => {
    const d = new RequestDecoder();
    d.feed(Buffer.alloc(0));
    assert.equal(d.next(), null);
    d.feed(b('*1\r\n$4\r\nPI'));
    d.feed(Buffer.alloc(0));
    d.feed(b('NG\r\n'));
    assert.deepEqual(d.next()?.map(String), ['PING']);
  });

  it('decodes random pipelines cut at random points (property)', () => {
    fc.assert(
      fc.property(fc.array(anyCommand, { maxLength: 12 }), cutPoints, (commands, cuts) => {
        const input = Buffer.concat(commands.map(multibulk));
        const out = decode(input, cuts);
        assert.equal(out.error, null);
        assert.equal(out.pendingBytes, 0);
        assert.deepEqual(
          out.commands,
          commands.map((cmd) => cmd.map((a) => Buffer.from(a).toString('hex'))),
        );
      }),
      { numRuns: 300 },
    );
  });

  it('keeps a truncated pipeline pending and counts its bytes (property)', () => {
    fc.assert(
      fc.property(fc.array(anyCommand, { minLength: 1, maxLength: 6 }), fc.nat(), cutPoints, (commands, dropSeed, cuts) => {
        const frames = commands.map(multibulk);
        const input = Buffer.concat(frames);
        const last = frames[frames.length - 1];
        assert.ok(last !== undefined);
        const dropped = 1 + (dropSeed % last.length);
        const out = decode(input.subarray(0, input.length - dropped), cuts);
        assert.equal(out.error, null);
        assert.equal(out.commands.length, commands.length - 1);
        assert.equal(out.pendingBytes, last.length - dropped);
      }),
      { numRuns: 200 },
    );
  });
});

// ---------------------------------------------------------------- inline

describe('RequestDecoder: inline commands', () => {
  const inline = (line: string): string[][] => {
    const out = decode(b(line));
    assert.equal(out.error, null, line);
    return out.commands;
  };

  it('splits on spaces and tabs, with CRLF or LF line ends', () => {
    assert.deepEqual(inline('PING\r\n'), [hex('PING')]);
    assert.deepEqual(inline('SET  k\tv \r\n'), [hex('SET', 'k', 'v')]);
    assert.deepEqual(inline('ECHO x\nECHO y\n'), [hex('ECHO', 'x'), hex('ECHO', 'y')]);
  });

  it('skips empty and blank lines', () => {
    assert.deepEqual(inline('\r\n\n  \t \r\nPING\r\n\r\n'), [hex('PING')]);
  });

  it('treats a CR inside a line as a separator, and VT/FF as part of an unquoted argument', () => {
    assert.deepEqual(inline('ECHO a\rb\r\n'), [hex('ECHO', 'a', 'b')]);
    assert.deepEqual(inline('ECHO a\x0bb\r\n'), [hex('ECHO', 'a\x0bb')]);
  });

  it('decodes double quotes with their escapes', () => {
    assert.deepEqual(inline('ECHO "a b" "\\n\\r\\t\\b\\a\\\\\\""\r\n'), [hex('ECHO', 'a b', '\n\r\t\b\x07\\"')]);
    assert.deepEqual(inline('ECHO "a\\x41\\x4a\\x4b\\xff"\r\n'), [hex('ECHO', 'aAJK\xff')]);
    assert.deepEqual(inline('ECHO "\\q" "\\x4g" "\\xZZ" "\\x4"\r\n'), [hex('ECHO', 'q', 'x4g', 'xZZ', 'x4')]);
    assert.deepEqual(inline('ECHO ""\r\n'), [hex('ECHO', '')]);
  });

  it("decodes single quotes, where only \\' is an escape", () => {
    assert.deepEqual(inline("ECHO 'a\\'b\\n' ''\r\n"), [hex('ECHO', "a'b\\n", '')]);
    assert.deepEqual(inline('ECHO \'say "hi"\'\r\n'), [hex('ECHO', 'say "hi"')]);
  });

  it('joins a quoted part onto the unquoted bytes before it (ab"cd" is abcd)', () => {
    assert.deepEqual(inline('ECHO ab"cd" x\'y\'\r\n'), [hex('ECHO', 'abcd', 'xy')]);
  });

  it('accepts any blank after a closing quote', () => {
    assert.deepEqual(inline('ECHO "a"\x0b"b"\r\n'), [hex('ECHO', 'a', 'b')]);
    assert.deepEqual(inline('ECHO "a"\t\'b\'\n'), [hex('ECHO', 'a', 'b')]);
  });

  it('treats NUL as an ordinary byte', () => {
    assert.deepEqual(inline('ECHO a\x00b "c\x00"\r\n'), [hex('ECHO', 'a\x00b', 'c\x00')]);
  });

  it('round-trips random arguments spelled with quotes and \\x escapes (property)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.array(fc.uint8Array({ maxLength: 30 }), { minLength: 1, maxLength: 6 }), { maxLength: 8 }),
        fc.boolean(),
        cutPoints,
        (commands, crlf, cuts) => {
          const input = Buffer.concat(commands.map((cmd) => inlineQuoted(cmd, crlf ? '\r\n' : '\n')));
          const out = decode(input, cuts);
          assert.equal(out.error, null);
          assert.deepEqual(
            out.commands,
            commands.map((cmd) => cmd.map((a) => Buffer.from(a).toString('hex'))),
          );
        },
      ),
      { numRuns: 300 },
    );
  });

  it('mixes inline and multibulk requests in one stream', () => {
    const out = decode(b('PING\r\n*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\nECHO "x"\n*1\r\n$4\r\nQUIT\r\n'), [3, 9, 30]);
    assert.deepEqual(out.commands, [hex('PING'), hex('ECHO', 'hi'), hex('ECHO', 'x'), hex('QUIT')]);
  });

  it('splitInlineArgs returns null for unbalanced quotes', () => {
    assert.equal(splitInlineArgs(b('a "b'), 0, 4), null);
    assert.deepEqual(splitInlineArgs(b('xx a b xx'), 3, 6)?.map(String), ['a', 'b']);
  });
});

// ---------------------------------------------------------------- errors

describe('RequestDecoder: protocol errors (texts as Redis 7 sends them)', () => {
  it('invalid multibulk length', () => {
    for (const header of ['*abc', '*', '*+1', '*01', '*1 ', '* 1', '*-0', '*1.5', '*0x10', '*99999999999', `*${2 ** 20 + 1}`, '*99999999999999999999999']) {
      expectError(`${header}\r\n$4\r\nPING\r\n`, 'invalid multibulk length');
    }
  });

  it('invalid bulk length', () => {
    for (const header of ['$abc', '$', '$-1', '$-0', '$+4', '$04', '$ 4', '$4 ', '$99999999999', '$536870913', '$4\nPING']) {
      expectError(`*1\r\n${header}\r\nPING\r\n`, 'invalid bulk length');
    }
  });

  it("expected '$', got 'X'", () => {
    expectError('*2\r\n$4\r\nECHO\r\nx\r\n', "expected '$', got 'x'");
    expectError('*1\r\n:1\r\n', "expected '$', got ':'");
    expectError('*1\r\n\xff\r\n', "expected '$', got '\xff'");
    // Redis turns CR and LF into spaces in error texts.
    expectError('*1\r\n\r\n', "expected '$', got ' '");
    expectError('*1\r\n\nx\r\n', "expected '$', got ' '");
  });

  it('unbalanced quotes in request', () => {
    for (const line of ['ECHO "abc', "ECHO 'abc", 'ECHO "abc"x', "ECHO 'ab'c", 'ECHO "a""b"', 'ECHO "abc\\"', 'ECHO "\\x4', '"']) {
      expectError(`${line}\r\n`, 'unbalanced quotes in request');
    }
  });

  it('reports the error only after the requests before it', () => {
    const out = decode(b('*1\r\n$4\r\nPING\r\nPING\r\n*1\r\nx\r\n*1\r\n$4\r\nPING\r\n'));
    assert.deepEqual(out.commands, [hex('PING'), hex('PING')]);
    assert.equal(out.error, "expected '$', got 'x'");
  });

  it('stays failed: every later call throws the same error', () => {
    const d = new RequestDecoder();
    d.feed(b('*x\r\n'));
    assert.throws(() => d.next(), { name: 'ProtocolError', message: 'invalid multibulk length' });
    assert.throws(() => d.next(), { message: 'invalid multibulk length' });
    assert.throws(() => d.feed(b('PING\r\n')), { message: 'invalid multibulk length' });
  });

  it('gives the same commands and the same error however the bytes are cut (property)', () => {
    // Random bytes mostly made of protocol pieces, well-formed or not.
    const piece = fc.oneof(
      fc.constantFrom(
        '*',
        '$',
        '\r',
        '\n',
        '\r\n',
        '"',
        "'",
        '\\',
        ' ',
        'x',
        '0',
        '1',
        '2',
        '-',
        '*1\r\n',
        '$1\r\n',
        '$2\r\n',
        'PING\r\n',
        '*2\r\n$1\r\na\r\n$1\r\nb\r\n',
      ),
      fc.string({ maxLength: 4 }),
    );
    fc.assert(
      fc.property(fc.array(piece, { maxLength: 30 }), cutPoints, fc.constantFrom(4, 8, 64, 65536), (pieces, cuts, small) => {
        const input = b(pieces.join(''));
        const limits = { inlineBytesMax: small, multibulkLengthMax: small, bulkBytesMax: small };
        assert.deepEqual(decode(input, cuts, limits), decode(input, [], limits));
        assert.deepEqual(decode(input, byteByByte(input), limits), decode(input, [], limits));
      }),
      { numRuns: 500 },
    );
  });
});

// ---------------------------------------------------------------- limits

describe('RequestDecoder: limits', () => {
  it('has the documented defaults', () => {
    assert.deepEqual(
      { ...DEFAULT_DECODER_LIMITS },
      {
        queryBufferBytesMax: 64 * 1024 * 1024,
        bulkBytesMax: 512 * 1024 * 1024,
        multibulkLengthMax: 1024 * 1024,
        inlineBytesMax: 64 * 1024,
      },
    );
  });

  it('rejects limits that are not positive integers', () => {
    assert.throws(() => new RequestDecoder({ inlineBytesMax: 0 }), RangeError);
    assert.throws(() => new RequestDecoder({ bulkBytesMax: 1.5 }), RangeError);
    assert.throws(() => new RequestDecoder({ queryBufferBytesMax: Number.NaN }), RangeError);
  });

  it('refuses huge declared lengths as soon as the header is read, before any payload', () => {
    const d = new RequestDecoder();
    d.feed(b('*1\r\n$99999999999\r\n'));
    assert.throws(() => d.next(), { message: 'invalid bulk length' });
    const e = new RequestDecoder();
    e.feed(b('*99999999999\r\n'));
    assert.throws(() => e.next(), { message: 'invalid multibulk length' });
  });

  it('accepts a bulk of exactly bulkBytesMax and a count of exactly multibulkLengthMax', () => {
    assert.deepEqual(decode(b('*1\r\n$3\r\nabc\r\n'), [], { bulkBytesMax: 3 }).commands, [hex('abc')]);
    expectError('*1\r\n$4\r\nabcd\r\n', 'invalid bulk length', { bulkBytesMax: 3 });
    assert.deepEqual(decode(b('*2\r\n$1\r\na\r\n$1\r\nb\r\n'), [], { multibulkLengthMax: 2 }).commands, [hex('a', 'b')]);
    expectError('*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n', 'invalid multibulk length', { multibulkLengthMax: 2 });
    // The default bulk limit is Redis's proto-max-bulk-len: 512 MiB is fine, one more byte is not.
    const d = new RequestDecoder();
    d.feed(b('*1\r\n$536870912\r\n'));
    assert.equal(d.next(), null);
    expectError('*1\r\n$536870913\r\n', 'invalid bulk length');
  });

  it('too big mbulk count string: a *N line without CRLF beyond inlineBytesMax', () => {
    const max = DEFAULT_DECODER_LIMITS.inlineBytesMax;
    const d = new RequestDecoder();
    d.feed(b('*' + '1'.repeat(max - 1)));
    assert.equal(d.next(), null); // exactly the limit: still waiting
    d.feed(b('1'));
    assert.throws(() => d.next(), { message: 'too big mbulk count string' });
    expectError('*' + '9'.repeat(20), 'too big mbulk count string', { inlineBytesMax: 16 });
    expectError('*' + '9'.repeat(20) + '\r\n', 'too big mbulk count string', { inlineBytesMax: 16 });
  });

  it('too big bulk count string: a $N line without CRLF beyond inlineBytesMax', () => {
    const max = DEFAULT_DECODER_LIMITS.inlineBytesMax;
    const d = new RequestDecoder();
    d.feed(b('*1\r\n$' + '1'.repeat(max)));
    assert.throws(() => d.next(), { message: 'too big bulk count string' });
    expectError('*1\r\n' + 'x'.repeat(17), 'too big bulk count string', { inlineBytesMax: 16 });
  });

  it('too big inline request: an inline line beyond inlineBytesMax, with or without its line end', () => {
    const max = DEFAULT_DECODER_LIMITS.inlineBytesMax;
    const d = new RequestDecoder();
    d.feed(b('ECHO ' + 'x'.repeat(max)));
    assert.throws(() => d.next(), { message: 'too big inline request' });
    expectError('ECHO ' + 'x'.repeat(12), 'too big inline request', { inlineBytesMax: 16 });
    expectError('ECHO ' + 'x'.repeat(12) + '\r\n', 'too big inline request', { inlineBytesMax: 16 });
    // Exactly the limit, line end not counted.
    assert.deepEqual(decode(b('ECHO ' + 'x'.repeat(11) + '\r\n'), [5, 16, 17], { inlineBytesMax: 16 }).commands, [hex('ECHO', 'x'.repeat(11))]);
  });

  it('bounds the query buffer: feed throws once pending bytes would pass queryBufferBytesMax', () => {
    const d = new RequestDecoder({ queryBufferBytesMax: 1000 });
    d.feed(b('*2\r\n$3\r\nSET\r\n$2000\r\n'));
    assert.deepEqual(d.next(), null);
    const chunk = Buffer.alloc(100, 0x61);
    let fed = 0;
    assert.throws(
      () => {
        for (;;) {
          d.feed(chunk);
          fed += chunk.length;
          assert.equal(d.next(), null);
          assert.ok(d.pendingBytes <= 1000);
        }
      },
      { name: 'ProtocolError', message: 'query buffer limit exceeded' },
    );
    assert.ok(fed <= 1000);
    assert.throws(() => d.next(), { message: 'query buffer limit exceeded' });
  });

  it('counts every byte of an unfinished request as pending, arguments already read included', () => {
    const d = new RequestDecoder();
    d.feed(b('*3\r\n$3\r\nSET\r\n$5\r\nhello\r\n$5\r\nwo'));
    assert.equal(d.next(), null);
    assert.equal(d.pendingBytes, 30);
    d.feed(b('rld\r\n'));
    assert.deepEqual(d.next()?.map(String), ['SET', 'hello', 'world']);
    assert.equal(d.pendingBytes, 0);
  });

  it('lets a request through whose bytes fit the query buffer exactly', () => {
    const frame = multibulk([b('SET'), b('k'), Buffer.alloc(200, 0x62)]);
    const out = decode(frame, [7, 50, 100], { queryBufferBytesMax: frame.length });
    assert.equal(out.error, null);
    assert.equal(out.commands.length, 1);
  });

  it('decodes a large bulk fed in small chunks', () => {
    const payload = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < payload.length; i++) payload[i] = (i * 7) & 0xff;
    const frame = multibulk([b('SET'), b('big'), payload]);
    const d = new RequestDecoder();
    let cmd: Buffer[] | null = null;
    for (let i = 0; i < frame.length; i += 1500) {
      d.feed(frame.subarray(i, i + 1500));
      cmd = d.next() ?? cmd;
    }
    assert.ok(cmd !== null);
    assert.ok(cmd[2]?.equals(payload));
  });
});
