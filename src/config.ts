// Node configuration: defaults, flags, and the config file. Every configurable
// limit is here, with its default; docs/configuration.md lists them and the
// few fixed ones (named constants where they are enforced).

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import type { SequenceMode } from './sequencer/sequence.js';
import type { FsyncMode } from './storage/files.js';
import { SEGMENT_BYTES_DEFAULT, SEGMENT_BYTES_MAX } from './storage/segments.js';
import { OrdoError } from './ordo-error.js';

export interface Config {
  host: string;
  port: number;
  dataDir: string;
  requirepass: string | null;
  fsync: FsyncMode;
  /** Size of one segment file of the node's log; the log moves to a new, preallocated segment when a turn does not fit. */
  logSegmentBytes: number;
  /** Bytes a connection may have received and not yet parsed into commands. */
  queryBufferBytesMax: number;
  /** Largest bulk argument a client may declare. */
  bulkBytesMax: number;
  /** Most arguments in one command. */
  multibulkLengthMax: number;
  /** Most connected clients; one more is told so and closed. */
  clientsMax: number;
  /** Commands a connection may have waiting for replies before ordo stops reading from it. */
  pipelineDepthMax: number;
  /** Reply bytes queued for a client past which ordo stops reading its requests. */
  outputBufferSoftBytes: number;
  /** Reply bytes queued for a client past which it is disconnected. */
  outputBufferHardBytes: number;
  /** A client whose replies stay above the soft limit this long (it does not read) is disconnected. */
  outputStallTimeoutMs: number;
  /** Mode of counters that were never created with SEQCREATE. */
  defaultMode: SequenceMode;
  /** Glob patterns of keys whose INCR/SEQNEXT go through window mode (as if created MODE window). */
  windowKeys: string[];
  /** Values reserved at once for a window key that was not created with its own WINDOW. */
  windowSize: bigint;
  /** How long a SEQNEXT TOKEN is remembered. */
  tokenRetentionMs: number;
  /** Most tokens remembered per key; the oldest are forgotten first. */
  tokensPerKeyMax: number;
  /** `--cluster`: the members that bootstrap a cluster (host:port[@busport], comma separated); null for a single node. */
  cluster: string | null;
  /** `--announce`: this node's entry in the cluster list, where it differs from host:port. */
  announce: string | null;
  /** `--bus-port`: the port this node listens on for the bus (default: its bus port in the cluster list). */
  busPort: number | null;
  /** Shared by the nodes of a cluster; bus peers without it are refused. */
  clusterSecret: string | null;
  /** Data groups a new cluster is bootstrapped with. */
  groups: number;
  /** A write not answered by its group after this long is answered "outcome unknown", a read "timed out"; also how long a request waits for an election. */
  requestTimeoutMs: number;
  /** Options set by a flag or the config file (the rest are defaults), to tell a restart's flags from defaults. */
  explicit?: ReadonlySet<string>;
}

const MiB = 1024 * 1024;
/** Smallest --log-segment-bytes: a segment holds at least a checkpoint of the node's state and a turn. */
export const LOG_SEGMENT_BYTES_MIN = 64 * 1024;

export const DEFAULT_CONFIG: Readonly<Config> = {
  host: '127.0.0.1',
  port: 6379,
  dataDir: './data',
  requirepass: null,
  fsync: 'always',
  logSegmentBytes: SEGMENT_BYTES_DEFAULT,
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
  tokenRetentionMs: 10 * 60 * 1000,
  tokensPerKeyMax: 10_000,
  cluster: null,
  announce: null,
  busPort: null,
  clusterSecret: null,
  groups: 16,
  requestTimeoutMs: 5000,
};

export class ConfigError extends OrdoError {
  override readonly code = 'ORDO_ERR_CONFIG';
}

