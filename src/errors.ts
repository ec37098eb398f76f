// The one registry of every error text the server sends. Where Redis 7 has the
// error, the text is Redis's, byte for byte. Layers below the server return the
// keys of this table; only the server turns them into replies.

export const ERR = {
  wrongType: 'WRONGTYPE Operation against a key holding the wrong kind of value',
  notInteger: 'ERR value is not an integer or out of range',
  overflow: 'ERR increment or decrement would overflow',
  decrOverflow: 'ERR decrement would overflow',
  notFloat: 'ERR value is not a valid float',
  nanOrInfinity: 'ERR increment would produce NaN or Infinity',
  syntax: 'ERR syntax error',
  stringTooLong: 'ERR string exceeds maximum allowed size (proto-max-bulk-len)',
  offsetOutOfRange: 'ERR offset is out of range',
  bitOffsetInvalid: 'ERR bit offset is not an integer or out of range',
  bitInvalid: 'ERR bit is not an integer or out of range',
  bitposBit: 'ERR The bit argument must be 1 or 0.',
  lcsIdxAndLen: 'ERR If you want both the length and indexes, please just use IDX.',
  lcsTooLarge: 'ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len',
  dbIndexOutOfRange: 'ERR DB index is out of range',
  intOutOfRange: 'ERR value is out of range, value must between -2147483648 and 2147483647',
  noAuth: 'NOAUTH Authentication required.',
  wrongPass: 'WRONGPASS invalid username-password pair or user is disabled.',
  authNotConfigured: 'ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?',
  noProto: 'NOPROTO unsupported protocol version',
  invalidExpire: "ERR invalid expire time in 'set' command",
  notSupportedExpiry: 'ERR key expiry is not supported by ordo yet',
  invalidCursor: 'ERR invalid cursor',
  tooManyClients: 'ERR max number of clients reached',
  clientNameSpaces: 'ERR Client names cannot contain spaces, newlines or special characters.',
  persistFailed: 'ERR write failed to reach disk, not applied',
  persistUnknown: 'TIMEOUT write outcome unknown: disk flush failed',
  shuttingDown: 'ERR server is shutting down, write not applied',
  notLeader: "TRYAGAIN this node is not the leader of the key's group, write not applied",
  noLeader: "CLUSTERDOWN the key's group has no leader right now, write not applied",
  overloaded: "TRYAGAIN too many writes in flight for the key's group, write not applied",
  superseded: 'TRYAGAIN leadership changed before the write committed, write not applied',
  outcomeUnknown: 'TIMEOUT write outcome unknown: leadership changed or the request timed out',
  readTimeout: "TRYAGAIN read timed out waiting for the group's leader",
  hostFailed: 'ERR replication stopped on this node after a storage failure, write not applied',
  diskFull: 'MISCONF the disk of this node is full (no space left on device): writes are refused until space is freed, write not applied',
  windowLease: "TRYAGAIN no leader of the key's group holds its lease to serve window values yet (election or failover in progress), nothing allocated",
  helloNoAuth:
    'NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time',
  helloProtoNotInteger: 'ERR Protocol version is not an integer or out of range',
  seqExists: 'ERR key already exists; SEQCREATE ... REPLACE recreates it',
  seqMax: 'ERR sequence would pass its MAX; nothing was allocated',
  seqBackwards: 'ERR a sequence only moves forward: DECR, DECRBY, SET, INCRBYFLOAT and INCRBY with a negative increment are refused',
  seqGone: 'TRYAGAIN the sequence was deleted or recreated while a window was reserved',
  tokenMismatch: 'ERR TOKEN was already used on this key with a different COUNT',
  tokenLength: 'ERR TOKEN must be 1 to 1024 bytes',
  countNotPositive: 'ERR COUNT must be a positive integer',
  stepNotPositive: 'ERR STEP must be a positive integer',
  windowNotPositive: 'ERR WINDOW must be a positive integer',
  startAboveMax: 'ERR START is greater than MAX',
  noSequence: 'ERR no such key',
  invalidSlot: 'ERR Invalid slot',
  clusterDisabled: 'ERR This instance has cluster support disabled',
  crossSlot: "CROSSSLOT Keys in request don't hash to the same slot",
  forwardTooLarge: 'ERR request too large to forward to the leader of its group, not applied',
  opTooLarge: 'ERR request too large to replicate (more than 8 MiB in one write), not applied',
  topologyConflict: 'CLUSTERDOWN this node disagrees with the committed cluster topology, not applied',
  configSetUnsupported: 'ERR CONFIG SET is not supported by ordo: restart the node with the option changed',
  noSuchClient: 'ERR No such client',
  clientIdNotPositive: 'ERR client-id should be greater than 0',
  invalidClientId: 'ERR Invalid client ID',
  getKeysInvalidCommand: 'ERR Invalid command specified',
  getKeysInvalidArity: 'ERR Invalid number of arguments specified for command',
  getKeysNoKeys: 'ERR The command has no key arguments',
  timeoutNotInteger: 'ERR timeout is not an integer or out of range',
} as const;

