// dtx/client on Node.js and on Bun, one API: the README's Node.js example and a cross-sidecar join run
// as a service would run them, under `node` (the built client in dist/lib, through package.json's
// exports) and under Bun (its TypeScript sources); and a Node.js service's TypeScript compiles
// against the published types.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { type Client, connect } from "../../client/index.ts";
import { ensureClientBuild } from "../../scripts/build-client.ts";
import { runConsumer, runScript, runtimes } from "../helpers/consumer.ts";
import { freePorts, waitForLinks } from "../helpers/federation.ts";
import { SidecarProcess, tempDir } from "../helpers/sidecar-process.ts";

const root = resolve(import.meta.dir, "../..");
// Inside the project, as the README says, so "dtx/client" resolves by the package's own name.
const example = join(root, ".dtx", `readme-node-example-${process.pid}.mjs`);
const started: SidecarProcess[] = [];
const clients: Client[] = [];
let A: SidecarProcess;
let B: SidecarProcess;

beforeAll(async () => {
  const secretFile = join(tempDir("dtx-runtimes-"), "secret");
  writeFileSync(secretFile, "runtimes-test-secret\n");
  const [portA, portB] = freePorts(2);
  A = new SidecarProcess({ id: "rtA", port: portA, peers: [`rtB=ws://127.0.0.1:${portB}`], secretFile });
  B = new SidecarProcess({ id: "rtB", port: portB, peers: [`rtA=ws://127.0.0.1:${portA}`], secretFile });
  started.push(A, B);
  await Promise.all([A.start(), B.start()]);
  await Promise.all([waitForLinks(A, ["rtB"]), waitForLinks(B, ["rtA"])]);
  const readme = readFileSync(join(root, "README.md"), "utf8");
  const code = /### On Node\.js[\s\S]*?```js\n([\s\S]*?)```/.exec(readme)?.[1];
  if (!code) throw new Error("README.md has no ```js block under ### On Node.js");
  mkdirSync(join(root, ".dtx"), { recursive: true });
  writeFileSync(example, code);
});

afterAll(async () => {
  rmSync(example, { force: true });
  for (const c of clients) c.close();
  for (const s of started) await s.cleanup();
});

async function client(sc: SidecarProcess): Promise<Client> {
  const c = await connect({ socket: sc.socket });
  clients.push(c);
  return c;
}

for (const rt of runtimes) {
  describe(`on ${rt.name}`, () => {
    test("the README's Node.js example begins, puts, gets and commits", async () => {
      const { code, stdout, stderr } = await runScript(rt, example, [], { DTX_SOCKET: A.socket });
      expect(stderr).toBe("");
      expect(code).toBe(0);
      expect(stdout.split("\n")[0]).toBe("prepared");
      expect(stdout).toMatch(/outcome: ['"]committed['"]/);
      expect(stdout).toMatch(/sku: ['"]A['"]/);
      // Names are reusable once finished, so each runtime's run commits order-43 again.
      expect(await (await client(A)).get("orders/43")).toEqual({ sku: "A", qty: 1 });
    });

    test("a transaction begun through sidecar A and joined through sidecar B commits on both; a joined callback that throws rolls it back", async () => {
      const name = `rt-join-${rt.name}`;
      const result = await runConsumer(rt, "join.mjs", [A.socket, B.socket, name], {});
      expect(result).toEqual({
        prepared: "prepared",
        committed: { name, outcome: "committed", protocol: "2pc", pending: [] },
        refused: { rejected: true, message: "B says no" },
        refusedState: "rolled_back",
      });
      expect(await (await client(A)).get(`a/${name}`)).toBe("from A");
      expect(await (await client(B)).get(`b/${name}`)).toBe("from B");
      expect(await (await client(A)).get(`a/${name}-no`)).toBeUndefined();
    });
  });
}

test("a Node.js service that never imports dtx/kysely runs without Kysely installed", () => {
  ensureClientBuild();
  const hook = join(root, "test/consumer/without-kysely.mjs");
  const node = (args: string[]) => Bun.spawnSync(["node", "--import", hook, ...args], { cwd: root, env: { ...process.env, DTX_SOCKET: A.socket }, timeout: 20_000 });
  const withoutKysely = node([example]);
  expect(withoutKysely.stderr.toString()).toBe("");
  expect(withoutKysely.exitCode).toBe(0);
  // The hook bites: dtx/kysely itself cannot load there.
  const kysely = node(["--input-type=module", "-e", 'await import("dtx/kysely")']);
  expect(kysely.exitCode).not.toBe(0);
  expect(kysely.stderr.toString()).toContain("kysely is not installed");
}, 30_000);

test("a Node.js service's TypeScript compiles against dtx/client's and dtx/kysely's published types (tsc --noEmit)", () => {
  ensureClientBuild();
  const tsc = Bun.spawnSync([process.execPath, join(root, "node_modules/typescript/bin/tsc"), "-p", join(root, "test/consumer/tsconfig.json")], { cwd: root });
  expect(tsc.stdout.toString() + tsc.stderr.toString()).toBe("");
  expect(tsc.exitCode).toBe(0);
}, 30_000);
