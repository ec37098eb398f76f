// The fault suite's checkers on small hand-made histories: each must accept the
// histories a correct cluster can produce and reject each kind of anomaly.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  accounting,
  checkAccounting,
  checkHistory,
  checkRealtime,
  checkRecovery,
  checkReplies,
  checkTokens,
  checkUnique,
  countByKind,
  HistoryRecorder,
  opFromJson,
  opToJson,
  type AnomalyKind,
  type Op,
  type Outcome,
} from '../chaos/history.js';
import { failoversFrom, leaderAt, type LeaderSample } from '../chaos/monitor.js';
import type { FaultEvent } from '../chaos/nemesis.js';
import { failovers as failoversDuring, formatSummary, outages, percentile, type RunSummaryInput, statsByRow, timelineSvg } from '../chaos/report.js';
import { classifyError, interpret, keysForGroups, planOp, type Plan } from '../chaos/workload.js';
import { ERR } from '../src/errors.js';
import { prng } from '../testkit/random.js';

type Spec = {
  p?: string;
  kind: Op['kind'];
  key?: string;
  n?: number;
  at: [number, number];
  outcome?: Outcome;
  /** ok write: the reply (INCR/INCRBY: the new value; SEQNEXT: [first, last] or a single value). ok GET: the value read. */
  reply?: number | [number, number];
  token?: string;
  count?: boolean;
  error?: string;
  hidden?: number;
};

function history(specs: readonly Spec[]): Op[] {
  const h = new HistoryRecorder();
  for (const s of specs) {
    const n = BigInt(s.kind === 'GET' ? 0 : (s.n ?? 1));
    const outcome = s.outcome ?? 'ok';
    let range: readonly [bigint, bigint] | undefined;
    let value: bigint | undefined;
    if (outcome === 'ok' && s.reply !== undefined) {
      if (s.kind === 'GET') value = BigInt(s.reply as number);
      else if (Array.isArray(s.reply)) range = [BigInt(s.reply[0]), BigInt(s.reply[1])];
      else range = [BigInt(s.reply) - n + 1n, BigInt(s.reply)];
    }
    h.add({
      process: s.p ?? 'c1',
      kind: s.kind,
      key: s.key ?? 'k',
      n,
      invokeMs: s.at[0],
      completeMs: s.at[1],
      outcome,
      ...(s.count !== undefined ? { count: s.count } : {}),
      ...(s.token !== undefined ? { token: s.token } : {}),
      ...(range !== undefined ? { range } : {}),
      ...(value !== undefined ? { value } : {}),
      ...(s.error !== undefined ? { error: s.error } : {}),
      ...(s.hidden !== undefined ? { hiddenUnknownAttempts: s.hidden } : {}),
    });
  }
  return h.ops;
}

const finals = (entries: Record<string, number>): Map<string, bigint> => new Map(Object.entries(entries).map(([k, v]) => [k, BigInt(v)]));
const kinds = (anomalies: readonly { kind: AnomalyKind }[]): AnomalyKind[] => anomalies.map((a) => a.kind);

