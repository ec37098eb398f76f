// Glob matching with Redis's rules (KEYS, SCAN MATCH, CONFIG GET): `*` any run,
// `?` one byte, `[abc]`, `[^a]`, `[a-z]` classes, and `\` escaping the next byte.
// Works on bytes (latin1 strings), like Redis.

export function globMatch(pattern: string, text: string): boolean {
  // Redis's matcher never enters its loop for an empty text: only the empty
  // pattern matches it, and `*`, which KEYS and SCAN take as "every key".
  if (text.length === 0) return pattern.length === 0 || pattern === '*';
  return matchFrom(pattern, 0, text, 0, 0, { skipLongerMatches: false });
}

const NESTING_MAX = 1000;

/**
 * `skipLongerMatches` (as in Redis since the fix for CVE-2022-36021): once the
 * rest of the pattern after a `*` failed against every suffix of the text, no
 * outer `*` can do better by swallowing more, so every level gives up at once.
 * Without it a pattern like `a*a*a*a*b` takes exponential time.
 */
function matchFrom(p: string, pi: number, s: string, si: number, depth: number, state: { skipLongerMatches: boolean }): boolean {
  if (depth > NESTING_MAX) return false;
  while (pi < p.length) {
    const pc = p[pi];
    if (pc === '*') {
      while (p[pi + 1] === '*') pi++;
      if (pi + 1 === p.length) return true;
      // What follows a `*` always needs at least one byte, so the empty rest is not tried.
      for (let k = si; k < s.length; k++) {
        if (matchFrom(p, pi + 1, s, k, depth + 1, state)) return true;
        if (state.skipLongerMatches) return false;
      }
      state.skipLongerMatches = true;
      return false;
    }
    if (si >= s.length) return false;
    if (pc === '?') {
      pi++;
      si++;
      continue;
    }
    if (pc === '[') {
      const end = matchClass(p, pi + 1, s.charCodeAt(si));
      if (end < 0) return false;
      pi = end;
      si++;
      continue;
    }
    let literal = pc;
    if (pc === '\\' && pi + 1 < p.length) {
      pi++;
      literal = p[pi];
    }
    if (literal !== s[si]) return false;
    pi++;
    si++;
  }
  return si === s.length;
}

/** Matches one byte against the class starting after `[`; returns the index after `]`, or -1. */
function matchClass(p: string, start: number, code: number): number {
  let i = start;
  let negate = false;
  if (p[i] === '^') {
    negate = true;
    i++;
  }
  let matched = false;
  while (i < p.length && p[i] !== ']') {
    if (p[i] === '\\' && i + 1 < p.length) {
      if (p.charCodeAt(i + 1) === code) matched = true;
      i += 2;
    } else if (p[i + 1] === '-' && i + 2 < p.length) {
      // As in Redis, `[a-]` is the range from `a` to `]`: the `]` after a `-` is its end.
      let lo = p.charCodeAt(i);
      let hi = p.charCodeAt(i + 2);
      if (lo > hi) [lo, hi] = [hi, lo];
      if (code >= lo && code <= hi) matched = true;
      i += 3;
    } else {
      if (p.charCodeAt(i) === code) matched = true;
      i++;
    }
  }
  // An unterminated class behaves as if closed at the end of the pattern.
  const after = i < p.length ? i + 1 : i;
  return matched !== negate ? after : -1;
}
