// The history of a fault run and the checkers that judge it. Every operation a
// client invoked is one record: who, what, on which key, when it was invoked and
// when it completed (ms since the run started), and its outcome: ok (with the
// values it handed out or read), failed (an error that promises the write was
// certainly not applied) or unknown (it may or may not have happened). The
// checkers are pure functions over records: no sockets, no clocks.
//
// What they check, per key (see docs/fault-testing.md):
//   duplicate       no value, and no element of a SEQNEXT range, is handed out twice
//   token-mismatch  every ok answer to one SEQNEXT TOKEN names the same range
//   realtime        if A completed before B was invoked, B's values are above A's
//   stale-read      a GET returns at least every value acknowledged before it started
//   lost-ack        the final value is at least the highest acknowledged one, and
//                   covers every acknowledged increment
//   not-applied     the final value fits without the writes that answered "not
//                   applied" (strict counters: final - initial <= ok + unknown deltas)
//   recovery        after healing, every group serves a write within the limit
//   restart         every node started again (after kill -9 or a graceful stop) comes up

export type OpKind = 'INCR' | 'INCRBY' | 'GET' | 'SEQNEXT';
export type Outcome = 'ok' | 'failed' | 'unknown';

export interface Op {
  /** Position in the history (unique). */
  readonly id: number;
  /** The client (logical process) that ran it. */
  readonly process: string;
  readonly kind: OpKind;
  readonly key: string;
  /** Values the write asks for: 1 for INCR and SEQNEXT without COUNT, the delta of INCRBY, the COUNT of SEQNEXT; 0 for GET. */
  readonly n: bigint;
  /** SEQNEXT only: sent with COUNT (the reply is a [first, last] array). */
  readonly count?: boolean;
  /** SEQNEXT only: the TOKEN sent; every attempt with the same token on the same key is one logical allocation. */
  readonly token?: string;
  /** ms since the start of the run, taken before the request was sent. */
  readonly invokeMs: number;
  /** ms since the start of the run, taken after the reply (or the error) arrived. */
  readonly completeMs: number;
  readonly outcome: Outcome;
  /** ok writes: the values handed out, first and last (INCRBY answering v with delta n: v-n+1 .. v). */
  readonly range?: readonly [bigint, bigint];
  /** ok GET: the value read (a missing key reads as 0). */
  readonly value?: bigint;
  /** The error text of a failed or unknown op. */
  readonly error?: string;
  /**
   * Attempts the client library made on its own before the final answer (a
   * cluster client retries TRYAGAIN and follows MOVED) whose outcome was
   * unknown: each may have applied the write once more.
   */
  readonly hiddenUnknownAttempts?: number;
  /** The errors of the attempts the client library made on its own before the final answer (for the record). */
  readonly attemptErrors?: readonly string[];
}

export type AnomalyKind =
  'duplicate' | 'token-mismatch' | 'realtime' | 'stale-read' | 'lost-ack' | 'not-applied' | 'recovery' | 'restart' | 'bad-reply' | 'unexpected-error';

export const ANOMALY_KINDS: readonly AnomalyKind[] = [
  'duplicate',
  'token-mismatch',
  'realtime',
  'stale-read',
  'lost-ack',
  'not-applied',
  'recovery',
  'restart',
  'bad-reply',
  'unexpected-error',
];

export interface Anomaly {
  readonly kind: AnomalyKind;
  readonly key?: string;
  readonly message: string;
  /** Ids of the ops involved. */
  readonly ops: readonly number[];
}

/** How a key's values are handed out: strict counters are exact; window keys may skip values. */
export type KeyMode = 'strict' | 'window';

export interface CheckOptions {
  /** Value of each key before the run (default 0). */
  readonly initial?: ReadonlyMap<string, bigint>;
  /** The value of each key read after the run healed (a linearizable GET once all clients stopped). */
  readonly finals: ReadonlyMap<string, bigint>;
  /** Mode of a key (default strict). Window keys skip the upper bound of the accounting and the GET checks. */
  readonly modeOf?: (key: string) => KeyMode;
  /** Most anomalies reported per kind and key (the count is still exact in the summary line). */
  readonly reportPerKeyMax?: number;
}

const isWrite = (op: Op): boolean => op.kind !== 'GET';
const cmp = (a: bigint, b: bigint): number => (a < b ? -1 : a > b ? 1 : 0);

