// Configuration: defaults, flags, the config file, byte sizes, and the errors
// a bad value gives (on the command line, with exit code 1).

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { ConfigError, DEFAULT_CONFIG, HELP, parseBytes, parseCommandLine, type Config } from '../src/config.js';
import { CLI_PATH, removeDir, tempDir } from '../testkit/processes.js';

const KiB = 1024;
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

function run(argv: readonly string[]): Config {
  const parsed = parseCommandLine(argv);
  assert.equal(parsed.kind, 'run');
  if (parsed.kind !== 'run') throw new Error('unreachable');
  return parsed.config;
}

function refuses(argv: readonly string[], message: RegExp): void {
  assert.throws(
    () => parseCommandLine(argv),
    (e: unknown) => e instanceof ConfigError && message.test(e.message),
  );
}

describe('config: flags', () => {
  it('no flags give the documented defaults', () => {
    // The values of the table in docs/configuration.md, written out (not DEFAULT_CONFIG compared with itself).
    assert.deepEqual(run([]), {
      host: '127.0.0.1',
      port: 6379,
      dataDir: './data',
      requirepass: null,
      fsync: 'always',
      logSegmentBytes: 64 * MiB,
      queryBufferBytesMax: 64 * MiB,
      bulkBytesMax: 512 * MiB,
      multibulkLengthMax: 1024 * 1024,
      clientsMax: 10000,
      pipelineDepthMax: 100_000,
      outputBufferSoftBytes: 4 * MiB,
      outputBufferHardBytes: 256 * MiB,
      outputStallTimeoutMs: 60_000,
      defaultMode: 'strict',
      windowKeys: [],
      windowSize: 10_000n,
      tokenRetentionMs: 600_000,
      tokensPerKeyMax: 10_000,
      cluster: null,
      announce: null,
      busPort: null,
      clusterSecret: null,
      groups: 16,
      requestTimeoutMs: 5000,
      explicit: new Set(),
    });
  });

  it('every flag sets its option', () => {
    const c = run([
      '--host',
      '0.0.0.0',
      '--port',
      '7000',
      '--data',
      '/var/lib/ordo',
      '--requirepass',
      's3cret',
      '--fsync',
      'never',
      '--log-segment-bytes',
      '1mb',
      '--query-buffer-max',
      '1mb',
      '--bulk-max',
      '2kb',
      '--multibulk-max',
      '100',
      '--max-clients',
      '3',
      '--pipeline-max',
      '10',
      '--output-buffer-soft',
      '64kb',
      '--output-buffer-hard',
      '1gb',
      '--output-stall-timeout-ms',
      '1000',
      '--cluster',
      '127.0.0.1:7001,127.0.0.1:7002@17777',
      '--announce',
      '127.0.0.1:7001',
      '--bus-port',
      '17001',
      '--cluster-secret',
      'shh',
      '--groups',
      '4',
      '--request-timeout-ms',
      '2500',
    ]);
    assert.deepEqual(c, {
      ...DEFAULT_CONFIG,
      host: '0.0.0.0',
      port: 7000,
      dataDir: '/var/lib/ordo',
      requirepass: 's3cret',
      fsync: 'never',
      logSegmentBytes: MiB,
      queryBufferBytesMax: MiB,
      bulkBytesMax: 2 * KiB,
      multibulkLengthMax: 100,
      clientsMax: 3,
      pipelineDepthMax: 10,
      outputBufferSoftBytes: 64 * KiB,
      outputBufferHardBytes: GiB,
      outputStallTimeoutMs: 1000,
      cluster: '127.0.0.1:7001,127.0.0.1:7002@17777',
      announce: '127.0.0.1:7001',
      busPort: 17001,
      clusterSecret: 'shh',
      groups: 4,
      requestTimeoutMs: 2500,
      explicit: new Set([
        'host',
        'port',
        'data',
        'requirepass',
        'fsync',
        'log-segment-bytes',
        'query-buffer-max',
        'bulk-max',
        'multibulk-max',
        'max-clients',
        'pipeline-max',
        'output-buffer-soft',
        'output-buffer-hard',
        'output-stall-timeout-ms',
        'cluster',
        'announce',
        'bus-port',
        'cluster-secret',
        'groups',
        'request-timeout-ms',
      ]),
    });
  });

  it('--flag=value works too, and an empty requirepass means none', () => {
    const c = run(['--port=0', '--requirepass=']);
    assert.equal(c.port, 0);
    assert.equal(c.requirepass, null);
  });

  it('--help and --version', () => {
    assert.deepEqual(parseCommandLine(['--help']), { kind: 'help' });
    assert.deepEqual(parseCommandLine(['-h']), { kind: 'help' });
    assert.deepEqual(parseCommandLine(['--version']), { kind: 'version' });
    assert.match(HELP, /--output-stall-timeout-ms/);
  });

  it('refuses bad values with a message naming the option', () => {
    refuses(['--port', '65536'], /--port must be between 0 and 65535/);
    refuses(['--port', '-1'], /--port/);
    refuses(['--port', 'abc'], /--port must be a whole number/);
    refuses(['--port', '1.5'], /--port must be a whole number/);
    refuses(['--fsync', 'sometimes'], /--fsync must be always or never/);
    refuses(['--log-segment-bytes', '1kb'], /--log-segment-bytes must be from 64kb to 1024mb/);
    refuses(['--log-segment-bytes', '2gb'], /--log-segment-bytes must be from 64kb to 1024mb/);
    refuses(['--max-clients', '0'], /--max-clients must be between 1/);
    refuses(['--pipeline-max', '0'], /--pipeline-max must be between 1/);
    refuses(['--multibulk-max', '0'], /--multibulk-max/);
    refuses(['--output-stall-timeout-ms', '0'], /--output-stall-timeout-ms/);
    refuses(['--query-buffer-max', '0'], /--query-buffer-max is out of range/);
    refuses(['--bulk-max', '12tb'], /--bulk-max must be a size/);
    refuses(['--bulk-max=-5'], /--bulk-max must be a size/);
    refuses(['--bulk-max', '-5'], /--bulk-max/);
    refuses(['--bulk-max', '1.5mb'], /--bulk-max must be a size/);
    refuses(['--output-buffer-hard', '99999999999gb'], /--output-buffer-hard is out of range/);
  });

  it('refuses unknown flags, missing values and positionals', () => {
    refuses(['--no-such-flag'], /no-such-flag/i);
    refuses(['--port'], /port/);
    refuses(['extra'], /extra|positional/i);
  });
});

