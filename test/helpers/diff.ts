// Differential testing against a real redis-server: the same request bytes go
// to both servers over raw sockets and the reply bytes are compared one reply
// at a time (through the testkit's raw connection). Nothing here knows what
// the commands mean.

import { encodeCommand, escapeBytes, RawClient } from '../../testkit/resp.js';

export type Arg = string | Buffer;

/** One request and what to do with its replies. */
export interface Step {
  /** Shown in failure messages. */
  readonly label: string;
  /** The request bytes (a RESP array, or an inline command line). */
  readonly bytes: Buffer;
  /** How many replies the request produces (inline lines can hold several commands). */
  readonly replies: number;
  /** Which servers get the request. */
  readonly to: 'both' | 'ordo';
  /** When set, ordo's reply must be exactly these bytes (ordo-only steps). */
  readonly ordoExpected?: Buffer;
  /** False for replies that legitimately differ; they are only checked to be non-errors. */
  readonly compare: boolean;
  /** Parts of both replies replaced by `<masked>` before comparing (client ids). */
  readonly mask?: RegExp;
}

export { encodeCommand, escapeBytes };

/** A command compared byte for byte on both servers. */
export function cmd(...args: Arg[]): Step {
  return { label: args.map(labelArg).join(' '), bytes: encodeCommand(args), replies: 1, to: 'both', compare: true };
}

/** A command sent to both whose replies are not compared (they carry ids); neither may be an error. */
export function uncompared(...args: Arg[]): Step {
  return { ...cmd(...args), compare: false };
}

/** A command compared after the parts matching `mask` (a global RegExp over latin1 text) are blanked in both replies. */
export function masked(mask: RegExp, ...args: Arg[]): Step {
  return { ...cmd(...args), mask };
}

/** Raw bytes (inline commands), compared reply by reply. */
export function raw(bytes: string | Buffer, replies = 1): Step {
  const b = typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes;
  return { label: `raw ${escapeBytes(b)}`, bytes: b, replies, to: 'both', compare: true };
}

/** A command only ordo gets (ordo differs from Redis by design); its exact reply is asserted. */
export function ordoOnly(expected: string, ...args: Arg[]): Step {
  return { ...cmd(...args), to: 'ordo', ordoExpected: Buffer.from(expected, 'latin1') };
}

/** An argument as shown in failure messages: bare when plain ASCII, else quoted with bytes escaped. */
function labelArg(arg: Arg): string {
  const b = typeof arg === 'string' ? Buffer.from(arg, 'utf8') : arg;
  const plain = b.length > 0 && b.every((byte) => byte > 0x20 && byte < 0x7f && byte !== 0x22 && byte !== 0x5c);
  const text = plain ? b.toString('latin1') : `"${escapeBytes(b).replace(/"/g, '\\"')}"`;
  return text.length > 160 ? `${text.slice(0, 150)}...(${b.length} bytes)` : text;
}

export type SendMode = 'one-by-one' | 'pipelined' | 'byte-by-byte';

export interface DiffOptions {
  readonly protocol: 2 | 3;
  readonly mode: SendMode;
  /** Both servers must close the connection after the last reply. */
  readonly expectClose?: boolean;
  /** Start without FLUSHALL (for connections that are not authenticated yet). */
  readonly keepKeyspace?: boolean;
}

