// RESP2 / RESP3 reply encoder. Replies are small trees built by command
// handlers; `encodeReply` turns one into the bytes of the protocol the
// connection speaks. Text (simple strings, errors, verbatim strings) is encoded
// as latin1: every char is one byte, so argument bytes echoed back in an error
// (decoded with latin1) come back exactly as they were sent.

export type Protocol = 2 | 3;

export type Reply =
  | { readonly kind: 'simple'; readonly value: string }
  | { readonly kind: 'error'; readonly value: string }
  | { readonly kind: 'integer'; readonly value: bigint | number }
  | { readonly kind: 'bulk'; readonly value: Buffer }
  | { readonly kind: 'null' }
  | { readonly kind: 'nullArray' }
  | { readonly kind: 'array'; readonly items: readonly Reply[] }
  | { readonly kind: 'map'; readonly entries: readonly (readonly [Reply, Reply])[] }
  | { readonly kind: 'set'; readonly items: readonly Reply[] }
  | { readonly kind: 'double'; readonly value: number }
  | { readonly kind: 'boolean'; readonly value: boolean }
  | { readonly kind: 'verbatim'; readonly format: string; readonly value: string }
  /** A reply already encoded (in the protocol its command ran under), relayed as is. */
  | { readonly kind: 'encoded'; readonly bytes: Buffer };

/** Reply constructors, so handlers read like the replies they send. */
export const R = {
  simple: (value: string): Reply => ({ kind: 'simple', value }),
  error: (value: string): Reply => ({ kind: 'error', value }),
  int: (value: bigint | number): Reply => ({ kind: 'integer', value }),
  bulk: (value: Buffer | string): Reply => ({
    kind: 'bulk',
    value: typeof value === 'string' ? Buffer.from(value, 'utf8') : value,
  }),
  array: (items: readonly Reply[]): Reply => ({ kind: 'array', items }),
  map: (entries: readonly (readonly [Reply, Reply])[]): Reply => ({ kind: 'map', entries }),
  set: (items: readonly Reply[]): Reply => ({ kind: 'set', items }),
  double: (value: number): Reply => ({ kind: 'double', value }),
  bool: (value: boolean): Reply => ({ kind: 'boolean', value }),
  verbatim: (value: string, format = 'txt'): Reply => ({ kind: 'verbatim', format, value }),
  encoded: (bytes: Buffer): Reply => ({ kind: 'encoded', bytes }),
  ok: { kind: 'simple', value: 'OK' } as Reply,
  nil: { kind: 'null' } as Reply,
  nilArray: { kind: 'nullArray' } as Reply,
  zero: { kind: 'integer', value: 0 } as Reply,
  one: { kind: 'integer', value: 1 } as Reply,
} as const;

/** A map reply whose keys are simple text, the common shape of HELLO and friends. */
export function textMap(entries: readonly (readonly [string, Reply])[]): Reply {
  return R.map(entries.map(([k, v]) => [R.bulk(k), v] as const));
}

const CRLF = '\r\n';

/**
 * Formats a double the way Redis 7.0 does for RESP3 doubles: C's `%.17g`
 * (17 significant digits of the exact binary value, rounded half to even,
 * trailing zeros removed, exponent form when the exponent is < -4 or >= 17),
 * and `inf`, `-inf`, `nan`.
 */
export function formatDouble(value: number): string {
  if (Number.isNaN(value)) return 'nan';
  if (value === Infinity) return 'inf';
  if (value === -Infinity) return '-inf';
  if (value === 0) return Object.is(value, -0) ? '-0' : '0';
  const negative = value < 0;
  const { digits, pointPosition } = exactDecimal(Math.abs(value));
  // Round to 17 significant digits, half to even (the exact value decides).
  const significant = 17;
  let kept = digits.slice(0, significant);
  let exponent = pointPosition - 1; // scientific exponent of the first digit
  if (digits.length > significant) {
    const rest = digits.slice(significant);
    const first = rest.charCodeAt(0) - 48;
    const beyondHalf = first > 5 || (first === 5 && /[1-9]/.test(rest.slice(1)));
    const isHalf = first === 5 && !beyondHalf;
    const lastOdd = (kept.charCodeAt(kept.length - 1) - 48) % 2 === 1;
    if (beyondHalf || (isHalf && lastOdd)) {
      const bumped = (BigInt(kept) + 1n).toString();
      if (bumped.length > kept.length) exponent++;
      kept = bumped.slice(0, significant);
    }
  }
  kept = kept.replace(/0+$/, '') || '0';
  let text: string;
  if (exponent < -4 || exponent >= significant) {
    const mantissa = kept.length > 1 ? `${kept[0]}.${kept.slice(1)}` : kept;
    const expDigits = String(Math.abs(exponent)).padStart(2, '0');
    text = `${mantissa}e${exponent < 0 ? '-' : '+'}${expDigits}`;
  } else if (exponent < 0) {
    text = `0.${'0'.repeat(-exponent - 1)}${kept}`;
  } else if (kept.length <= exponent + 1) {
    text = kept + '0'.repeat(exponent + 1 - kept.length);
  } else {
    text = `${kept.slice(0, exponent + 1)}.${kept.slice(exponent + 1)}`;
  }
  return negative ? `-${text}` : text;
}

