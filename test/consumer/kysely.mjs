// The seed's examples with dtx/kysely (docs: Bun's distributed transactions through a query builder),
// one scenario per run, against a sidecar with --db orders=<PostgreSQL> --db stock=<MariaDB>. Plain
// JavaScript importing dtx/client and dtx/kysely by name: it runs under node (the build) and bun (the
// source). It prints what it saw as one JSON line; the test checks the databases.
//   node test/consumer/kysely.mjs <scenario> <name> <tables as JSON>
import { connect } from "dtx/client";
import { kysely } from "dtx/kysely";

const [scenario, name, tablesJson] = process.argv.slice(2);
const t = JSON.parse(tablesJson);
const dtx = await connect();
const scenarios = {
  // stage, verify external systems, commit
  async provision() {
    await dtx.beginDistributed(name, async (tx) => {
      const db = kysely(tx, "orders");
      await db.insertInto(t.users).values({ id: 123, status: "pending" }).execute();
    });
    const staged = (await dtx.status(name)).state;
    await provisionExternalResources();
    return { staged, decided: await dtx.commitDistributed(name) };
  },
  // rollback on failure: the worker fails after the transaction was prepared
  async batch() {
    let caught;
    try {
      await dtx.beginDistributed(name, async (tx) => {
        const db = kysely(tx, "orders");
        await db.insertInto(t.jobs).values({ id: 1 }).execute();
      });
      await runWorker();
      await dtx.commitDistributed(name);
    } catch (e) {
      caught = e.message;
      await dtx.rollbackDistributed(name);
    }
    return { caught, state: (await dtx.status(name)).state };
  },
  // one transaction across PostgreSQL, MariaDB and the store, committed everywhere
  async acrossCommit() {
    let seen;
    await dtx.beginDistributed(name, async (tx) => {
      const orders = kysely(tx, "orders");
      const stock = kysely(tx, "stock");
      const [order] = await orders.insertInto(t.orders).values({ id: 1, sku: "A" }).returning(["id", "sku"]).execute();
      const updated = await stock.updateTable(t.stock).set((eb) => ({ qty: eb("qty", "-", 1) })).where("sku", "=", "A").executeTakeFirst();
      const inserted = await stock.insertInto(t.stock).values({ sku: "B", qty: 5 }).executeTakeFirst();
      const own = await stock.selectFrom(t.stock).select(["sku", "qty"]).orderBy("sku").execute();
      await tx.put(`orders/${name}`, { sku: "A" });
      seen = { order, updated: Number(updated.numUpdatedRows), insertId: Number(inserted.insertId), own };
    });
    return { seen, decided: await dtx.commitDistributed(name) };
  },
  // the same, but PostgreSQL refuses to prepare (a deferred foreign key fails): nothing anywhere
  async acrossRefused() {
    const err = await dtx
      .beginDistributed(name, async (tx) => {
        await kysely(tx, "stock").updateTable(t.stock).set({ qty: 0 }).where("sku", "=", "A").execute();
        await kysely(tx, "orders").insertInto(t.orders).values({ id: 2, sku: "A", parent: 999 }).execute();
        await tx.put(`orders/${name}`, { sku: "A" });
      })
      .then(() => undefined, (e) => ({ name: e.name, code: e.code, db: e.db }));
    return { err, state: (await dtx.status(name)).state, stored: (await dtx.get(`orders/${name}`)) ?? null };
  },
  // Kysely's own transaction() inside a branch: the branch is the transaction, so it is refused
  async nested() {
    const err = await dtx
      .beginDistributed(name, async (tx) => {
        await kysely(tx, "orders").transaction().execute(async (trx) => trx.insertInto(t.users).values({ id: 7, status: "pending" }).execute());
      })
      .then(() => undefined, (e) => ({ name: e.name, code: e.code }));
    return { err };
  },
};

async function provisionExternalResources() {}
async function runWorker() {
  throw new Error("the worker failed");
}

const result = await scenarios[scenario]();
dtx.close();
console.log(JSON.stringify(result));