describe('chaos checkers: a correct history passes', () => {
  it('concurrent INCR, INCRBY, SEQNEXT with COUNT and TOKEN, GETs, failures and unknowns', () => {
    const ops = history([
      { p: 'a', kind: 'INCR', at: [0, 10], reply: 1 },
      { p: 'b', kind: 'INCRBY', n: 5, at: [5, 12], reply: 6 }, // 2..6
      { p: 'c', kind: 'GET', at: [11, 13], reply: 6 }, // concurrent with b: may see it
      { p: 'a', kind: 'SEQNEXT', n: 3, count: true, at: [13, 20], reply: [7, 9] },
      { p: 'c', kind: 'INCR', at: [14, 30], outcome: 'unknown', error: 'TIMEOUT write outcome unknown' }, // applied: 10
      { p: 'b', kind: 'INCR', at: [21, 22], outcome: 'failed', error: 'CLUSTERDOWN no leader, write not applied' },
      { p: 'b', kind: 'SEQNEXT', n: 2, count: true, token: 't1', at: [23, 24], outcome: 'unknown', error: 'Command timed out' },
      { p: 'b', kind: 'SEQNEXT', n: 2, count: true, token: 't1', at: [25, 31], reply: [11, 12] }, // the retry answers the same range
      { p: 'b', kind: 'SEQNEXT', n: 2, count: true, token: 't1', at: [32, 33], reply: [11, 12] }, // and again, later
      { p: 'a', kind: 'SEQNEXT', at: [32, 34], reply: 13 },
      { p: 'c', kind: 'GET', at: [35, 36], reply: 13 },
      // another key, untouched by the rest
      { p: 'a', kind: 'INCR', key: 'other', at: [0, 1], reply: 1 },
      { p: 'a', kind: 'INCR', key: 'other', at: [2, 3], outcome: 'unknown' }, // not applied after all
    ]);
    const anomalies = checkHistory(ops, { finals: finals({ k: 13, other: 1 }) });
    assert.deepEqual(anomalies, []);
    const [acc] = accounting(ops, { finals: finals({ k: 13 }) });
    assert.deepEqual(acc, { key: 'k', initial: 0n, final: 13n, highestAcked: 13n, okDelta: 12n, unknownDelta: 1n, failedDelta: 1n });
  });

  it('an unknown write may or may not have happened: both finals pass', () => {
    const specs: Spec[] = [
      { kind: 'INCR', at: [0, 1], reply: 1 },
      { kind: 'INCRBY', n: 4, at: [2, 9], outcome: 'unknown' },
      { kind: 'INCR', at: [10, 11], reply: 6 },
    ];
    // Applied: the next INCR answers 6; final 6.
    assert.deepEqual(checkHistory(history(specs), { finals: finals({ k: 6 }) }), []);
    // Not applied: the next INCR answers 2; final 2.
    const notApplied = specs.map((s, i) => (i === 2 ? { ...s, reply: 2 } : s));
    assert.deepEqual(checkHistory(history(notApplied), { finals: finals({ k: 2 }) }), []);
  });

  it('a key that started above zero', () => {
    const ops = history([{ kind: 'INCR', at: [0, 1], reply: 101 }]);
    assert.deepEqual(checkHistory(ops, { finals: finals({ k: 101 }), initial: finals({ k: 100 }) }), []);
  });

  it('hidden unknown attempts of a cluster client count as possible extra applications', () => {
    // A client library retried INCRBY 3 after a TRYAGAIN outcome-unknown: both attempts applied.
    const ops = history([
      { kind: 'INCRBY', n: 3, at: [0, 10], reply: 6, hidden: 1 },
      { kind: 'INCR', at: [11, 12], reply: 7 },
    ]);
    assert.deepEqual(checkHistory(ops, { finals: finals({ k: 7 }) }), []);
    // Without the hidden attempt, values 1..3 would have appeared from nowhere.
    const plain = history([
      { kind: 'INCRBY', n: 3, at: [0, 10], reply: 6 },
      { kind: 'INCR', at: [11, 12], reply: 7 },
    ]);
    assert.deepEqual(kinds(checkHistory(plain, { finals: finals({ k: 7 }) })), ['not-applied']);
  });

  it('operations that overlap in time may be ordered either way', () => {
    const ops = history([
      { p: 'a', kind: 'INCR', at: [0, 10], reply: 2 },
      { p: 'b', kind: 'INCR', at: [1, 5], reply: 1 },
      { p: 'c', kind: 'GET', at: [2, 3], reply: 0 },
      // Completed exactly when the next was invoked: not "before".
      { p: 'a', kind: 'INCR', at: [10, 12], reply: 3 },
      { p: 'b', kind: 'INCR', at: [12, 13], reply: 4 },
      { p: 'c', kind: 'GET', at: [11, 20], reply: 3 },
    ]);
    assert.deepEqual(checkHistory(ops, { finals: finals({ k: 4 }) }), []);
  });

  it('window keys: gaps are allowed, uniqueness and real-time order of writes still hold', () => {
    const ops = history([
      { kind: 'INCR', at: [0, 1], reply: 1 },
      { kind: 'INCR', at: [2, 3], reply: 10_001 }, // a failover skipped the rest of the window
    ]);
    const modeOf = (): 'window' => 'window';
    assert.deepEqual(checkHistory(ops, { finals: finals({ k: 10_001 }), modeOf }), []);
    assert.deepEqual(kinds(checkHistory(ops, { finals: finals({ k: 10_001 }) })), ['not-applied']);
  });

  it('the JSON form round-trips', () => {
    const ops = history([
      { kind: 'SEQNEXT', n: 3, count: true, token: 'x', at: [0.25, 1.5], reply: [1, 3] },
      { kind: 'GET', at: [2, 3], reply: 3 },
      { kind: 'INCR', at: [4, 5], outcome: 'unknown', error: 'Command timed out', hidden: 2 },
    ]);
    const back = ops.map((o) => opFromJson(JSON.parse(JSON.stringify(opToJson(o))) as Parameters<typeof opFromJson>[0]));
    assert.deepEqual(back, ops);
  });
});

