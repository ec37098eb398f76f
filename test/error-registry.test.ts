// Every error text a client can receive is defined once, in src/errors.ts, with
// Redis's exact text where Redis has one. This test reads every source file of
// src/ (but errors.ts) and fails on an error text written inline: a literal
// given to R.error, an error reply object built from a literal, or any string
// that starts with a Redis error code (`ERR `, `WRONGTYPE `, `MOVED `, ...).
// The scanner is tested both ways: it finds planted literals and passes the
// ways the server really builds its errors. Beside it, the other registry:
// every exception class of src/ extends OrdoError with a code of its own,
// listed in src/ordo-error.ts.

import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import ts from 'typescript';
import { ERR } from '../src/errors.js';
import { ORDO_ERROR_CODES, OrdoError } from '../src/ordo-error.js';

/** The codes that open a Redis error reply (Redis 7, its cluster, and ordo's own). */
const ERROR_CODES = [
  'ERR',
  'WRONGTYPE',
  'NOPERM',
  'NOAUTH',
  'WRONGPASS',
  'NOPROTO',
  'LOADING',
  'MOVED',
  'ASK',
  'CROSSSLOT',
  'CLUSTERDOWN',
  'TRYAGAIN',
  'TIMEOUT',
  'EXECABORT',
  'MISCONF',
  'READONLY',
  'MASTERDOWN',
  'NOREPLICAS',
  'OOM',
  'BUSY',
  'BUSYKEY',
  'BUSYGROUP',
  'NOSCRIPT',
  'NOTBUSY',
  'NOGROUP',
  'UNBLOCKED',
];
/** An error text, or a RESP error line (`-ERR ...`): a code, then a space. A bare `'READONLY'` is a command name. */
const ERROR_TEXT = new RegExp(`^-?(${ERROR_CODES.join('|')}) `);

interface Finding {
  readonly file: string;
  readonly line: number;
  readonly text: string;
  readonly why: string;
}

/** The text a literal starts with: a string, a template without substitutions, or a template's head. */
function leadingText(node: ts.Node): string | null {
  if (ts.isStringLiteral(node) || ts.isNoSubstitutionTemplateLiteral(node)) return node.text;
  if (ts.isTemplateExpression(node)) return node.head.text;
  if (ts.isParenthesizedExpression(node)) return leadingText(node.expression);
  if (ts.isBinaryExpression(node) && node.operatorToken.kind === ts.SyntaxKind.PlusToken) return leadingText(node.left);
  return null;
}

/** `R.error(...)`: the encoder's constructor of error replies. */
function isErrorReplyCall(node: ts.CallExpression): boolean {
  const callee = node.expression;
  return ts.isPropertyAccessExpression(callee) && callee.name.text === 'error' && ts.isIdentifier(callee.expression) && callee.expression.text === 'R';
}

/** `{ kind: 'error', value: ... }`: an error reply built by hand; returns the value's expression. */
function errorReplyObjectValue(node: ts.ObjectLiteralExpression): ts.Expression | null {
  let isError = false;
  let value: ts.Expression | null = null;
  for (const property of node.properties) {
    if (!ts.isPropertyAssignment(property) || !ts.isIdentifier(property.name)) continue;
    if (property.name.text === 'kind' && leadingText(property.initializer) === 'error') isError = true;
    if (property.name.text === 'value') value = property.initializer;
  }
  return isError ? value : null;
}

/** Inline error texts in one TypeScript source. */
function inlineErrorTexts(file: string, source: string): Finding[] {
  const sourceFile = ts.createSourceFile(file, source, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  const findings: Finding[] = [];
  const reported = new Set<number>();
  const report = (node: ts.Node, why: string): void => {
    const start = node.getStart(sourceFile);
    if (reported.has(start)) return;
    reported.add(start);
    const line = sourceFile.getLineAndCharacterOfPosition(start).line + 1;
    findings.push({ file, line, text: node.getText(sourceFile), why });
  };
  const visit = (node: ts.Node): void => {
    const text = ts.isTemplateExpression(node) || ts.isStringLiteral(node) || ts.isNoSubstitutionTemplateLiteral(node) ? leadingText(node) : null;
    if (text !== null && ERROR_TEXT.test(text)) report(node, 'starts like a Redis error');
    if (ts.isCallExpression(node) && isErrorReplyCall(node)) {
      const arg = node.arguments[0];
      if (arg !== undefined && leadingText(arg) !== null) report(arg, 'R.error with an inline text');
    }
    if (ts.isObjectLiteralExpression(node)) {
      const value = errorReplyObjectValue(node);
      if (value !== null && leadingText(value) !== null) report(value, 'error reply with an inline text');
    }
    ts.forEachChild(node, visit);
  };
  visit(sourceFile);
  return findings;
}

const srcDir = fileURLToPath(new URL('../../src/', import.meta.url));
const registry = join(srcDir, 'errors.ts');

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...sourceFiles(path));
    else if (entry.name.endsWith('.ts') && path !== registry) out.push(path);
  }
  return out;
}

test('src/ sends no error text that is not in src/errors.ts', () => {
  const files = sourceFiles(srcDir);
  assert.ok(files.length > 50, `expected the sources of ordo under ${srcDir}, found ${files.length} files`);
  const findings = files.flatMap((path) => inlineErrorTexts(relative(srcDir, path), readFileSync(path, 'utf8')));
  const lines = findings.map((f) => `src/${f.file}:${f.line}: ${f.why}: ${f.text}`);
  assert.deepEqual(lines, [], 'define these texts in src/errors.ts and use them from there');
});

