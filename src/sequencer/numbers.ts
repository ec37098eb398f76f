// Number parsing and formatting with Redis's exact rules. Pure functions.

export const INT64_MIN = -(1n << 63n);
export const INT64_MAX = (1n << 63n) - 1n;

/**
 * Parses a canonical signed 64-bit decimal as Redis's string2ll does: optional
 * `-`, no `+`, no spaces, no leading zeros, no `-0`, at most 20 characters.
 * Returns null when the text is not such a number.
 */
export function parseInt64(bytes: Buffer | string): bigint | null {
  const len = bytes.length;
  if (len === 0 || len > 20) return null;
  const text = typeof bytes === 'string' ? bytes : bytes.toString('latin1', 0, len);
  if (len === 1 && text === '0') return 0n;
  let i = 0;
  const negative = text.charCodeAt(0) === 45; /* - */
  if (negative) {
    i = 1;
    if (len === 1) return null;
  }
  const first = text.charCodeAt(i);
  if (first < 49 || first > 57) return null; // 1-9: no leading zero, no sign
  for (let k = i + 1; k < len; k++) {
    const c = text.charCodeAt(k);
    if (c < 48 || c > 57) return null;
  }
  // Up to 15 digits fit in a double exactly; the fast path avoids BigInt parsing.
  const value = len - i <= 15 ? BigInt(Number(text)) : BigInt(text);
  if (value < INT64_MIN || value > INT64_MAX) return null;
  return value;
}

// INCRBYFLOAT: Redis reads both operands with strtold into an x87 80-bit long
// double (64-bit mantissa), adds them in long double, and prints the sum with
// "%.17Lf" before stripping trailing zeros. ordo does the same arithmetic with
// exact integers: each operand is rounded to the nearest 64-bit-mantissa binary
// value, the sum is rounded the same way, and the exact binary result is
// printed to 17 fractional digits. So 1000.1 gives 1000.09999999999999998, as
// Redis does on x86-64.

/** An exact decimal: mantissa * 10^exponent. */
interface Decimal {
  mantissa: bigint;
  exponent: number;
}

const FLOAT_TEXT = /^([-+]?)(\d*)(?:\.(\d*))?(?:[eE]([-+]?\d+))?$/;
const EXPONENT_ABS_MAX = 5000;
/** Largest magnitude a long double holds (about 1.19e4932). */
const LONG_DOUBLE_DIGITS_MAX = 4933;

/** Parses the text strtold would accept for a finite value; null otherwise. */
export function parseDecimal(bytes: Buffer | string): Decimal | null {
  const text = typeof bytes === 'string' ? bytes : bytes.toString('latin1');
  if (text.length === 0 || text.length > 5000) return null;
  const m = FLOAT_TEXT.exec(text);
  if (m === null) return null;
  const sign = m[1] ?? '';
  const whole = m[2] ?? '';
  const fraction = m[3] ?? '';
  if (whole.length === 0 && fraction.length === 0) return null;
  const exp = m[4] === undefined ? 0 : Number(m[4]);
  if (!Number.isSafeInteger(exp) || Math.abs(exp) > EXPONENT_ABS_MAX) return null;
  let mantissa = BigInt((whole + fraction).replace(/^0+(?=\d)/, '') || '0');
  if (sign === '-') mantissa = -mantissa;
  return { mantissa, exponent: exp - fraction.length };
}

const FRACTION_DIGITS = 17;

/** Formats like "%.17Lf" with trailing zeros (and a trailing dot) removed; "-0" becomes "0". */
function formatDecimal(d: Decimal): string {
  let mantissa = d.mantissa;
  let exponent = d.exponent;
  if (exponent < -FRACTION_DIGITS) {
    // Round half to even to 17 fractional digits.
    const divisor = 10n ** BigInt(-FRACTION_DIGITS - exponent);
    const negative = mantissa < 0n;
    const abs = negative ? -mantissa : mantissa;
    let q = abs / divisor;
    const r = abs % divisor;
    const twice = r * 2n;
    if (twice > divisor || (twice === divisor && q % 2n === 1n)) q += 1n;
    mantissa = negative ? -q : q;
    exponent = -FRACTION_DIGITS;
  }
  const negative = mantissa < 0n;
  let digits = (negative ? -mantissa : mantissa).toString();
  let text: string;
  if (exponent >= 0) {
    text = digits === '0' ? '0' : digits + '0'.repeat(exponent);
  } else {
    const scale = -exponent;
    digits = digits.padStart(scale + 1, '0');
    const whole = digits.slice(0, digits.length - scale);
    const fraction = digits.slice(digits.length - scale).replace(/0+$/, '');
    text = fraction.length > 0 ? `${whole}.${fraction}` : whole;
  }
  if (negative && text !== '0') text = `-${text}`;
  return text;
}

export type FloatAddResult = { ok: true; text: string } | { ok: false; error: 'notFloat' | 'nanOrInfinity' };

/** current + increment as INCRBYFLOAT does; current null means a missing key. */
export function addFloatText(current: Buffer | string | null, increment: Buffer | string): FloatAddResult {
  const inc = parseFloatOperand(increment);
  const cur = current === null ? { mantissa: 0n, exponent: 0 } : parseFloatOperand(current);
  // Redis reads the stored value first, then the increment; an infinite operand parses but cannot be added.
  if (cur === null || inc === null) return { ok: false, error: 'notFloat' };
  if (inc === 'infinite' || cur === 'infinite') return { ok: false, error: 'nanOrInfinity' };
  const a = toExtended(cur);
  const b = toExtended(inc);
  // An operand that rounds past the long double range is strtold's ERANGE: not a valid float.
  if (a.exponent > EXTENDED_EXPONENT_MAX || b.exponent > EXTENDED_EXPONENT_MAX) return { ok: false, error: 'notFloat' };
  const sum = addExtended(a, b);
  if (sum.exponent > EXTENDED_EXPONENT_MAX) return { ok: false, error: 'nanOrInfinity' };
  return { ok: true, text: formatDecimal(extendedToDecimal(sum)) };
}