function describe(op: Op): string {
  const what =
    op.kind === 'GET' ? `GET ${op.key}` : `${op.kind} ${op.key}${op.kind === 'INCR' ? '' : ` ${op.n}`}${op.token === undefined ? '' : ` TOKEN ${op.token}`}`;
  const answer =
    op.outcome !== 'ok'
      ? `${op.outcome}${op.error === undefined ? '' : ` (${op.error})`}`
      : op.range !== undefined
        ? op.range[0] === op.range[1]
          ? `${op.range[0]}`
          : `[${op.range[0]}, ${op.range[1]}]`
        : `${op.value ?? '?'}`;
  return `#${op.id} ${op.process} ${what} -> ${answer} @${op.invokeMs.toFixed(1)}..${op.completeMs.toFixed(1)}ms`;
}

function groupByKey(history: readonly Op[]): Map<string, Op[]> {
  const byKey = new Map<string, Op[]>();
  for (const op of history) {
    const list = byKey.get(op.key);
    if (list === undefined) byKey.set(op.key, [op]);
    else list.push(op);
  }
  return byKey;
}

/**
 * One allocation as the state machine saw it: a write without a token is its
 * own; all attempts of one SEQNEXT TOKEN on one key are one, invoked when the
 * first attempt was and completed when the first ok answer came.
 */
interface Logical {
  readonly ops: readonly Op[];
  readonly key: string;
  readonly invokeMs: number;
  readonly completeMs: number;
  /** Present when some attempt was ok. */
  readonly range?: readonly [bigint, bigint];
  readonly n: bigint;
  /** Least and most times the write was applied. */
  readonly appliedMin: number;
  readonly appliedMax: number;
  /** Some attempt answered "not applied". */
  readonly sawFailed: boolean;
}

function applicationsMax(op: Op): number {
  const hidden = op.hiddenUnknownAttempts ?? 0;
  if (op.outcome === 'ok') return 1 + hidden;
  if (op.outcome === 'unknown') return 1 + hidden;
  return hidden;
}

function logicalWrites(ops: readonly Op[], anomalies: Anomaly[]): Logical[] {
  const out: Logical[] = [];
  const byToken = new Map<string, Op[]>();
  for (const op of ops) {
    if (!isWrite(op)) continue;
    if (op.token === undefined) {
      out.push({
        ops: [op],
        key: op.key,
        invokeMs: op.invokeMs,
        completeMs: op.completeMs,
        ...(op.outcome === 'ok' && op.range !== undefined ? { range: op.range } : {}),
        n: op.n,
        appliedMin: op.outcome === 'ok' ? 1 : 0,
        appliedMax: applicationsMax(op),
        sawFailed: op.outcome === 'failed',
      });
      continue;
    }
    const list = byToken.get(op.token);
    if (list === undefined) byToken.set(op.token, [op]);
    else list.push(op);
  }
  for (const [token, attempts] of byToken) {
    let range: readonly [bigint, bigint] | undefined;
    let rangeOp: Op | undefined;
    let completeMs = Infinity;
    let invokeMs = Infinity;
    let anyOk = false;
    let anyApplied = false;
    let sawFailed = false;
    for (const a of attempts) {
      invokeMs = Math.min(invokeMs, a.invokeMs);
      if (applicationsMax(a) > 0) anyApplied = true;
      if (a.outcome === 'failed') sawFailed = true;
      if (a.outcome !== 'ok' || a.range === undefined) continue;
      anyOk = true;
      if (a.completeMs < completeMs) completeMs = a.completeMs;
      if (range === undefined || rangeOp === undefined) {
        range = a.range;
        rangeOp = a;
      } else if (range[0] !== a.range[0] || range[1] !== a.range[1]) {
        anomalies.push({
          kind: 'token-mismatch',
          key: a.key,
          message: `TOKEN ${token} answered two different ranges: ${describe(rangeOp)} and ${describe(a)}`,
          ops: [rangeOp.id, a.id],
        });
      }
    }
    const first = attempts[0];
    if (first === undefined) continue;
    out.push({
      ops: attempts,
      key: first.key,
      invokeMs,
      completeMs: anyOk ? completeMs : Math.max(...attempts.map((a) => a.completeMs)),
      ...(range !== undefined ? { range } : {}),
      n: first.n,
      // A token allocates at most once however often it is retried.
      appliedMin: anyOk ? 1 : 0,
      appliedMax: anyApplied ? 1 : 0,
      sawFailed,
    });
  }
  return out;
}

