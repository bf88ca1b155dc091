// The built-in store as an orchestrated participant: what a step's payload
// writes, whether a prepared transaction holds one of its keys, and the
// before-image its compensation writes back. Shared by the orchestrator's
// inline `store:` steps and by the store steps a sidecar hosts for others.
import { storePayload } from "../protocol/orchestration.ts";
import { keyProblem, keyText } from "../protocol/value.ts";
import type { LockTable } from "../store/locks.ts";
import type { Write } from "../wal/records.ts";
import type { WalReader } from "../wal/wal.ts";

/** The writes of a store step's payload `{ put?: {key: value}, delete?: [key] }`, or why it is not one. */
export function storeWrites(payload: unknown): Write[] | string {
  const parsed = storePayload.safeParse(payload ?? {});
  if (!parsed.success) return "store payload must be { put?: {key: value}, delete?: [key] }";
  const writes = [...Object.entries(parsed.data.put ?? {}).map(([k, v]): Write => [k, v, false]), ...(parsed.data.delete ?? []).map((k): Write => [k, null, true])];
  // The orchestrator's sidecar checked them at addParticipant; a sidecar hosting the step for a peer checks again.
  for (const [k] of writes) {
    const bad = keyProblem(k);
    if (bad) return `store payload key ${keyText(k)}: ${bad}`;
  }
  return writes;
}

/** Why a step cannot write now: one of its keys is locked by a prepared transaction (it retries; nothing was written). */
export function lockedKeyError(writes: readonly Write[], locks: LockTable): string | undefined {
  const busy = writes.find(([k]) => locks.holder(k) !== undefined);
  return busy ? `key "${busy[0]}" is locked by a prepared transaction` : undefined;
}

/** What the keys of `writes` hold now: the writes that undo them. */
export function beforeImage(writes: readonly Write[], reader: WalReader): Write[] {
  return writes.map(([k]): Write => {
    const e = reader.kvGet(k);
    return e ? [k, e.value, false] : [k, null, true];
  });
}
