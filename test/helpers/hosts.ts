// MultiRaftHosts in one process for tests: each node with an in-memory log
// (MemoryRaftLogStore, losing unflushed writes on a crash), optionally a
// keyspace (LMDB in a scratch directory of its own, or in memory), all on one
// MemoryHub, every node replicating every group. Crash, stop and restart a
// node; find replicas and leaders; wait for leaders and for replicas to agree.

import assert from 'node:assert/strict';
import { MultiRaftHost, type MultiRaftHostOptions } from '../../src/multiraft/host.js';
import { MemoryKeyspace, MemoryRaftLogStore } from '../../src/multiraft/memory-stores.js';
import type { RaftGroup } from '../../src/multiraft/raft-group.js';
import { snapshotState } from '../../src/sequencer/codec.js';
import { KeyspaceStore } from '../../src/storage/keyspace.js';
import { MemoryHub, type MemoryTransport } from '../../src/transport/memory.js';
import { prng, waitFor } from '../../testkit/index.js';

/** Host options a test may set; the harness sets the node, transport, stores and randomness. */
export type HostExtra = Partial<Omit<MultiRaftHostOptions, 'nodeId' | 'transport' | 'store' | 'random' | 'keyspace'>>;

export interface HostsOptions {
  readonly ids: readonly string[];
  readonly groups: readonly number[];
  readonly extra?: HostExtra;
  /** No keyspace (state in memory), an LMDB keyspace per node in a directory from `tempDir`, or MemoryKeyspace. */
  readonly keyspace?: 'none' | 'lmdb' | 'memory';
  /** Makes a node's keyspace directory (keyspace 'lmdb'). */
  readonly tempDir?: () => string;
  /** Virtual milliseconds a MemoryRaftLogStore commit takes (0: at once). */
  readonly commitDelayMs?: number;
  /** The first node's PRNG seed is `seed * 7919`, the next start's `(seed + 1) * 7919`, and so on. */
  readonly seed?: number;
  /** Bound on waitLeaders and waitConverged. */
  readonly waitMs?: number;
}

/** Milliseconds between Raft ticks of the hosts here: fast, so elections take tens of milliseconds. */
export const HOSTS_TICK_MS = 10;

export class Hosts {
  readonly hub = new MemoryHub();
  readonly ids: readonly string[];
  readonly groups: readonly number[];
  readonly logs = new Map<string, MemoryRaftLogStore>();
  readonly dirs = new Map<string, string>();
  readonly keyspaces = new Map<string, KeyspaceStore | MemoryKeyspace>();
  readonly hosts = new Map<string, MultiRaftHost>();
  readonly transports = new Map<string, MemoryTransport>();
  private seed: number;
  private readonly waitMs: number;

  constructor(private readonly opts: HostsOptions) {
    this.ids = opts.ids;
    this.groups = opts.groups;
    this.seed = opts.seed ?? 1;
    this.waitMs = opts.waitMs ?? 5000;
    for (const id of this.ids) {
      this.logs.set(id, new MemoryRaftLogStore(opts.commitDelayMs ?? 0));
      if (opts.keyspace === 'lmdb') {
        assert.ok(opts.tempDir !== undefined, 'an LMDB keyspace needs tempDir');
        this.dirs.set(id, opts.tempDir());
      }
      this.start(id);
    }
  }

  /** Starts (or restarts) the node on its log and keyspace as a crash or stop left them; `extra` overrides options for this start. */
  start(id: string, extra: HostExtra = {}): MultiRaftHost {
    const transport = this.hub.transport(id);
    transport.setPeers(new Map(this.ids.filter((n) => n !== id).map((n) => [n, { host: n, port: 0 }])));
    const host = new MultiRaftHost({
      nodeId: id,
      transport,
      store: this.logs.get(id) as MemoryRaftLogStore,
      ...this.keyspaceOption(id),
      random: prng(this.seed++ * 7919),
      tickIntervalMs: HOSTS_TICK_MS,
      ...this.opts.extra,
      ...extra,
    });
    for (const g of this.groups) host.addGroup(g, [...this.ids]);
    this.hosts.set(id, host);
    this.transports.set(id, transport);
    return host;
  }

