// What a fault run reports: a summary table (operations per kind and outcome,
// latencies, anomalies by kind, faults, failover durations, availability,
// recovery after healing) and a picture: an SVG timeline of throughput and of
// each group's service, with the faults marked. Pure functions over the
// history and the fault events.

import type { Anomaly, Op } from './history.js';
import { ANOMALY_KINDS, countByKind } from './history.js';
import type { Failover, LeaderSample } from './monitor.js';
import type { FaultEvent, NemesisFamily } from './nemesis.js';

/** A group that completes no write for this long while clients try is out of service. */
export const OUTAGE_GAP_MS = 500;
/** Width of a timeline bucket. */
export const BUCKET_MS = 250;

export function percentile(values: readonly number[], p: number): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i] ?? null;
}

/** The row an op counts in: SEQNEXT is split by its options. */
export function rowOf(op: Op): string {
  if (op.kind !== 'SEQNEXT') return op.kind;
  return `SEQNEXT${op.count === true ? ' COUNT' : ''}${op.token !== undefined ? ' TOKEN' : ''}`;
}

export const ROWS = ['INCR', 'INCRBY', 'GET', 'SEQNEXT', 'SEQNEXT COUNT', 'SEQNEXT TOKEN', 'SEQNEXT COUNT TOKEN'] as const;

export interface KindStats {
  readonly row: string;
  ok: number;
  failed: number;
  unknown: number;
  latenciesOkMs: number[];
}

export function statsByRow(history: readonly Op[]): KindStats[] {
  const rows = new Map<string, KindStats>(ROWS.map((r) => [r, { row: r, ok: 0, failed: 0, unknown: 0, latenciesOkMs: [] }]));
  for (const op of history) {
    const row = rowOf(op);
    let s = rows.get(row);
    if (s === undefined) {
      s = { row, ok: 0, failed: 0, unknown: 0, latenciesOkMs: [] };
      rows.set(row, s);
    }
    s[op.outcome]++;
    if (op.outcome === 'ok') s.latenciesOkMs.push(op.completeMs - op.invokeMs);
  }
  return [...rows.values()];
}

export interface Outage {
  readonly group: number;
  readonly startMs: number;
  readonly endMs: number;
}

/**
 * Per group: stretches longer than OUTAGE_GAP_MS in which no write on the
 * group's keys completed ok while some write was waiting (from the first
 * waiting write's invocation to the next ok completion).
 */
export function outages(history: readonly Op[], groupOf: (key: string) => number, groups: number, fromMs: number, toMs: number): Outage[] {
  const out: Outage[] = [];
  for (let g = 1; g <= groups; g++) {
    const writes = history.filter((op) => op.kind !== 'GET' && groupOf(op.key) === g);
    const oks = writes
      .filter((op) => op.outcome === 'ok')
      .map((op) => op.completeMs)
      .sort((a, b) => a - b);
    let last = fromMs;
    const consider = (next: number): void => {
      if (next - last <= OUTAGE_GAP_MS) return;
      // An outage only from when some write was waiting (clients were trying).
      let firstWaiting = Infinity;
      for (const op of writes) if (op.invokeMs < next && op.completeMs > last && op.invokeMs < firstWaiting) firstWaiting = op.invokeMs;
      const start = Math.max(last, firstWaiting);
      if (next - start > OUTAGE_GAP_MS) out.push({ group: g, startMs: start, endMs: next });
    };
    for (const t of oks) {
      if (t < fromMs || t > toMs) continue;
      consider(t);
      last = t;
    }
    consider(toMs);
  }
  return out;
}

/** Outages that began while a fault was under way (or right before its end): the failovers. */
export function failovers(found: readonly Outage[], events: readonly FaultEvent[]): Outage[] {
  return found.filter((o) => events.some((e) => o.startMs >= e.startMs - OUTAGE_GAP_MS && o.startMs <= (Number.isNaN(e.endMs) ? Infinity : e.endMs)));
}

export interface RunSummaryInput {
  readonly seed: number;
  readonly nodes: number;
  readonly groups: number;
  readonly timeS: number;
  readonly families: readonly NemesisFamily[];
  /** Window-mode keys were in the workload. */
  readonly windowKeys: boolean;
  readonly history: readonly Op[];
  readonly anomalies: readonly Anomaly[];
  readonly events: readonly FaultEvent[];
  readonly groupOf: (key: string) => number;
  /** When the workload started and stopped (ms since the run started). */
  readonly loadFromMs: number;
  readonly loadToMs: number;
  /** When everything was healed. */
  readonly healMs: number;
  readonly recovery: readonly { group: number; ms: number | null }[];
  readonly recoveryLimitMs: number;
  /** Who led each group, as INFO raft said (changes only). */
  readonly leaderSamples: readonly LeaderSample[];
  readonly failovers: readonly Failover[];
  readonly replay: string;
  readonly outDir: string | null;
  readonly notes: readonly string[];
}

