// Optimistic serializable isolation for the built-in store (DESIGN §8):
// branches buffer writes and remember read versions; at prepare they lock
// their read and write sets all-or-nothing and validate the read versions.
import type { WalReader } from "../wal/wal.ts";

export class LockTable {
  private holders = new Map<string, string>();

  /** Lock every key for owner, or none. Returns the first key held by someone else. */
  tryLockAll(owner: string, keys: Iterable<string>): string | undefined {
    const list = [...keys];
    for (const k of list) {
      const h = this.holders.get(k);
      if (h !== undefined && h !== owner) return k;
    }
    for (const k of list) this.holders.set(k, owner);
    return undefined;
  }

  releaseAll(owner: string, keys: Iterable<string>): void {
    for (const k of keys) if (this.holders.get(k) === owner) this.holders.delete(k);
  }

  holder(key: string): string | undefined {
    return this.holders.get(key);
  }

  get size(): number {
    return this.holders.size;
  }
}

/** The first read key whose committed version changed since it was read. */
export function staleRead(reads: ReadonlyMap<string, number>, reader: WalReader): string | undefined {
  for (const [k, version] of reads) {
    if ((reader.kvGet(k)?.version ?? 0) !== version) return k;
  }
  return undefined;
}
