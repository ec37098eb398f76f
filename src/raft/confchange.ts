// Membership changes. A ConfChange entry's payload is the complete membership
// that results from the change (so that applying it, or rolling it back when
// the entry is truncated, needs no other context).

import assert from 'node:assert/strict';
import { ConfState, NodeId } from './types.js';

export type ConfChangeOp = 'addLearner' | 'promote' | 'remove';

export interface ConfChange {
  readonly op: ConfChangeOp;
  readonly nodeId: NodeId;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function encodeConfState(conf: ConfState): Uint8Array {
  return encoder.encode(JSON.stringify({ voters: conf.voters, learners: conf.learners }));
}

function isStringArray(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((x) => typeof x === 'string');
}

export function decodeConfState(data: Uint8Array): ConfState {
  const parsed: unknown = JSON.parse(decoder.decode(data));
  assert.ok(typeof parsed === 'object' && parsed !== null, 'conf change payload is not an object');
  const voters: unknown = Reflect.get(parsed, 'voters');
  const learners: unknown = Reflect.get(parsed, 'learners');
  assert.ok(isStringArray(voters) && isStringArray(learners), 'conf change payload malformed');
  return { voters, learners };
}

/** The membership after applying `cc` to `conf`, or an error text if the change is not allowed. */
export function applyConfChange(conf: ConfState, cc: ConfChange): ConfState | string {
  const isVoter = conf.voters.includes(cc.nodeId);
  const isLearner = conf.learners.includes(cc.nodeId);
  switch (cc.op) {
    case 'addLearner':
      if (isVoter || isLearner) return `${cc.nodeId} is already a member`;
      return { voters: conf.voters, learners: [...conf.learners, cc.nodeId] };
    case 'promote':
      if (!isLearner) return `${cc.nodeId} is not a learner`;
      return { voters: [...conf.voters, cc.nodeId], learners: conf.learners.filter((n) => n !== cc.nodeId) };
    case 'remove':
      if (!isVoter && !isLearner) return `${cc.nodeId} is not a member`;
      if (isVoter && conf.voters.length === 1) return 'cannot remove the last voter';
      return {
        voters: conf.voters.filter((n) => n !== cc.nodeId),
        learners: conf.learners.filter((n) => n !== cc.nodeId),
      };
  }
}