const pad = (s: string, n: number): string => (s.length >= n ? s : s + ' '.repeat(n - s.length));
const lpad = (s: string, n: number): string => (s.length >= n ? s : ' '.repeat(n - s.length) + s);
const ms = (v: number | null): string => (v === null ? '-' : `${Math.round(v)}`);
const pct = (a: number, b: number): string => (b === 0 ? '-' : `${((100 * a) / b).toFixed(1)}%`);

export function formatSummary(s: RunSummaryInput): string {
  const lines: string[] = [];
  const anomalyCounts = countByKind(s.anomalies);
  const passed = s.anomalies.length === 0;
  lines.push(
    `chaos ${passed ? 'passed' : 'FAILED'}: seed ${s.seed}, ${s.nodes} nodes, ${s.groups} groups, ${s.timeS} s, nemesis ${s.families.join(',') || 'none'}${s.windowKeys ? ', with window keys' : ''}`,
  );
  lines.push('');
  lines.push(`${pad('operation', 20)}${lpad('ok', 9)}${lpad('failed', 9)}${lpad('unknown', 9)}${lpad('total', 9)}${lpad('p50 ms', 9)}${lpad('p99 ms', 9)}`);
  let tot = { ok: 0, failed: 0, unknown: 0 };
  const allLat: number[] = [];
  for (const r of statsByRow(s.history)) {
    const total = r.ok + r.failed + r.unknown;
    tot = { ok: tot.ok + r.ok, failed: tot.failed + r.failed, unknown: tot.unknown + r.unknown };
    // Not push(...): a spread of 100K+ values overflows the stack.
    for (const x of r.latenciesOkMs) allLat.push(x);
    lines.push(
      `${pad(r.row, 20)}${lpad(String(r.ok), 9)}${lpad(String(r.failed), 9)}${lpad(String(r.unknown), 9)}${lpad(String(total), 9)}${lpad(ms(percentile(r.latenciesOkMs, 50)), 9)}${lpad(ms(percentile(r.latenciesOkMs, 99)), 9)}`,
    );
  }
  lines.push(
    `${pad('all', 20)}${lpad(String(tot.ok), 9)}${lpad(String(tot.failed), 9)}${lpad(String(tot.unknown), 9)}${lpad(String(tot.ok + tot.failed + tot.unknown), 9)}${lpad(ms(percentile(allLat, 50)), 9)}${lpad(ms(percentile(allLat, 99)), 9)}`,
  );
  lines.push('');
  lines.push(`anomalies: ${passed ? 'none' : s.anomalies.length}`);
  lines.push(`  ${ANOMALY_KINDS.map((k) => `${k} ${anomalyCounts[k]}`).join(', ')}`);
  for (const a of s.anomalies.slice(0, 30)) lines.push(`  ANOMALY ${a.kind}: ${a.message}`);
  if (s.anomalies.length > 30) lines.push(`  ... and ${s.anomalies.length - 30} more (see anomalies.json)`);
  lines.push('');
  const byFamily = new Map<string, number>();
  for (const e of s.events) byFamily.set(e.family, (byFamily.get(e.family) ?? 0) + 1);
  lines.push(`faults: ${s.events.length}${s.events.length > 0 ? ` (${[...byFamily].map(([f, n]) => `${f} ${n}`).join(', ')})` : ''}`);
  for (const e of s.events) lines.push(`  ${lpad((e.startMs / 1000).toFixed(1), 6)}s - ${lpad((e.endMs / 1000).toFixed(1), 6)}s  ${e.label}`);
  const found = outages(s.history, s.groupOf, s.groups, s.loadFromMs, s.loadToMs);
  const done = s.failovers.flatMap((f) => (f.ms === null ? [] : [f.ms]));
  // With a majority of the group's replicas down, paused or cut off, no other node can be elected: expected.
  const majorityHit = (f: Failover): boolean => f.majorityHit;
  const none = s.failovers.filter((f) => f.ms === null && !majorityHit(f));
  const noneExpected = s.failovers.filter((f) => f.ms === null && majorityHit(f)).length;
  lines.push(
    `failovers (a fault hit a group's leader; time until another node led it): ${s.failovers.length}` +
      (done.length > 0 ? `, p50 ${ms(percentile(done, 50))} ms, p99 ${ms(percentile(done, 99))} ms, max ${ms(Math.max(...done))} ms` : '') +
      (none.length > 0 ? `; ${none.length} without a new leader before the fault ended` : '') +
      (noneExpected > 0 ? `; ${noneExpected} with a majority hit (no election possible)` : ''),
  );
  for (const f of none.slice(0, 10)) {
    lines.push(
      `  no new leader of g${f.group} during ${(f.event.startMs / 1000).toFixed(1)}s-${(f.event.endMs / 1000).toFixed(1)}s ${f.event.label} (${Math.round(f.event.endMs - f.event.startMs)} ms)`,
    );
  }
  const fo = failovers(found, s.events).map((o) => o.endMs - o.startMs);
  lines.push(
    `client-observed outages (a group completing no write for over ${OUTAGE_GAP_MS} ms while clients waited) during faults: ${fo.length}` +
      (fo.length > 0 ? `, p50 ${ms(percentile(fo, 50))} ms, p99 ${ms(percentile(fo, 99))} ms, max ${ms(Math.max(...fo))} ms` : ''),
  );
  const writes = s.history.filter((op) => op.kind !== 'GET');
  const okWrites = writes.filter((op) => op.outcome === 'ok').length;
  const span = Math.max(1, s.loadToMs - s.loadFromMs);
  const perGroup: string[] = [];
  let downTotal = 0;
  for (let g = 1; g <= s.groups; g++) {
    const down = found.filter((o) => o.group === g).reduce((a, o) => a + (o.endMs - o.startMs), 0);
    downTotal += down;
    perGroup.push(`g${g} ${pct(span - down, span)}`);
  }
  lines.push(
    `availability: ${pct(okWrites, writes.length)} of writes ok; time in service ${pct(s.groups * span - downTotal, s.groups * span)} (${perGroup.join(', ')})`,
  );
  lines.push(
    `recovery after healing at ${(s.healMs / 1000).toFixed(1)}s (limit ${s.recoveryLimitMs} ms): ${s.recovery.map((r) => `g${r.group} ${r.ms === null ? 'none' : `${Math.round(r.ms)} ms`}`).join(', ')}`,
  );
  for (const n of s.notes) lines.push(n);
  if (s.outDir !== null) lines.push(`output: ${s.outDir}/ (report.html, timeline.svg, history.json, anomalies.json, node-*.log)`);
  lines.push(`seed: ${s.seed}`);
  lines.push(`replay: ${s.replay}`);
  return lines.join('\n');
}

