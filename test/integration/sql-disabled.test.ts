// What a user sees when PostgreSQL has prepared transactions disabled (its
// default, max_prepared_transactions = 0): a stable code and how to enable them.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { SQL } from "bun";
import { connect, SqlError } from "../../client/index.ts";
import { PgScratch } from "../fixtures/pg-scratch.ts";
import { SidecarProcess } from "../helpers/sidecar-process.ts";

const available = PgScratch.available();
if (!available) {
  if (process.env.CI === "true") test("PostgreSQL server binaries are installed (CI=true)", () => expect(available as boolean).toBe(true));
  else console.log("skipping sql-disabled.test.ts: PostgreSQL server binaries are not installed (run npm run services)");
}

describe.skipIf(!available)("PostgreSQL with prepared transactions disabled", () => {
  let pg: PgScratch;
  let sc: SidecarProcess;
  beforeAll(async () => {
    pg = await PgScratch.start();
    await using admin = new SQL(pg.url);
    await admin`CREATE TABLE orders (id int PRIMARY KEY)`;
    sc = await new SidecarProcess({ id: "sql-disabled", dbs: [`orders=${pg.url}`] }).start();
  });
  afterAll(async () => {
    await sc?.cleanup();
    await pg?.stop();
  });

  test("the sidecar says so at start-up with SQL_PREPARED_DISABLED", () => {
    expect(sc.output).toContain("SQL_PREPARED_DISABLED");
  });

  test("beginDistributed rejects with SQL_PREPARED_DISABLED, says exactly how to enable them, and rolls everything back", async () => {
    const dtx = await connect({ socket: sc.socket });
    try {
      const err = await dtx
        .beginDistributed("needs-prepared", async (tx) => {
          await tx.put("orders/1", 1);
          await tx.sql("orders")`INSERT INTO orders VALUES (${1})`;
        })
        .catch((e) => e);
      expect(err).toBeInstanceOf(SqlError);
      expect(err.code).toBe("SQL_PREPARED_DISABLED");
      expect(err.db).toBe("orders");
      expect(err.message).toContain("ALTER SYSTEM SET max_prepared_transactions = 64");
      expect(err.message).toContain("restart PostgreSQL");
      expect((await dtx.status("needs-prepared")).state).toBe("rolled_back");
      expect(await dtx.get("orders/1")).toBeUndefined();
    } finally {
      dtx.close();
    }
  });
});