describe('chaos checkers: each anomaly is found', () => {
  it('duplicate: two INCRs answer the same value', () => {
    const ops = history([
      { p: 'a', kind: 'INCR', at: [0, 10], reply: 1 },
      { p: 'b', kind: 'INCR', at: [1, 11], reply: 1 },
    ]);
    const found = checkUnique(ops);
    assert.deepEqual(kinds(found), ['duplicate']);
    assert.deepEqual(found[0]?.ops, [0, 1]);
  });

  it('duplicate: an INCRBY range overlaps a SEQNEXT COUNT range', () => {
    const ops = history([
      { p: 'a', kind: 'SEQNEXT', n: 10, count: true, at: [0, 10], reply: [1, 10] },
      { p: 'b', kind: 'INCRBY', n: 3, at: [1, 11], reply: 12 }, // 10..12 overlaps at 10
    ]);
    assert.deepEqual(kinds(checkUnique(ops)), ['duplicate']);
  });

  it('duplicate: a range nested inside a wider one, past a narrower one in between', () => {
    const ops = history([
      { p: 'a', kind: 'SEQNEXT', n: 100, count: true, at: [0, 10], reply: [1, 100] },
      { p: 'b', kind: 'INCR', at: [1, 11], reply: 101 },
      { p: 'c', kind: 'SEQNEXT', n: 2, count: true, at: [1, 11], reply: [50, 51] },
    ]);
    assert.deepEqual(kinds(checkUnique(ops)), ['duplicate']);
  });

  it('not a duplicate: the same values on different keys, or a token retry', () => {
    const ops = history([
      { kind: 'INCR', key: 'a', at: [0, 1], reply: 1 },
      { kind: 'INCR', key: 'b', at: [0, 1], reply: 1 },
      { kind: 'SEQNEXT', key: 'c', token: 't', at: [0, 1], reply: 1 },
      { kind: 'SEQNEXT', key: 'c', token: 't', at: [2, 3], reply: 1 },
    ]);
    assert.deepEqual(checkUnique(ops), []);
  });

  it('duplicate: the same token on another key is a new allocation', () => {
    const ops = history([
      { kind: 'SEQNEXT', key: 'c', token: 't', at: [0, 1], reply: 1 },
      { kind: 'SEQNEXT', key: 'c', token: 'u', at: [2, 3], reply: 1 },
    ]);
    assert.deepEqual(kinds(checkUnique(ops)), ['duplicate']);
  });

  it('token-mismatch: a retry with the same token answers another range', () => {
    const ops = history([
      { kind: 'SEQNEXT', n: 2, count: true, token: 't', at: [0, 1], reply: [1, 2] },
      { kind: 'SEQNEXT', n: 2, count: true, token: 't', at: [2, 3], reply: [3, 4] },
    ]);
    assert.deepEqual(kinds(checkTokens(ops)), ['token-mismatch']);
  });

  it('realtime: a later write hands out a smaller value', () => {
    const ops = history([
      { p: 'a', kind: 'INCR', at: [0, 10], reply: 2 },
      { p: 'b', kind: 'INCR', at: [11, 12], reply: 1 },
    ]);
    assert.deepEqual(kinds(checkRealtime(ops)), ['realtime']);
  });

  it('realtime: a write after a GET hands out a value the GET already saw', () => {
    const ops = history([
      { p: 'a', kind: 'INCR', at: [0, 20], reply: 5 },
      { p: 'b', kind: 'GET', at: [1, 2], reply: 5 },
      { p: 'b', kind: 'INCR', at: [3, 4], reply: 4 },
    ]);
    assert.deepEqual(kinds(checkRealtime(ops)), ['realtime']);
  });

  it('realtime: a token retry counts from its first attempt, so a fresh allocation after its answer must be above it', () => {
    const ops = history([
      { p: 'a', kind: 'SEQNEXT', token: 't', at: [0, 1], outcome: 'unknown' },
      { p: 'a', kind: 'SEQNEXT', token: 't', at: [2, 3], reply: 5 },
      { p: 'b', kind: 'SEQNEXT', at: [4, 5], reply: 4 },
    ]);
    assert.deepEqual(kinds(checkRealtime(ops)), ['realtime']);
  });

  it('stale-read: a GET reads less than an acknowledged value', () => {
    const ops = history([
      { p: 'a', kind: 'INCRBY', n: 10, at: [0, 10], reply: 10 },
      { p: 'b', kind: 'GET', at: [11, 12], reply: 9 },
    ]);
    assert.deepEqual(kinds(checkRealtime(ops)), ['stale-read']);
  });

  it('stale-read: a GET reads less than an earlier GET', () => {
    const ops = history([
      { p: 'a', kind: 'INCR', at: [0, 100], outcome: 'unknown' },
      { p: 'b', kind: 'GET', at: [10, 11], reply: 1 },
      { p: 'c', kind: 'GET', at: [12, 13], reply: 0 },
    ]);
    assert.deepEqual(kinds(checkRealtime(ops)), ['stale-read']);
  });

  it('lost-ack: the final value is below an acknowledged one', () => {
    const ops = history([
      { kind: 'INCR', at: [0, 1], reply: 1 },
      { kind: 'INCR', at: [2, 3], reply: 2 },
    ]);
    assert.deepEqual(kinds(checkAccounting(ops, { finals: finals({ k: 1 }) })), ['lost-ack']);
  });

  it('lost-ack: an acknowledged GET value is gone afterwards', () => {
    const ops = history([
      { kind: 'INCR', at: [0, 10], outcome: 'unknown' },
      { kind: 'GET', at: [11, 12], reply: 1 },
    ]);
    assert.deepEqual(kinds(checkAccounting(ops, { finals: finals({ k: 0 }) })), ['lost-ack']);
  });

  it('lost-ack: acknowledged increments are missing even though the highest value is there', () => {
    // INCRBY 5 answered 5 and INCR answered 6, yet the counter only moved by 5 in all.
    const ops = history([
      { p: 'a', kind: 'INCRBY', n: 5, at: [0, 1], reply: 6 },
      { p: 'b', kind: 'INCR', at: [0, 1], reply: 1 },
    ]);
    assert.deepEqual(kinds(checkAccounting(ops, { finals: finals({ k: 6 }), initial: finals({ k: 1 }) })), ['lost-ack']);
  });

  it('not-applied: a write that answered "not applied" shows in the final value', () => {
    const ops = history([
      { kind: 'INCR', at: [0, 1], reply: 1 },
      { kind: 'INCRBY', n: 7, at: [2, 3], outcome: 'failed', error: 'TRYAGAIN leadership changed before the write committed, write not applied' },
      { kind: 'INCR', at: [4, 5], reply: 9 },
    ]);
    const found = checkAccounting(ops, { finals: finals({ k: 9 }) });
    assert.deepEqual(kinds(found), ['not-applied']);
    assert.match(found[0]?.message ?? '', /not applied/);
  });

  it('not-applied: with no failed writes either, values appeared from nowhere', () => {
    const ops = history([{ kind: 'INCR', at: [0, 1], reply: 1 }]);
    const found = checkAccounting(ops, { finals: finals({ k: 3 }) });
    assert.deepEqual(kinds(found), ['not-applied']);
    assert.match(found[0]?.message ?? '', /nowhere/);
  });

  it('not-applied: a token retried many times still applies at most once', () => {
    const ops = history([
      { kind: 'SEQNEXT', n: 5, count: true, token: 't', at: [0, 1], outcome: 'unknown' },
      { kind: 'SEQNEXT', n: 5, count: true, token: 't', at: [2, 3], outcome: 'unknown' },
      { kind: 'SEQNEXT', n: 5, count: true, token: 't', at: [4, 5], outcome: 'unknown' },
    ]);
    assert.deepEqual(checkAccounting(ops, { finals: finals({ k: 5 }) }), []);
    assert.deepEqual(kinds(checkAccounting(ops, { finals: finals({ k: 10 }) })), ['not-applied']);
  });

  it('bad-reply: a range of the wrong size', () => {
    const ops = history([{ kind: 'SEQNEXT', n: 3, count: true, at: [0, 1], reply: [1, 2] }]);
    assert.deepEqual(kinds(checkReplies(ops)), ['bad-reply']);
  });

  it('recovery: a group that served no write, or too late', () => {
    assert.deepEqual(
      checkRecovery(
        [
          { group: 1, ms: 120 },
          { group: 2, ms: 4999 },
        ],
        5000,
      ),
      [],
    );
    assert.deepEqual(
      kinds(
        checkRecovery(
          [
            { group: 1, ms: 5001 },
            { group: 2, ms: null },
          ],
          5000,
        ),
      ),
      ['recovery', 'recovery'],
    );
  });

  it('checkHistory reports every kind and countByKind counts them', () => {
    const ops = history([
      { p: 'a', kind: 'INCR', at: [0, 1], reply: 2 },
      { p: 'b', kind: 'INCR', at: [2, 3], reply: 2 }, // duplicate and realtime
      { p: 'c', kind: 'GET', at: [4, 5], reply: 1 }, // stale
    ]);
    const counts = countByKind(checkHistory(ops, { finals: finals({ k: 1 }) }));
    assert.equal(counts.duplicate, 1);
    assert.equal(counts.realtime, 1);
    assert.equal(counts['stale-read'], 1);
    assert.equal(counts['lost-ack'], 1);
    assert.equal(counts.recovery, 0);
  });
});

