// A transaction whose callback has written and then hangs, for tests of what
// happens to an unprepared transaction (disconnect, crash, drain).
import type { Client } from "../../client/index.ts";

/**
 * Begin `name`, read and put key=value, and hang. Resolves once the sidecar has begun it (the read made the
 * client send begin: a callback that only writes is begun by its prepare); `settled` is the begin's fate.
 */
export async function beginAndHang(client: Client, name: string, key: string, value: unknown): Promise<{ settled: Promise<unknown> }> {
  let inside!: () => void;
  const entered = new Promise<void>((r) => (inside = r));
  const settled = client
    .beginDistributed(name, async (tx) => {
      await tx.get(key);
      await tx.put(key, value);
      inside();
      await new Promise(() => {});
    })
    .catch((e) => e);
  await entered;
  return { settled };
}
