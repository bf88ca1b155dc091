// A consumer's TypeScript against dtx's public types, as a service on Node.js sees them (the .d.ts
// in dist/lib, through package.json's exports). client-runtimes.test.ts runs tsc --noEmit on it with
// tsconfig.json beside it; each @ts-expect-error fails that check if the types let the mistake through.
import { type Client, connect, NameInUseError, type PrepareResult, SqlError, type SqlResult, type Tx } from "dtx/client";
import { kysely } from "dtx/kysely";
import type { Kysely } from "kysely";

interface DB {
  users: { id: number; status: "pending" | "active" };
}

export async function provision(dtx: Client): Promise<PrepareResult> {
  return dtx.beginDistributed("provision_user_123", async (tx: Tx) => {
    const db: Kysely<DB> = kysely<DB>(tx, "orders");
    await db.insertInto("users").values({ id: 123, status: "pending" }).execute();
    // @ts-expect-error: "done" is not a status
    await db.insertInto("users").values({ id: 124, status: "done" }).execute();
    const rows: SqlResult<{ id: number }> = await tx.sql("orders")<{ id: number }>`SELECT id FROM users`;
    const first: number | undefined = rows[0]?.id;
    const count: number = rows.count;
    await tx.put("users/123", { first, count });
    // @ts-expect-error: put takes a key and a value
    await tx.put("users/123");
  });
}

export async function main(): Promise<void> {
  const dtx = await connect({ socket: "/tmp/dtx.sock", connectTimeoutMs: 1000 });
  // @ts-expect-error: connect takes connectTimeoutMs, not timeout
  await connect({ timeout: 1000 });
  try {
    await provision(dtx);
    const { outcome }: { outcome: "committed" } = await dtx.commitDistributed("provision_user_123");
    console.log(outcome);
  } catch (e) {
    if (e instanceof SqlError) console.log(e.code, e.db);
    else if (e instanceof NameInUseError) console.log(e.code, e.retryable);
  } finally {
    dtx.close();
  }
}