/** Sends the steps to fresh connections of both servers and returns every problem found, as readable text. */
export async function diffSteps(redisPort: number, ordoPort: number, steps: readonly Step[], options: DiffOptions): Promise<string[]> {
  const redis = await RawClient.connect(redisPort);
  const ordo = await RawClient.connect(ordoPort);
  const problems: string[] = [];
  try {
    // A clean keyspace and the protocol under test; these replies are not compared.
    const setupCommands = [...(options.keepKeyspace === true ? [] : [['FLUSHALL']]), ...(options.protocol === 3 ? [['HELLO', '3']] : [])];
    const setup = Buffer.concat(setupCommands.map(encodeCommand));
    const setupCount = setupCommands.length;
    await Promise.all([redis.write(setup), ordo.write(setup)]);
    const [redisSetup, ordoSetup] = await Promise.all([redis.read(setupCount), ordo.read(setupCount)]);
    for (const r of [...redisSetup, ...ordoSetup]) {
      if (r[0] === 0x2d || r[0] === 0x3c) problems.push(`setup failed: ${escapeBytes(r)}`);
    }
    if (problems.length > 0) return problems;

    const bytesFor = (to: 'redis' | 'ordo', s: Step): Buffer => (s.to === 'both' || to === 'ordo' ? s.bytes : Buffer.alloc(0));
    const countFor = (to: 'redis' | 'ordo', s: Step): number => (s.to === 'both' || to === 'ordo' ? s.replies : 0);
    const check = (s: Step, redisReplies: Buffer[], ordoReplies: Buffer[]): void => {
      if (s.ordoExpected !== undefined) {
        const got = Buffer.concat(ordoReplies);
        if (!got.equals(s.ordoExpected)) {
          problems.push(`command: ${s.label}\n  expected ordo: ${escapeBytes(s.ordoExpected)}\n  ordo:          ${escapeBytes(got)}`);
        }
        return;
      }
      if (!s.compare) {
        for (const [who, replies] of [
          ['redis', redisReplies],
          ['ordo', ordoReplies],
        ] as const) {
          for (const r of replies) {
            if (r[0] === 0x2d || r[0] === 0x3c) problems.push(`command: ${s.label}\n  ${who} failed: ${escapeBytes(r)}`);
          }
        }
        return;
      }
      const blank = (replies: Buffer[]): Buffer => {
        const all = Buffer.concat(replies);
        return s.mask === undefined ? all : Buffer.from(all.toString('latin1').replace(s.mask, '<masked>'), 'latin1');
      };
      const a = blank(redisReplies);
      const b = blank(ordoReplies);
      if (!a.equals(b)) problems.push(`command: ${s.label}\n  redis: ${escapeBytes(a)}\n  ordo:  ${escapeBytes(b)}`);
    };

    if (options.mode === 'one-by-one') {
      for (const s of steps) {
        await Promise.all([redis.write(bytesFor('redis', s)), ordo.write(bytesFor('ordo', s))]);
        const [r, o] = await Promise.all([redis.read(countFor('redis', s)), ordo.read(countFor('ordo', s))]);
        check(s, r, o);
      }
    } else {
      const send = async (reader: RawClient, bytes: Buffer): Promise<void> => {
        if (options.mode === 'pipelined') return reader.write(bytes);
        for (let i = 0; i < bytes.length; i++) {
          await reader.write(bytes.subarray(i, i + 1));
          // Let the segment leave before the next byte so the server sees it alone.
          if (i % 4 === 0) await new Promise((r) => setImmediate(r));
        }
      };
      const all = (to: 'redis' | 'ordo'): Buffer => Buffer.concat(steps.map((s) => bytesFor(to, s)));
      const total = (to: 'redis' | 'ordo'): number => steps.reduce((n, s) => n + countFor(to, s), 0);
      await Promise.all([send(redis, all('redis')), send(ordo, all('ordo'))]);
      const [r, o] = await Promise.all([redis.read(total('redis'), 10_000), ordo.read(total('ordo'), 10_000)]);
      let ri = 0;
      let oi = 0;
      for (const s of steps) {
        const rc = countFor('redis', s);
        const oc = countFor('ordo', s);
        check(s, r.slice(ri, ri + rc), o.slice(oi, oi + oc));
        ri += rc;
        oi += oc;
      }
    }

    if (options.expectClose === true) {
      const [rc, oc] = await Promise.all([redis.waitClosed(), ordo.waitClosed()]);
      if (rc !== oc) problems.push(`connection closed after the last reply: redis ${rc}, ordo ${oc}`);
    }
    for (const [who, reader] of [
      ['redis', redis],
      ['ordo', ordo],
    ] as const) {
      if (reader.bytes.length > 0) problems.push(`${who} sent more than expected: ${escapeBytes(reader.bytes)}`);
    }
    return problems;
  } finally {
    redis.close();
    ordo.close();
  }
}
