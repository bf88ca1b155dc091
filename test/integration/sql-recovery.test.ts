// SQL branches across crashes: kill -9 of the sidecar and of the service, on
// real PostgreSQL and MariaDB. Afterwards neither database holds a dtx gid.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { resolve } from "node:path";
import { connect } from "../../client/index.ts";
import { mysqlUrl, pgUrl, SqlAdmin, sqlTestGate, uniqueName } from "../fixtures/sql-servers.ts";
import { TcpProxy } from "../fixtures/tcp-proxy.ts";
import { SidecarProcess, waitFor } from "../helpers/sidecar-process.ts";

const gate = await sqlTestGate("SQL recovery tests (sql-recovery.test.ts)");
if (gate.missing) test("PostgreSQL and MariaDB are running for the SQL recovery tests (CI=true)", () => expect(gate.missing).toBeUndefined());

const orders = uniqueName("dtx_rec_orders");
const stock = uniqueName("dtx_rec_stock");
const orphanMs = 1_500;
const reconcileMs = 100;
let admin: SqlAdmin;
const sidecars: SidecarProcess[] = [];
const ids: string[] = [];

function sidecarIdFor(what: string): string {
  const id = uniqueName(what).replace(/_/g, "-");
  ids.push(id);
  return id;
}

async function startSidecar(id: string, dbs = [`orders=${pgUrl}`, `stock=${mysqlUrl}`]): Promise<SidecarProcess> {
  const sc = new SidecarProcess({ id, dbs, extraArgs: ["--sql-reconcile-ms", String(reconcileMs), "--sql-orphan-ms", String(orphanMs)] });
  sidecars.push(sc);
  return sc.start();
}

