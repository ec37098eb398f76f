// The commands that read or write part of a string: APPEND, SETRANGE,
// GETRANGE/SUBSTR, the bitmap commands (SETBIT, GETBIT, BITCOUNT, BITPOS) and
// LCS. Arguments are checked here in the order Redis 7.0 checks them, some
// before the key is looked up and some after (BITCOUNT and BITPOS answer a
// missing key before reading their range). Reads see a key as GET does: a
// counter as its decimal text, a sequence as its current value; writes refuse
// a sequence (WRONGTYPE).

import type { ErrorKey } from '../../errors.js';
import { R, type Reply } from '../../resp/encoder.js';
import type { StateMachine } from '../../sequencer/state-machine.js';
import { parseInt64 } from '../../sequencer/numbers.js';
import { BIT_OFFSET_MAX, bitCount, bitPos, getBit, getRange, longestCommonSubsequence, STRING_BYTES_MAX, type BitRange } from '../../sequencer/string-ops.js';
import { command, type CommandSpec, type Respond, type ServerContext } from '../command.js';
import { err, keyOf, lower, propose, read } from './common.js';
import { visibleValue } from './sequences.js';

const ONE_KEY = { firstKey: 1, lastKey: 1, keyStep: 1 } as const;
const EMPTY = Buffer.alloc(0);

/**
 * A key's bytes as GET shows them (null: none), only looked at: the caller is
 * done with them before it returns and copies what a reply carries, so that
 * SETRANGE and SETBIT may go on changing the string in place (see StateMachine).
 */
function peekBytes(ctx: ServerContext, sm: StateMachine, key: string): Buffer | null {
  const value = sm.peekValue(key);
  if (value === undefined) return null;
  return Buffer.isBuffer(value) ? value : visibleValue(ctx, sm, key);
}

/** Answers with `reply` computed on the key's bytes inside the read itself (see peekBytes). */
function readBytes(ctx: ServerContext, args: readonly Buffer[], respond: Respond, reply: (bytes: Buffer | null) => Reply): void {
  const key = keyOf(args[1] as Buffer);
  read(
    ctx,
    (sm) => reply(peekBytes(ctx, sm, key)),
    respond,
    (r) => r,
  );
}

/** A SETBIT/GETBIT offset: a canonical integer from 0 to BIT_OFFSET_MAX. */
function parseBitOffset(arg: Buffer | undefined): number | null {
  const n = arg === undefined ? null : parseInt64(arg);
  return n === null || n < 0n || n > BigInt(BIT_OFFSET_MAX) ? null : Number(n);
}

/** BYTE or BIT (any case); null for anything else. */
function parseUnit(arg: Buffer | undefined): 'byte' | 'bit' | null {
  const unit = lower(arg);
  return unit === 'byte' || unit === 'bit' ? unit : null;
}

/**
 * The optional range of BITCOUNT (`start end [unit]`, from argument 2) or
 * BITPOS (`[start [end [unit]]]`, from argument 3): a range, null for none,
 * or the error Redis gives. Redis reads BITCOUNT's start, end, then unit, but
 * BITPOS's start, unit, then end: the first bad one decides the error.
 */
function parseBitRange(args: readonly Buffer[], from: number, command: 'bitcount' | 'bitpos'): BitRange | null | ErrorKey {
  const extra = args.length - from;
  if (extra === 0) return null;
  if (extra > 3 || (command === 'bitcount' && extra === 1)) return 'syntax';
  const start = parseInt64(args[from] as Buffer);
  if (start === null) return 'notInteger';
  const end = extra === 1 ? null : parseInt64(args[from + 1] as Buffer);
  const endBad = extra > 1 && end === null;
  if (command === 'bitcount' && endBad) return 'notInteger';
  const unit = extra === 3 ? parseUnit(args[from + 2]) : 'byte';
  if (unit === null) return 'syntax';
  if (endBad) return 'notInteger';
  return { start, end, unit };
}

interface LcsOptions {
  readonly idx: boolean;
  readonly len: boolean;
  readonly withMatchLength: boolean;
  readonly matchLengthMin: number;
}

