// The shared tools every process-level test, benchmark and fault run relies
// on: the reply decoder (whole replies only, whatever the chunking; RESP3
// types; garbage refused), the simplified reply, the INFO parser, the seeded
// PRNG (a seed repeats exactly) and the child processes (ready line, output,
// stop, nothing left behind).

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Child, describeExit, runProgram } from '../testkit/processes.js';
import { infoField, parseInfo, parseRaftGroups } from '../testkit/info.js';
import { prng, shuffle } from '../testkit/random.js';
import { encodeCommand, plainReply, readReply, ReplyDecoder, ReplyProtocolError, replyEnd, type WireReply } from '../testkit/resp.js';
import { waitFor } from '../testkit/wait.js';

const bytes = (text: string): Buffer => Buffer.from(text, 'latin1');

describe('reply decoder', () => {
  const stream =
    '+OK\r\n-ERR no\r\n:42\r\n$3\r\nabc\r\n$-1\r\n*2\r\n:1\r\n*1\r\n$1\r\nx\r\n*-1\r\n' +
    '%1\r\n+k\r\n:7\r\n_\r\n,1.5\r\n#t\r\n(123\r\n=8\r\ntxt:hey!\r\n!5\r\nERR x\r\n|1\r\n+a\r\n+b\r\n+described\r\n~1\r\n:9\r\n';

  it('hands out the same whole replies however the bytes are cut', () => {
    const whole = new ReplyDecoder().push(bytes(stream));
    assert.equal(whole.length, 16);
    for (const cut of [1, 2, 3, 7, 64]) {
      const d = new ReplyDecoder();
      const got: WireReply[] = [];
      for (let i = 0; i < stream.length; i += cut) got.push(...d.push(bytes(stream.slice(i, i + cut))));
      assert.deepEqual(got, whole, `cut every ${cut} bytes`);
      assert.equal(d.pendingBytes, 0);
    }
  });

  it('reads types, nils and nesting as they came', () => {
    const [ok, err, int, bulk, nil, arr] = new ReplyDecoder().push(bytes(stream));
    assert.deepEqual(ok, { kind: '+', line: 'OK', items: [], bulk: null });
    assert.equal(err?.line, 'ERR no');
    assert.equal(int?.line, '42');
    assert.equal(bulk?.bulk, 'abc');
    assert.equal(nil?.bulk, null);
    assert.deepEqual(
      arr?.items.map((r) => r.kind),
      [':', '*'],
    );
  });

  it('simplifies replies the way the launcher and tests read them', () => {
    const plain = new ReplyDecoder().push(bytes(stream)).map(plainReply);
    assert.deepEqual(plain, [
      'OK',
      '(error) ERR no',
      '42',
      'abc',
      null,
      ['1', ['x']],
      null,
      ['k', '7'],
      null,
      '1.5',
      't',
      '123',
      'hey!',
      '(error) ERR x',
      'described',
      ['9'],
    ]);
  });

  it('says where a reply ends, null while incomplete, and refuses garbage', () => {
    assert.equal(replyEnd(bytes('$3\r\nab')), null);
    assert.equal(replyEnd(bytes('$3\r\nabc\r\n+OK\r\n')), 9);
    assert.equal(readReply(bytes('*2\r\n:1\r\n')), null);
    assert.throws(() => readReply(bytes('?what\r\n')), ReplyProtocolError);
    assert.throws(() => readReply(bytes('$x\r\n')), ReplyProtocolError);
    assert.throws(() => readReply(bytes('*1\r\n'.repeat(100) + ':1\r\n')), ReplyProtocolError);
  });

  it('encodes a command as a RESP array of bulk strings (UTF-8)', () => {
    assert.equal(encodeCommand(['SET', 'k', 'é']).toString('latin1'), '*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n\xc3\xa9\r\n');
  });
});

describe('INFO parser', () => {
  const info =
    '# Server\r\nredis_version:7.0.0\r\nrun_id:abc\r\n\r\n# Raft\r\nraft_group_0:role=leader,term=3,leader=n1,commit=9,applied=9,lag=0\r\nraft_group_2:role=follower,term=4,leader=-,commit=5,applied=4,lag=1\r\n';

  it('reads sections and fields', () => {
    const sections = parseInfo(info);
    assert.deepEqual([...sections.keys()], ['server', 'raft']);
    assert.equal(sections.get('server')?.get('redis_version'), '7.0.0');
    assert.equal(infoField(info, 'run_id'), 'abc');
    assert.equal(infoField(info, 'nosuch'), null);
  });

  it('reads the raft_group lines', () => {
    const groups = parseRaftGroups(info);
    assert.deepEqual([...groups.keys()], [0, 2]);
    const g0 = groups.get(0);
    assert.equal(g0?.role, 'leader');
    assert.equal(g0?.leader, 'n1');
    assert.equal(g0?.commit, 9);
    const g2 = groups.get(2);
    assert.equal(g2?.leader, null);
    assert.equal(g2?.lag, 1);
    assert.equal(g2?.fields.get('term'), '4');
  });
});

describe('seeded PRNG', () => {
  it('repeats a sequence from its seed, and another seed gives another sequence', () => {
    const a = prng(7);
    const b = prng(7);
    const c = prng(8);
    const first = Array.from({ length: 20 }, () => a());
    assert.deepEqual(
      Array.from({ length: 20 }, () => b()),
      first,
    );
    assert.notDeepEqual(
      Array.from({ length: 20 }, () => c()),
      first,
    );
    assert.ok(first.every((x) => x >= 0 && x < 1));
    assert.deepEqual([...shuffle(prng(1), [1, 2, 3, 4, 5])].sort(), [1, 2, 3, 4, 5]);
  });
});

describe('child processes', () => {
  it('waits for the ready line, keeps the output, stops with SIGTERM', async () => {
    const script = "process.on('SIGTERM', () => process.exit(3)); process.stdout.write('starting\\nready now\\n'); setInterval(() => {}, 1000);";
    const child = new Child(process.execPath, ['-e', script], { readyText: 'ready now' });
    assert.equal(await child.waitUntilReady(10_000), 'ready');
    assert.match(child.output(), /starting/);
    assert.equal(child.running, true);
    const exit = await child.stop(5_000);
    assert.equal(describeExit(exit), 'exit code 3');
    assert.equal(child.running, false);
  });

  it('reports an exit before the ready line', async () => {
    const child = new Child(process.execPath, ['-e', 'process.exit(5)'], { readyText: 'never' });
    const outcome = await child.waitUntilReady(10_000);
    assert.ok(typeof outcome === 'object' && outcome.exited.code === 5);
  });

  it('runs a program to completion with input, bounded in time', async () => {
    const echo = await runProgram(process.execPath, ['-e', 'process.stdin.pipe(process.stdout)'], { input: 'hello' });
    assert.equal(echo.stdout, 'hello');
    assert.equal(echo.code, 0);
    const slow = await runProgram(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { timeoutMs: 200 });
    assert.equal(slow.timedOut, true);
    assert.equal(slow.signal, 'SIGKILL');
  });

  it('waitFor polls until the condition holds, and names what timed out', async () => {
    let n = 0;
    await waitFor('three polls', () => ++n >= 3);
    assert.equal(n, 3);
    await assert.rejects(
      waitFor('never', () => false, 30),
      /timed out waiting for never/,
    );
  });
});
