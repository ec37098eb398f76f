// Sequence commands: SEQNEXT, SEQCREATE, SEQCURRENT, SEQINFO, and the routing
// that sends window-mode keys to the window allocator.

import { randomBytes } from 'node:crypto';
import { ERR, type ErrorKey } from '../../errors.js';
import { globMatch } from '../../glob.js';
import { WINDOW_QUEUE_MAX, type Allocation } from '../../multiraft/window.js';
import { R, textMap, type Reply } from '../../resp/encoder.js';
import { INT64_MAX, parseInt64 } from '../../sequencer/numbers.js';
import { isSequence, sequenceValue, type Sequence, type SequenceMode, type SequenceSpec, type TokenPolicy } from '../../sequencer/sequence.js';
import type { StateMachine } from '../../sequencer/state-machine.js';
import { command, type CommandSpec, type Respond, type ServerContext } from '../command.js';
import { err, keyOf, lower, propose, read } from './common.js';

/** Longest idempotency token accepted (the text of ERR.tokenLength says so). */
export const TOKEN_BYTES_MAX = 1024;

const SEQ = { group: 'sequence', since: '0.1.0' } as const;
const SEQ_WRITE = { ...SEQ, flags: ['write', 'denyoom', 'fast'], aclCategories: ['@write', '@fast'] } as const;
const SEQ_READ = { ...SEQ, flags: ['readonly', 'fast'], aclCategories: ['@read', '@fast'] } as const;
const ONE_KEY = { firstKey: 1, lastKey: 1, keyStep: 1 } as const;

const newSequenceId = (): string => randomBytes(8).toString('hex');

function tokenPolicy(ctx: ServerContext): TokenPolicy {
  return { retentionMs: ctx.config.tokenRetentionMs, perKeyMax: ctx.config.tokensPerKeyMax };
}

/** Whether the operator made this key's counter windowed (--default-mode window, --window-keys). */
function operatorWantsWindow(ctx: ServerContext, key: string): boolean {
  return ctx.config.defaultMode === 'window' || ctx.config.windowKeys.some((p) => globMatch(p, key));
}

function isPlainCounter(value: unknown): boolean {
  return value === undefined || typeof value === 'bigint' || (Buffer.isBuffer(value) && parseInt64(value) !== null);
}

const RETRIES_MAX = 3;

/**
 * Allocates `count` values of `key` from its window when the key is (or the
 * operator made it) a window sequence; otherwise calls `viaLog`, the strict path.
 */
export function allocateFromWindow(
  ctx: ServerContext,
  key: string,
  count: bigint,
  done: (a: { ok: true; first: bigint; last: bigint } | { ok: false; error: ErrorKey }) => void,
  viaLog: () => void,
  attempt = 0,
): void {
  const adopting = ctx.windows.adopting;
  const pending = adopting.get(key);
  if (pending !== undefined) {
    // The key is being adopted: wait behind the request that started it, so a
    // connection's pipelined INCRs are served in the order they were sent.
    if (pending.length >= WINDOW_QUEUE_MAX) return done({ ok: false, error: 'overloaded' });
    pending.push(() => allocateFromWindow(ctx, key, count, done, viaLog, attempt));
    return;
  }
  const value = ctx.group.peek(key);
  const retry = (): void => {
    if (attempt + 1 >= RETRIES_MAX) done({ ok: false, error: 'seqGone' });
    else allocateFromWindow(ctx, key, count, done, viaLog, attempt + 1);
  };
  if (isSequence(value)) {
    if (value.mode !== 'window') return viaLog();
    ctx.windows.allocate(key, value, count, (a: Allocation) => {
      if (a.ok) done(a);
      else if (a.error === 'retry') retry();
      else done({ ok: false, error: a.error });
    });
    return;
  }
  if (!operatorWantsWindow(ctx, key) || !isPlainCounter(value)) return viaLog();
  const spec: SequenceSpec = { id: newSequenceId(), mode: 'window', start: 1n, step: 1n, max: INT64_MAX, windowSize: ctx.config.windowSize };
  const waiting: (() => void)[] = [];
  adopting.set(key, waiting);
  ctx.group.propose({ type: 'adopt', key, spec }, (result) => {
    adopting.delete(key);
    if (result.type === 'error') done({ ok: false, error: result.error });
    else retry();
    // Requests that arrived during the adoption follow, in their arrival order.
    for (const resume of waiting) resume();
  });
}

/** What GET and SEQCURRENT show for a key: for a window sequence, the last value this node handed out. */
export function visibleValue(ctx: ServerContext, sm: StateMachine, key: string): Buffer | null {
  const value = sm.getValue(key);
  if (isSequence(value) && value.mode === 'window') {
    const n = ctx.windows.lastServed(key, value) ?? sequenceValue(value);
    return n === null ? null : Buffer.from(n.toString(), 'latin1');
  }
  return sm.getBytes(key);
}

function parsePositive(arg: Buffer | undefined, notPositive: ErrorKey): bigint | ErrorKey {
  const n = arg === undefined ? null : parseInt64(arg);
  if (n === null) return 'notInteger';
  return n < 1n ? notPositive : n;
}

