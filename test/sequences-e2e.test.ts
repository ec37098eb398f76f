// Sequences against a real ordo process: concurrent pipelined clients never
// get overlapping values, in strict and window mode, across kill -9 and
// restart; TOKEN retries after a dropped connection; MAX and the refused
// commands; --window-keys; SEQCURRENT/SEQINFO in RESP2 and RESP3; COMMAND.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { ERR } from '../src/errors.js';
import { RawClient, removeDir, startOrdo, tempDir, type RunningOrdo } from '../testkit/index.js';

// A small RESP2/RESP3 reply reader, enough for the replies these tests look at.

type Resp =
  | { readonly t: 'simple' | 'error' | 'bulk' | 'verbatim'; readonly v: string }
  | { readonly t: 'int'; readonly v: bigint }
  | { readonly t: 'null' }
  | { readonly t: 'array' | 'set' | 'push'; readonly v: Resp[] }
  | { readonly t: 'map'; readonly v: [Resp, Resp][] };

/** Parses one reply at `offset`; null when the bytes are incomplete. */
function parseReply(buf: Buffer, offset = 0): { value: Resp; end: number } | null {
  const lineEnd = buf.indexOf('\r\n', offset);
  if (lineEnd < 0) return null;
  const kind = String.fromCharCode(buf[offset] ?? 0);
  const line = buf.toString('latin1', offset + 1, lineEnd);
  const next = lineEnd + 2;
  const aggregate = (n: number, t: 'array' | 'set' | 'push'): { value: Resp; end: number } | null => {
    const items: Resp[] = [];
    let at = next;
    for (let i = 0; i < n; i++) {
      const item = parseReply(buf, at);
      if (item === null) return null;
      items.push(item.value);
      at = item.end;
    }
    return { value: { t, v: items }, end: at };
  };
  switch (kind) {
    case '+':
      return { value: { t: 'simple', v: line }, end: next };
    case '-':
      return { value: { t: 'error', v: line }, end: next };
    case ':':
      return { value: { t: 'int', v: BigInt(line) }, end: next };
    case '_':
      return { value: { t: 'null' }, end: next };
    case '$':
    case '=': {
      const n = Number(line);
      if (n < 0) return { value: { t: 'null' }, end: next };
      if (buf.length < next + n + 2) return null;
      return { value: { t: kind === '$' ? 'bulk' : 'verbatim', v: buf.toString('latin1', next, next + n) }, end: next + n + 2 };
    }
    case '*':
      return Number(line) < 0 ? { value: { t: 'null' }, end: next } : aggregate(Number(line), 'array');
    case '~':
      return aggregate(Number(line), 'set');
    case '>':
      return aggregate(Number(line), 'push');
    case '%': {
      const flat = aggregate(2 * Number(line), 'array');
      if (flat === null || flat.value.t !== 'array') return null;
      const pairs: [Resp, Resp][] = [];
      for (let i = 0; i < flat.value.v.length; i += 2) pairs.push([flat.value.v[i] as Resp, flat.value.v[i + 1] as Resp]);
      return { value: { t: 'map', v: pairs }, end: flat.end };
    }
    default:
      throw new Error(`unexpected reply type ${JSON.stringify(kind)} in ${JSON.stringify(buf.toString('latin1'))}`);
  }
}

/** A raw connection that sends commands and reads whole replies. */
class Conn {
  private constructor(readonly raw: RawClient) {}

  static async open(port: number): Promise<Conn> {
    return new Conn(await RawClient.connect(port));
  }

