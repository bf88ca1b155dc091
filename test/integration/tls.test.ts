// Optional TLS for federation: sidecars serve wss:// and dial peers trusting --tls-ca.
import { afterAll, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { connect } from "../../client/index.ts";
import { freePorts } from "../helpers/federation.ts";
import { SidecarProcess, tempDir, waitFor } from "../helpers/sidecar-process.ts";

const dir = tempDir("dtx-tls-");
const cert = join(dir, "cert.pem");
const key = join(dir, "key.pem");
const secretFile = join(dir, "secret");
writeFileSync(secretFile, "tls-test-secret\n");
const made = spawnSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert]);
const started: SidecarProcess[] = [];
afterAll(async () => {
  for (const s of started) await s.cleanup();
});

(made.status === 0 ? test : test.skip)("two sidecars federate over wss:// with a CA they trust, and a transaction commits across them", async () => {
  const [pa, pb] = freePorts(2);
  const tlsArgs = ["--tls-cert", cert, "--tls-key", key, "--tls-ca", cert];
  const A = new SidecarProcess({ id: "A", port: pa, secretFile, tls: true, peers: [`B=wss://127.0.0.1:${pb}`], extraArgs: tlsArgs });
  const B = new SidecarProcess({ id: "B", port: pb, secretFile, tls: true, peers: [`A=wss://127.0.0.1:${pa}`], extraArgs: tlsArgs });
  started.push(A, B);
  await Promise.all([A.start(), B.start()]);
  const peers = async (s: SidecarProcess) => (await fetch(`${s.baseUrl}/v1/peers`, { tls: { rejectUnauthorized: false } } as RequestInit)).json();
  const up = async () => ((await peers(A)) as { id: string; state: string }[]).some((p) => p.id === "B" && p.state === "up");
  await waitFor(up, 10_000, "A's wss:// link to B");

  const a = await connect({ socket: A.socket });
  const b = await connect({ socket: B.socket });
  await a.beginDistributed("tls-1", async (tx) => {
    await tx.put("tls/a", 1);
    await b.join(tx.context, (t) => t.put("tls/b", 2));
  });
  await a.commitDistributed("tls-1");
  expect(await a.get("tls/a")).toBe(1);
  expect(await b.get("tls/b")).toBe(2);
  // Plain HTTP to a TLS sidecar does not get an answer.
  expect(await fetch(`http://127.0.0.1:${pa}/healthz`).then((r) => r.status, () => "refused")).not.toBe(200);
  a.close();
  b.close();
}, 60_000);
