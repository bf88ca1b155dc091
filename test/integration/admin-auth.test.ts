// The transaction API beyond loopback (DESIGN §3): /v1/… answers only with the
// admin bearer token; health, readiness, metrics, the dashboard's page and the
// federation endpoint stay open. Real sidecar processes throughout.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { connect } from "../../client/index.ts";
import { freePorts, waitForLinks } from "../helpers/federation.ts";
import { SidecarProcess, tempDir, waitFor } from "../helpers/sidecar-process.ts";

const dir = tempDir("dtx-admin-");
const secretFile = join(dir, "secret");
const tokenFile = join(dir, "admin-token");
const token = "admin-token-0123456789abcdef";
writeFileSync(secretFile, "admin-test-federation-secret\n");
writeFileSync(tokenFile, `${token}\n`);

const [portGuarded, portPeer] = freePorts(2);
/** Beyond loopback, with a token: the pod's configuration. */
let guarded: SidecarProcess;
/** Beyond loopback, without a token. */
let closed: SidecarProcess;
/** On loopback, with a token file (enforced there too). */
let loopbackWithToken: SidecarProcess;
/** On loopback without a token, a peer of `guarded`. */
let peer: SidecarProcess;

const get = (sc: SidecarProcess, path: string, authorization?: string) =>
  fetch(`${sc.baseUrl}${path}`, { headers: authorization ? { authorization } : {} });
const bearer = (t: string) => `Bearer ${t}`;
const errorOf = async (res: Response) => (await res.json()) as { code: string; message: string };

beforeAll(async () => {
  guarded = new SidecarProcess({ id: "guarded", port: portGuarded, secretFile, peers: [`peer=ws://127.0.0.1:${portPeer}`], extraArgs: ["--host", "0.0.0.0", "--admin-token-file", tokenFile] });
  closed = new SidecarProcess({ id: "closed", secretFile, extraArgs: ["--host", "0.0.0.0"] });
  loopbackWithToken = new SidecarProcess({ id: "lo-token", extraArgs: ["--admin-token-file", tokenFile] });
  peer = new SidecarProcess({ id: "peer", port: portPeer, secretFile, peers: [`guarded=ws://127.0.0.1:${portGuarded}`] });
  await Promise.all([guarded.start(), closed.start(), loopbackWithToken.start(), peer.start()]);
  const dtx = await connect({ socket: guarded.socket });
  await dtx.beginDistributed("order-1", (tx) => tx.put("orders/1", 1));
  await dtx.commitDistributed("order-1");
  dtx.close();
});
afterAll(async () => {
  await Promise.all([guarded, closed, loopbackWithToken, peer].map((sc) => sc?.cleanup()));
  rmSync(dir, { recursive: true, force: true });
});

const protectedPaths = ["/v1/transactions", "/v1/transactions/order-1", "/v1/peers", "/v1/sidecar"];

