// A small hand-driven cluster for interaction tests and the benchmark: the
// real RaftNode, in-memory storage made "durable" synchronously, and a message
// queue the test controls (drop rules, explicit delivery).

import { MemoryStorage } from '../src/raft/storage.js';
import { RaftNode, RaftConfig, Role } from '../src/raft/node.js';
import { ConfState, Entry, EntryType, Message, NodeId, ReadState } from '../src/raft/types.js';
import { Prng } from './prng.js';

export interface ClusterMember {
  readonly id: NodeId;
  node: RaftNode;
  readonly storage: MemoryStorage;
  /** Entries applied, in order (normal entries with data only are counted by tests). */
  applied: Entry[];
  appliedIndex: number;
  readStates: ReadState[];
  droppedReads: number[];
  /** Data of the last snapshot installed from the leader. */
  restoredSnapshot: Uint8Array | null;
  down: boolean;
}

export interface ClusterOptions {
  readonly voters: readonly NodeId[];
  readonly learners?: readonly NodeId[];
  readonly seed?: number;
  readonly raft?: Partial<Omit<RaftConfig, 'id' | 'storage' | 'random'>>;
}

export class TestCluster {
  readonly members = new Map<NodeId, ClusterMember>();
  private queue: Message[] = [];
  /** Directed links that drop messages: "from>to". */
  private readonly blocked = new Set<string>();
  readonly prng: Prng;
  private readonly raftOptions: Partial<Omit<RaftConfig, 'id' | 'storage' | 'random'>>;
  delivered = 0;
  /** When set, messages it returns true for are dropped. */
  dropIf: ((m: Message) => boolean) | null = null;
  /** When set, every message sent is also appended here. */
  sent: Message[] | null = null;

  constructor(opts: ClusterOptions) {
    this.prng = new Prng(opts.seed ?? 1);
    this.raftOptions = opts.raft ?? {};
    const conf: ConfState = { voters: [...opts.voters], learners: [...(opts.learners ?? [])] };
    for (const id of [...conf.voters, ...conf.learners]) this.addMember(id, conf);
  }

  /** Create a member with the given initial membership (an empty one for a node joining later). */
  addMember(id: NodeId, conf: ConfState): ClusterMember {
    const storage = new MemoryStorage(conf);
    const m: ClusterMember = {
      id,
      node: this.makeNode(id, storage),
      storage,
      applied: [],
      appliedIndex: 0,
      readStates: [],
      droppedReads: [],
      restoredSnapshot: null,
      down: false,
    };
    this.members.set(id, m);
    return m;
  }

  private makeNode(id: NodeId, storage: MemoryStorage): RaftNode {
    const rng = this.prng.fork();
    return new RaftNode({ ...this.raftOptions, id, storage, random: () => rng.float() });
  }

  member(id: NodeId): ClusterMember {
    const m = this.members.get(id);
    if (m === undefined) throw new Error(`no member ${id}`);
    return m;
  }

  node(id: NodeId): RaftNode {
    return this.member(id).node;
  }

  /** Restart a member from its storage (all of which is durable here). */
  restart(id: NodeId): void {
    const m = this.member(id);
    m.node = this.makeNode(id, m.storage);
    m.appliedIndex = m.storage.snapshot().meta.index;
    m.down = false;
  }

  block(from: NodeId, to: NodeId): void {
    this.blocked.add(`${from}>${to}`);
  }

  /** Cut `id` off from everyone in both directions. */
  isolate(id: NodeId): void {
    for (const other of this.members.keys()) {
      if (other === id) continue;
      this.block(id, other);
      this.block(other, id);
    }
  }

  /** Split into groups; only members of the same group can talk. */
  partition(...groups: NodeId[][]): void {
    this.heal();
    for (const g of groups) {
      for (const a of g) {
        for (const b of this.members.keys()) if (!g.includes(b)) this.block(a, b);
      }
    }
  }

  heal(): void {
    this.blocked.clear();
  }

  /** Handle one Ready of one member: persist synchronously, queue messages, apply. */
  processReady(m: ClusterMember): boolean {
    if (m.down || !m.node.hasReady()) return false;
    const rd = m.node.ready();
    for (const msg of rd.messages) {
      this.queue.push(msg);
      if (this.sent !== null) this.sent.push(msg);
    }
    if (rd.snapshot !== null) {
      m.storage.applySnapshot(rd.snapshot);
      m.restoredSnapshot = rd.snapshot.data;
      m.appliedIndex = rd.snapshot.meta.index;
    }
    if (rd.entries.length > 0) m.storage.append(rd.entries);
    if (rd.hardState !== null) m.storage.setHardState(rd.hardState);
    m.node.advance();
    for (const e of rd.committedEntries) {
      if (e.index !== m.appliedIndex + 1) throw new Error(`${m.id} applies ${e.index} after ${m.appliedIndex}`);
      m.appliedIndex = e.index;
      m.applied.push(e);
    }
    for (const r of rd.readStates) m.readStates.push(r);
    for (const r of rd.droppedReads) m.droppedReads.push(r);
    return true;
  }

  /** Deliver messages and process Readies until nothing moves (bounded). */
  stabilize(roundsMax = 10_000): void {
    for (let round = 0; round < roundsMax; round++) {
      let moved = false;
      for (const m of this.members.values()) {
        while (this.processReady(m)) moved = true;
      }
      if (this.queue.length > 0) {
        moved = true;
        const q = this.queue;
        this.queue = [];
        for (const msg of q) this.deliver(msg);
      }
      if (!moved) return;
    }
    throw new Error('cluster did not stabilize');
  }

  private deliver(msg: Message): void {
    if (this.blocked.has(`${msg.from}>${msg.to}`)) return;
    if (this.dropIf !== null && this.dropIf(msg)) return;
    const target = this.members.get(msg.to);
    if (target === undefined || target.down) return;
    this.delivered++;
    target.node.step(msg);
  }

  /** Advance every live member by `n` ticks, stabilizing after each. */
  tick(n = 1): void {
    for (let i = 0; i < n; i++) {
      for (const m of this.members.values()) if (!m.down) m.node.tick();
      this.stabilize();
    }
  }

  /** Tick until `pred` holds; returns the ticks used or throws after ticksMax. */
  tickUntil(pred: () => boolean, ticksMax = 500): number {
    for (let i = 0; i <= ticksMax; i++) {
      if (pred()) return i;
      this.tick();
    }
    throw new Error('condition not reached');
  }

  /** Leaders among live members (highest term first). */
  leaders(): RaftNode[] {
    const out: RaftNode[] = [];
    for (const m of this.members.values()) if (!m.down && m.node.role === Role.Leader) out.push(m.node);
    out.sort((a, b) => b.term - a.term);
    return out;
  }

  leaderId(): NodeId | null {
    return this.leaders()[0]?.id ?? null;
  }

  /** Make `id` campaign and settle; returns whether it became leader. */
  elect(id: NodeId): boolean {
    this.node(id).hup();
    this.stabilize();
    return this.node(id).role === Role.Leader;
  }

  /** Payloads of the normal, non-empty entries a member applied (decoded as text). */
  appliedData(id: NodeId): string[] {
    const dec = new TextDecoder();
    return this.member(id)
      .applied.filter((e) => e.type === EntryType.Normal && e.data.length > 0)
      .map((e) => dec.decode(e.data));
  }
}

export function text(s: string): Uint8Array {
  return new TextEncoder().encode(s);
}