/** The exact decimal digits of a finite positive double, and where the point goes. */
function exactDecimal(value: number): { digits: string; pointPosition: number } {
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, value);
  const bits = view.getBigUint64(0);
  const biasedExponent = Number((bits >> 52n) & 0x7ffn);
  let mantissa = bits & ((1n << 52n) - 1n);
  let exponent2: number;
  if (biasedExponent === 0) exponent2 = -1074;
  else {
    mantissa |= 1n << 52n;
    exponent2 = biasedExponent - 1075;
  }
  // value = mantissa * 2^exponent2 = mantissa * 5^-e2 / 10^-e2 when e2 < 0.
  let digits: string;
  let pointPosition: number;
  if (exponent2 >= 0) {
    digits = (mantissa << BigInt(exponent2)).toString();
    pointPosition = digits.length;
  } else {
    const scaled = mantissa * 5n ** BigInt(-exponent2);
    digits = scaled.toString();
    pointPosition = digits.length + exponent2;
  }
  const stripped = digits.replace(/^0+/, '');
  return { digits: stripped, pointPosition: pointPosition - (digits.length - stripped.length) };
}

/** Replies are one line each: CR and LF in text become spaces, as Redis does. */
function oneLine(text: string): string {
  return text.includes('\r') || text.includes('\n') ? text.replace(/[\r\n]/g, ' ') : text;
}

/** Appends the encoding of `reply` to `out` as strings (latin1) and Buffers. */
export function encodeInto(reply: Reply, proto: Protocol, out: (string | Buffer)[]): void {
  switch (reply.kind) {
    case 'simple':
      out.push(`+${oneLine(reply.value)}${CRLF}`);
      return;
    case 'error':
      out.push(`-${oneLine(reply.value)}${CRLF}`);
      return;
    case 'integer':
      out.push(`:${reply.value}${CRLF}`);
      return;
    case 'bulk':
      out.push(`$${reply.value.length}${CRLF}`, reply.value, CRLF);
      return;
    case 'null':
      out.push(proto === 3 ? `_${CRLF}` : `$-1${CRLF}`);
      return;
    case 'nullArray':
      out.push(proto === 3 ? `_${CRLF}` : `*-1${CRLF}`);
      return;
    case 'array':
      out.push(`*${reply.items.length}${CRLF}`);
      for (const item of reply.items) encodeInto(item, proto, out);
      return;
    case 'set':
      out.push(`${proto === 3 ? '~' : '*'}${reply.items.length}${CRLF}`);
      for (const item of reply.items) encodeInto(item, proto, out);
      return;
    case 'map':
      out.push(proto === 3 ? `%${reply.entries.length}${CRLF}` : `*${reply.entries.length * 2}${CRLF}`);
      for (const [k, v] of reply.entries) {
        encodeInto(k, proto, out);
        encodeInto(v, proto, out);
      }
      return;
    case 'double': {
      const text = formatDouble(reply.value);
      out.push(proto === 3 ? `,${text}${CRLF}` : `$${text.length}${CRLF}${text}${CRLF}`);
      return;
    }
    case 'boolean':
      out.push(proto === 3 ? `#${reply.value ? 't' : 'f'}${CRLF}` : `:${reply.value ? 1 : 0}${CRLF}`);
      return;
    case 'verbatim': {
      const body = Buffer.from(reply.value, 'utf8');
      if (proto === 3) {
        out.push(`=${body.length + reply.format.length + 1}${CRLF}${reply.format}:`, body, CRLF);
      } else {
        out.push(`$${body.length}${CRLF}`, body, CRLF);
      }
      return;
    }
    case 'encoded':
      out.push(reply.bytes);
      return;
  }
}

/** The whole encoding of one reply as a Buffer. */
export function encodeReply(reply: Reply, proto: Protocol): Buffer {
  const parts: (string | Buffer)[] = [];
  encodeInto(reply, proto, parts);
  return joinParts(parts);
}

/** Concatenates encoder output into one Buffer (strings as latin1). */
export function joinParts(parts: readonly (string | Buffer)[]): Buffer {
  let total = 0;
  for (const p of parts) total += p.length;
  const buf = Buffer.allocUnsafe(total);
  let offset = 0;
  for (const p of parts) {
    offset += typeof p === 'string' ? buf.write(p, offset, 'latin1') : p.copy(buf, offset);
  }
  return buf;
}
