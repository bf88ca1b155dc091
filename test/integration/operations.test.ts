// Operating a sidecar: /metrics, SIGTERM drain, and a full disk.
import { afterAll, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { mkdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { connect } from "../../client/index.ts";
import { HttpParticipant } from "../helpers/http-participant.ts";
import { beginAndHang } from "../helpers/hanging.ts";
import { SidecarProcess, tempDir, waitFor } from "../helpers/sidecar-process.ts";

const started: SidecarProcess[] = [];
afterAll(async () => {
  for (const s of started) await s.cleanup();
});
async function sidecar(id: string, opts: Partial<ConstructorParameters<typeof SidecarProcess>[0]> = {}) {
  const s = await new SidecarProcess({ id, ...opts }).start();
  started.push(s);
  return s;
}

/** Parse Prometheus text exposition format strictly enough to catch malformed output. */
function parsePrometheus(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  const types = new Map<string, string>();
  for (const line of text.split("\n")) {
    if (line === "") continue;
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$/.exec(line);
    if (meta) {
      if (meta[1] === "TYPE") {
        expect(["counter", "gauge", "histogram", "summary", "untyped"]).toContain(meta[3]);
        types.set(meta[2], meta[3]);
      }
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (-?[0-9.eE+-]+|NaN|\+Inf|-Inf)$/.exec(line);
    if (!m) throw new Error(`not Prometheus text: ${JSON.stringify(line)}`);
    const family = m[1].replace(/_(bucket|sum|count)$/, "");
    expect(types.has(m[1]) || types.has(family)).toBe(true);
    samples.set(`${m[1]}${m[2] ?? ""}`, Number(m[3]));
  }
  return samples;
}

describe("/metrics", () => {
  test("parses as Prometheus text and its counters match the transactions run", async () => {
    const sc = await sidecar("metrics");
    const dtx = await connect({ socket: sc.socket });
    for (let i = 0; i < 7; i++) {
      await dtx.beginDistributed(`m-c-${i}`, (tx) => tx.put(`m/${i}`, i));
      await dtx.commitDistributed(`m-c-${i}`);
    }
    for (let i = 0; i < 3; i++) {
      await dtx.beginDistributed(`m-r-${i}`, (tx) => tx.put(`m/r/${i}`, i));
      await dtx.rollbackDistributed(`m-r-${i}`);
    }
    await dtx.beginDistributed("m-prepared", (tx) => tx.put("m/p", 1));
    const p = new HttpParticipant("mp");
    const fail = new HttpParticipant("mf", { failExecute: true });
    const t = await dtx.createTransaction({ name: "m-saga", consistency: "eventual" });
    await t.addParticipant({ participantId: "mp", endpoint: p.endpoint });
    await t.addParticipant({ participantId: "mf", endpoint: fail.endpoint });
    expect((await t.execute()).outcome).toBe("compensated");
    p.stop();
    fail.stop();

    const res = await fetch(`http://127.0.0.1:${sc.port}/metrics`);
    expect(res.headers.get("content-type")).toContain("text/plain");
    const m = parsePrometheus(await res.text());
    expect(m.get('dtx_transactions_begun_total{kind="distributed",protocol="2pc"}')).toBe(11);
    expect(m.get('dtx_transactions_finished_total{outcome="committed",protocol="2pc"}')).toBe(7);
    expect(m.get('dtx_transactions_finished_total{outcome="rolled_back",protocol="2pc"}')).toBe(3);
    expect(m.get('dtx_transactions_begun_total{kind="orchestrated",protocol="saga"}')).toBe(1);
    expect(m.get('dtx_transactions_finished_total{outcome="compensated",protocol="orchestrated"}')).toBe(1);
    expect(m.get('dtx_compensations_total{outcome="ok"}')).toBe(1);
    expect(m.get('dtx_transactions{state="prepared"}')).toBe(1);
    expect(m.get("dtx_client_connections")).toBe(1);
    expect(m.get("dtx_in_doubt_branches")).toBe(1);
    expect(m.get('dtx_phase_ms_count{phase="prepare"}')).toBe(7 + 3 + 1); // everything that reached prepared
    expect(m.get('dtx_phase_ms_count{phase="total"}')).toBe(7 + 3);
    expect(m.get("dtx_wal_fsync_ms_count")).toBeGreaterThan(0);
    expect(m.get("dtx_wal_batch_appends_count")).toBeGreaterThan(0);
    expect(m.get('dtx_client_requests_total{op="commit"}')).toBe(7);
    dtx.close();
  });
});

describe("SIGTERM", () => {
  test("drains within a bound: not ready first, exit 0, prepared work parked durably, unprepared rolled back", async () => {
    const sc = await sidecar("drain");
    let dtx = await connect({ socket: sc.socket });
    await dtx.beginDistributed("parked", (tx) => tx.put("drain/parked", 1));
    await dtx.beginDistributed("done", (tx) => tx.put("drain/done", 1));
    await dtx.commitDistributed("done");
    await beginAndHang(dtx, "unprepared", "drain/unprepared", 1);
    const t0 = performance.now();
    sc.proc!.kill("SIGTERM");
    const code = await sc.proc!.exited;
    const ms = performance.now() - t0;
    sc.proc = undefined;
    expect(code).toBe(0);
    expect(ms).toBeLessThan(6_000);
    expect(sc.output).toContain('"msg":"draining"');
    expect(sc.output).toContain('"msg":"stopped"');
    dtx.close();
    await sc.start();
    dtx = await connect({ socket: sc.socket });
    expect((await dtx.status("parked")).state).toBe("prepared");
    expect(await dtx.get("drain/done")).toBe(1);
    expect(await dtx.status("unprepared").catch((e) => e.code)).toBe("NOT_FOUND");
    await dtx.commitDistributed("parked");
    expect(await dtx.get("drain/parked")).toBe(1);
    dtx.close();
  });

  test("once SIGTERM arrives, /readyz never answers ready again before the process exits", async () => {
    const sc = await sidecar("drain2");
    const dtx = await connect({ socket: sc.socket });
    sc.proc!.kill("SIGTERM");
    // A probe the sidecar answers before its event loop has run the signal handler may still say 200;
    // once it has said anything else, it must never say 200 again.
    const seen: string[] = [];
    await waitFor(
      async () => {
        try {
          const r = await fetch(`http://127.0.0.1:${sc.port}/readyz`);
          seen.push(String(r.status));
        } catch {
          seen.push("closed");
        }
        return sc.proc!.exitCode !== null;
      },
      6_000,
      "the sidecar to exit",
      1,
    );
    const notReady = seen.findIndex((status) => status !== "200");
    expect(notReady).toBeGreaterThanOrEqual(0);
    expect(seen.slice(notReady)).not.toContain("200");
    expect(await sc.proc!.exited).toBe(0);
    sc.proc = undefined;
    dtx.close();
  });
});

describe("disk full", () => {
  const canMount = process.getuid?.() === 0 && spawnSync("mount", ["--version"]).status === 0;
  const required = process.env.CI === "true";
  const run = canMount || required ? test : test.skip;
  if (!canMount) console.log(`disk-full test ${required ? "must run under CI but" : "skipped:"} mounting a tmpfs needs root and mount(8)`);

  run("new transactions get STORAGE_FULL, acknowledged work is unharmed, and it recovers by itself when space returns", async () => {
    const mnt = tempDir("dtx-tmpfs-");
    const r = spawnSync("mount", ["-t", "tmpfs", "-o", "size=48m", "tmpfs", mnt]);
    expect(r.status).toBe(0);
    try {
      const dir = tempDir("dtx-diskfull-");
      mkdirSync(join(mnt, "data"), { recursive: true });
      const sc = new SidecarProcess({ id: "diskfull", dir, extraArgs: ["--storage-reserve-mb", "8"] });
      (sc as { data: string }).data = join(mnt, "data");
      await sc.start();
      started.push(sc);
      const dtx = await connect({ socket: sc.socket });
      await dtx.beginDistributed("before", (tx) => tx.put("disk/before", "kept"));
      await dtx.commitDistributed("before");
      await dtx.beginDistributed("prepared-before", (tx) => tx.put("disk/prepared", "kept"));
      // An active transaction whose token another service will try to join once the disk is full.
      let token = "";
      let release!: () => void;
      const held = new Promise<void>((r) => (release = r));
      const holding = dtx.beginDistributed("joinable", async (tx) => {
        token = tx.context;
        await held;
      });
      await waitFor(async () => (await dtx.status("joinable").then((s) => s.state, () => undefined)) === "active", 5_000, "joinable begun");

      // Fill the disk until less than the reserve is free.
      const df = () => {
        const st = require("node:fs").statfsSync(mnt);
        return st.bavail * st.bsize;
      };
      const filler = join(mnt, "filler");
      writeFileSync(filler, Buffer.alloc(Math.max(0, df() - 4 * 1024 * 1024)));
      expect(df()).toBeLessThan(8 * 1024 * 1024);

      let err: { code?: string } = {};
      await waitFor(
        async () => {
          err = await dtx.beginDistributed("after", (tx) => tx.put("disk/after", 1)).then(
            () => ({}),
            (e) => e,
          );
          if (!err.code) await dtx.rollbackDistributed("after");
          return err.code === "STORAGE_FULL";
        },
        5_000,
        "STORAGE_FULL",
        50,
      );
      expect(err.code).toBe("STORAGE_FULL");
      // Joining is new work too, also when the join travels with the joined callback's end.
      const other = await connect({ socket: sc.socket });
      const joinErr = await other.join(token, (t) => t.put("disk/joined", 1)).catch((e) => e);
      expect(joinErr.code).toBe("STORAGE_FULL");
      other.close();
      release();
      await holding;
      await dtx.rollbackDistributed("joinable");
      // Acknowledged work: readable, and a prepared transaction can still be decided.
      expect(await dtx.get("disk/before")).toBe("kept");
      await dtx.commitDistributed("prepared-before");
      expect(await dtx.get("disk/prepared")).toBe("kept");
      expect((await fetch(`http://127.0.0.1:${sc.port}/healthz`)).status).toBe(200);

      rmSync(filler);
      await waitFor(
        async () =>
          dtx.beginDistributed("after-space", (tx) => tx.put("disk/after", 2)).then(
            () => true,
            () => false,
          ),
        5_000,
        "new transactions accepted again",
        50,
      );
      await dtx.commitDistributed("after-space");
      expect(await dtx.get("disk/after")).toBe(2);
      dtx.close();
      await sc.kill9();
    } finally {
      spawnSync("umount", ["-l", mnt]);
    }
  }, 60_000);
});

describe("listening", () => {
  test("a sidecar asked to listen beyond loopback without a secret refuses to start, with a clear error", async () => {
    const dir = tempDir("dtx-open-");
    const run = Bun.spawnSync([process.execPath, "sidecar/cli.ts", "sidecar", "--id", "open", "--host", "0.0.0.0", "--port", "0", "--socket", join(dir, "s.sock"), "--data", join(dir, "data")], {
      cwd: join(import.meta.dir, "../.."),
    });
    expect(run.exitCode).toBe(2);
    expect(run.stderr.toString()).toContain("refusing to listen on non-loopback host 0.0.0.0 without --secret-file");
    rmSync(dir, { recursive: true, force: true });
  });

  test("the client socket is created with mode 0600", async () => {
    const sc = await sidecar("mode");
    expect(statSync(sc.socket).mode & 0o777).toBe(0o600);
  });
});
