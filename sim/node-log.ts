// A node's whole log in memory for the whole-cluster simulator: the groups'
// Raft storage of MemoryRaftLogStore plus the node metadata a cluster member
// keeps (its id, bootstrap topology, start generation, peers' generations).
// Like the groups' writes, metadata written since the last turn is durable
// only once that turn's commit completes; crash() loses it.

import { MemoryRaftLogStore } from '../src/multiraft/memory-stores.js';
import type { ConfState } from '../src/raft/types.js';
import type { WritableStorage } from '../src/raft/storage.js';
import type { NodeLogStore } from '../src/storage/store.js';
import type { MemoryScheduler } from '../src/transport/memory.js';

export class MemoryNodeLog extends MemoryRaftLogStore implements NodeLogStore {
  commitOffThread = false;
  private readonly durableMeta = new Map<string, Uint8Array>();
  private liveMeta = new Map<string, Uint8Array>();
  private pendingMeta: { key: string; value: Uint8Array | null }[] = [];
  private readonly groupIds = new Set<number>();
  private crashes = 0;

  constructor(
    readonly description: string,
    commitDelayMs: () => number,
    timers: MemoryScheduler,
  ) {
    super(commitDelayMs, timers);
  }

  override group(groupId: number, initialConf: ConfState): WritableStorage {
    this.groupIds.add(groupId);
    return super.group(groupId, initialConf);
  }

  groups(): number[] {
    return [...this.groupIds].sort((a, b) => a - b);
  }

  hasGroup(groupId: number): boolean {
    return this.groupIds.has(groupId);
  }

  getMeta(key: string): Uint8Array | undefined {
    return this.liveMeta.get(key);
  }

  putMeta(key: string, value: Uint8Array): void {
    this.liveMeta.set(key, value);
    this.pendingMeta.push({ key, value });
  }

  deleteMeta(key: string): void {
    this.liveMeta.delete(key);
    this.pendingMeta.push({ key, value: null });
  }

  metaKeys(): string[] {
    return [...this.liveMeta.keys()].sort();
  }

  override commitTurn(): Promise<void> {
    const meta = this.pendingMeta;
    this.pendingMeta = [];
    const crashes = this.crashes;
    return super.commitTurn().then(() => {
      if (crashes !== this.crashes) return; // lost with the crash
      for (const { key, value } of meta) {
        if (value === null) this.durableMeta.delete(key);
        else this.durableMeta.set(key, value);
      }
    });
  }

  override crash(): void {
    super.crash();
    this.crashes++;
    this.pendingMeta = [];
    this.liveMeta = new Map(this.durableMeta);
  }

  close(): Promise<void> {
    this.crash();
    return Promise.resolve();
  }
}
