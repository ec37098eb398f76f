// The `--cluster` list: members as host:port[@busport], their node ids, and
// the topology a new cluster starts with. A member's id is derived from its
// announced client address, so every node given the same list computes the
// same ids and the same topology without talking to the others first.

import { createHash } from 'node:crypto';
import { bootstrapTopology, encodeTopology, type Address, type Member, type Topology } from './topology.js';
import { OrdoError } from '../ordo-error.js';

export type { Address };

/** The bus port of a member whose address names none: its client port plus this. */
export const BUS_PORT_OFFSET = 10000;

export class ClusterConfigError extends OrdoError {
  override readonly code = 'ORDO_ERR_CLUSTER_CONFIG';
}

function parsePort(text: string, what: string, entry: string): number {
  if (!/^\d{1,5}$/.test(text) || Number(text) < 1 || Number(text) > 65535) {
    throw new ClusterConfigError(`${what} in cluster address ${JSON.stringify(entry)} must be a port between 1 and 65535`);
  }
  return Number(text);
}

/** One `host:port[@busport]` entry (IPv6 hosts in brackets: `[::1]:7001`). */
export function parseAddress(entry: string): Address {
  const m = /^(\[[^\]]+\]|[^:@\s]+):([^@\s]+)(?:@(\S+))?$/.exec(entry.trim());
  if (m === null) throw new ClusterConfigError(`cluster address ${JSON.stringify(entry)} is not host:port or host:port@busport`);
  const rawHost = m[1] as string;
  const host = rawHost.startsWith('[') ? rawHost.slice(1, -1) : rawHost;
  const port = parsePort(m[2] as string, 'the port', entry);
  const busPort = m[3] === undefined ? port + BUS_PORT_OFFSET : parsePort(m[3], 'the bus port', entry);
  if (m[3] === undefined && busPort > 65535) {
    throw new ClusterConfigError(`cluster address ${JSON.stringify(entry)}: port + ${BUS_PORT_OFFSET} is past 65535; name the bus port as host:port@busport`);
  }
  return { host, port, busPort };
}

/** A member's node id: 40 hex chars, from its announced client address. */
export function memberId(host: string, port: number): string {
  return createHash('sha1').update(`ordo-member\0${host}\0${port}`).digest('hex');
}

export function parseMemberList(list: string): Member[] {
  const entries = list
    .split(',')
    .map((e) => e.trim())
    .filter((e) => e !== '');
  if (entries.length === 0) throw new ClusterConfigError('--cluster names no member');
  const members = entries.map((entry) => {
    const a = parseAddress(entry);
    return { id: memberId(a.host, a.port), host: a.host, port: a.port, busPort: a.busPort };
  });
  const seen = new Set<string>();
  for (const m of members) {
    const key = `${m.host}:${m.port}`;
    if (seen.has(key)) throw new ClusterConfigError(`--cluster lists ${key} twice`);
    seen.add(key);
  }
  return members;
}

/** The topology every member of `list` bootstraps with (deterministic: same list and count, same bytes). */
export function bootstrapFromList(list: string, groupCount: number): Topology {
  return bootstrapTopology({ members: parseMemberList(list), groupCount });
}

/** The bus cluster id: nodes bootstrapped from different lists or group counts refuse each other. */
export function clusterIdOf(bootstrap: Topology): string {
  return `ordo-${createHash('sha1').update(encodeTopology(bootstrap)).digest('hex').slice(0, 16)}`;
}

/** The member `announce` (host:port) names, or a message saying why none does. */
export function findSelf(topology: Topology, host: string, port: number): Member {
  const self = topology.members.find((m) => m.host === host && m.port === port);
  if (self === undefined) {
    const listed = topology.members.map((m) => `${m.host}:${m.port}`).join(', ');
    throw new ClusterConfigError(
      `this node (${host}:${port}) is not in the cluster list (${listed}); start it with --port and --host (or --announce) matching its entry`,
    );
  }
  return self;
}