function parseLcsOptions(args: readonly Buffer[]): LcsOptions | ErrorKey {
  let idx = false;
  let len = false;
  let withMatchLength = false;
  let matchLengthMin = 0;
  for (let j = 3; j < args.length; j++) {
    const opt = lower(args[j]);
    if (opt === 'idx') idx = true;
    else if (opt === 'len') len = true;
    else if (opt === 'withmatchlen') withMatchLength = true;
    else if (opt === 'minmatchlen' && j + 1 < args.length) {
      const n = parseInt64(args[j + 1] as Buffer);
      if (n === null) return 'notInteger';
      // A run is never longer than a string; a larger bound keeps no run, as in Redis.
      matchLengthMin = n < 0n ? 0 : n > BigInt(STRING_BYTES_MAX) ? STRING_BYTES_MAX + 1 : Number(n);
      j++;
    } else return 'syntax';
  }
  if (idx && len) return 'lcsIdxAndLen';
  return { idx, len, withMatchLength, matchLengthMin };
}

function lcsReply(a: Buffer, b: Buffer, options: LcsOptions): Reply {
  const result = longestCommonSubsequence(a, b, options.matchLengthMin);
  if (!result.ok) return err('lcsTooLarge');
  if (options.len) return R.int(result.lcs.length);
  if (!options.idx) return R.bulk(result.lcs);
  const matches = result.matches.map((m) =>
    R.array([R.array([R.int(m.a[0]), R.int(m.a[1])]), R.array([R.int(m.b[0]), R.int(m.b[1])]), ...(options.withMatchLength ? [R.int(m.length)] : [])]),
  );
  return R.map([
    [R.bulk('matches'), R.array(matches)],
    [R.bulk('len'), R.int(result.lcs.length)],
  ]);
}

function getRangeCommand(name: string, since: string): CommandSpec {
  return command({
    name,
    arity: 4,
    flags: ['readonly'],
    ...ONE_KEY,
    group: 'string',
    aclCategories: ['@read', '@string', '@slow'],
    since,
    complexity: 'O(N) where N is the length of the returned string.',
    summary:
      name === 'substr'
        ? 'Returns a substring from a string value (the older name of GETRANGE).'
        : 'Returns the bytes of a string value between two offsets, counted from the end when negative.',
    data: (ctx, args, respond) => {
      const start = parseInt64(args[2] as Buffer);
      const end = parseInt64(args[3] as Buffer);
      if (start === null || end === null) return respond(err('notInteger'));
      readBytes(ctx, args, respond, (bytes) => R.bulk(bytes === null ? EMPTY : Buffer.from(getRange(bytes, start, end))));
    },
  });
}