describe('chaos report: failovers, outages, percentiles', () => {
  const event = (startMs: number, endMs: number, nodes: number[]): FaultEvent => ({ family: 'pause', label: 'pause', nodes, startMs, endMs });

  it('a failover is the time until another node leads in a higher term', () => {
    const samples: LeaderSample[] = [
      { tMs: 0, group: 1, leader: 0, term: 1 },
      { tMs: 0, group: 2, leader: 1, term: 1 },
      { tMs: 1800, group: 1, leader: null, term: 2 },
      { tMs: 2300, group: 1, leader: 2, term: 2 },
    ];
    const found = failoversFrom(samples, [event(1000, 5000, [0])], 2);
    assert.equal(found.length, 1, 'group 2 was not hit');
    assert.deepEqual([found[0]?.group, found[0]?.oldLeader, found[0]?.ms, found[0]?.newLeader], [1, 0, 1300, 2]);
    // The same leader coming back, or no new leader before the fault ended, is no failover.
    const back: LeaderSample[] = [
      { tMs: 0, group: 1, leader: 0, term: 1 },
      { tMs: 6000, group: 1, leader: 0, term: 2 },
    ];
    assert.equal(failoversFrom(back, [event(1000, 5000, [0])], 1)[0]?.ms, null);
    assert.equal(leaderAt(samples, 1, 2000)?.leader, null);
    assert.equal(leaderAt(samples, 1, 2300)?.leader, 2);
  });

  it('an outage is a gap of over 500 ms between completed writes of a group while some write waited', () => {
    const ops = history([
      { key: 'a', kind: 'INCR', at: [0, 10], reply: 1 },
      { key: 'a', kind: 'INCR', at: [20, 2000], reply: 2 }, // waited: an outage from 20 to 2000
      { key: 'a', kind: 'INCR', at: [2001, 2010], reply: 3 },
      { key: 'b', kind: 'INCR', at: [0, 10], reply: 1 },
      { key: 'b', kind: 'INCR', at: [1500, 1510], reply: 2 }, // idle in between: no outage
    ]);
    const groupOf = (k: string): number => (k === 'a' ? 1 : 2);
    const found = outages(ops, groupOf, 2, 0, 2010);
    assert.deepEqual(found, [{ group: 1, startMs: 20, endMs: 2000 }]);
    assert.equal(failoversDuring(found, [event(0, 3000, [0])]).length, 1);
    assert.equal(failoversDuring(found, [event(2500, 3000, [0])]).length, 0);
  });

  it('percentiles and the summary rows', () => {
    assert.equal(percentile([], 50), null);
    assert.equal(percentile([5, 1, 3], 50), 3);
    assert.equal(percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 99), 10);
    const ops = history([
      { kind: 'SEQNEXT', n: 2, count: true, token: 't', at: [0, 4], reply: [1, 2] },
      { kind: 'GET', at: [5, 6], outcome: 'failed' },
    ]);
    const rows = statsByRow(ops);
    assert.equal(rows.find((r) => r.row === 'SEQNEXT COUNT TOKEN')?.ok, 1);
    assert.equal(rows.find((r) => r.row === 'GET')?.failed, 1);
  });

  it('the summary and timeline of a long run (300,000 ok INCRs in one row) are written, not a stack overflow', () => {
    const h = new HistoryRecorder();
    for (let i = 0; i < 300_000; i++) {
      h.add({ process: 'c1', kind: 'INCR', key: 'k', n: 1n, invokeMs: i, completeMs: i + 1 + (i % 7), outcome: 'ok', range: [BigInt(i + 1), BigInt(i + 1)] });
    }
    const input: RunSummaryInput = {
      seed: 1,
      nodes: 3,
      groups: 1,
      timeS: 300,
      families: [],
      windowKeys: false,
      history: h.ops,
      anomalies: [],
      events: [],
      groupOf: () => 1,
      loadFromMs: 0,
      loadToMs: 300_000,
      healMs: 300_000,
      recovery: [],
      recoveryLimitMs: 5000,
      leaderSamples: [],
      failovers: [],
      replay: '',
      outDir: null,
      notes: [],
    };
    const summary = formatSummary(input);
    assert.match(timelineSvg(input), /^<svg/);
    const all = summary.split('\n').find((l) => l.startsWith('all '));
    assert.match(all ?? '', /^all\s+300000\s+0\s+0\s+300000\s+4\s+7$/);
  });
});