/** Checks the answers themselves: every ok write's range has the size asked for. */
export function checkReplies(history: readonly Op[]): Anomaly[] {
  const anomalies: Anomaly[] = [];
  for (const op of history) {
    if (op.outcome !== 'ok') continue;
    if (isWrite(op)) {
      if (op.range === undefined) anomalies.push({ kind: 'bad-reply', key: op.key, message: `an ok write without values: ${describe(op)}`, ops: [op.id] });
      else if (op.range[1] - op.range[0] + 1n !== op.n)
        anomalies.push({
          kind: 'bad-reply',
          key: op.key,
          message: `asked for ${op.n} values, got ${op.range[1] - op.range[0] + 1n}: ${describe(op)}`,
          ops: [op.id],
        });
    } else if (op.value === undefined) {
      anomalies.push({ kind: 'bad-reply', key: op.key, message: `an ok GET without a value: ${describe(op)}`, ops: [op.id] });
    }
  }
  return anomalies;
}

/** No value, nor any element of a range, is handed out twice on one key (token retries count once). */
export function checkUnique(history: readonly Op[], reportPerKeyMax = 10): Anomaly[] {
  const anomalies: Anomaly[] = [];
  for (const [key, ops] of groupByKey(history)) {
    const granted = logicalWrites(ops, []).filter((l): l is Logical & { range: readonly [bigint, bigint] } => l.range !== undefined);
    granted.sort((a, b) => cmp(a.range[0], b.range[0]));
    let reported = 0;
    let widest: (typeof granted)[number] | undefined;
    for (const g of granted) {
      if (widest !== undefined && g.range[0] <= widest.range[1]) {
        const a = widest.ops.find((o) => o.outcome === 'ok') ?? widest.ops[0];
        const b = g.ops.find((o) => o.outcome === 'ok') ?? g.ops[0];
        if (a !== undefined && b !== undefined && reported++ < reportPerKeyMax) {
          anomalies.push({ kind: 'duplicate', key, message: `values handed out twice: ${describe(a)} and ${describe(b)}`, ops: [a.id, b.id] });
        }
      }
      if (widest === undefined || g.range[1] > widest.range[1]) widest = g;
    }
  }
  return anomalies;
}

/** TOKEN retries answer the same range every time. */
export function checkTokens(history: readonly Op[]): Anomaly[] {
  const anomalies: Anomaly[] = [];
  for (const ops of groupByKey(history).values()) logicalWrites(ops, anomalies);
  return anomalies;
}

/**
 * Real-time order, per key. For ok operations A and B with A completed before B
 * was invoked: a write B hands out values above everything A handed out or
 * read; a GET B reads at least that. Writes of window keys keep the first rule;
 * their GETs are not checked (a window key's GET shows one node's view).
 */
export function checkRealtime(history: readonly Op[], options: { modeOf?: (key: string) => KeyMode; reportPerKeyMax?: number } = {}): Anomaly[] {
  const anomalies: Anomaly[] = [];
  const reportMax = options.reportPerKeyMax ?? 10;
  for (const [key, ops] of groupByKey(history)) {
    const window = (options.modeOf?.(key) ?? 'strict') === 'window';
    interface Point {
      readonly op: Op;
      readonly invokeMs: number;
      readonly completeMs: number;
      /** The counter's value once this op happened. */
      readonly after: bigint;
      /** What this op proves the counter was at least, just before it happened. */
      readonly atLeastBefore: bigint;
    }
    const points: Point[] = [];
    for (const l of logicalWrites(ops, [])) {
      const op = l.ops.find((o) => o.outcome === 'ok');
      if (l.range === undefined || op === undefined) continue;
      points.push({ op, invokeMs: l.invokeMs, completeMs: l.completeMs, after: l.range[1], atLeastBefore: l.range[0] - 1n });
    }
    if (!window) {
      for (const op of ops) {
        if (op.kind !== 'GET' || op.outcome !== 'ok' || op.value === undefined) continue;
        points.push({ op, invokeMs: op.invokeMs, completeMs: op.completeMs, after: op.value, atLeastBefore: op.value });
      }
    }
    const byComplete = [...points].sort((a, b) => a.completeMs - b.completeMs);
    const byInvoke = [...points].sort((a, b) => a.invokeMs - b.invokeMs);
    let i = 0;
    let best: Point | undefined;
    let reported = 0;
    for (const b of byInvoke) {
      while (i < byComplete.length) {
        const a = byComplete[i];
        if (a === undefined || a.completeMs >= b.invokeMs) break;
        if (best === undefined || a.after > best.after) best = a;
        i++;
      }
      if (best === undefined || b.atLeastBefore >= best.after) continue;
      if (reported++ >= reportMax) continue;
      const kind: AnomalyKind = b.op.kind === 'GET' ? 'stale-read' : 'realtime';
      const why =
        b.op.kind === 'GET'
          ? `a GET read less than a value known before it started`
          : `a write invoked after another completed handed out a value not above it`;
      anomalies.push({ kind, key, message: `${why}: ${describe(best.op)} then ${describe(b.op)}`, ops: [best.op.id, b.op.id] });
    }
  }
  return anomalies;
}