/** A long double value: (negative ? -1 : 1) * mantissa * 2^exponent, mantissa 0 or in [2^63, 2^64). */
interface Extended {
  negative: boolean;
  mantissa: bigint;
  exponent: number;
}

const MANTISSA_BITS = 64;
const MANTISSA_LOW = 1n << 63n;
const MANTISSA_HIGH = 1n << 64n;
/** Past this exponent (with a 64-bit mantissa) a long double is infinite. */
const EXTENDED_EXPONENT_MAX = 16383 - 63;

const bitLength = (n: bigint): number => (n === 0n ? 0 : n.toString(2).length);

/** Rounds the positive rational num/den to a 64-bit mantissa, half to even. */
function roundRational(negative: boolean, num: bigint, den: bigint): Extended {
  if (num === 0n) return { negative, mantissa: 0n, exponent: 0 };
  let shift = MANTISSA_BITS - (bitLength(num) - bitLength(den));
  for (;;) {
    const n = shift >= 0 ? num << BigInt(shift) : num;
    const d = shift >= 0 ? den : den << BigInt(-shift);
    let q = n / d;
    if (q >= MANTISSA_HIGH) {
      shift--;
      continue;
    }
    if (q < MANTISSA_LOW) {
      shift++;
      continue;
    }
    const twiceRemainder = (n % d) * 2n;
    if (twiceRemainder > d || (twiceRemainder === d && (q & 1n) === 1n)) q++;
    if (q === MANTISSA_HIGH) return { negative, mantissa: MANTISSA_LOW, exponent: 1 - shift };
    return { negative, mantissa: q, exponent: -shift };
  }
}

function toExtended(d: Decimal): Extended {
  const negative = d.mantissa < 0n;
  const abs = negative ? -d.mantissa : d.mantissa;
  if (d.exponent >= 0) return roundRational(negative, abs * 10n ** BigInt(d.exponent), 1n);
  return roundRational(negative, abs, 10n ** BigInt(-d.exponent));
}

function addExtended(a: Extended, b: Extended): Extended {
  const low = Math.min(a.exponent, b.exponent);
  const scaled = (x: Extended): bigint => (x.negative ? -x.mantissa : x.mantissa) << BigInt(x.exponent - low);
  const sum = scaled(a) + scaled(b);
  const negative = sum < 0n;
  const abs = negative ? -sum : sum;
  return low >= 0 ? roundRational(negative, abs << BigInt(low), 1n) : roundRational(negative, abs, 1n << BigInt(-low));
}

/** The exact decimal value of a long double (m * 2^-k = m * 5^k * 10^-k). */
function extendedToDecimal(x: Extended): Decimal {
  const signed = x.negative ? -x.mantissa : x.mantissa;
  if (x.exponent >= 0) return { mantissa: signed << BigInt(x.exponent), exponent: 0 };
  return { mantissa: signed * 5n ** BigInt(-x.exponent), exponent: x.exponent };
}

const HEX_FLOAT_TEXT = /^([-+]?)0[xX]([0-9a-fA-F]*)(?:\.([0-9a-fA-F]*))?(?:[pP]([-+]?\d+))?$/;
/** Beyond this binary exponent a long double overflows or underflows (strtold: ERANGE). */
const HEX_EXPONENT_ABS_MAX = 16_500;

/** strtold also reads C99 hexadecimal floats (`0x10`, `0x1.8p3`); their value is exact in decimal. */
function parseHexFloat(text: string): Decimal | null {
  const m = HEX_FLOAT_TEXT.exec(text);
  if (m === null) return null;
  const whole = m[2] ?? '';
  const fraction = m[3] ?? '';
  if (whole.length === 0 && fraction.length === 0) return null;
  const binaryExponent = (m[4] === undefined ? 0 : Number(m[4])) - 4 * fraction.length;
  if (!Number.isSafeInteger(binaryExponent) || Math.abs(binaryExponent) > HEX_EXPONENT_ABS_MAX) return null;
  let mantissa = BigInt(`0x${whole + fraction}`);
  if (m[1] === '-') mantissa = -mantissa;
  // m * 2^-k = m * 5^k * 10^-k
  if (binaryExponent >= 0) return { mantissa: mantissa << BigInt(binaryExponent), exponent: 0 };
  return { mantissa: mantissa * 5n ** BigInt(-binaryExponent), exponent: binaryExponent };
}

function parseFloatOperand(bytes: Buffer | string): Decimal | 'infinite' | null {
  const text = typeof bytes === 'string' ? bytes : bytes.toString('latin1');
  if (/^[-+]?inf(inity)?$/i.test(text)) return 'infinite';
  const value = /^[-+]?0[xX]/.test(text) ? (text.length > 5000 ? null : parseHexFloat(text)) : parseDecimal(text);
  return value === null || outsideLongDouble(value) ? null : value;
}

/**
 * strtold fails with ERANGE beyond the long double range: Redis then calls the
 * text not a valid float. Magnitudes of 10^4933 and more overflow; nonzero ones
 * below 10^-4951 round to zero.
 */
function outsideLongDouble(d: Decimal): boolean {
  if (d.mantissa === 0n) return false;
  const digits = (d.mantissa < 0n ? -d.mantissa : d.mantissa).toString().length;
  const order = digits + d.exponent; // 10^(order-1) <= |d| < 10^order
  return order > LONG_DOUBLE_DIGITS_MAX || order < -4950;
}