describe.skipIf(!gate.run)("SQL branches across crashes", () => {
  beforeAll(async () => {
    admin = new SqlAdmin();
    await admin.pg.unsafe(`CREATE TABLE ${orders} (id int PRIMARY KEY, sku text)`);
    await admin.my.unsafe(`CREATE TABLE ${stock} (id int PRIMARY KEY, qty int) ENGINE=InnoDB`);
  });

  afterAll(async () => {
    for (const s of sidecars) await s.cleanup();
    for (const id of ids) await admin.cleanup(id);
    await admin.dropAndClose([orders], [stock]);
  });

  const rows = (id: number) => admin.rows(orders, stock, id);
  const held = async (sidecar: string) => {
    const g = await admin.gids(sidecar);
    return g.pg.length + g.my.length;
  };
  const noGidsLeft = (sidecar: string, timeoutMs = 10_000) => waitFor(async () => (await held(sidecar)) === 0, timeoutMs, `no gids of ${sidecar} left in pg_prepared_xacts and XA RECOVER`);

  test("kill -9 after beginDistributed resolved: after restart both databases still hold the branches, and commit finishes them", async () => {
    const id = sidecarIdFor("recPrep");
    const sc = await startSidecar(id);
    let dtx = await connect({ socket: sc.socket });
    await dtx.beginDistributed("rec-prepared", async (tx) => {
      await tx.put("orders/10", 10);
      await tx.sql("orders")`INSERT INTO ${tx.sql("orders")(orders)} (id, sku) VALUES (${10}, ${"A"})`;
      await tx.sql("stock")`INSERT INTO ${tx.sql("stock")(stock)} (id, qty) VALUES (${10}, ${1})`;
    });
    await sc.kill9();
    dtx.close();
    await sc.start();
    expect(await held(id)).toBe(2); // prepared waits for its decision, across the restart
    dtx = await connect({ socket: sc.socket });
    expect((await dtx.status("rec-prepared")).state).toBe("prepared");
    await dtx.commitDistributed("rec-prepared");
    await noGidsLeft(id);
    expect(await rows(10)).toEqual({ pg: 1, my: 1 });
    expect(await dtx.get("orders/10")).toBe(10);
    dtx.close();
  });

  test("kill -9 after the commit decision, before the databases could be finished: after restart the decision is applied", async () => {
    const id = sidecarIdFor("recDecided");
    const pgProxy = new TcpProxy("127.0.0.1", Number(new URL(pgUrl).port || 5432)).start();
    const myProxy = new TcpProxy("127.0.0.1", Number(new URL(mysqlUrl).port || 3306)).start();
    try {
      const via = (url: string, port: number) => {
        const u = new URL(url);
        u.port = String(port);
        return u.toString();
      };
      const sc = await startSidecar(id, [`orders=${via(pgUrl, pgProxy.port)}`, `stock=${via(mysqlUrl, myProxy.port)}`]);
      const dtx = await connect({ socket: sc.socket });
      await dtx.beginDistributed("rec-decided", async (tx) => {
        await tx.sql("orders")`INSERT INTO ${tx.sql("orders")(orders)} (id, sku) VALUES (${11}, ${"A"})`;
        await tx.sql("stock")`INSERT INTO ${tx.sql("stock")(stock)} (id, qty) VALUES (${11}, ${1})`;
      });
      // The databases become unreachable for the sidecar; the decision is still made and logged.
      pgProxy.stop();
      myProxy.stop();
      expect(await dtx.commitDistributed("rec-decided")).toMatchObject({ outcome: "committed" });
      expect(await held(id)).toBe(2);
      await sc.kill9();
      dtx.close();
      pgProxy.start();
      myProxy.start();
      await sc.start(); // reconciles before it reports ready
      await noGidsLeft(id);
      expect(await rows(11)).toEqual({ pg: 1, my: 1 });
    } finally {
      pgProxy.stop();
      myProxy.stop();
    }
  });

  test("kill -9 while the transaction is undecided (a joined branch prepared its SQL, the coordinator had not): after restart it is rolled back", async () => {
    const id = sidecarIdFor("recUndecided");
    const sc = await startSidecar(id);
    const a = await connect({ socket: sc.socket, reconnect: false });
    const b = await connect({ socket: sc.socket, reconnect: false });
    let joined!: () => void;
    const joinedP = new Promise<void>((r) => (joined = r));
    let release!: () => void;
    const stillWorking = new Promise<void>((r) => (release = r));
    const begun = a
      .beginDistributed("rec-undecided", async (tx) => {
        await b.join(tx.context, async (t) => {
          await t.sql("orders")`INSERT INTO ${t.sql("orders")(orders)} (id, sku) VALUES (${12}, ${"A"})`;
          await t.sql("stock")`INSERT INTO ${t.sql("stock")(stock)} (id, qty) VALUES (${12}, ${1})`;
        });
        joined();
        await stillWorking; // the coordinator's service is still working when the sidecar dies
      })
      .catch((e) => e);
    await joinedP;
    expect(await held(id)).toBe(2);
    await sc.kill9();
    release();
    expect(await begun).toBeInstanceOf(Error);
    a.close();
    b.close();
    await sc.start();
    await noGidsLeft(id);
    expect(await rows(12)).toEqual({ pg: 0, my: 0 });
  });

  test("a service killed -9 after preparing its SQL branches, before telling its sidecar: they are rolled back within the orphan bound", async () => {
    const id = sidecarIdFor("recOrphan");
    const sc = await startSidecar(id);
    const service = Bun.spawn([process.execPath, resolve(import.meta.dir, "../fixtures/orphan-service.ts"), sc.socket, "rec-orphan", orders, stock], {
      stdout: "pipe",
      stderr: "inherit",
    });
    try {
      const reader = service.stdout.getReader();
      let out = "";
      while (!out.includes("\n")) {
        const { value, done } = await reader.read();
        if (done) throw new Error(`the orphan service exited early: ${out}`);
        out += new TextDecoder().decode(value);
      }
      const { prepared } = JSON.parse(out) as { prepared: string[] };
      const before = await admin.gids(id);
      expect([...before.pg, ...before.my].sort()).toEqual([...prepared].sort());
      service.kill(9);
      await service.exited;
      await noGidsLeft(id, orphanMs + reconcileMs + 3_000);
      expect(await rows(1)).toEqual({ pg: 0, my: 0 });
    } finally {
      service.kill(9);
    }
  });

  test("a prepared gid this sidecar owns but has no record of is rolled back only after the orphan bound; another sidecar's gid is never touched", async () => {
    const id = sidecarIdFor("recGhost");
    const foreign = sidecarIdFor("recForeign");
    for (const owner of [id, foreign]) {
      await admin.preparePg(`dtx:${owner}:zz00.1:orders:ghost`, orders, owner === id ? 20 : 21);
      await admin.prepareMy(`dtx:${owner}:zz00.1:stock:ghost`, stock, owner === id ? 20 : 21);
    }
    const created = Date.now();
    await startSidecar(id);
    await noGidsLeft(id, orphanMs + 10_000);
    expect(Date.now() - created).toBeGreaterThanOrEqual(orphanMs);
    expect(await held(foreign)).toBe(2);
    expect(await rows(20)).toEqual({ pg: 0, my: 0 });
  });
});