const FAMILY_COLORS: Record<NemesisFamily, string> = {
  kill: '#8c564b',
  pause: '#9467bd',
  partition: '#ff7f0e',
  restart: '#1f77b4',
};

const esc = (t: string): string => t.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** The timeline: faults on top, throughput (ok, failed, unknown per second) in the middle, each group's service below. */
export function timelineSvg(s: RunSummaryInput): string {
  let endMs = Math.max(s.loadToMs, 1);
  for (const o of s.history) if (o.completeMs > endMs) endMs = o.completeMs;
  const buckets = Math.ceil(endMs / BUCKET_MS);
  const W = 1100;
  const left = 60;
  const right = 20;
  const plotW = W - left - right;
  const x = (t: number): number => left + (t / endMs) * plotW;
  const faultTop = 30;
  const faultRowH = 16;
  const faultRows = Math.max(1, Math.min(4, s.events.length));
  const chartTop = faultTop + faultRows * faultRowH + 16;
  const chartH = 220;
  const stripTop = chartTop + chartH + 40;
  const stripH = 14;
  const H = stripTop + s.groups * (stripH + 4) + 50;

  const ok = new Array<number>(buckets).fill(0);
  const failed = new Array<number>(buckets).fill(0);
  const unknown = new Array<number>(buckets).fill(0);
  const groupOk: number[][] = Array.from({ length: s.groups }, () => new Array<number>(buckets).fill(0));
  const groupTried: number[][] = Array.from({ length: s.groups }, () => new Array<number>(buckets).fill(0));
  for (const op of s.history) {
    const b = Math.min(buckets - 1, Math.max(0, Math.floor(op.completeMs / BUCKET_MS)));
    if (op.outcome === 'ok') ok[b] = (ok[b] ?? 0) + 1;
    else if (op.outcome === 'failed') failed[b] = (failed[b] ?? 0) + 1;
    else unknown[b] = (unknown[b] ?? 0) + 1;
    if (op.kind === 'GET') continue;
    const g = s.groupOf(op.key) - 1;
    const okRow = groupOk[g];
    const triedRow = groupTried[g];
    if (okRow === undefined || triedRow === undefined) continue;
    const b0 = Math.max(0, Math.floor(op.invokeMs / BUCKET_MS));
    for (let i = b0; i <= b; i++) triedRow[i] = (triedRow[i] ?? 0) + 1;
    if (op.outcome === 'ok') okRow[b] = (okRow[b] ?? 0) + 1;
  }
  const perS = 1000 / BUCKET_MS;
  const rateMax = Math.max(1, ...ok.map((v) => v * perS), ...failed.map((v) => v * perS), ...unknown.map((v) => v * perS));
  const y = (rate: number): number => chartTop + chartH - (rate / rateMax) * chartH;
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`);
  parts.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  parts.push(
    `<text x="${left}" y="18" font-size="13" font-weight="bold">${esc(`ordo chaos: seed ${s.seed}, ${s.nodes} nodes, ${s.groups} groups, ${s.anomalies.length === 0 ? 'no anomalies' : `${s.anomalies.length} ANOMALIES`}`)}</text>`,
  );
  // Faults: shaded across the chart, labelled in rows on top.
  s.events.forEach((e, i) => {
    const x0 = x(e.startMs);
    const x1 = x(Number.isNaN(e.endMs) ? endMs : e.endMs);
    const color = FAMILY_COLORS[e.family];
    const row = i % faultRows;
    parts.push(
      `<rect x="${x0.toFixed(1)}" y="${chartTop}" width="${Math.max(1, x1 - x0).toFixed(1)}" height="${chartH}" fill="${color}" opacity="0.12"><title>${esc(e.label)}</title></rect>`,
    );
    parts.push(
      `<rect x="${x0.toFixed(1)}" y="${faultTop + row * faultRowH}" width="${Math.max(2, x1 - x0).toFixed(1)}" height="${faultRowH - 3}" fill="${color}" opacity="0.8"><title>${esc(
        `${(e.startMs / 1000).toFixed(1)}-${(e.endMs / 1000).toFixed(1)}s ${e.label}`,
      )}</title></rect>`,
    );
    const charsMax = Math.floor((x1 - x0) / 6);
    if (charsMax >= 4) {
      const label = e.label.length > charsMax ? `${e.label.slice(0, charsMax - 1)}…` : e.label;
      parts.push(`<text x="${(x0 + 2).toFixed(1)}" y="${faultTop + row * faultRowH + 10}" fill="white" font-size="9">${esc(label)}</text>`);
    }
  });
  // Axes.
  parts.push(`<line x1="${left}" y1="${chartTop + chartH}" x2="${left + plotW}" y2="${chartTop + chartH}" stroke="#333"/>`);
  parts.push(`<line x1="${left}" y1="${chartTop}" x2="${left}" y2="${chartTop + chartH}" stroke="#333"/>`);
  for (let k = 0; k <= 4; k++) {
    const rate = (rateMax * k) / 4;
    parts.push(`<text x="${left - 4}" y="${(y(rate) + 4).toFixed(1)}" text-anchor="end">${Math.round(rate)}</text>`);
    parts.push(`<line x1="${left}" y1="${y(rate).toFixed(1)}" x2="${left + plotW}" y2="${y(rate).toFixed(1)}" stroke="#eee"/>`);
  }
  parts.push(`<text x="12" y="${chartTop + chartH / 2}" transform="rotate(-90 12 ${chartTop + chartH / 2})" text-anchor="middle">ops/s</text>`);
  const tickS = endMs > 120_000 ? 10 : endMs > 40_000 ? 5 : endMs > 15_000 ? 2 : 1;
  for (let t = 0; t <= endMs; t += tickS * 1000) {
    parts.push(`<line x1="${x(t).toFixed(1)}" y1="${chartTop + chartH}" x2="${x(t).toFixed(1)}" y2="${chartTop + chartH + 4}" stroke="#333"/>`);
    parts.push(`<text x="${x(t).toFixed(1)}" y="${chartTop + chartH + 15}" text-anchor="middle">${t / 1000}s</text>`);
  }
  const path = (series: readonly number[]): string =>
    series.map((v, i) => `${i === 0 ? 'M' : 'L'}${x(i * BUCKET_MS + BUCKET_MS / 2).toFixed(1)},${y(v * perS).toFixed(1)}`).join(' ');
  parts.push(`<path d="${path(ok)}" fill="none" stroke="#2ca02c" stroke-width="1.5"/>`);
  parts.push(`<path d="${path(failed)}" fill="none" stroke="#ff7f0e" stroke-width="1"/>`);
  parts.push(`<path d="${path(unknown)}" fill="none" stroke="#d62728" stroke-width="1"/>`);
  // Heal marker.
  parts.push(
    `<line x1="${x(s.healMs).toFixed(1)}" y1="${faultTop}" x2="${x(s.healMs).toFixed(1)}" y2="${stripTop + s.groups * (stripH + 4)}" stroke="#000" stroke-dasharray="4 3"/>`,
  );
  parts.push(`<text x="${(x(s.healMs) + 3).toFixed(1)}" y="${chartTop + 10}">healed</text>`);
  // Per-group service strips: green = some write completed ok in the bucket, red = writes waited and none completed, grey = idle.
  for (let g = 0; g < s.groups; g++) {
    const top = stripTop + g * (stripH + 4);
    parts.push(`<text x="${left - 4}" y="${top + 11}" text-anchor="end">g${g + 1}</text>`);
    const okRow = groupOk[g] ?? [];
    const triedRow = groupTried[g] ?? [];
    let runStart = 0;
    let runColor = '';
    const color = (b: number): string => ((okRow[b] ?? 0) > 0 ? '#2ca02c' : (triedRow[b] ?? 0) > 0 ? '#d62728' : '#ccc');
    for (let b = 0; b <= buckets; b++) {
      const c = b < buckets ? color(b) : '';
      if (c !== runColor) {
        if (runColor !== '') {
          const x0 = x(runStart * BUCKET_MS);
          const x1 = x(b * BUCKET_MS);
          parts.push(`<rect x="${x0.toFixed(1)}" y="${top}" width="${Math.max(0.5, x1 - x0).toFixed(1)}" height="${stripH}" fill="${runColor}"/>`);
        }
        runStart = b;
        runColor = c;
      }
    }
  }
  // Leader changes on the group strips: a tick and the new leader's node index.
  for (const sample of s.leaderSamples) {
    const top = stripTop + (sample.group - 1) * (stripH + 4);
    if (sample.group < 1 || sample.group > s.groups) continue;
    const xs = x(Math.max(0, sample.tMs));
    parts.push(
      `<line x1="${xs.toFixed(1)}" y1="${top}" x2="${xs.toFixed(1)}" y2="${top + stripH}" stroke="black" stroke-width="1"><title>${esc(
        `${(sample.tMs / 1000).toFixed(2)}s g${sample.group}: term ${sample.term}, leader ${sample.leader === null ? 'none' : `node ${sample.leader}`}`,
      )}</title></line>`,
    );
    parts.push(`<text x="${(xs + 1.5).toFixed(1)}" y="${top + 11}" font-size="9">${sample.leader === null ? '-' : sample.leader}</text>`);
  }
  // Legend.
  const ly = H - 18;
  const legend: [string, string][] = [
    ['#2ca02c', 'ok ops/s'],
    ['#ff7f0e', 'failed (not applied) ops/s'],
    ['#d62728', 'unknown ops/s'],
    ...Object.entries<string>(FAMILY_COLORS).map(([f, c]): [string, string] => [c, f]),
  ];
  let lx = left;
  for (const [c, t] of legend) {
    parts.push(`<rect x="${lx}" y="${ly - 9}" width="10" height="10" fill="${c}"/><text x="${lx + 14}" y="${ly}">${esc(t)}</text>`);
    lx += 24 + t.length * 6;
  }
  parts.push(
    `<text x="${left}" y="${stripTop - 6}">writes per group (green: some completed ok, red: clients waited and none completed, grey: none tried); ticks: a new term, with the leader's node index</text>`,
  );
  parts.push('</svg>');
  return parts.join('\n');
}

export function reportHtml(summary: string, svg: string): string {
  return [
    '<!doctype html>',
    '<html><head><meta charset="utf-8"><title>ordo chaos report</title>',
    '<style>body{font-family:sans-serif;margin:20px}pre{background:#f6f6f6;padding:12px;overflow-x:auto}</style>',
    '</head><body>',
    svg,
    `<pre>${esc(summary)}</pre>`,
    '</body></html>',
  ].join('\n');
}