export interface KeyAccounting {
  readonly key: string;
  readonly initial: bigint;
  readonly final: bigint;
  /** Highest value acknowledged (handed out by an ok write or read by an ok GET). */
  readonly highestAcked: bigint;
  /** Sum of the deltas of writes certainly applied (ok). */
  readonly okDelta: bigint;
  /** Sum of the deltas that may also have been applied (unknown outcomes, hidden retries). */
  readonly unknownDelta: bigint;
  /** Sum of the deltas of writes that answered "not applied". */
  readonly failedDelta: bigint;
}

/** Per key: what the final value must be between. */
export function accounting(history: readonly Op[], options: Pick<CheckOptions, 'initial' | 'finals' | 'modeOf'>): KeyAccounting[] {
  const out: KeyAccounting[] = [];
  const byKey = groupByKey(history);
  const keys = new Set<string>([...byKey.keys(), ...options.finals.keys()]);
  for (const key of [...keys].sort()) {
    const ops = byKey.get(key) ?? [];
    const initial = options.initial?.get(key) ?? 0n;
    const final = options.finals.get(key);
    if (final === undefined) continue;
    let highestAcked = initial;
    let okDelta = 0n;
    let unknownDelta = 0n;
    let failedDelta = 0n;
    for (const l of logicalWrites(ops, [])) {
      okDelta += BigInt(l.appliedMin) * l.n;
      unknownDelta += BigInt(l.appliedMax - l.appliedMin) * l.n;
      if (l.appliedMax === 0 && l.sawFailed) failedDelta += l.n;
      if (l.range !== undefined && l.range[1] > highestAcked) highestAcked = l.range[1];
    }
    // A window key's GET shows one node's view (right after a failover, the highest bound reserved): not a value handed out.
    const window = (options.modeOf?.(key) ?? 'strict') === 'window';
    if (!window)
      for (const op of ops) if (op.kind === 'GET' && op.outcome === 'ok' && op.value !== undefined && op.value > highestAcked) highestAcked = op.value;
    out.push({ key, initial, final, highestAcked, okDelta, unknownDelta, failedDelta });
  }
  return out;
}

/**
 * Nothing acknowledged is lost and "not applied" was true: for every key,
 * final >= highest acknowledged, final - initial >= the ok deltas and, for
 * strict counters (where every applied delta shows in the value), final -
 * initial <= the ok deltas plus the deltas that may have been applied.
 */
export function checkAccounting(history: readonly Op[], options: CheckOptions): Anomaly[] {
  const anomalies: Anomaly[] = [];
  for (const a of accounting(history, options)) {
    const window = (options.modeOf?.(a.key) ?? 'strict') === 'window';
    const moved = a.final - a.initial;
    if (a.final < a.highestAcked) {
      anomalies.push({ kind: 'lost-ack', key: a.key, message: `${a.key} ends at ${a.final}, but ${a.highestAcked} was acknowledged`, ops: [] });
    } else if (moved < a.okDelta) {
      anomalies.push({
        kind: 'lost-ack',
        key: a.key,
        message: `${a.key} moved by ${moved} (${a.initial} -> ${a.final}), less than the ${a.okDelta} of acknowledged increments`,
        ops: [],
      });
    }
    if (!window && moved > a.okDelta + a.unknownDelta) {
      const excess = moved - a.okDelta - a.unknownDelta;
      anomalies.push({
        kind: 'not-applied',
        key: a.key,
        message:
          `${a.key} moved by ${moved} (${a.initial} -> ${a.final}), ${excess} more than the acknowledged (${a.okDelta}) and unknown (${a.unknownDelta}) increments` +
          (a.failedDelta > 0n ? `: writes that answered "not applied" (${a.failedDelta} in all) were applied` : ': values appeared from nowhere'),
        ops: [],
      });
    }
  }
  return anomalies;
}

export interface RecoveryProbe {
  readonly group: number;
  /** ms from the heal until a write to the group succeeded; null when none did. */
  readonly ms: number | null;
  readonly detail?: string;
}

