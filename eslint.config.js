// The linter holds the small house rules (README.md, Development): typed linting
// through the project's tsconfig.json, typescript-eslint's recommended
// type-checked rules, no `any`, no floating promise, and limits named with
// their units and Max/Min last. Formatting is prettier's job, not ESLint's.

import tseslint from 'typescript-eslint';

/**
 * A limit's name puts its units and Max/Min last (`requestTimeoutMs`,
 * `batchBytesMax`, `FORWARDS_IN_FLIGHT_MAX`, TIGER_STYLE's `latency_ms_max`).
 * A name matching this pattern has max/min before another word: `maxBytes`,
 * `minTimeoutMs`, `reconnectMaxMs`, `MAX_RETRIES`, `max_bytes`. A bound of a
 * limit (`FRAME_BYTES_MAX_FLOOR`, `..._CEILING`) and a function computing one
 * (`messageBytesMaxFor`, `maxOf`) are not flagged.
 */
const LIMIT_WORD_NOT_LAST = [
  '^(max|min)(?!(Of|For|Floor|Ceiling)$)[A-Z0-9_]',
  '(Max|Min)(?!(Of|For|Floor|Ceiling)$)[A-Z0-9_]',
  '(^|_)(MAX|MIN)_(?!(OF|FOR|FLOOR|CEILING)$)',
  '(^|_)(max|min)_(?!(of|for|floor|ceiling)$)',
].join('|');

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'data/', 'results/', '**/*.js'] },
  {
    files: ['**/*.ts'],
    extends: [tseslint.configs.recommendedTypeChecked],
    languageOptions: {
      parserOptions: { project: './tsconfig.json', tsconfigRootDir: import.meta.dirname },
    },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-floating-promises': [
        'error',
        {
          // node:test runs what test() and describe() return; nothing awaits them.
          allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['test', 'it', 'describe', 'suite'] }],
        },
      ],
      // Passing on what a callback caught (typed unknown) is fine; throwing a string or a literal is not.
      '@typescript-eslint/only-throw-error': ['error', { allowThrowingUnknown: true }],
      '@typescript-eslint/prefer-promise-reject-errors': ['error', { allowThrowingUnknown: true }],
      // A leading underscore marks a parameter kept for its position in a signature.
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      '@typescript-eslint/naming-convention': [
        'error',
        {
          selector: [
            'variable',
            'function',
            'parameter',
            'parameterProperty',
            'classProperty',
            'classMethod',
            'accessor',
            'typeProperty',
            'typeMethod',
            'enumMember',
            'typeLike',
          ],
          format: null,
          custom: { regex: LIMIT_WORD_NOT_LAST, match: false },
        },
      ],
    },
  },
);