export const STRING_RANGE_COMMANDS: readonly CommandSpec[] = [
  command({
    name: 'append',
    arity: 3,
    flags: ['write', 'denyoom', 'fast'],
    ...ONE_KEY,
    group: 'string',
    aclCategories: ['@write', '@string', '@fast'],
    since: '2.0.0',
    complexity: 'O(1) amortized: the string keeps spare room to grow into.',
    summary: 'Appends bytes to a string value; a missing key starts empty. Returns the new length.',
    data: (ctx, args, respond) => propose(ctx, { type: 'append', key: keyOf(args[1] as Buffer), value: Buffer.from(args[2] as Buffer) }, respond),
  }),
  command({
    name: 'setrange',
    arity: 4,
    flags: ['write', 'denyoom'],
    ...ONE_KEY,
    group: 'string',
    aclCategories: ['@write', '@string', '@slow'],
    since: '2.2.0',
    complexity: 'O(M) where M is the length of the value, plus one copy of the string after it was read or checkpointed.',
    summary: 'Overwrites part of a string value from an offset, padding with zero bytes. Returns the new length.',
    data: (ctx, args, respond) => {
      const offset = parseInt64(args[2] as Buffer);
      if (offset === null) return respond(err('notInteger'));
      if (offset < 0n) return respond(err('offsetOutOfRange'));
      // Past the limit every offset fails alike (unless nothing is written): the op carries at most the limit.
      const capped = offset > BigInt(STRING_BYTES_MAX) ? STRING_BYTES_MAX : Number(offset);
      propose(ctx, { type: 'setrange', key: keyOf(args[1] as Buffer), offset: capped, value: Buffer.from(args[3] as Buffer) }, respond);
    },
  }),
  getRangeCommand('getrange', '2.4.0'),
  getRangeCommand('substr', '1.0.0'),
  command({
    name: 'setbit',
    arity: 4,
    flags: ['write', 'denyoom'],
    ...ONE_KEY,
    group: 'bitmap',
    aclCategories: ['@write', '@bitmap', '@slow'],
    since: '2.2.0',
    complexity: 'O(1), plus one copy of the string after it was read or checkpointed.',
    summary: 'Sets or clears the bit at an offset of a string value, growing it with zero bytes. Returns the previous bit.',
    data: (ctx, args, respond) => {
      const offset = parseBitOffset(args[2]);
      if (offset === null) return respond(err('bitOffsetInvalid'));
      const bit = parseInt64(args[3] as Buffer);
      if (bit !== 0n && bit !== 1n) return respond(err('bitInvalid'));
      propose(ctx, { type: 'setbit', key: keyOf(args[1] as Buffer), offset, bit: bit === 1n ? 1 : 0 }, respond);
    },
  }),
  command({
    name: 'getbit',
    arity: 3,
    flags: ['readonly', 'fast'],
    ...ONE_KEY,
    group: 'bitmap',
    aclCategories: ['@read', '@bitmap', '@fast'],
    since: '2.2.0',
    summary: 'Returns the bit at an offset of a string value (0 past its end or for a missing key).',
    data: (ctx, args, respond) => {
      const offset = parseBitOffset(args[2]);
      if (offset === null) return respond(err('bitOffsetInvalid'));
      readBytes(ctx, args, respond, (bytes) => R.int(bytes === null ? 0 : getBit(bytes, offset)));
    },
  }),
  command({
    name: 'bitcount',
    arity: -2,
    flags: ['readonly'],
    ...ONE_KEY,
    group: 'bitmap',
    aclCategories: ['@read', '@bitmap', '@slow'],
    since: '2.6.0',
    complexity: 'O(N)',
    summary: 'Counts the set bits of a string value, or of a range of its bytes or bits.',
    data: (ctx, args, respond) => {
      const range = parseBitRange(args, 2, 'bitcount');
      readBytes(ctx, args, respond, (bytes) => {
        if (bytes === null) return R.zero;
        if (typeof range === 'string') return err(range);
        return R.int(bitCount(bytes, range));
      });
    },
  }),
  command({
    name: 'bitpos',
    arity: -3,
    flags: ['readonly'],
    ...ONE_KEY,
    group: 'bitmap',
    aclCategories: ['@read', '@bitmap', '@slow'],
    since: '2.8.7',
    complexity: 'O(N)',
    summary: 'Returns the position of the first set (1) or clear (0) bit of a string value, or of a range of it.',
    data: (ctx, args, respond) => {
      const bit = parseInt64(args[2] as Buffer);
      if (bit === null) return respond(err('notInteger'));
      if (bit !== 0n && bit !== 1n) return respond(err('bitposBit'));
      const range = parseBitRange(args, 3, 'bitpos');
      readBytes(ctx, args, respond, (bytes) => {
        // A missing key is an endless run of zeros.
        if (bytes === null) return R.int(bit === 1n ? -1 : 0);
        if (typeof range === 'string') return err(range);
        return R.int(bitPos(bytes, bit === 1n ? 1 : 0, range));
      });
    },
  }),
  command({
    name: 'lcs',
    arity: -3,
    flags: ['readonly'],
    firstKey: 1,
    lastKey: 2,
    keyStep: 1,
    group: 'string',
    aclCategories: ['@read', '@string', '@slow'],
    since: '7.0.0',
    complexity: 'O(N*M) where N and M are the lengths of the two strings.',
    summary: 'Finds the longest common subsequence of two string values: the text, its length (LEN) or the matching ranges (IDX).',
    data: (ctx, args, respond) => {
      const options = parseLcsOptions(args);
      if (typeof options === 'string') return respond(err(options));
      const keyA = keyOf(args[1] as Buffer);
      const keyB = keyOf(args[2] as Buffer);
      read(
        ctx,
        (sm) => lcsReply(peekBytes(ctx, sm, keyA) ?? EMPTY, peekBytes(ctx, sm, keyB) ?? EMPTY, options),
        respond,
        (reply) => reply,
      );
    },
  }),
];
