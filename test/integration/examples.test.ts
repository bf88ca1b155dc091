// The examples run against real sidecars and do what they say.
import { afterAll, expect, test } from "bun:test";
import { resolve } from "node:path";
import { connect, type Client } from "../../client/index.ts";
import { freePorts } from "../helpers/federation.ts";
import { SidecarProcess } from "../helpers/sidecar-process.ts";

const root = resolve(import.meta.dir, "../..");
const sidecars: SidecarProcess[] = [];
const clients: Client[] = [];
afterAll(async () => {
  for (const c of clients) c.close();
  await Promise.all(sidecars.map((s) => s.cleanup()));
});

test("examples/order-saga.ts: the good order commits, the oversized one is compensated in full", async () => {
  const sc = await new SidecarProcess({ id: "examples" }).start();
  sidecars.push(sc);
  const run = Bun.spawnSync([process.execPath, "examples/order-saga.ts"], { cwd: root, env: { ...process.env, DTX_SOCKET: sc.socket } });
  const out = run.stdout.toString();
  expect(run.stderr.toString()).toBe("");
  expect(run.exitCode).toBe(0);
  expect(out).toContain("order 123: saga committed payment_service=executed inventory_service=executed shipping_service=executed");
  expect(out).toContain("order 124: saga compensated");
  expect(out).toContain("payment_service=compensated inventory_service=compensated shipping_service=failed");
  expect(out).toContain("charged: [123] reserved: [123] shipped: [123]");
}, 30_000);

test("examples/order-saga-federated.ts: across three sidecars the good order commits; the oversized one fails at shipping, and B's payment and C's reservation are compensated", async () => {
  // The sidecars its header says to start: A lists B and C as peers, each of them lists A.
  const [pa, pb, pc] = freePorts(3);
  const ws = (port: number) => `ws://127.0.0.1:${port}`;
  const [A, B, C] = [
    new SidecarProcess({ id: "A", port: pa, peers: [`B=${ws(pb)}`, `C=${ws(pc)}`] }),
    new SidecarProcess({ id: "B", port: pb, peers: [`A=${ws(pa)}`] }),
    new SidecarProcess({ id: "C", port: pc, peers: [`A=${ws(pa)}`] }),
  ];
  sidecars.push(A, B, C);
  await Promise.all([A.start(), B.start(), C.start()]);
  const env = { ...process.env, DTX_SOCKET_A: A.socket, DTX_SOCKET_B: B.socket, DTX_SOCKET_C: C.socket };
  const run = Bun.spawnSync([process.execPath, "examples/order-saga-federated.ts"], { cwd: root, env });
  const out = run.stdout.toString();
  expect(run.stderr.toString()).toBe("");
  expect(run.exitCode).toBe(0);
  const good = /^order 123 \((order-123-\w+)\): saga committed payment_service=executed@B inventory_service=executed@C shipping_service=executed@A$/m.exec(out);
  const bad = /^order 124 \((order-124-\w+)\): saga compensated \(shipping_service failed: no courier takes oversized parcels\) payment_service=compensated@B inventory_service=compensated@C shipping_service=failed@A$/m.exec(out);
  expect({ out, good: !!good, bad: !!bad }).toEqual({ out, good: true, bad: true });
  // The services' own ledgers, as the example prints them: 123 charged and shipped, 124 charged and refunded.
  expect(out).toContain("payments on B: charged [123] refunded [124]");
  expect(out).toContain("shipping on A: shipped [123]");

  // Each sidecar, asked on its own socket, holds its participant's effect and answers for its part.
  const [a, b, c] = await Promise.all([A, B, C].map((s) => connect({ socket: s.socket })));
  clients.push(a, b, c);
  expect(await c.get("reservations/123")).toEqual({ sku: "A", qty: 1 });
  expect(await c.get("reservations/124")).toBeUndefined(); // its before-image: no reservation
  const [goodName, badName] = [good![1], bad![1]];
  expect(await a.status(goodName)).toMatchObject({ state: "committed", protocol: "saga" });
  expect(await b.status(badName)).toMatchObject({ coordinator: "A", participants: [{ participantId: "payment_service", sidecar: "B", status: "compensated" }] });
  const onC = await c.status(badName);
  expect(onC).toMatchObject({ coordinator: "A", state: "compensated", participants: [{ participantId: "inventory_service", status: "compensated" }] });
  expect((onC.participants[0] as { steps: { op: string; outcome: string }[] }).steps).toMatchObject([
    { op: "execute", outcome: "ok" },
    { op: "compensate", outcome: "ok" },
  ]);
}, 60_000);