  static encode(args: readonly (string | number)[]): string {
    return `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(String(a))}\r\n${String(a)}\r\n`).join('')}`;
  }

  async command(...args: (string | number)[]): Promise<Resp> {
    this.raw.send(Conn.encode(args));
    const bytes = await this.raw.until((b) => parseReply(b) !== null);
    const parsed = parseReply(bytes);
    if (parsed === null) throw new Error(`no complete reply to ${args.join(' ')}: ${JSON.stringify(bytes.toString('latin1'))}`);
    this.raw.take();
    const rest = bytes.subarray(parsed.end);
    assert.equal(rest.length, 0, 'one reply per command');
    return parsed.value;
  }

  close(): void {
    this.raw.close();
  }
}

const int = (v: bigint | number): Resp => ({ t: 'int', v: BigInt(v) });
const pair = (first: bigint | number, last: bigint | number): Resp => ({ t: 'array', v: [int(first), int(last)] });
const errorReply = (text: string): Resp => ({ t: 'error', v: text });

function mapOf(reply: Resp): Map<string, Resp> {
  const out = new Map<string, Resp>();
  if (reply.t === 'map') {
    for (const [k, v] of reply.v) out.set(k.t === 'bulk' || k.t === 'simple' ? k.v : '?', v);
  } else if (reply.t === 'array') {
    for (let i = 0; i < reply.v.length; i += 2) {
      const k = reply.v[i];
      out.set(k !== undefined && k.t === 'bulk' ? k.v : '?', reply.v[i + 1] as Resp);
    }
  } else throw new Error(`not a map: ${JSON.stringify(reply, (_k, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v))}`);
  return out;
}

function intOf(reply: Resp | undefined): bigint {
  assert.ok(reply !== undefined && reply.t === 'int', `an integer reply, got ${String(reply?.t)}`);
  return reply.v;
}

function rangeOf(reply: Resp): [bigint, bigint] {
  assert.ok(reply.t === 'array' && reply.v.length === 2, 'a [first, last] reply');
  return [intOf(reply.v[0]), intOf(reply.v[1])];
}

// ioredis clients that fail fast when the server goes away.

function client(port: number): Redis {
  const c = new Redis({ port, host: '127.0.0.1', maxRetriesPerRequest: 0, retryStrategy: () => null, lazyConnect: false });
  c.on('error', () => undefined); // a killed server is expected; failed commands are counted where they fail
  return c;
}

const toBig = (v: unknown): bigint => {
  if (typeof v !== 'number' && typeof v !== 'string') throw new Error(`not an integer reply: ${String(v)}`);
  return BigInt(v);
};

type Range = readonly [bigint, bigint];

/** Asserts no two ranges share a value (ranges are by step 1, inclusive). */
function assertDisjoint(ranges: readonly Range[], what: string): void {
  const sorted = [...ranges].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1] as Range;
    const cur = sorted[i] as Range;
    assert.ok(cur[0] > prev[1], `${what}: [${prev[0]}, ${prev[1]}] and [${cur[0]}, ${cur[1]}] overlap`);
  }
}

function assertContiguous(ranges: readonly Range[], from: bigint, what: string): void {
  const sorted = [...ranges].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  let expected = from;
  for (const [first, last] of sorted) {
    assert.equal(first, expected, `${what}: gap or overlap before ${first}`);
    expected = last + 1n;
  }
}

const maxOf = (ranges: readonly Range[]): bigint => ranges.reduce((m, r) => (r[1] > m ? r[1] : m), -(1n << 63n));
const minOf = (ranges: readonly Range[]): bigint => ranges.reduce((m, r) => (r[0] < m ? r[0] : m), 1n << 63n);

interface LoadResult {
  /** Per key, every acknowledged range. */
  readonly ranges: Map<string, Range[]>;
  /** Per client and key, the INCR values in the order they were acknowledged. */
  readonly incrs: Map<string, bigint[]>[];
}

/**
 * `clients` ioredis clients send pipelines of SEQNEXT key COUNT n (for each
 * key in `seqKeys`) and INCR (for each key in `incrKeys`) until `rounds` are
 * done or the connection fails. Only acknowledged replies are recorded.
 */
async function runLoad(
  port: number,
  opts: { clients: number; rounds: number; depth: number; seqKeys: string[]; incrKeys: string[] },
  progress: { acked: number } = { acked: 0 },
): Promise<LoadResult> {
  const ranges = new Map<string, Range[]>(opts.seqKeys.map((k) => [k, []]));
  const incrs: Map<string, bigint[]>[] = [];
  const clients = Array.from({ length: opts.clients }, () => client(port));
  try {
    await Promise.all(
      clients.map(async (c, ci) => {
        const mine = new Map<string, bigint[]>(opts.incrKeys.map((k) => [k, []]));
        incrs.push(mine);
        for (let round = 0; round < opts.rounds; round++) {
          const pipe = c.pipeline();
          const sent: { key: string; kind: 'seq' | 'incr' }[] = [];
          for (let d = 0; d < opts.depth; d++) {
            for (const key of opts.seqKeys) {
              pipe.call('SEQNEXT', key, 'COUNT', String(1 + ((ci + d + round) % 17)));
              sent.push({ key, kind: 'seq' });
            }
            for (const key of opts.incrKeys) {
              pipe.incr(key);
              sent.push({ key, kind: 'incr' });
            }
          }
          let results: [Error | null, unknown][] | null;
          try {
            results = await pipe.exec();
          } catch {
            return;
          }
          if (results === null) return;
          let failed = false;
          results.forEach(([error, value], i) => {
            const s = sent[i];
            if (s === undefined) return;
            if (error !== null) {
              failed = true;
              return;
            }
            progress.acked++;
            if (s.kind === 'seq') {
              assert.ok(Array.isArray(value) && value.length === 2, 'SEQNEXT COUNT replies [first, last]');
              ranges.get(s.key)?.push([toBig(value[0]), toBig(value[1])]);
            } else mine.get(s.key)?.push(toBig(value));
          });
          if (failed) return;
        }
      }),
    );
  } finally {
    for (const c of clients) c.disconnect();
  }
  return { ranges, incrs };
}

function assertIncreasingPerClient(results: readonly LoadResult[], key: string): bigint[] {
  const all: bigint[] = [];
  // Values of one client, in acknowledgement order, within one phase and across phases.
  for (const r of results) {
    for (const m of r.incrs) {
      const values = m.get(key) ?? [];
      for (let i = 1; i < values.length; i++) {
        assert.ok((values[i] as bigint) > (values[i - 1] as bigint), `${key}: ${values[i]} after ${values[i - 1]}`);
      }
      all.push(...values);
    }
  }
  assert.equal(new Set(all).size, all.length, `${key}: every INCR value is unique`);
  return all;
}

describe('sequences e2e: one node', () => {
  let ordo: RunningOrdo;
  let conn: Conn;

  before(async () => {
    ordo = await startOrdo({ args: ['--window-size', '100'] });
    conn = await Conn.open(ordo.port);
  });

  after(async () => {
    conn?.close();
    if (ordo !== undefined) {
      await ordo.stop();
      removeDir(ordo.dataDir);
    }
  });

  it('SEQNEXT from many pipelined clients never overlaps, strict and window', async () => {
    assert.deepEqual(await conn.command('SEQCREATE', 'load:strict'), { t: 'simple', v: 'OK' });
    assert.deepEqual(await conn.command('SEQCREATE', 'load:window', 'MODE', 'window', 'WINDOW', '50'), { t: 'simple', v: 'OK' });
    const result = await runLoad(ordo.port, { clients: 8, rounds: 15, depth: 20, seqKeys: ['load:strict', 'load:window'], incrKeys: [] });
    const strict = result.ranges.get('load:strict') ?? [];
    const window = result.ranges.get('load:window') ?? [];
    assert.equal(strict.length, 8 * 15 * 20);
    assert.equal(window.length, 8 * 15 * 20);
    assertDisjoint(strict, 'strict');
    assertDisjoint(window, 'window');
    // Healthy and never restarted: both are gapless from 1.
    assertContiguous(strict, 1n, 'strict');
    assertContiguous(window, 1n, 'window');
    assert.equal(intOf(await conn.command('SEQCURRENT', 'load:strict')), maxOf(strict));
    assert.equal(intOf(await conn.command('SEQCURRENT', 'load:window')), maxOf(window));
  });

  it('TOKEN: a retry after a dropped connection gets the same range, once allocated', async () => {
    for (const mode of ['strict', 'window']) {
      const key = `tok:${mode}`;
      await conn.command('SEQCREATE', key, 'MODE', mode);
      assert.deepEqual(await conn.command('SEQNEXT', key, 'COUNT', 3), pair(1, 3));
      // Send, and drop the connection before the reply can be read.
      const lost = await RawClient.connect(ordo.port);
      lost.send(Conn.encode(['SEQNEXT', key, 'COUNT', 5, 'TOKEN', 'order-17']));
      lost.close();
      await new Promise((r) => setTimeout(r, 50));
      const retry = await Conn.open(ordo.port);
      try {
        assert.deepEqual(await retry.command('SEQNEXT', key, 'COUNT', 5, 'TOKEN', 'order-17'), pair(4, 8), mode);
        assert.deepEqual(await retry.command('SEQNEXT', key, 'COUNT', 5, 'TOKEN', 'order-17'), pair(4, 8), mode);
        const after = rangeOf(await retry.command('SEQNEXT', key, 'COUNT', 1));
        if (mode === 'strict') assert.deepEqual(after, [9n, 9n], 'strict: the retries allocated nothing');
        else assert.ok(after[0] > 8n, 'window: later values are above the token range');
        assert.deepEqual(
          await retry.command('SEQNEXT', key, 'COUNT', 6, 'TOKEN', 'order-17'),
          errorReply(ERR.tokenMismatch),
          `${mode}: the same token with another COUNT`,
        );
        assert.deepEqual(await retry.command('SEQNEXT', key, 'TOKEN', 'single'), await retry.command('SEQNEXT', key, 'TOKEN', 'single'));
        assert.deepEqual(await retry.command('SEQNEXT', key, 'TOKEN', ''), errorReply(ERR.tokenLength), `${mode}: empty token`);
        assert.deepEqual(await retry.command('SEQNEXT', key, 'TOKEN', 't'.repeat(1025)), errorReply(ERR.tokenLength), `${mode}: 1025-byte token`);
        assert.notDeepEqual(await retry.command('SEQNEXT', key, 'TOKEN', 't'.repeat(1024)), errorReply(ERR.tokenLength), `${mode}: 1024-byte token`);
      } finally {
        retry.close();
      }
    }
  });

  it('MAX: an allocation that would pass it fails whole', async () => {
    for (const mode of ['strict', 'window']) {
      const key = `max:${mode}`;
      await conn.command('SEQCREATE', key, 'MAX', 10, 'MODE', mode, 'WINDOW', 4);
      assert.deepEqual(await conn.command('SEQNEXT', key, 'COUNT', 11), errorReply(ERR.seqMax), mode);
      assert.deepEqual(await conn.command('SEQNEXT', key, 'COUNT', 7), pair(1, 7), mode);
      assert.deepEqual(await conn.command('SEQNEXT', key, 'COUNT', 4), errorReply(ERR.seqMax), mode);
      assert.deepEqual(await conn.command('INCRBY', key, 4), errorReply(ERR.seqMax), mode);
      assert.deepEqual(await conn.command('SEQNEXT', key, 'COUNT', 3), pair(8, 10), mode);
      assert.deepEqual(await conn.command('SEQNEXT', key), errorReply(ERR.seqMax), mode);
      assert.deepEqual(await conn.command('INCR', key), errorReply(ERR.seqMax), mode);
      assert.equal(intOf(await conn.command('SEQCURRENT', key)), 10n, mode);
    }
  });

  it('refuses DECR, DECRBY, SET, INCRBY < 0 on a sequence; SEQCREATE on an existing key needs REPLACE', async () => {
    for (const mode of ['strict', 'window']) {
      const key = `refuse:${mode}`;
      await conn.command('SEQCREATE', key, 'MODE', mode);
      assert.deepEqual(await conn.command('SEQNEXT', key), int(1), mode);
      for (const cmd of [
        ['DECR', key],
        ['DECRBY', key, 1],
        ['SET', key, 0],
        ['INCRBY', key, -1],
        ['INCRBYFLOAT', key, 1],
      ]) {
        assert.deepEqual(await conn.command(...cmd), errorReply(ERR.seqBackwards), `${mode}: ${cmd.join(' ')}`);
      }
      assert.deepEqual(await conn.command('SEQCREATE', key), errorReply(ERR.seqExists));
      assert.deepEqual(await conn.command('INCR', key), int(2), `${mode}: INCR keeps its meaning`);
      assert.deepEqual(await conn.command('INCRBY', key, 5), int(7), `${mode}: INCRBY adds the delta`);
      assert.deepEqual(await conn.command('SEQCREATE', key, 'START', 100, 'MODE', mode, 'REPLACE'), { t: 'simple', v: 'OK' });
      assert.deepEqual(await conn.command('SEQNEXT', key), int(100), `${mode}: REPLACE starts over`);
      assert.deepEqual(await conn.command('DEL', key), int(1));
      assert.deepEqual(await conn.command('SEQNEXT', key), int(1), `${mode}: after DEL, a plain counter`);
      assert.deepEqual(await conn.command('DECR', key), int(0), 'and a plain counter goes down like in Redis');
    }
    assert.deepEqual(await conn.command('SEQCREATE', 'bad', 'STEP', 0), errorReply(ERR.stepNotPositive));
    assert.deepEqual(await conn.command('SEQCREATE', 'bad', 'START', 5, 'MAX', 4), errorReply(ERR.startAboveMax));
    assert.deepEqual(await conn.command('SEQCREATE', 'bad', 'MODE', 'fast'), errorReply(ERR.syntax));
    assert.deepEqual(await conn.command('SEQNEXT', 'bad', 'COUNT', 0), errorReply(ERR.countNotPositive));
    assert.deepEqual(await conn.command('SEQNEXT', 'bad', 'COUNT'), errorReply(ERR.syntax));
  });

  it('plain counters: SEQNEXT allocates with step 1 and leaves them plain', async () => {
    assert.deepEqual(await conn.command('INCRBY', 'plain', 41), int(41));
    assert.deepEqual(await conn.command('SEQNEXT', 'plain', 'COUNT', 9), pair(42, 50));
    assert.deepEqual(await conn.command('SEQNEXT', 'plain'), int(51));
    assert.deepEqual(await conn.command('DECRBY', 'plain', 50), int(1), 'still a plain counter');
    assert.deepEqual(await conn.command('SET', 'plain', 'x'), { t: 'simple', v: 'OK' });
    assert.deepEqual(await conn.command('SEQNEXT', 'plain'), errorReply(ERR.notInteger));
    assert.deepEqual(await conn.command('SEQNEXT', 'never-seen', 'COUNT', 2), pair(1, 2));
    assert.equal(mapOf(await conn.command('SEQINFO', 'never-seen')).get('mode')?.t, 'bulk');
  });

  it('INCR on a strict sequence with STEP > 1 adds the delta (off the step grid)', async () => {
    await conn.command('SEQCREATE', 'grid:strict', 'STEP', 10);
    assert.deepEqual(await conn.command('SEQNEXT', 'grid:strict'), int(1));
    assert.deepEqual(await conn.command('INCR', 'grid:strict'), int(2));
    assert.deepEqual(await conn.command('SEQNEXT', 'grid:strict'), int(12));
  });

  it('INCRBY d on a window sequence with STEP > 1 hands out d values from the window and returns the last', async () => {
    // Window values stay on the step grid (they come from reserved windows); with STEP 1 this is exactly "add the delta".
    await conn.command('SEQCREATE', 'grid:window', 'STEP', 10, 'MODE', 'window');
    assert.deepEqual(await conn.command('SEQNEXT', 'grid:window'), int(1));
    assert.deepEqual(await conn.command('INCR', 'grid:window'), int(11));
    assert.deepEqual(await conn.command('INCRBY', 'grid:window', 3), int(41));
    assert.deepEqual(await conn.command('SEQNEXT', 'grid:window'), int(51));
  });

  it('SEQCURRENT and SEQINFO in RESP2 and RESP3', async () => {
    await conn.command('SEQCREATE', 'info', 'START', 5, 'STEP', 2, 'MAX', 100);
    assert.deepEqual(await conn.command('SEQCURRENT', 'info'), { t: 'null' });
    assert.deepEqual(await conn.command('SEQNEXT', 'info', 'COUNT', 2), pair(5, 7));
    await conn.command('SEQCREATE', 'info:w', 'MODE', 'window', 'WINDOW', 20);
    assert.deepEqual(await conn.command('SEQNEXT', 'info:w', 'COUNT', 3), pair(1, 3));
    const resp3 = await Conn.open(ordo.port);
    try {
      assert.equal((await resp3.command('HELLO', 3)).t, 'map');
      for (const c of [conn, resp3]) {
        const proto = c === conn ? 'RESP2' : 'RESP3';
        assert.deepEqual(await c.command('SEQCURRENT', 'info'), int(7), proto);
        assert.deepEqual(await c.command('SEQCURRENT', 'missing-key'), { t: 'null' }, proto);
        assert.deepEqual(await c.command('SEQINFO', 'missing-key'), errorReply(ERR.noSequence), proto);
        const strict = await c.command('SEQINFO', 'info');
        assert.equal(strict.t, c === conn ? 'array' : 'map', proto);
        const s = mapOf(strict);
        assert.deepEqual(s.get('mode'), { t: 'bulk', v: 'strict' });
        assert.deepEqual([s.get('start'), s.get('step'), s.get('max'), s.get('current')], [int(5), int(2), int(100), int(7)]);
        assert.deepEqual(s.get('window-next'), { t: 'null' }, `${proto}: a strict sequence has no window`);
        const w = mapOf(await c.command('SEQINFO', 'info:w'));
        assert.deepEqual(w.get('mode'), { t: 'bulk', v: 'window' });
        assert.deepEqual(w.get('current'), int(3), `${proto}: the last value handed out`);
        assert.deepEqual(w.get('window'), int(20));
        assert.deepEqual(w.get('window-next'), int(4));
        assert.ok(intOf(w.get('window-end')) >= 20n);
        assert.equal(intOf(w.get('reserved-high')), intOf(w.get('window-end')));
        assert.deepEqual(await c.command('SEQCURRENT', 'info:w'), int(3), proto);
        assert.deepEqual(await c.command('GET', 'info:w'), { t: 'bulk', v: '3' }, `${proto}: GET shows the last value handed out`);
      }
    } finally {
      resp3.close();
    }
  });

  it('COMMAND INFO, COMMAND DOCS and COMMAND GETKEYS describe the sequence commands', async () => {
    const info = await conn.command('COMMAND', 'INFO', 'seqnext', 'seqcreate', 'seqcurrent', 'seqinfo');
    assert.ok(info.t === 'array' && info.v.length === 4);
    const expected: [string, number][] = [
      ['seqnext', -2],
      ['seqcreate', -2],
      ['seqcurrent', 2],
      ['seqinfo', 2],
    ];
    expected.forEach(([name, arity], i) => {
      const entry = info.v[i];
      assert.ok(entry !== undefined && entry.t === 'array', name);
      assert.deepEqual(entry.v[0], { t: 'bulk', v: name });
      assert.deepEqual(entry.v.slice(1, 2), [int(arity)], `${name} arity`);
      assert.deepEqual(entry.v.slice(3, 6), [int(1), int(1), int(1)], `${name}: first key, last key, step`);
    });
    assert.deepEqual(await conn.command('COMMAND', 'GETKEYS', 'SEQNEXT', 'k', 'COUNT', 5), { t: 'array', v: [{ t: 'bulk', v: 'k' }] });
    assert.deepEqual(await conn.command('COMMAND', 'GETKEYS', 'SEQCREATE', 'k2', 'MODE', 'window'), { t: 'array', v: [{ t: 'bulk', v: 'k2' }] });
    const docs = mapOf(await conn.command('COMMAND', 'DOCS', 'seqnext'));
    const doc = docs.get('seqnext');
    assert.ok(doc !== undefined, 'COMMAND DOCS seqnext');
    const summary = mapOf(doc).get('summary');
    assert.ok(summary !== undefined && summary.t === 'bulk' && summary.v.length > 0);
  });

  it('ioredis: the reply types a client library sees', async () => {
    const c = client(ordo.port);
    try {
      await c.call('SEQCREATE', 'lib');
      assert.equal(await c.call('SEQNEXT', 'lib'), 1);
      assert.deepEqual(await c.call('SEQNEXT', 'lib', 'COUNT', '10'), [2, 11]);
      assert.equal(await c.call('SEQCURRENT', 'lib'), 11);
      assert.equal(await c.get('lib'), '11');
      await assert.rejects(c.call('SEQCREATE', 'lib'), (e: Error) => e.message === ERR.seqExists);
    } finally {
      c.disconnect();
    }
  });
});

describe('sequences e2e: kill -9 and restart', () => {
  const dataDir = tempDir('seq-restart');
  let ordo: RunningOrdo | undefined;
  const args = ['--window-keys', 'ctr:*,other:*', '--window-size', '200'];

  after(async () => {
    await ordo?.stop();
    removeDir(dataDir);
  });

  it('ranges stay unique through kill -9; window values restart above all handed out; --window-keys INCR stays increasing', async () => {
    ordo = await startOrdo({ dataDir, args });
    const setup = await Conn.open(ordo.port);
    await setup.command('SEQCREATE', 'r:strict');
    await setup.command('SEQCREATE', 'r:window', 'MODE', 'window', 'WINDOW', '300');
    assert.deepEqual(await setup.command('INCR', 'plain:x'), int(1), 'keys outside --window-keys stay plain');
    setup.close();
    const seqKeys = ['r:strict', 'r:window'];
    const incrKeys = ['ctr:a', 'ctr:b'];
    const phases: LoadResult[] = [];
    const floors: { strict: bigint; window: bigint; ctr: Map<string, bigint> }[] = [];

    for (let phase = 0; phase < 3; phase++) {
      const running = ordo;
      const progress = { acked: 0 };
      const load = runLoad(running.port, { clients: 6, rounds: phase === 2 ? 10 : 1_000_000, depth: 16, seqKeys, incrKeys }, progress);
      if (phase < 2) {
        // Kill -9 in the middle of the load (some requests in flight), once a good number were answered.
        const started = Date.now();
        while ((Date.now() - started < 300 || progress.acked < 2000) && Date.now() - started < 10_000) {
          await new Promise((r) => setTimeout(r, 20));
        }
        running.kill('SIGKILL');
        await running.exited;
      }
      const result = await load;
      phases.push(result);
      const strict = result.ranges.get('r:strict') ?? [];
      const window = result.ranges.get('r:window') ?? [];
      assert.ok(strict.length > 0 && window.length > 0, `phase ${phase}: load ran`);
      // Every value handed out in this phase is above every value handed out before.
      const before = floors[floors.length - 1];
      if (before !== undefined) {
        assert.ok(minOf(strict) > before.strict, `phase ${phase}: strict ${minOf(strict)} > ${before.strict}`);
        assert.ok(minOf(window) > before.window, `phase ${phase}: window ${minOf(window)} > ${before.window}`);
        for (const key of incrKeys) {
          const first = result.incrs.flatMap((m) => m.get(key) ?? []).reduce((m, v) => (v < m ? v : m), 1n << 62n);
          assert.ok(first > (before.ctr.get(key) ?? 0n), `phase ${phase}: ${key} ${first} > ${before.ctr.get(key)}`);
        }
      }
      const previous = floors[floors.length - 1];
      floors.push({
        strict: [previous?.strict ?? 0n, maxOf(strict)].reduce((a, b) => (a > b ? a : b)),
        window: [previous?.window ?? 0n, maxOf(window)].reduce((a, b) => (a > b ? a : b)),
        ctr: new Map(incrKeys.map((k) => [k, [previous?.ctr.get(k) ?? 0n, ...result.incrs.flatMap((m) => m.get(k) ?? [])].reduce((a, b) => (a > b ? a : b))])),
      });
      if (phase === 2) {
        // No crash in this phase: strict values are gapless within it.
        assertContiguous(strict, minOf(strict), 'strict, healthy phase');
      }
      if (phase < 2) ordo = await startOrdo({ dataDir, args });
    }

    for (const key of seqKeys)
      assertDisjoint(
        phases.flatMap((p) => p.ranges.get(key) ?? []),
        `${key} across restarts`,
      );
    for (const key of incrKeys) {
      const all = assertIncreasingPerClient(phases, key);
      assert.ok(all.length > 0);
    }

    // What the restarted node shows for a window key before serving anything.
    const c = await Conn.open(ordo.port);
    try {
      const infoCtr = mapOf(await c.command('SEQINFO', 'ctr:a'));
      assert.deepEqual(infoCtr.get('mode'), { t: 'bulk', v: 'window' }, '--window-keys made ctr:a a window sequence');
      assert.deepEqual(infoCtr.get('window'), int(200));
      assert.deepEqual(mapOf(await c.command('SEQINFO', 'plain:x')).get('mode'), { t: 'bulk', v: 'counter' });
      assert.deepEqual(await c.command('INCR', 'plain:x'), int(2));
      assert.deepEqual(await c.command('DECR', 'plain:x'), int(1), 'a plain counter outside the patterns');
      assert.deepEqual(await c.command('INCR', 'other:new'), int(1), 'a new key under --window-keys starts at 1');
      assert.deepEqual(await c.command('DECR', 'other:new'), errorReply(ERR.seqBackwards));
    } finally {
      c.close();
    }
  });

  it('INCR under --window-keys on a counter at the largest 64-bit value: the Redis overflow error', async () => {
    assert.ok(ordo !== undefined);
    const c = await Conn.open(ordo.port);
    try {
      assert.deepEqual(await c.command('SET', 'ctr:max', '9223372036854775807'), { t: 'simple', v: 'OK' });
      assert.deepEqual(await c.command('INCR', 'ctr:max'), errorReply(ERR.overflow));
    } finally {
      c.close();
    }
  });

  it('after a restart, SEQCURRENT on a window key shows the highest reserved bound until a value is served', async () => {
    assert.ok(ordo !== undefined);
    let c = await Conn.open(ordo.port);
    await c.command('SEQCREATE', 'cur:w', 'MODE', 'window', 'WINDOW', 100);
    assert.deepEqual(await c.command('SEQNEXT', 'cur:w', 'COUNT', 5), pair(1, 5));
    assert.deepEqual(await c.command('SEQCURRENT', 'cur:w'), int(5));
    const reserved = intOf(mapOf(await c.command('SEQINFO', 'cur:w')).get('reserved-high'));
    assert.ok(reserved >= 100n);
    c.close();
    await ordo.stop();
    ordo = await startOrdo({ dataDir, args });
    c = await Conn.open(ordo.port);
    try {
      assert.deepEqual(await c.command('SEQCURRENT', 'cur:w'), int(reserved));
      assert.deepEqual(await c.command('GET', 'cur:w'), { t: 'bulk', v: String(reserved) });
      assert.deepEqual(await c.command('SEQNEXT', 'cur:w'), int(reserved + 1n), 'the rest of the old window is a gap');
      assert.deepEqual(await c.command('SEQCURRENT', 'cur:w'), int(reserved + 1n));
    } finally {
      c.close();
    }
  });

  it('a TOKEN retry after a restart gets the same range (strict)', async () => {
    assert.ok(ordo !== undefined);
    let c = await Conn.open(ordo.port);
    await c.command('SEQCREATE', 'tokr:strict');
    assert.deepEqual(await c.command('SEQNEXT', 'tokr:strict', 'COUNT', 4, 'TOKEN', 'T1'), pair(1, 4));
    c.close();
    ordo.kill('SIGKILL');
    await ordo.exited;
    ordo = await startOrdo({ dataDir, args });
    c = await Conn.open(ordo.port);
    try {
      assert.deepEqual(await c.command('SEQNEXT', 'tokr:strict', 'COUNT', 4, 'TOKEN', 'T1'), pair(1, 4));
    } finally {
      c.close();
    }
  });

  it('a TOKEN retry after a restart gets the same range (window)', async () => {
    assert.ok(ordo !== undefined);
    let c = await Conn.open(ordo.port);
    await c.command('SEQCREATE', 'tokr:window', 'MODE', 'window');
    assert.deepEqual(await c.command('SEQNEXT', 'tokr:window', 'COUNT', 4), pair(1, 4));
    assert.deepEqual(await c.command('SEQNEXT', 'tokr:window', 'COUNT', 4, 'TOKEN', 'T2'), pair(5, 8));
    c.close();
    ordo.kill('SIGKILL');
    await ordo.exited;
    ordo = await startOrdo({ dataDir, args });
    c = await Conn.open(ordo.port);
    try {
      assert.deepEqual(await c.command('SEQNEXT', 'tokr:window', 'COUNT', 4, 'TOKEN', 'T2'), pair(5, 8));
    } finally {
      c.close();
    }
  });
});

describe('sequences e2e: --default-mode window', () => {
  let ordo: RunningOrdo | undefined;

  after(async () => {
    if (ordo !== undefined) {
      await ordo.stop();
      removeDir(ordo.dataDir);
    }
  });

  it('every counter never created with SEQCREATE is served in window mode; SEQCREATE ... MODE strict still wins', async () => {
    ordo = await startOrdo({ args: ['--default-mode', 'window', '--window-size', '50'] });
    const c = await Conn.open(ordo.port);
    try {
      assert.deepEqual(await c.command('INCR', 'any'), int(1));
      assert.deepEqual(await c.command('INCRBY', 'any', 4), int(5));
      const info = mapOf(await c.command('SEQINFO', 'any'));
      assert.deepEqual(info.get('mode'), { t: 'bulk', v: 'window' });
      assert.deepEqual(info.get('window'), int(50));
      assert.deepEqual(await c.command('SEQNEXT', 'fresh', 'COUNT', 3), pair(1, 3));
      assert.deepEqual(mapOf(await c.command('SEQINFO', 'fresh')).get('mode'), { t: 'bulk', v: 'window' });
      await c.command('SEQCREATE', 'exact', 'MODE', 'strict');
      assert.deepEqual(await c.command('INCR', 'exact'), int(1));
      assert.deepEqual(mapOf(await c.command('SEQINFO', 'exact')).get('mode'), { t: 'bulk', v: 'strict' });
      assert.deepEqual(await c.command('SET', 'text', 'hello'), { t: 'simple', v: 'OK' });
      assert.deepEqual(await c.command('INCR', 'text'), errorReply(ERR.notInteger), 'a string is not adopted');
    } finally {
      c.close();
    }
  });
});