  private keyspaceOption(id: string): { keyspace?: KeyspaceStore | MemoryKeyspace } {
    const kind = this.opts.keyspace ?? 'none';
    if (kind === 'none') return {};
    let keyspace = this.keyspaces.get(id);
    if (keyspace === undefined) {
      keyspace = kind === 'memory' ? new MemoryKeyspace() : KeyspaceStore.open(this.dirs.get(id) as string, { fsync: 'never' });
      this.keyspaces.set(id, keyspace);
    }
    return { keyspace };
  }

  /** The node's LMDB keyspace. */
  keyspace(id: string): KeyspaceStore {
    const k = this.keyspaces.get(id);
    assert.ok(k instanceof KeyspaceStore, `no LMDB keyspace on ${id}`);
    return k;
  }

  /** Kill -9: the host stops at once, unflushed log writes and checkpoints in flight are lost, an LMDB keyspace is closed (as by the process dying). */
  async crash(id: string): Promise<void> {
    this.host(id).halt();
    this.logs.get(id)?.crash();
    await this.dropKeyspace(id, true);
    await this.transports.get(id)?.close();
    this.hosts.delete(id);
  }

  /** A clean stop: the host closes (a last checkpoint), then its keyspace. */
  async stop(id: string): Promise<void> {
    await this.host(id).close();
    await this.dropKeyspace(id, false);
    await this.transports.get(id)?.close();
    this.hosts.delete(id);
  }

  /** An LMDB keyspace is closed (and opened again at the next start); a MemoryKeyspace stays, losing checkpoints in flight on a crash. */
  private async dropKeyspace(id: string, crashed: boolean): Promise<void> {
    const keyspace = this.keyspaces.get(id);
    if (keyspace instanceof KeyspaceStore) {
      await keyspace.close();
      this.keyspaces.delete(id);
    } else if (crashed) keyspace?.crash();
  }

  host(id: string): MultiRaftHost {
    const h = this.hosts.get(id);
    assert.ok(h !== undefined, `no host ${id}`);
    return h;
  }

  /** The group on every running node. */
  replicas(groupId: number): RaftGroup[] {
    const out: RaftGroup[] = [];
    for (const h of this.hosts.values()) {
      const g = h.group(groupId);
      if (g !== undefined) out.push(g);
    }
    return out;
  }

  leader(groupId: number): RaftGroup | undefined {
    return this.replicas(groupId).find((g) => g.isLeader());
  }

  /** Waits for a leader of every group (on none of `exclude`) and returns them. */
  async waitLeaders(exclude: readonly string[] = []): Promise<Map<number, RaftGroup>> {
    const out = new Map<number, RaftGroup>();
    await waitFor(
      'a leader in every group',
      () => {
        for (const g of this.groups) {
          const l = this.replicas(g).find((r) => r.isLeader() && !exclude.includes(r.node.id));
          if (l === undefined) return false;
          out.set(g, l);
        }
        return true;
      },
      this.waitMs,
    );
    return out;
  }

  /** Every running replica of every group applied what its leader committed, and the replicas hold the same state byte for byte. */
  async waitConverged(timeoutMs = this.waitMs): Promise<void> {
    await waitFor(
      'replicas to converge',
      () =>
        this.groups.every((g) => {
          const rs = this.replicas(g);
          const first = rs[0];
          return first !== undefined && rs.every((r) => r.appliedIndex === first.appliedIndex && r.node.status().commit === first.appliedIndex);
        }),
      timeoutMs,
    );
    for (const g of this.groups) {
      const states = this.replicas(g).map((r) => snapshotState(r.stateMachine).toString('base64'));
      for (const s of states) assert.equal(s, states[0], `group ${g}: replicas differ`);
    }
  }

  async close(): Promise<void> {
    for (const h of this.hosts.values()) h.halt();
    for (const k of this.keyspaces.values()) if (k instanceof KeyspaceStore) await k.close();
    await this.hub.close();
  }
}
