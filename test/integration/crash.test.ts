// kill -9 on a real sidecar: nothing acknowledged is lost, prepared stays prepared.
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { connect } from "../../client/index.ts";
import { beginAndHang } from "../helpers/hanging.ts";
import { SidecarProcess } from "../helpers/sidecar-process.ts";

const started: SidecarProcess[] = [];
afterAll(async () => {
  for (const s of started) await s.cleanup();
});
async function sidecar(id: string): Promise<SidecarProcess> {
  const s = await new SidecarProcess({ id }).start();
  started.push(s);
  return s;
}

describe("crash safety", () => {
  test("kill -9 right after beginDistributed resolves: after restart it is prepared and commit makes the write visible", async () => {
    const sc = await sidecar("crash-prepared");
    let dtx = await connect({ socket: sc.socket });
    await dtx.beginDistributed("order-42", async (tx) => {
      await tx.put("orders/42", { sku: "A", qty: 1 });
    });
    await sc.kill9();
    dtx.close();
    await sc.start();
    dtx = await connect({ socket: sc.socket });
    expect((await dtx.status("order-42")).state).toBe("prepared");
    expect(await dtx.get("orders/42")).toBeUndefined();
    expect(await dtx.commitDistributed("order-42")).toMatchObject({ outcome: "committed" });
    expect(await dtx.get("orders/42")).toEqual({ sku: "A", qty: 1 });
    dtx.close();
  });

  test("a prepared transaction keeps its locks across a restart", async () => {
    const sc = await sidecar("crash-locks");
    let dtx = await connect({ socket: sc.socket });
    await dtx.beginDistributed("holder", async (tx) => tx.put("locked/k", 1));
    await sc.restart();
    dtx.close();
    dtx = await connect({ socket: sc.socket });
    const err = await dtx.beginDistributed("contender", async (tx) => tx.put("locked/k", 2)).catch((e) => e);
    expect(err.code).toBe("TRANSACTION_CONFLICT");
    await dtx.rollbackDistributed("holder");
    await dtx.beginDistributed("contender-2", async (tx) => tx.put("locked/k", 3));
    await dtx.commitDistributed("contender-2");
    expect(await dtx.get("locked/k")).toBe(3);
    dtx.close();
  });

  test("kill -9 right after commitDistributed resolves, 20 times: every committed write survives", async () => {
    const sc = await sidecar("crash-commit");
    for (let i = 0; i < 20; i++) {
      const dtx = await connect({ socket: sc.socket });
      await dtx.beginDistributed(`c-${i}`, async (tx) => tx.put(`committed/${i}`, i));
      await dtx.commitDistributed(`c-${i}`);
      await sc.kill9();
      dtx.close();
      await sc.start();
    }
    const dtx = await connect({ socket: sc.socket });
    for (let i = 0; i < 20; i++) {
      expect(await dtx.get(`committed/${i}`)).toBe(i);
      expect((await dtx.status(`c-${i}`)).state).toBe("committed");
    }
    dtx.close();
  }, 60_000);

  test("a transaction not yet prepared when the sidecar dies is rolled back (presumed abort)", async () => {
    const sc = await sidecar("crash-active");
    let dtx = await connect({ socket: sc.socket });
    await beginAndHang(dtx, "unprepared", "unprepared/k", 1);
    await sc.restart();
    dtx.close();
    dtx = await connect({ socket: sc.socket });
    const err = await dtx.status("unprepared").catch((e) => e);
    expect(err.code).toBe("NOT_FOUND");
    await dtx.beginDistributed("unprepared", async (tx) => tx.put("unprepared/k", 2));
    await dtx.commitDistributed("unprepared");
    expect(await dtx.get("unprepared/k")).toBe(2);
    dtx.close();
  });
});

describe("one sidecar per socket and data directory", () => {
  test("after kill -9 the sidecar restarts on the same socket path, replacing the stale socket file", async () => {
    const sc = await sidecar("stale-socket");
    await sc.kill9();
    expect(existsSync(sc.socket)).toBe(true);
    await sc.start();
    const dtx = await connect({ socket: sc.socket });
    expect(await dtx.get("nothing")).toBeUndefined();
    dtx.close();
  });

  test("a second sidecar on a data directory or socket a live one holds is refused with a clear error", async () => {
    const first = await sidecar("holder");
    // The same id: under another one the data directory's id file refuses it first (cli.test.ts).
    const sameData = new SidecarProcess({ id: "holder", dir: first.dir });
    (sameData as { socket: string }).socket = `${first.dir}/other.sock`;
    const err1 = await sameData.start(5_000).catch((e) => e);
    expect(String(err1)).toContain("is held by a running sidecar");

    const sameSocket = new SidecarProcess({ id: "third" });
    (sameSocket as { socket: string }).socket = first.socket;
    started.push(sameSocket);
    const err2 = await sameSocket.start(5_000).catch((e) => e);
    expect(String(err2)).toContain("is in use by a running sidecar");

    const dtx = await connect({ socket: first.socket });
    expect(await dtx.get("still-up")).toBeUndefined();
    dtx.close();
  });
});