describe("a sidecar beyond loopback with --admin-token-file", () => {
  for (const path of protectedPaths) {
    test(`GET ${path} without the token is refused with 401 UNAUTHORIZED saying what to send`, async () => {
      const res = await get(guarded, path);
      expect(res.status).toBe(401);
      expect(res.headers.get("www-authenticate")).toStartWith("Bearer");
      const body = await errorOf(res);
      expect(body.code).toBe("UNAUTHORIZED");
      expect(body.message).toContain("Authorization: Bearer <token>");
      expect(body.message).toContain("--admin-token-file");
    });

    test(`GET ${path} with the token is answered 200`, async () => {
      const res = await get(guarded, path, bearer(token));
      expect(res.status).toBe(200);
      await res.json();
    });
  }

  test("a wrong token, a token prefix, and another scheme are refused", async () => {
    for (const authorization of [bearer("admin-token-0123456789abcdeX"), bearer(token.slice(0, -1)), bearer(`${token}x`), `Basic ${btoa(`admin:${token}`)}`, token]) {
      const res = await get(guarded, "/v1/transactions", authorization);
      expect(res.status).toBe(401);
      expect((await errorOf(res)).code).toBe("UNAUTHORIZED");
    }
    const wrong = await errorOf(await get(guarded, "/v1/transactions", bearer("x".repeat(token.length))));
    expect(wrong.message).toContain("does not match");
  });

  test("an unknown path under /v1/ is behind the token too (closed by default)", async () => {
    expect((await get(guarded, "/v1/nothing-here")).status).toBe(401);
    expect((await get(guarded, "/v1/nothing-here", bearer(token))).status).toBe(404);
  });

  test("the bearer scheme is case-insensitive", async () => {
    expect((await get(guarded, "/v1/sidecar", `bearer ${token}`)).status).toBe(200);
  });

  test("GET /v1/sidecar answers the sidecar's id, version and readiness", async () => {
    expect(await (await get(guarded, "/v1/sidecar", bearer(token))).json()).toEqual({ id: "guarded", version: expect.stringMatching(/^\d+\.\d+\.\d+/), ready: true });
  });

  test("health, readiness, metrics and the dashboard's page stay open", async () => {
    expect((await get(guarded, "/healthz")).status).toBe(200);
    expect((await get(guarded, "/readyz")).status).toBe(200);
    const metrics = await get(guarded, "/metrics");
    expect(metrics.status).toBe(200);
    expect(await metrics.text()).toContain("dtx_");
    const page = await get(guarded, "/");
    expect(page.status).toBe(200);
    expect(page.headers.get("content-type")).toContain("text/html");
  });

  test("the federation endpoint stays open to peers, who authenticate with the shared secret", async () => {
    await waitForLinks(peer, ["guarded"]);
    await waitFor(
      async () => ((await (await get(guarded, "/v1/peers", bearer(token))).json()) as { id: string; state: string }[]).some((p) => p.id === "peer" && p.state === "up"),
      10_000,
      "guarded sees its peer up",
    );
  });
});

describe("a sidecar beyond loopback without --admin-token-file", () => {
  test("answers every API endpoint 401, saying to start it with --admin-token-file, whatever token is sent", async () => {
    for (const path of protectedPaths) {
      for (const authorization of [undefined, bearer(token)]) {
        const res = await get(closed, path, authorization);
        expect(res.status).toBe(401);
        const body = await errorOf(res);
        expect(body.code).toBe("UNAUTHORIZED");
        expect(body.message).toContain("restart it with --admin-token-file");
      }
    }
  });

  test("keeps health, readiness and metrics open", async () => {
    for (const path of ["/healthz", "/readyz", "/metrics"]) expect((await get(closed, path)).status).toBe(200);
  });
});

describe("on loopback", () => {
  test("without a token file the API answers without a token, as before", async () => {
    for (const path of ["/v1/transactions", "/v1/peers", "/v1/sidecar"]) expect((await get(peer, path)).status).toBe(200);
  });

  test("a token file given is enforced too", async () => {
    expect((await get(loopbackWithToken, "/v1/transactions")).status).toBe(401);
    expect((await get(loopbackWithToken, "/v1/transactions", bearer("y".repeat(token.length)))).status).toBe(401);
    expect((await get(loopbackWithToken, "/v1/transactions", bearer(token))).status).toBe(200);
  });
});

describe("start-up", () => {
  const start = (tokenPath: string) => {
    const d = tempDir("dtx-admin-start-");
    const run = Bun.spawnSync([process.execPath, "sidecar/cli.ts", "sidecar", "--id", "t", "--port", "0", "--socket", join(d, "s.sock"), "--data", join(d, "data"), "--admin-token-file", tokenPath], {
      cwd: join(import.meta.dir, "../.."),
    });
    rmSync(d, { recursive: true, force: true });
    return { code: run.exitCode, stderr: run.stderr.toString() };
  };

  test("a token file that does not exist is refused at start-up, naming the flag", () => {
    const r = start(join(dir, "missing"));
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`--admin-token-file ${join(dir, "missing")} does not exist`);
  });

  test("a token shorter than 16 characters is refused at start-up", () => {
    const short = join(dir, "short");
    writeFileSync(short, "abc\n");
    const r = start(short);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("holds 3 characters; put a token of at least 16");
  });

  test("an empty token file is refused at start-up", () => {
    const empty = join(dir, "empty");
    writeFileSync(empty, "\n");
    const r = start(empty);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("holds 0 characters");
  });
});