describe('chaos workload: what an answer means', () => {
  const reply = (text: string): Error => Object.assign(new Error(text), { name: 'ReplyError' });

  it('errors are "failed" only when they promise the write was not applied', () => {
    assert.equal(classifyError(reply(ERR.notLeader), 'INCR').cls, 'failed');
    assert.equal(classifyError(reply(ERR.noLeader), 'INCR').cls, 'failed');
    assert.equal(classifyError(reply('MOVED 3999 127.0.0.1:7001'), 'INCR').cls, 'failed');
    assert.equal(classifyError(new Error("Stream isn't writeable and enableOfflineQueue options is false"), 'INCR').cls, 'failed');
    assert.equal(classifyError(reply(ERR.outcomeUnknown), 'INCR').cls, 'unknown');
    assert.equal(classifyError(reply(ERR.persistUnknown), 'SEQNEXT').cls, 'unknown');
    assert.equal(classifyError(new Error('Command timed out'), 'INCR').cls, 'unknown');
    assert.equal(classifyError(new Error('Connection is closed.'), 'INCR').cls, 'unknown');
    const wrapped = new Error(`Too many Cluster redirections. Last error: ReplyError: ${ERR.outcomeUnknown}`);
    assert.equal(classifyError(wrapped, 'INCR').cls, 'unknown');
    const wrappedFailed = new Error(`Too many Cluster redirections. Last error: ReplyError: ${ERR.notLeader}`);
    assert.equal(classifyError(wrappedFailed, 'INCR').cls, 'failed');
    // The cluster client gave up after lost connections: unknown, and not an error reply nobody promised.
    const wrappedClosed = classifyError(new Error('Too many Cluster redirections. Last error: Error: Connection is closed.'), 'SEQNEXT');
    assert.deepEqual([wrappedClosed.cls, wrappedClosed.unexpected], ['unknown', false]);
  });

  it("an error reply outside the registry's write sets is unknown and unexpected", () => {
    const c = classifyError(reply('ERR something nobody promised'), 'INCRBY');
    assert.deepEqual([c.cls, c.unexpected], ['unknown', true]);
    assert.equal(classifyError(reply(ERR.readTimeout), 'GET').unexpected, false);
    assert.equal(classifyError(reply('ERR something nobody promised'), 'GET').unexpected, true);
  });

  it('replies become the values handed out or read', () => {
    const plan = (kind: Plan['kind'], n: bigint, count?: boolean): Plan => ({ kind, key: 'k', n, ...(count ? { count } : {}), args: [] });
    assert.deepEqual(interpret(plan('INCRBY', 3n), '10'), { range: [8n, 10n] });
    assert.deepEqual(interpret(plan('INCR', 1n), 7), { range: [7n, 7n] });
    assert.deepEqual(interpret(plan('SEQNEXT', 3n, true), ['5', '7']), { range: [5n, 7n] });
    assert.deepEqual(interpret(plan('SEQNEXT', 1n), '9223372036854775807'), { range: [9223372036854775807n, 9223372036854775807n] });
    assert.deepEqual(interpret(plan('GET', 0n), null), { value: 0n });
    assert.equal(typeof interpret(plan('SEQNEXT', 3n, true), '5'), 'string');
    assert.equal(typeof interpret(plan('GET', 0n), 'abc'), 'string');
  });

  it('keys cover every group, one with a hash tag in each', () => {
    const keys = keysForGroups(5, 3);
    assert.equal(keys.length, 15);
    for (let g = 1; g <= 5; g++) {
      const mine = keys.filter((k) => k.group === g);
      assert.equal(mine.length, 3);
      assert.equal(mine.filter((k) => k.key.startsWith('{')).length, 1);
    }
  });

  it('requests are drawn from the seed', () => {
    const draw = (seed: number): string[] => {
      const random = prng(seed);
      const seq = { n: 0 };
      return Array.from({ length: 50 }, () => planOp(random, ['a', 'b'], 't', seq).args.join(' '));
    };
    assert.deepEqual(draw(5), draw(5));
    assert.notDeepEqual(draw(5), draw(6));
    assert.ok(draw(5).some((a) => a.includes('TOKEN')) && draw(5).some((a) => a.includes('COUNT')));
  });
});
