// CLUSTER, READONLY, READWRITE, ASKING. Without cluster mode every one of them
// answers Redis's "cluster support disabled". In cluster mode CLUSTER answers
// from the topology and the leaders this node knows (src/cluster/replies.ts);
// asking for SLOTS, SHARDS or NODES makes the connection cluster-aware: from
// then on it is redirected with MOVED instead of served by forwarding.

import {
  clusterCountKeysInSlotReply,
  clusterInfoReply,
  clusterKeySlotReply,
  clusterMyIdReply,
  clusterNodesReply,
  clusterShardsReply,
  clusterSlotsReply,
  parseSlotArgument,
  type ClusterView,
} from '../../cluster/replies.js';
import type { ClusterEngine } from '../../cluster/engine.js';
import { keySlot } from '../../cluster/slots.js';
import { ERR, unknownSubcommand, wrongArity } from '../../errors.js';
import { R, type Reply } from '../../resp/encoder.js';
import { command, type CommandSpec } from '../command.js';
import { lower } from './common.js';

function view(engine: ClusterEngine): ClusterView {
  return {
    topology: engine.topology,
    myId: engine.myId,
    leaderOf: (groupId) => engine.leaderOf(groupId),
    failedNodes: engine.unreachable(),
    replicationOffset: (groupId, nodeId) => engine.replicationOffset(groupId, nodeId),
  };
}

/** Keys of `slot` in this node's replica of its group (not linearizable; 0 when this node holds no replica). */
function countKeysInSlot(engine: ClusterEngine, slot: number): number {
  const replica = engine.replicas.get(engine.topology.groupOfSlot(slot));
  if (replica === undefined) return 0;
  let n = 0;
  for (const key of replica.raft.stateMachine.keys()) if (keySlot(key) === slot) n++;
  return n;
}

const ARITY: Readonly<Record<string, number>> = { slots: 2, shards: 2, nodes: 2, info: 2, myid: 2, keyslot: 3, countkeysinslot: 3, help: 2 };

const HELP = [
  'CLUSTER <subcommand> [<arg> [value] [opt] ...]. Subcommands are:',
  'COUNTKEYSINSLOT <slot>',
  "    Return the number of keys in <slot> (on this node's replica of its group).",
  'INFO',
  '    Return information about the cluster.',
  'KEYSLOT <key>',
  '    Return the hash slot for <key>.',
  'MYID',
  '    Return the node id.',
  'NODES',
  '    Return cluster configuration seen by node. Output format:',
  '    <id> <ip:port@bus-port> <flags> <master> <pings> <pongs> <epoch> <link> <slot> ...',
  'SHARDS',
  '    Return information about slot range mappings and the nodes associated with them.',
  'SLOTS',
  '    Return information about slots range mappings. Each range is made of:',
  '    start, end, master and replicas IP addresses, ports and ids',
  'HELP',
  '    Print this help.',
];

function clusterCommand(engine: ClusterEngine, sub: string, args: readonly Buffer[], markAware: () => void): Reply {
  const arity = ARITY[sub];
  if (arity === undefined) return R.error(unknownSubcommand(args[1]?.toString('latin1') ?? '', 'cluster'));
  if (args.length !== arity) return R.error(wrongArity(`cluster|${sub}`));
  switch (sub) {
    case 'slots':
      markAware();
      return clusterSlotsReply(view(engine));
    case 'shards':
      markAware();
      return clusterShardsReply(view(engine));
    case 'nodes':
      markAware();
      return clusterNodesReply(view(engine));
    case 'info':
      return clusterInfoReply(view(engine));
    case 'myid':
      return clusterMyIdReply(view(engine));
    case 'keyslot':
      return clusterKeySlotReply(args[2] as Buffer);
    case 'countkeysinslot': {
      const parsed = parseSlotArgument(args[2] as Buffer);
      if ('error' in parsed) return R.error(parsed.error === 'invalidSlot' ? ERR.invalidSlot : ERR.notInteger);
      return clusterCountKeysInSlotReply(parsed.slot, countKeysInSlot(engine, parsed.slot));
    }
    default:
      return R.array(HELP.map((l) => R.simple(l)));
  }
}

export const CLUSTER_COMMANDS: readonly CommandSpec[] = [
  command({
    name: 'cluster',
    arity: -2,
    flags: ['fast', 'loading', 'stale'],
    group: 'cluster',
    aclCategories: ['@fast', '@connection'],
    since: '3.0.0',
    summary: 'A container for Redis Cluster commands: SLOTS, SHARDS, NODES, INFO, MYID, KEYSLOT, COUNTKEYSINSLOT.',
    handler: (ctx, conn, args, respond) => {
      if (ctx.cluster === null) return respond(R.error(ERR.clusterDisabled));
      respond(clusterCommand(ctx.cluster, lower(args[1]), args, () => (conn.clusterAware = true)));
    },
  }),
  ...['readonly', 'readwrite', 'asking'].map((name) =>
    command({
      name,
      arity: 1,
      flags: ['fast', 'loading', 'stale'],
      group: 'cluster',
      aclCategories: ['@fast', '@connection'],
      since: '3.0.0',
      summary: 'Accepted in cluster mode for client compatibility (reads are always served by the group leader).',
      handler: (ctx, _conn, _args, respond) => respond(ctx.cluster === null ? R.error(ERR.clusterDisabled) : R.ok),
    }),
  ),
];