/** Option name (flag and config-file key) → how to set it. */
const OPTIONS: Record<string, (c: Config, v: string) => void> = {
  host: (c, v) => (c.host = v),
  port: (c, v) => (c.port = parseIntIn(v, 'port', 0, 65535)),
  data: (c, v) => (c.dataDir = v),
  requirepass: (c, v) => (c.requirepass = v === '' ? null : v),
  fsync: (c, v) => {
    if (v !== 'always' && v !== 'never') throw new ConfigError(`--fsync must be always or never, not ${JSON.stringify(v)}`);
    c.fsync = v;
  },
  'log-segment-bytes': (c, v) => {
    const bytes = parseBytes(v, 'log-segment-bytes');
    if (bytes < LOG_SEGMENT_BYTES_MIN || bytes > SEGMENT_BYTES_MAX) {
      throw new ConfigError(`--log-segment-bytes must be from ${LOG_SEGMENT_BYTES_MIN / 1024}kb to ${SEGMENT_BYTES_MAX / MiB}mb, not ${v}`);
    }
    c.logSegmentBytes = bytes;
  },
  'query-buffer-max': (c, v) => (c.queryBufferBytesMax = parseBytes(v, 'query-buffer-max')),
  'bulk-max': (c, v) => (c.bulkBytesMax = parseBytes(v, 'bulk-max')),
  'multibulk-max': (c, v) => (c.multibulkLengthMax = parseIntIn(v, 'multibulk-max', 1, 2 ** 31 - 1)),
  'max-clients': (c, v) => (c.clientsMax = parseIntIn(v, 'max-clients', 1, 1_000_000)),
  'pipeline-max': (c, v) => (c.pipelineDepthMax = parseIntIn(v, 'pipeline-max', 1, 10_000_000)),
  'output-buffer-soft': (c, v) => (c.outputBufferSoftBytes = parseBytes(v, 'output-buffer-soft')),
  'output-buffer-hard': (c, v) => (c.outputBufferHardBytes = parseBytes(v, 'output-buffer-hard')),
  'output-stall-timeout-ms': (c, v) => (c.outputStallTimeoutMs = parseIntIn(v, 'output-stall-timeout-ms', 1, 86_400_000)),
  'default-mode': (c, v) => {
    if (v !== 'strict' && v !== 'window') throw new ConfigError(`--default-mode must be strict or window, not ${JSON.stringify(v)}`);
    c.defaultMode = v;
  },
  'window-keys': (c, v) =>
    (c.windowKeys = v
      .split(',')
      .map((p) => p.trim())
      .filter((p) => p !== '')),
  'window-size': (c, v) => (c.windowSize = BigInt(parseIntIn(v, 'window-size', 1, 1_000_000_000))),
  'token-retention-ms': (c, v) => (c.tokenRetentionMs = parseIntIn(v, 'token-retention-ms', 1, 7 * 86_400_000)),
  'tokens-per-key-max': (c, v) => (c.tokensPerKeyMax = parseIntIn(v, 'tokens-per-key-max', 1, 10_000_000)),
  cluster: (c, v) => (c.cluster = v.trim() === '' ? null : v.trim()),
  announce: (c, v) => (c.announce = v.trim() === '' ? null : v.trim()),
  'bus-port': (c, v) => (c.busPort = parseIntIn(v, 'bus-port', 0, 65535)),
  'cluster-secret': (c, v) => (c.clusterSecret = v === '' ? null : v),
  groups: (c, v) => (c.groups = parseIntIn(v, 'groups', 1, 16384)),
  'request-timeout-ms': (c, v) => (c.requestTimeoutMs = parseIntIn(v, 'request-timeout-ms', 1, 3_600_000)),
};

