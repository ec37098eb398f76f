// The one base of every exception ordo defines, with a stable code per class,
// so that logs, metrics and tests match on a code rather than on a message.
// This file imports nothing: every layer may extend OrdoError, including
// resp/, raft/ and sequencer/, which import nothing else of ours. The RESP
// error texts a client receives are another table: src/errors.ts.

/** Every code, once, with what it means. A class owns its code; a code never changes meaning and is never reused. */
export const ORDO_ERROR_CODES = {
  ORDO_ERR_CONFIG: 'A bad flag or config file entry (ConfigError, config.ts).',
  ORDO_ERR_CLUSTER_CONFIG: 'A bad `--cluster` member list (ClusterConfigError, cluster/members.ts).',
  ORDO_ERR_TOPOLOGY: 'A topology that cannot be, from a caller or from bytes (TopologyError, cluster/topology.ts).',
  ORDO_ERR_DATA_DIRECTORY: 'A data directory the node refuses to start on (DataDirectoryError, storage/store.ts).',
  ORDO_ERR_PERSIST: 'A turn that did not reach disk (PersistError, storage/store.ts).',
  ORDO_ERR_LOG_APPEND: "An append to the node's log failed before, while or after writing (AppendError, storage/segments.ts).",
  ORDO_ERR_LOG_RECORD_CORRUPT: "A damaged record of the node's log (CorruptError, storage/wal-records.ts).",
  ORDO_ERR_RAFT_LMDB_CORRUPT: 'A damaged record of a raft.mdb being imported (CorruptError, storage/raft-lmdb-format.ts).',
  ORDO_ERR_VALUE_RECORD_CORRUPT: 'A damaged value record of the keyspace (CorruptRecordError, sequencer/codec.ts).',
  ORDO_ERR_OP_DECODE: 'Bytes that are not a state machine op (OpDecodeError, sequencer/op-codec.ts).',
  ORDO_ERR_MESSAGE_DECODE: 'Bytes that are not a Raft or snapshot transfer message (MessageDecodeError, multiraft/message-codec.ts).',
  ORDO_ERR_BUS_DECODE: 'Bytes that are not a bus request, reply or probe (BusDecodeError, cluster/bus.ts).',
  ORDO_ERR_BUS_PROTOCOL: 'A malformed frame from a bus peer (ProtocolError, transport/frame.ts).',
  ORDO_ERR_RESP_PROTOCOL: 'A malformed request from a client, or one past a limit (ProtocolError, resp/decoder.ts).',
  ORDO_ERR_RESP_REPLY_PROTOCOL: 'Bytes from a server that are not a RESP reply (ReplyProtocolError, resp/client-codec.ts).',
  ORDO_ERR_RESP_ERROR_REPLY: "A server answered the launcher's client with an error reply (RespErrorReply, launcher/client.ts).",
  ORDO_ERR_RESP_NO_REPLY: "The launcher's client got no reply in time, or lost its connection (RespNoReply, launcher/client.ts).",
} as const;

export type OrdoErrorCode = keyof typeof ORDO_ERROR_CODES;

/**
 * The base of ordo's exceptions. A subclass names its code as a field
 * (`readonly code = 'ORDO_ERR_CONFIG'`) and keeps Error's constructor or its
 * own; `name` is the class's name, as in stack traces.
 */
export abstract class OrdoError extends Error {
  abstract readonly code: OrdoErrorCode;

  constructor(message?: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}
