// Helpers shared by the command handlers: key text, replies from op results,
// and the two ways to reach the group (propose a write, run a read).

import { ERR } from '../../errors.js';
import { R, type Reply } from '../../resp/encoder.js';
import type { Op, OpResult, StateMachine } from '../../sequencer/state-machine.js';
import type { ReadOutcome } from '../../multiraft/group.js';
import type { Respond, ServerContext } from '../command.js';

export const keyOf = (arg: Buffer): string => arg.toString('latin1');
export const lower = (arg: Buffer | undefined): string => (arg === undefined ? '' : arg.toString('latin1').toLowerCase());
export const err = (key: keyof typeof ERR): Reply => R.error(ERR[key]);

export function resultReply(result: OpResult): Reply {
  switch (result.type) {
    case 'int':
      return R.int(result.value);
    case 'range':
      return R.array([R.int(result.first), R.int(result.last)]);
    case 'bulk':
      return result.value === null ? R.nil : R.bulk(result.value);
    case 'ok':
      return R.ok;
    case 'error':
      return err(result.error);
  }
}

export function propose(ctx: ServerContext, op: Op, respond: Respond, map: (r: OpResult) => Reply = resultReply): void {
  ctx.group.propose(op, (result) => respond(result.type === 'error' ? resultReply(result) : map(result)));
}

export function read<T>(ctx: ServerContext, query: (sm: StateMachine) => T, respond: Respond, map: (value: T) => Reply): void {
  ctx.group.read(query, (outcome: ReadOutcome<T>) => respond(outcome.ok ? map(outcome.value) : err(outcome.error)));
}

export const bulkOrNil = (value: Buffer | null): Reply => (value === null ? R.nil : R.bulk(value));