export const HELP = `ordo: a Raft-replicated sequencer that speaks the Redis protocol

Usage: ordo [options]

  --host ADDR                  address to listen on (default 127.0.0.1)
  --port N                     port to listen on (default 6379; 0 picks a free one)
  --data DIR                   data directory (default ./data)
  --requirepass PASSWORD       require AUTH with this password
  --fsync always|never         always: reply after the write is flushed to disk (default);
                               never: reply after commit, NOT DURABLE (benchmarks only)
  --log-segment-bytes BYTES    size of one segment file of the node's log (default 64mb)
  --config FILE                read options from FILE ("name value" lines, # comments);
                               flags given on the command line win
  --query-buffer-max BYTES     unparsed request bytes per client (default 64mb)
  --bulk-max BYTES             largest argument (default 512mb)
  --multibulk-max N            most arguments in one command (default 1048576)
  --max-clients N              most connected clients (default 10000)
  --pipeline-max N             unanswered commands per client before reading pauses (default 100000)
  --output-buffer-soft BYTES   queued reply bytes per client before reading pauses (default 4mb)
  --output-buffer-hard BYTES   queued reply bytes per client before it is disconnected (default 256mb)
  --output-stall-timeout-ms N  disconnect a client that stays above the soft limit this long (default 60000)
  --default-mode strict|window mode of counters never created with SEQCREATE (default strict)
  --window-keys PATTERN[,...]  keys (glob) whose INCR and SEQNEXT are served in window mode
  --window-size N              values reserved at once for such keys (default 10000)
  --token-retention-ms N       how long a SEQNEXT TOKEN is remembered (default 600000)
  --tokens-per-key-max N       most tokens remembered per key (default 10000)
  --cluster ADDR[,ADDR...]     bootstrap a cluster of these members (host:port[@busport]; the bus
                               port defaults to port + 10000); the same list on every member.
                               A restart needs only --data: the data directory holds the membership
  --announce HOST:PORT         this node's entry in --cluster (default HOST:PORT of --host/--port)
  --bus-port N                 port to listen on for the bus (default: this node's bus port in --cluster)
  --cluster-secret SECRET      bus peers must prove they know SECRET (set the same on every member)
  --groups N                   data groups of a new cluster (default 16; fixed at bootstrap)
  --request-timeout-ms N       how long a request waits for its group: for an election, a forward,
                               a commit (default 5000); a write not answered by then is reported
                               as "outcome unknown"
  --help                       print this help
  --version                    print the version

BYTES accept a suffix: kb, mb, gb (powers of 1024).
`;

export type ParsedCommandLine = { kind: 'help' } | { kind: 'version' } | { kind: 'run'; config: Config };

export function parseCommandLine(argv: readonly string[]): ParsedCommandLine {
  const stringOptions = Object.fromEntries(Object.keys(OPTIONS).map((k) => [k, { type: 'string' as const }]));
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      options: {
        ...stringOptions,
        config: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'v' },
      },
      strict: true,
      allowPositionals: false,
    });
  } catch (e) {
    throw new ConfigError((e as Error).message);
  }
  const values = parsed.values as Record<string, string | boolean | undefined>;
  if (values['help'] === true) return { kind: 'help' };
  if (values['version'] === true) return { kind: 'version' };
  const config: Config = { ...DEFAULT_CONFIG };
  const explicit = new Set<string>();
  const configFile = values['config'];
  if (typeof configFile === 'string') applyConfigFile(config, configFile, explicit);
  for (const [name, set] of Object.entries(OPTIONS)) {
    const value = values[name];
    if (typeof value === 'string') {
      set(config, value);
      explicit.add(name);
    }
  }
  config.explicit = explicit;
  return { kind: 'run', config };
}

export function applyConfigFile(config: Config, path: string, explicit?: Set<string>): void {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError(`cannot read config file ${path}: ${(e as Error).message}`);
  }
  text.split('\n').forEach((rawLine, i) => {
    const line = rawLine.trim();
    if (line === '' || line.startsWith('#')) return;
    const match = /^(\S+)\s*(.*)$/.exec(line);
    const name = match?.[1] ?? '';
    let value = (match?.[2] ?? '').trim();
    if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) value = value.slice(1, -1);
    const set = OPTIONS[name];
    if (set === undefined) throw new ConfigError(`${path}:${i + 1}: unknown option ${JSON.stringify(name)}`);
    try {
      set(config, value);
      explicit?.add(name);
    } catch (e) {
      throw new ConfigError(`${path}:${i + 1}: ${(e as Error).message}`);
    }
  });
}

function parseIntIn(text: string, name: string, min: number, max: number): number {
  if (!/^\d+$/.test(text)) throw new ConfigError(`--${name} must be a whole number, not ${JSON.stringify(text)}`);
  const n = Number(text);
  if (n < min || n > max) throw new ConfigError(`--${name} must be between ${min} and ${max}, not ${n}`);
  return n;
}

export function parseBytes(text: string, name: string): number {
  const m = /^(\d+)(b|kb|mb|gb)?$/i.exec(text.trim());
  if (m === null) throw new ConfigError(`--${name} must be a size such as 1024, 64kb or 512mb, not ${JSON.stringify(text)}`);
  const unit = (m[2] ?? 'b').toLowerCase();
  const scale = unit === 'kb' ? 1024 : unit === 'mb' ? MiB : unit === 'gb' ? 1024 * MiB : 1;
  const bytes = Number(m[1]) * scale;
  if (!Number.isSafeInteger(bytes) || bytes < 1) throw new ConfigError(`--${name} is out of range: ${text}`);
  return bytes;
}