/** After healing, every group serves a write within `limitMs`. */
export function checkRecovery(probes: readonly RecoveryProbe[], limitMs: number): Anomaly[] {
  const anomalies: Anomaly[] = [];
  for (const p of probes) {
    if (p.ms === null)
      anomalies.push({ kind: 'recovery', message: `group ${p.group} served no write after healing${p.detail === undefined ? '' : ` (${p.detail})`}`, ops: [] });
    else if (p.ms > limitMs)
      anomalies.push({
        kind: 'recovery',
        message: `group ${p.group} took ${Math.round(p.ms)} ms after healing to serve a write (limit ${limitMs} ms)`,
        ops: [],
      });
  }
  return anomalies;
}

/** Every checker over one history. */
export function checkHistory(history: readonly Op[], options: CheckOptions): Anomaly[] {
  const reportPerKeyMax = options.reportPerKeyMax ?? 10;
  const realtimeOptions = options.modeOf === undefined ? { reportPerKeyMax } : { modeOf: options.modeOf, reportPerKeyMax };
  return [
    ...checkReplies(history),
    ...checkUnique(history, reportPerKeyMax),
    ...checkTokens(history),
    ...checkRealtime(history, realtimeOptions),
    ...checkAccounting(history, options),
  ];
}

/** Anomalies counted by kind (every kind present, zeros included). */
export function countByKind(anomalies: readonly Anomaly[]): Record<AnomalyKind, number> {
  const counts = Object.fromEntries(ANOMALY_KINDS.map((k) => [k, 0])) as Record<AnomalyKind, number>;
  for (const a of anomalies) counts[a.kind]++;
  return counts;
}

// History as JSON: bigints as decimal strings.

interface OpJson {
  id: number;
  process: string;
  kind: OpKind;
  key: string;
  n: string;
  count?: boolean;
  token?: string;
  invokeMs: number;
  completeMs: number;
  outcome: Outcome;
  range?: [string, string];
  value?: string;
  error?: string;
  hiddenUnknownAttempts?: number;
  attemptErrors?: string[];
}

export function opToJson(op: Op): OpJson {
  return {
    id: op.id,
    process: op.process,
    kind: op.kind,
    key: op.key,
    n: op.n.toString(),
    ...(op.count !== undefined ? { count: op.count } : {}),
    ...(op.token !== undefined ? { token: op.token } : {}),
    invokeMs: Math.round(op.invokeMs * 1000) / 1000,
    completeMs: Math.round(op.completeMs * 1000) / 1000,
    outcome: op.outcome,
    ...(op.range !== undefined ? { range: [op.range[0].toString(), op.range[1].toString()] as [string, string] } : {}),
    ...(op.value !== undefined ? { value: op.value.toString() } : {}),
    ...(op.error !== undefined ? { error: op.error } : {}),
    ...(op.hiddenUnknownAttempts !== undefined && op.hiddenUnknownAttempts > 0 ? { hiddenUnknownAttempts: op.hiddenUnknownAttempts } : {}),
    ...(op.attemptErrors !== undefined && op.attemptErrors.length > 0 ? { attemptErrors: [...op.attemptErrors] } : {}),
  };
}

export function opFromJson(j: OpJson): Op {
  return {
    id: j.id,
    process: j.process,
    kind: j.kind,
    key: j.key,
    n: BigInt(j.n),
    ...(j.count !== undefined ? { count: j.count } : {}),
    ...(j.token !== undefined ? { token: j.token } : {}),
    invokeMs: j.invokeMs,
    completeMs: j.completeMs,
    outcome: j.outcome,
    ...(j.range !== undefined ? { range: [BigInt(j.range[0]), BigInt(j.range[1])] as const } : {}),
    ...(j.value !== undefined ? { value: BigInt(j.value) } : {}),
    ...(j.error !== undefined ? { error: j.error } : {}),
    ...(j.hiddenUnknownAttempts !== undefined ? { hiddenUnknownAttempts: j.hiddenUnknownAttempts } : {}),
    ...(j.attemptErrors !== undefined ? { attemptErrors: j.attemptErrors } : {}),
  };
}

/** Builds histories by hand (tests) or from a run: ids in order, ranges from answers. */
export class HistoryRecorder {
  readonly ops: Op[] = [];

  add(op: Omit<Op, 'id'>): Op {
    const full: Op = { id: this.ops.length, ...op };
    this.ops.push(full);
    return full;
  }
}
