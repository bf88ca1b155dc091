// `dtx bench` works and its JSON has every field (no timing assertions here:
// performance claims are made by a full `npm run bench`, not by tests).
import { expect, test } from "bun:test";
import { resolve } from "node:path";

const root = resolve(import.meta.dir, "../..");

test("dtx bench --json runs briefly and reports every figure", async () => {
  const run = Bun.spawn([process.execPath, "sidecar/cli.ts", "bench", "--json", "--duration", "0.3", "--warmup", "0.3", "--concurrency", "1,4"], { cwd: root, stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(run.stdout).text(), new Response(run.stderr).text(), run.exited]);
  expect(code).toBe(0);
  expect(err).toContain("local: one sidecar"); // progress goes to stderr
  const r = JSON.parse(out);
  for (const k of ["fsyncP50Ms", "udsRoundTripP50Ms", "wsRoundTripP50Ms"]) expect(r.floor[k]).toBeGreaterThan(0);
  for (const path of ["local", "cross", "saga", "sagaCross"]) {
    expect(r[path].c1.p50).toBeGreaterThan(0);
    expect(r[path].c1.p99).toBeGreaterThan(0);
    expect(Object.keys(r[path].perSec)).toEqual(["1", "4"]);
    expect(r[path].best.perSec).toBeGreaterThan(0);
    expect(r[path].fsyncP50Ms).toBeGreaterThan(0);
    expect(r.floor.fsyncP50MsBesidePath[path]).toBe(r[path].fsyncP50Ms);
  }
  expect("perSecC64" in r.baseline || "skipped" in r.baseline).toBe(true);
  if (process.env.CI === "true") expect(r.baseline.perSecC64).toBeGreaterThan(0); // PostgreSQL is prepared by .ci/run
  for (const k of ["rssIdleMb", "rssPeakMb", "startToReadyMs", "restartLargeLogMs"]) expect(r.footprint[k]).toBeGreaterThan(0);
  for (const k of ["localP50OverFloor", "crossP50OverFloor", "sagaP50OverFloor", "sagaCrossP50OverFloor", "localFloorMs", "crossFloorMs", "sagaFloorMs", "sagaCrossFloorMs"]) expect(r.ratios[k]).toBeGreaterThan(0);
  expect(r.ratios.formulas.local).toContain("fsync");
  expect(r.ratios.formulas.sagaCross).toStartWith("10 x fsync + 6 x uds + 3 x ws");
  expect(err).toContain("saga-cross: three service participants, each on its own sidecar");
  expect(r.ratios.formulas.fsync).toContain("concurrency-1 run");
  expect(r.warmupS).toBe(0.3);
}, 180_000);
