// Sequences: keys created with SEQCREATE, with their own start, step, limit and
// mode, and the idempotency tokens that make SEQNEXT retries safe. Values are
// immutable: a change makes a new object, so a persisted or snapshotted value
// never changes under the writer.

export type SequenceMode = 'strict' | 'window';

/** What SEQCREATE (or an operator's --window-keys) fixes about a sequence. */
export interface SequenceSpec {
  /** Chosen by the proposer of SEQCREATE; a window cut from an older incarnation of the key is never served. */
  readonly id: string;
  readonly mode: SequenceMode;
  readonly start: bigint;
  readonly step: bigint;
  readonly max: bigint;
  /** Values reserved at once in window mode. */
  readonly windowSize: bigint;
}

export interface Sequence extends SequenceSpec {
  readonly kind: 'sequence';
  /** Strict: the last value handed out (null before the first). */
  readonly current: bigint | null;
  /** Window: the highest value ever reserved (null before the first reservation). */
  readonly reservedHigh: bigint | null;
}

export function newSequence(spec: SequenceSpec, current: bigint | null = null): Sequence {
  return { kind: 'sequence', ...spec, current, reservedHigh: null };
}

export function isSequence(value: unknown): value is Sequence {
  return typeof value === 'object' && value !== null && (value as { kind?: unknown }).kind === 'sequence';
}

/**
 * The value a client reads for a sequence (GET, SEQCURRENT from the state
 * machine): strict, the last value handed out; window, the highest reserved
 * (an upper bound of what was handed out); null before anything was.
 */
export function sequenceValue(seq: Sequence): bigint | null {
  return seq.mode === 'strict' ? seq.current : (seq.reservedHigh ?? seq.current);
}

/** n values from `first` by `step`: the last one, or null past `max`. */
export function lastOfRange(first: bigint, count: bigint, step: bigint, max: bigint): bigint | null {
  if (first > max) return null;
  const last = first + (count - 1n) * step;
  return last > max ? null : last;
}

// Idempotency tokens.

export interface TokenRecord {
  readonly first: bigint;
  readonly last: bigint;
  readonly count: bigint;
  /** Whether the reply was a [first, last] range (COUNT given) or one integer. */
  readonly range: boolean;
  readonly atMs: number;
}

/** Tokens of one key, oldest first (Map keeps insertion order). */
export type TokenTable = ReadonlyMap<string, TokenRecord>;

export interface TokenPolicy {
  /** A token is remembered this long after its allocation. */
  readonly retentionMs: number;
  /** At most this many tokens per key; the oldest are forgotten first. */
  readonly perKeyMax: number;
}

export const DEFAULT_TOKEN_POLICY: TokenPolicy = { retentionMs: 10 * 60 * 1000, perKeyMax: 10_000 };

/** The table without tokens older than the retention. */
export function pruneTokens(table: TokenTable | undefined, nowMs: number, policy: TokenPolicy): Map<string, TokenRecord> {
  const out = new Map<string, TokenRecord>();
  if (table === undefined) return out;
  for (const [token, record] of table) {
    if (nowMs - record.atMs <= policy.retentionMs) out.set(token, record);
  }
  return out;
}

/** Adds a record, forgetting the oldest tokens past the per-key bound. */
export function addToken(table: Map<string, TokenRecord>, token: string, record: TokenRecord, policy: TokenPolicy): void {
  table.delete(token);
  table.set(token, record);
  while (table.size > policy.perKeyMax) {
    const oldest = table.keys().next();
    if (oldest.done === true) break;
    table.delete(oldest.value);
  }
}
