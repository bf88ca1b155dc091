// The examples run against a real sidecar and do what they say.
import { afterAll, expect, test } from "bun:test";
import { resolve } from "node:path";
import { SidecarProcess } from "../helpers/sidecar-process.ts";

const root = resolve(import.meta.dir, "../..");
let sc: SidecarProcess | undefined;
afterAll(async () => sc?.cleanup());

test("examples/order-saga.ts: the good order commits, the oversized one is compensated in full", async () => {
  sc = await new SidecarProcess({ id: "examples" }).start();
  const run = Bun.spawnSync([process.execPath, "examples/order-saga.ts"], { cwd: root, env: { ...process.env, DTX_SOCKET: sc.socket } });
  const out = run.stdout.toString();
  expect(run.stderr.toString()).toBe("");
  expect(run.exitCode).toBe(0);
  expect(out).toContain("order 123: saga committed payment_service=executed inventory_service=executed shipping_service=executed");
  expect(out).toContain("order 124: saga compensated");
  expect(out).toContain("payment_service=compensated inventory_service=compensated shipping_service=failed");
  expect(out).toContain("charged: [123] reserved: [123] shipped: [123]");
}, 30_000);
