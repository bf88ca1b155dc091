// The README's example, pasted into a file in the project, runs against a sidecar.
import { afterAll, expect, test } from "bun:test";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { SidecarProcess } from "../helpers/sidecar-process.ts";

const root = resolve(import.meta.dir, "../..");
let sc: SidecarProcess | undefined;
const file = join(root, ".dtx", `readme-example-${process.pid}.ts`);
afterAll(async () => {
  rmSync(file, { force: true });
  await sc?.cleanup();
});

test("the README example runs against a sidecar and commits", async () => {
  const readme = readFileSync(join(root, "README.md"), "utf8");
  const example = /## Example[\s\S]*?```ts\n([\s\S]*?)```/.exec(readme)?.[1];
  expect(example).toBeDefined();
  sc = await new SidecarProcess({ id: "readme" }).start();
  mkdirSync(join(root, ".dtx"), { recursive: true });
  writeFileSync(file, example!);
  const run = Bun.spawnSync([process.execPath, file], { cwd: root, env: { ...process.env, DTX_SOCKET: sc.socket } });
  const out = run.stdout.toString();
  expect(run.stderr.toString()).toBe("");
  expect(run.exitCode).toBe(0);
  expect(out).toContain("prepared");
  expect(out).toContain('outcome: "committed"');
  expect(out).toContain('sku: "A"');
}, 30_000);
