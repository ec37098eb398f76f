// Stand-in replicated state machine for the simulator: named counters.
// An entry's payload is a list of increments; applying it yields the new
// value of each counter, deterministically.

export interface CounterOp {
  readonly opId: number;
  readonly key: string;
  readonly delta: number;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function encodeOps(ops: readonly CounterOp[]): Uint8Array {
  return encoder.encode(JSON.stringify(ops.map((o) => [o.opId, o.key, o.delta])));
}

export function decodeOps(data: Uint8Array): CounterOp[] {
  if (data.length === 0) return [];
  const raw: unknown = JSON.parse(decoder.decode(data));
  if (!Array.isArray(raw)) throw new Error('counter payload is not a list');
  return raw.map((r: unknown) => {
    if (!Array.isArray(r) || typeof r[0] !== 'number' || typeof r[1] !== 'string' || typeof r[2] !== 'number') {
      throw new Error('malformed counter op');
    }
    return { opId: r[0], key: r[1], delta: r[2] };
  });
}

export class CounterMachine {
  private values = new Map<string, number>();
  appliedIndex = 0;

  /** Apply one entry's ops; returns opId → resulting value. */
  apply(index: number, data: Uint8Array): Map<number, number> {
    if (index !== this.appliedIndex + 1) throw new Error(`apply ${index} after ${this.appliedIndex}`);
    this.appliedIndex = index;
    const out = new Map<number, number>();
    for (const op of decodeOps(data)) {
      const v = (this.values.get(op.key) ?? 0) + op.delta;
      this.values.set(op.key, v);
      out.set(op.opId, v);
    }
    return out;
  }

  value(key: string): number {
    return this.values.get(key) ?? 0;
  }

  snapshot(): Uint8Array {
    return encoder.encode(JSON.stringify({ applied: this.appliedIndex, values: [...this.values] }));
  }

  restore(data: Uint8Array, index: number): void {
    this.values = new Map();
    this.appliedIndex = index;
    if (data.length === 0) return;
    const raw: unknown = JSON.parse(decoder.decode(data));
    if (typeof raw !== 'object' || raw === null) throw new Error('bad counter snapshot');
    const values: unknown = Reflect.get(raw, 'values');
    if (!Array.isArray(values)) throw new Error('bad counter snapshot');
    for (const kv of values) {
      if (!Array.isArray(kv) || typeof kv[0] !== 'string' || typeof kv[1] !== 'number') throw new Error('bad counter snapshot');
      this.values.set(kv[0], kv[1]);
    }
  }
}
