// A client that only serves callbacks (dtx.register and nothing else) dials its sidecar again by itself
// after the sidecar restarts, and registers again; close() ends that. Real sidecar processes, kill -9.
import { afterAll, expect, test } from "bun:test";
import { resolve } from "node:path";
import { type Client, connect } from "../../client/index.ts";
import { SidecarProcess, waitFor } from "../helpers/sidecar-process.ts";

const sidecars: SidecarProcess[] = [];
const clients: Client[] = [];
afterAll(async () => {
  for (const c of clients) c.close();
  await Promise.all(sidecars.map((s) => s.cleanup()));
});

async function sidecar(id: string): Promise<SidecarProcess> {
  const sc = new SidecarProcess({ id });
  sidecars.push(sc);
  return sc.start();
}

async function client(socket: string): Promise<Client> {
  const c = await connect({ socket });
  clients.push(c);
  return c;
}

/** An orchestrated Saga on `sc` with one step, the service `svc`; retried until the service has registered again. */
async function sagaOnSvc(sc: SidecarProcess, name: string) {
  const t = await (await client(sc.socket)).createTransaction({ name, consistency: "eventual" });
  // Until the service has registered again its step is not reached, and retried: a bound, not a sleep.
  await t.addParticipant({ participantId: "svc", endpoint: "service:svc", retryPolicy: { attempts: 100, backoffMs: 20, maxBackoffMs: 100, budgetMs: 10_000 } });
  return t.execute();
}

test("a service whose sidecar is killed -9 and restarted serves the next callback without calling anything itself", async () => {
  const sc = await sidecar("redial");
  const service = await client(sc.socket);
  const served: string[] = [];
  await service.register("svc", { action: (call) => void served.push(call.idempotencyKey), compensate: () => {} });
  await sc.kill9();
  await sc.start();
  // From here on the service's client is never called: only the orchestrator's is.
  const r = await sagaOnSvc(sc, "after-restart");
  expect(r).toMatchObject({ outcome: "committed", participants: [{ participantId: "svc", status: "executed" }] });
  expect(served).toEqual(["after-restart/svc/execute"]);
}, 30_000);

test("close() ends the redial: a service process that outlived its sidecar's kill -9 exits once it calls close", async () => {
  const sc = await sidecar("redial-close");
  const child = Bun.spawn([process.execPath, resolve(import.meta.dir, "../fixtures/serving-service.ts"), sc.socket], { stdin: "pipe", stdout: "pipe", stderr: "pipe" });
  let out = "";
  void (async () => {
    for await (const chunk of child.stdout) out += new TextDecoder().decode(chunk);
  })();
  try {
    await waitFor(() => out.includes("registered"), 10_000, "the service to register");
    // The service process stays up while its sidecar is away, and serves again once it is back...
    await sc.kill9();
    await sc.start();
    expect((await sagaOnSvc(sc, "served-by-child")).outcome).toBe("committed");
    expect(out).toContain("served served-by-child/svc/execute");
    // ...and is dialing again, the sidecar gone for good, when it closes its client: then nothing keeps it alive.
    await sc.kill9();
    child.stdin.write("close\n");
    await child.stdin.end();
    await waitFor(() => child.exitCode !== null, 5_000, "the service process to exit after close()");
    expect(child.exitCode).toBe(0);
    expect(await new Response(child.stderr).text()).toBe("");
  } finally {
    child.kill(9);
  }
}, 30_000);