describe('config: byte sizes', () => {
  it('accepts plain bytes and kb/mb/gb suffixes (powers of 1024, any case)', () => {
    assert.equal(parseBytes('1', 'x'), 1);
    assert.equal(parseBytes('1024', 'x'), 1024);
    assert.equal(parseBytes('100b', 'x'), 100);
    assert.equal(parseBytes('64kb', 'x'), 64 * KiB);
    assert.equal(parseBytes('64KB', 'x'), 64 * KiB);
    assert.equal(parseBytes('512mb', 'x'), 512 * MiB);
    assert.equal(parseBytes('2Gb', 'x'), 2 * GiB);
    assert.equal(parseBytes(' 3mb ', 'x'), 3 * MiB);
  });

  it('refuses zero, signs, fractions, other units and sizes beyond 2^53', () => {
    for (const bad of ['0', '0kb', '-1', '+1', '1.5', 'mb', '', '1k', '1m', '1 mb', '1tb', `${2 ** 53}`, '9007199254740992kb']) {
      assert.throws(() => parseBytes(bad, 'size'), ConfigError, bad);
    }
  });
});

describe('config: file', () => {
  const dir = tempDir('config');
  after(() => removeDir(dir));
  const file = (name: string, text: string): string => {
    const path = join(dir, name);
    writeFileSync(path, text);
    return path;
  };

  it('reads "name value" lines, comments, blank lines and quoted values', () => {
    const path = file(
      'good.conf',
      ['# an ordo config', '', 'port 7001', '  max-clients   5  ', 'requirepass "pass word"', 'query-buffer-max 2mb', 'fsync never', ''].join('\n'),
    );
    const c = run(['--config', path]);
    assert.equal(c.port, 7001);
    assert.equal(c.clientsMax, 5);
    assert.equal(c.requirepass, 'pass word');
    assert.equal(c.queryBufferBytesMax, 2 * MiB);
    assert.equal(c.fsync, 'never');
    assert.equal(c.bulkBytesMax, DEFAULT_CONFIG.bulkBytesMax);
  });

  it('flags on the command line win over the file, wherever they stand', () => {
    const path = file('win.conf', 'port 7001\nmax-clients 5\n');
    const c = run(['--port', '7002', '--config', path]);
    assert.equal(c.port, 7002);
    assert.equal(c.clientsMax, 5);
  });

  it('an unknown option or a bad value names the file and line', () => {
    const unknown = file('unknown.conf', 'port 7001\n\nbogus 1\n');
    refuses(['--config', unknown], /unknown\.conf:3: unknown option "bogus"/);
    const badValue = file('bad.conf', '# x\nport nope\n');
    refuses(['--config', badValue], /bad\.conf:2: --port must be a whole number/);
    const badSize = file('badsize.conf', 'bulk-max 5 mb\n');
    refuses(['--config', badSize], /badsize\.conf:1: --bulk-max/);
  });

  it('a missing file is a clear error', () => {
    refuses(['--config', join(dir, 'missing.conf')], /cannot read config file .*missing\.conf/);
  });
});

describe('config: the command line program', () => {
  const cli = (args: string[]): { status: number | null; stdout: string; stderr: string } => {
    const r = spawnSync(process.execPath, [CLI_PATH, ...args], { encoding: 'utf8', timeout: 10_000 });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  };

  it('--help prints the options and exits 0', () => {
    const r = cli(['--help']);
    assert.equal(r.status, 0);
    assert.match(r.stdout, /--query-buffer-max BYTES/);
  });

  it('--version prints the version and exits 0', () => {
    const r = cli(['--version']);
    assert.equal(r.status, 0);
    assert.match(r.stdout, /^ordo \S+\n$/);
  });

  it('a bad flag exits 1 with the reason on stderr, without starting', () => {
    const r = cli(['--port', '99999']);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /--port must be between 0 and 65535/);
    assert.match(r.stderr, /ordo --help/);
    assert.doesNotMatch(r.stdout, /ready/);
  });
});