test('every registry text opens with an error code', () => {
  for (const [key, text] of Object.entries(ERR)) assert.match(text, ERROR_TEXT, `ERR.${key}`);
});

test('the scanner finds inline error texts', () => {
  const planted = [
    "respond(R.error('ERR wrong number of arguments for \\'mset\\' command'));",
    'respond(R.error(`ERR Unknown client type ${type}`));',
    "return R.error('no such thing');",
    "return R.error('something ' + detail);",
    "const reply: Reply = { kind: 'error', value: 'oops' };",
    "const text = 'WRONGTYPE Operation against a key holding the wrong kind of value';",
    'const redirect = `MOVED ${slot} ${host}:${port}`;',
    "socket.end('-NOPERM this user has no permissions\\r\\n');",
    'throw new Error("CLUSTERDOWN The cluster is down");',
    "const unknown = 'TIMEOUT outcome unknown';",
  ];
  for (const line of planted) assert.equal(inlineErrorTexts('planted.ts', line).length, 1, line);
});

test('the scanner passes errors taken from the registry, comments and command names', () => {
  const clean = [
    'respond(R.error(ERR.syntax));',
    'respond(R.error(wrongArity(name)));',
    "respond(R.error(ERR[overloaded ? 'overloaded' : error]));",
    "return { kind: 'error', value: ERR.noAuth };",
    '// ERR syntax error is what Redis answers here',
    '/** Replies `MOVED slot host:port` to a cluster client. */',
    "const names = ['READONLY', 'READWRITE', 'ASKING'];",
    "const section = 'ERRORSTATS';",
    "log.error('lost the connection to the peer');",
  ];
  for (const line of clean) assert.deepEqual(inlineErrorTexts('clean.ts', line), [], line);
});

/** The built-in exceptions a class of ours must not extend directly. */
const BUILTIN_ERRORS = new Set(['Error', 'RangeError', 'TypeError', 'SyntaxError', 'EvalError', 'ReferenceError', 'URIError', 'AggregateError']);

interface ExceptionClass {
  readonly where: string;
  readonly base: string;
  /** The string its `code` field is initialized with, if any. */
  readonly code: string | null;
}

function exceptionClasses(file: string, source: string): ExceptionClass[] {
  const sourceFile = ts.createSourceFile(file, source, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  const out: ExceptionClass[] = [];
  const visit = (node: ts.Node): void => {
    if (ts.isClassLike(node)) {
      const base = node.heritageClauses?.find((h) => h.token === ts.SyntaxKind.ExtendsKeyword)?.types[0]?.expression;
      if (base !== undefined && ts.isIdentifier(base) && (BUILTIN_ERRORS.has(base.text) || base.text === 'OrdoError')) {
        let code: string | null = null;
        for (const member of node.members) {
          if (ts.isPropertyDeclaration(member) && ts.isIdentifier(member.name) && member.name.text === 'code' && member.initializer !== undefined) {
            if (ts.isStringLiteral(member.initializer)) code = member.initializer.text;
          }
        }
        const line = sourceFile.getLineAndCharacterOfPosition(node.getStart(sourceFile)).line + 1;
        out.push({ where: `src/${file}:${line} ${node.name?.text ?? '(anonymous class)'}`, base: base.text, code });
      }
    }
    ts.forEachChild(node, visit);
  };
  visit(sourceFile);
  return out;
}

test('every exception class in src/ extends OrdoError with a code of its own from src/ordo-error.ts', () => {
  const classes = [...sourceFiles(srcDir), registry].flatMap((path) => exceptionClasses(relative(srcDir, path), readFileSync(path, 'utf8')));
  const problems: string[] = [];
  const owners = new Map<string, string>();
  for (const c of classes) {
    if (c.where.endsWith(' OrdoError')) continue;
    if (c.base !== 'OrdoError') problems.push(`${c.where} extends ${c.base}, not OrdoError`);
    else if (c.code === null) problems.push(`${c.where} names no code (override readonly code = 'ORDO_ERR_...')`);
    else if (!(c.code in ORDO_ERROR_CODES)) problems.push(`${c.where}: ${c.code} is not in src/ordo-error.ts`);
    else if (owners.has(c.code)) problems.push(`${c.where}: ${c.code} is already the code of ${owners.get(c.code)}`);
    if (c.code !== null) owners.set(c.code, c.where);
  }
  for (const code of Object.keys(ORDO_ERROR_CODES)) if (!owners.has(code)) problems.push(`${code} is the code of no class`);
  assert.deepEqual(problems, []);
});

test('an OrdoError carries its code and its class name', () => {
  class Planted extends OrdoError {
    override readonly code = 'ORDO_ERR_CONFIG';
  }
  const e = new Planted('bad flag', { cause: 'because' });
  assert.ok(e instanceof Error);
  assert.equal(e.code, 'ORDO_ERR_CONFIG');
  assert.equal(e.name, 'Planted');
  assert.equal(e.message, 'bad flag');
  assert.equal(e.cause, 'because');
  assert.match(String(e.stack), /^Planted: bad flag/);
});