function seqNext(ctx: ServerContext, args: readonly Buffer[], respond: Respond): void {
  let count = 1n;
  let range = false;
  let token: string | null = null;
  for (let j = 2; j < args.length; j += 2) {
    const opt = lower(args[j]);
    const value = args[j + 1];
    if (value === undefined) return respond(err('syntax'));
    if (opt === 'count') {
      const n = parsePositive(value, 'countNotPositive');
      if (typeof n !== 'bigint') return respond(err(n));
      count = n;
      range = true;
    } else if (opt === 'token') {
      if (value.length === 0 || value.length > TOKEN_BYTES_MAX) {
        return respond(err('tokenLength'));
      }
      token = keyOf(value);
    } else return respond(err('syntax'));
  }
  const key = keyOf(args[1] as Buffer);
  const reply = (first: bigint, last: bigint): Reply => (range ? R.array([R.int(first), R.int(last)]) : R.int(last));
  const viaLog = (): void => propose(ctx, { type: 'seqnext', key, count, range, token, nowMs: ctx.wallClockMs(), policy: tokenPolicy(ctx) }, respond);
  allocateFromWindow(
    ctx,
    key,
    count,
    (a) => {
      if (!a.ok) return respond(err(a.error));
      if (token === null) return respond(reply(a.first, a.last));
      // Remember the values under the token (durably) before the client sees them.
      propose(
        ctx,
        {
          type: 'token',
          key,
          token,
          record: { first: a.first, last: a.last, count, range, atMs: ctx.wallClockMs() },
          policy: tokenPolicy(ctx),
        },
        respond,
      );
    },
    viaLog,
  );
}

function seqCreate(ctx: ServerContext, args: readonly Buffer[], respond: Respond): void {
  let start = 1n;
  let step = 1n;
  let max = INT64_MAX;
  let mode: SequenceMode = 'strict';
  let windowSize = ctx.config.windowSize;
  let replace = false;
  for (let j = 2; j < args.length; j++) {
    const opt = lower(args[j]);
    if (opt === 'replace') {
      replace = true;
      continue;
    }
    const value = args[j + 1];
    if (value === undefined) return respond(err('syntax'));
    j++;
    if (opt === 'start' || opt === 'max') {
      const n = parseInt64(value);
      if (n === null) return respond(err('notInteger'));
      if (opt === 'start') start = n;
      else max = n;
    } else if (opt === 'step') {
      const n = parsePositive(value, 'stepNotPositive');
      if (typeof n !== 'bigint') return respond(err(n));
      step = n;
    } else if (opt === 'window') {
      const n = parsePositive(value, 'windowNotPositive');
      if (typeof n !== 'bigint') return respond(err(n));
      windowSize = n;
    } else if (opt === 'mode') {
      const m = lower(value);
      if (m !== 'strict' && m !== 'window') return respond(err('syntax'));
      mode = m;
    } else return respond(err('syntax'));
  }
  if (start > max) return respond(err('startAboveMax'));
  const key = keyOf(args[1] as Buffer);
  propose(ctx, { type: 'seqcreate', key, spec: { id: newSequenceId(), mode, start, step, max, windowSize }, replace }, respond);
}

function seqInfo(ctx: ServerContext, sm: StateMachine, key: string): Reply {
  const value = sm.getValue(key);
  if (value === undefined) return err('noSequence');
  if (!isSequence(value)) {
    const bytes = sm.getBytes(key);
    const n = bytes === null ? null : parseInt64(bytes);
    if (n === null) return R.error(ERR.wrongType);
    return textMap([
      ['mode', R.bulk('counter')],
      ['current', R.int(n)],
    ]);
  }
  const seq: Sequence = value;
  const current = visibleValue(ctx, sm, key);
  const window = seq.mode === 'window' ? ctx.windows.window(key, seq) : null;
  const intOrNil = (n: bigint | null): Reply => (n === null ? R.nil : R.int(n));
  return textMap([
    ['mode', R.bulk(seq.mode)],
    ['start', R.int(seq.start)],
    ['step', R.int(seq.step)],
    ['max', R.int(seq.max)],
    ['current', intOrNil(current === null ? null : parseInt64(current))],
    ['window', R.int(seq.windowSize)],
    ['window-next', intOrNil(window?.next ?? null)],
    ['window-end', intOrNil(window?.end ?? null)],
    ['reserved-high', intOrNil(seq.reservedHigh)],
  ]);
}

export const SEQUENCE_COMMANDS: readonly CommandSpec[] = [
  command({
    name: 'seqnext',
    arity: -2,
    ...SEQ_WRITE,
    ...ONE_KEY,
    summary: 'Hands out the next value of a sequence, or COUNT values at once as [first, last]; TOKEN makes a retry return the same values.',
    data: (ctx, args, respond) => seqNext(ctx, args, respond),
  }),
  command({
    name: 'seqcreate',
    arity: -2,
    ...SEQ_WRITE,
    ...ONE_KEY,
    summary: 'Creates a sequence with its start, step, limit and mode (strict or window).',
    data: (ctx, args, respond) => seqCreate(ctx, args, respond),
  }),
  command({
    name: 'seqcurrent',
    arity: 2,
    ...SEQ_READ,
    ...ONE_KEY,
    summary: 'Returns the last value a sequence handed out.',
    data: (ctx, args, respond) => {
      const key = keyOf(args[1] as Buffer);
      read(
        ctx,
        (sm) => visibleValue(ctx, sm, key),
        respond,
        (v) => {
          if (v === null) return R.nil;
          const n = parseInt64(v);
          return n === null ? err('notInteger') : R.int(n);
        },
      );
    },
  }),
  command({
    name: 'seqinfo',
    arity: 2,
    ...SEQ_READ,
    ...ONE_KEY,
    summary: 'Describes a sequence: mode, start, step, max, current value and window.',
    data: (ctx, args, respond) => {
      const key = keyOf(args[1] as Buffer);
      read(
        ctx,
        (sm) => seqInfo(ctx, sm, key),
        respond,
        (r) => r,
      );
    },
  }),
];