export type ErrorKey = keyof typeof ERR;

/**
 * Errors a write can fail with, by what they promise: a "not applied" write
 * certainly did not happen; an "outcome unknown" one may have. Errors never lie.
 */
export const WRITE_NOT_APPLIED: ReadonlySet<ErrorKey> = new Set<ErrorKey>([
  'persistFailed',
  'shuttingDown',
  'notLeader',
  'noLeader',
  'overloaded',
  'superseded',
  'hostFailed',
  'diskFull',
  'windowLease',
  'crossSlot',
  'forwardTooLarge',
  'opTooLarge',
  'topologyConflict',
]);
export const WRITE_OUTCOME_UNKNOWN: ReadonlySet<ErrorKey> = new Set<ErrorKey>(['persistUnknown', 'outcomeUnknown']);

/** Redis Cluster's redirection: the slot's group is led at host:port. */
export function moved(slot: number, host: string, port: number): string {
  return `MOVED ${slot} ${host}:${port}`;
}

export function wrongArity(commandName: string): string {
  return `ERR wrong number of arguments for '${commandName.toLowerCase()}' command`;
}

/**
 * Redis quotes at most the first few arguments of an unknown command, each cut
 * short, and, printing them as C strings, each only up to its first NUL byte.
 */
export function unknownCommand(name: string, args: readonly string[]): string {
  const cString = (text: string): string => {
    const nul = text.indexOf('\0');
    return nul < 0 ? text : text.slice(0, nul);
  };
  let argsText = '';
  for (const arg of args) {
    const remaining = 128 - argsText.length;
    if (remaining <= 0) break;
    argsText += `'${cString(arg).slice(0, remaining)}' `;
  }
  return noNewlines(`ERR unknown command '${cString(name).slice(0, 128)}', with args beginning with: ${argsText}`);
}

export function unknownSubcommand(subcommand: string, command: string): string {
  return noNewlines(`ERR unknown subcommand '${subcommand.slice(0, 128)}'. Try ${command.toUpperCase()} HELP.`);
}

export function protocolError(what: string): string {
  return `ERR Protocol error: ${what}`;
}

/** Error replies are one line: Redis turns CR and LF that echo user input into spaces. */
export function noNewlines(text: string): string {
  return text.replace(/[\r\n]/g, ' ');
}

export function helloOptionSyntax(option: string): string {
  return noNewlines(`ERR Syntax error in HELLO option '${option}'`);
}

export function unrecognizedOption(option: string): string {
  return noNewlines(`ERR Unrecognized option '${option}'`);
}

/** CLIENT SETINFO: a library name or version with a space or a control character. */
export function clientInfoSpaces(attribute: string): string {
  return noNewlines(`ERR ${attribute} cannot contain spaces, newlines or special characters.`);
}

export function unknownClientType(type: string): string {
  return noNewlines(`ERR Unknown client type '${type}'`);
}
