// `dtx bench`: measures dtx on this machine against the physical floor and a
// baseline (Bun.sql's own distributed transactions on PostgreSQL), all in one
// run. Starts its own sidecars in a temporary directory.
import { SQL } from "bun";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type Client, connect } from "../client/index.ts";
import { LmdbWal } from "../src/wal/lmdb-wal.ts";
import type { LogRecord } from "../src/wal/records.ts";
import { freePorts, waitForLinks } from "../test/helpers/federation.ts";
import { SidecarProcess, tempDir } from "../test/helpers/sidecar-process.ts";
import { fsyncFloor, type LatencyStats, load, stats } from "./measure.ts";
import { startSagaCross } from "./saga-cross.ts";

export interface BenchOptions {
  durationS: number;
  /** Each path (and the baseline) first runs this long at concurrency 16, unmeasured: see warmUp. */
  warmupS: number;
  concurrency: number[];
  json: boolean;
  pgUrl: string;
  /** Progress lines go here (stderr), so --json stdout stays one object. */
  progress: (line: string) => void;
}

interface PathResult {
  c1: LatencyStats;
  /** The fsync floor measured in the path's data directory just before and just after its concurrency-1 run (mean of the two p50s). */
  fsyncP50Ms: number;
  perSec: Record<string, number>;
  best: { concurrency: number; perSec: number };
  errors: number;
}

const round = (x: number, d = 2) => Math.round(x * 10 ** d) / 10 ** d;

export async function runBench(opts: BenchOptions) {
  const root = tempDir("dtx-bench-");
  const started = performance.now();
  const say = (s: string) => opts.progress(`[${((performance.now() - started) / 1000).toFixed(1)}s] ${s}`);
  const ms = opts.durationS * 1000;
  const warmUp = (op: (w: number, i: number) => Promise<unknown>) => {
    if (opts.warmupS > 0) say(`  warm-up: ${opts.warmupS} s at concurrency 16, not measured`);
    return load(op, 16, opts.warmupS * 1000);
  };
  const sidecars: SidecarProcess[] = [];
  const clients: Client[] = [];
  try {
    // ---- floor ---------------------------------------------------------------
    say("floor: fdatasync, Unix-socket and WebSocket round trips");
    const dataDir = join(root, "floor");
    mkdirSync(dataDir, { recursive: true });
    const fsync = fsyncFloor(dataDir, 300);
    const uds = await roundTrip("uds", root);
    const ws = await roundTrip("ws", root);

    // ---- footprint (first, while nothing else runs) ------------------------------
    say("footprint: start-to-ready (median of 3), idle memory, restart with 100,000 finished + 1,000 prepared");
    const starts: number[] = [];
    let rssIdle = 0;
    for (let k = 0; k < 3; k++) {
      const fresh = new SidecarProcess({ id: `F${k}`, dir: join(root, `F${k}`) });
      const t0 = performance.now();
      await fresh.start();
      starts.push(performance.now() - t0);
      if (k === 0) {
        await Bun.sleep(500); // let start-up garbage settle before reading idle memory
        rssIdle = rssMb(fresh);
      }
      await fresh.cleanup();
    }
    const startToReadyMs = round(stats(starts).p50, 1);
    const bigDir = join(root, "big");
    await writeLargeLog(join(bigDir, "data", "wal"));
    const big = new SidecarProcess({ id: "big", dir: bigDir });
    const t1 = performance.now();
    await big.start(30_000);
    const restartLargeLogMs = round(performance.now() - t1, 1);
    await big.cleanup();

    // ---- local ---------------------------------------------------------------
    say("local: one sidecar, begin + put + commit");
    const A = await new SidecarProcess({ id: "A", dir: join(root, "A") }).start();
    sidecars.push(A);
    const localClients = await Promise.all(Array.from({ length: 8 }, () => connect({ socket: A.socket })));
    clients.push(...localClients);
    const local = await path(
      (w, i) => {
        const c = localClients[w % localClients.length];
        const name = `l-${w}-${i}`;
        return c.beginDistributed(name, (tx) => tx.put(`bench/${w}`, i)).then(() => c.commitDistributed(name));
      },
      A.data,
      opts.concurrency,
      ms,
      say,
      warmUp,
    );
    const rssAfterLocal = rssMb(A);

    // ---- cross ---------------------------------------------------------------
    say("cross: three sidecars, coordinator writes locally, two others join");
    const ports = freePorts(3);
    const secretFile = join(root, "secret");
    writeFileSync(secretFile, "bench-secret\n");
    const ids = ["X", "Y", "Z"];
    const fed = ids.map(
      (id, k) =>
        new SidecarProcess({
          id,
          dir: join(root, id),
          port: ports[k],
          secretFile,
          peers: ids.filter((o) => o !== id).map((o) => `${o}=ws://127.0.0.1:${ports[ids.indexOf(o)]}`),
        }),
    );
    await Promise.all(fed.map((s) => s.start()));
    sidecars.push(...fed);
    await Promise.all(fed.map((s) => waitForLinks(s, ids.filter((o) => o !== s.opts.id))));
    const pool = async (s: SidecarProcess) => Promise.all(Array.from({ length: 8 }, () => connect({ socket: s.socket })));
    const [cx, cy, cz] = await Promise.all(fed.map(pool));
    clients.push(...cx, ...cy, ...cz);
    const cross = await path(
      (w, i) => {
        const k = w % cx.length;
        const name = `x-${w}-${i}`;
        return cx[k]
          .beginDistributed(name, async (tx) => {
            await tx.put(`acct/x/${w}`, i);
            await Promise.all([cy[k].join(tx.context, (t) => t.put(`acct/y/${w}`, i)), cz[k].join(tx.context, (t) => t.put(`acct/z/${w}`, i))]);
          })
          .then(() => cx[k].commitDistributed(name));
      },
      fed[0].data,
      opts.concurrency,
      ms,
      say,
      warmUp,
    );

    // ---- saga ----------------------------------------------------------------
    say("saga: three service-callback participants");
    const services = await connect({ socket: A.socket });
    clients.push(services);
    for (const s of ["pay", "stock", "ship"]) await services.register(s, { action: () => null, compensate: () => null });
    const saga = await path(
      async (w, i) => {
        const c = localClients[w % localClients.length];
        const t = await c.createTransaction({ name: `s-${w}-${i}`, consistency: "eventual" });
        await Promise.all(["pay", "stock", "ship"].map((s) => t.addParticipant({ participantId: s, endpoint: `service:${s}` })));
        const r = await t.execute();
        if (r.outcome !== "committed") throw new Error(r.reason ?? r.outcome);
      },
      A.data,
      opts.concurrency,
      ms,
      say,
      warmUp,
    );

    // ---- saga-cross --------------------------------------------------------------
    say("saga-cross: three service participants, each on its own sidecar (X, Y, Z), orchestrated from a fourth (W)");
    const sx = await startSagaCross(root, fed, secretFile);
    let rssW = 0;
    let sagaCross: PathResult;
    try {
      sagaCross = await path(sx.op, sx.W.data, opts.concurrency, ms, say, warmUp);
      rssW = rssMb(sx.W);
    } finally {
      // Gone before the baseline, which then runs beside the same processes as it did before this row.
      for (const c of sx.clients) c.close();
      await sx.W.cleanup();
    }
    const rssPeak = Math.max(rssMb(A), rssAfterLocal, rssW, ...fed.map(rssMb));

    // ---- baseline ------------------------------------------------------------
    say("baseline: Bun.sql beginDistributed/commitDistributed on PostgreSQL");
    const baseline = await postgresBaseline(opts.pgUrl, ms, warmUp).catch((e) => ({ skipped: `PostgreSQL baseline not measured: ${(e as Error).message}` }));

    // ---- ratios ----------------------------------------------------------------
    // The floor of a path: its sequential durable writes and round trips.
    // Writes travel with prepare/end (the client buffers them), so a put is not a round trip of its own.
    // fsync: the floor measured beside each path's concurrency-1 run (PathResult.fsyncP50Ms).
    const localFloor = 2 * local.fsyncP50Ms + 2 * uds.p50;
    // Cross: only the critical path counts. The joined branches vote without being asked, so the end's
    // answer and the prepare request travel while they log their prepared records, off the path.
    const crossFloor = 5 * cross.fsyncP50Ms + 2 * uds.p50 + 2.5 * ws.p50;
    // The barrier runs in the engine: a step's result, its o.step and the next step's sent mark (the action
    // may run from then on) are one group commit, so three steps make four durable writes in a row.
    const sagaFloor = 4 * saga.fsyncP50Ms + 6 * uds.p50;
    // Each step crosses a link: W's o_call, the participant's sidecar logs its sent mark, calls its service,
    // logs the result and answers; W logs the step's o.step before the next o_call leaves (bench/saga-cross.ts).
    const sagaCrossFloor = 10 * sagaCross.fsyncP50Ms + 6 * uds.p50 + 3 * ws.p50;
    const baselineC64 = "perSecC64" in baseline ? baseline.perSecC64 : undefined;
    const result = {
      machine: { cores: navigator.hardwareConcurrency, bun: Bun.version },
      floor: {
        fsyncP50Ms: fsync.p50,
        udsRoundTripP50Ms: uds.p50,
        wsRoundTripP50Ms: ws.p50,
        fsyncP50MsBesidePath: { local: local.fsyncP50Ms, cross: cross.fsyncP50Ms, saga: saga.fsyncP50Ms, sagaCross: sagaCross.fsyncP50Ms },
      },
      local,
      cross,
      saga,
      sagaCross,
      baseline,
      footprint: { rssIdleMb: rssIdle, rssPeakMb: rssPeak, startToReadyMs, restartLargeLogMs, largeLog: { finished: 100_000, prepared: 1_000 } },
      ratios: {
        formulas: {
          fsync: "each path's fsync is the p50 of a small append + fdatasync in its coordinator's data directory, measured just before and just after its concurrency-1 run (the mean of the two), so the floor and the p50 see the same disk",
          local: "2 x fsync + 2 x uds (round trips: prepare carrying the begin and the put, commit; durable writes: prepared, decision)",
          cross: "5 x fsync + 2 x uds + 2.5 x ws, the critical path: the end carrying the join and the put goes to each joining sidecar (half a uds round trip; the two joins run side by side), its enlist to the coordinator and back (one ws round trip around the coordinator's durable enlist), the branch logs its prepared record and votes without being asked (half a ws round trip), the coordinator logs prepared and answers prepare (half a uds round trip), then commit (one uds round trip) around the decision record and the decision and ack (one ws round trip) around the participant's end record; durable writes: enlist, participant prepared, coordinator prepared, decision, participant end; off the path: begin (sent when the callback reads tx.context; nothing waits for its answer), and the end's answer and the prepare request, which travel while the branches log their prepared records",
          saga: "4 x fsync + 6 x uds (durable writes in a row: o.begin with the first step's sent mark; then, per step, its recorded result, its o.step and the next step's sent mark (the last step's o.end instead) in one group commit; round trips: create, the three adds (sent together, answered together), execute, and one callback per participant)",
          sagaCross: "10 x fsync + 6 x uds + 3 x ws (three service participants, each registered on its own sidecar X, Y, Z, orchestrated from a fourth, W; durable writes in a row: o.begin on W; then, per step, the participant's sidecar's sent mark (before it calls its service) and its recorded result (before it answers), and W's o.step (before the next step's o_call leaves; the last with o.end): 4 on W and 2 on each participant's sidecar, as a sequential run's dtx_wal_fsync_ms_count shows (bun bench/saga-cross.ts); round trips: on W's socket create, the three adds (sent together, answered together) and execute, on each participant's socket one callback; over the links one o_call and its o_result per step)",
        },
        localFloorMs: round(localFloor, 3),
        crossFloorMs: round(crossFloor, 3),
        sagaFloorMs: round(sagaFloor, 3),
        sagaCrossFloorMs: round(sagaCrossFloor, 3),
        localP50OverFloor: round(local.c1.p50 / localFloor),
        crossP50OverFloor: round(cross.c1.p50 / crossFloor),
        sagaP50OverFloor: round(saga.c1.p50 / sagaFloor),
        sagaCrossP50OverFloor: round(sagaCross.c1.p50 / sagaCrossFloor),
        crossBestPerSecOverBaselineC64: baselineC64 ? round(cross.best.perSec / baselineC64) : null,
        crossC64OverBaselineC64: baselineC64 && cross.perSec["64"] ? round(cross.perSec["64"] / baselineC64) : null,
        localBestPerSecOverBaselineC64: baselineC64 ? round(local.best.perSec / baselineC64) : null,
      },
      warmupS: opts.warmupS,
      durationS: round((performance.now() - started) / 1000, 1),
    };
    say("done");
    return result;
  } finally {
    for (const c of clients) c.close();
    for (const s of sidecars) await s.cleanup().catch(() => {});
    rmSync(root, { recursive: true, force: true });
  }
}

async function path(
  op: (w: number, i: number) => Promise<unknown>,
  dataDir: string,
  concurrency: number[],
  ms: number,
  say: (s: string) => void,
  warmUp: (op: (w: number, i: number) => Promise<unknown>) => Promise<unknown>,
): Promise<PathResult> {
  // Warm-up: the sidecars were just started, and for their first seconds the JIT compiles their hot code
  // on the same two cores (over 2 s of compiler time per sidecar in a cross run); a sidecar lives for days.
  await warmUp(op);
  // This disk's fsync latency drifts during a run (0.2–0.55 ms here): the latency ratio uses a floor measured beside it.
  const before = fsyncFloor(dataDir, 150).p50;
  const c1 = await load(op, 1, ms);
  const fsyncP50Ms = round((before + fsyncFloor(dataDir, 150).p50) / 2, 3);
  const perSec: Record<string, number> = {};
  let errors = c1.errors;
  for (const c of concurrency) {
    const r = c === 1 ? c1 : await load(op, c, ms);
    perSec[String(c)] = r.perSec;
    errors += c === 1 ? 0 : r.errors;
    say(`  concurrency ${c}: ${r.perSec}/s, p50 ${r.latency.p50} ms, p99 ${r.latency.p99} ms${r.errors ? `, ${r.errors} errors` : ""}`);
  }
  const bestC = Object.entries(perSec).sort((a, b) => b[1] - a[1])[0];
  return { c1: c1.latency, fsyncP50Ms, perSec, best: { concurrency: Number(bestC[0]), perSec: bestC[1] }, errors };
}

function rssMb(s: SidecarProcess): number {
  const pid = s.proc?.pid;
  if (!pid) return 0;
  try {
    const status = require("node:fs").readFileSync(`/proc/${pid}/status`, "utf8") as string;
    const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
    return round(kb / 1024, 1);
  } catch {
    return 0;
  }
}

/** p50 round trip of a small message between this process and a child Bun process. */
async function roundTrip(kind: "uds" | "ws", root: string): Promise<LatencyStats> {
  const sock = join(root, `echo-${kind}.sock`);
  const script = kind === "uds"
    ? `Bun.listen({ unix: ${JSON.stringify(sock)}, socket: { data(s, d) { s.write(d); } } }); console.log("ready");`
    : `const s = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch(r, srv) { return srv.upgrade(r) ? undefined : new Response("no"); }, websocket: { message(ws, m) { ws.send(m); } } }); console.log("ready " + s.port);`;
  const child = Bun.spawn([process.execPath, "-e", script], { stdout: "pipe", stderr: "inherit" });
  try {
    const reader = child.stdout.getReader();
    const { value } = await reader.read();
    const line = new TextDecoder().decode(value);
    const samples: number[] = [];
    const msg = new Uint8Array(32);
    if (kind === "uds") {
      let resolveEcho: () => void = () => {};
      const client = await Bun.connect({ unix: sock, socket: { data() { resolveEcho(); } } });
      for (let i = 0; i < 2000; i++) {
        const t = performance.now();
        await new Promise<void>((r) => {
          resolveEcho = r;
          client.write(msg);
        });
        if (i >= 200) samples.push(performance.now() - t);
      }
      client.end();
    } else {
      const port = Number(line.trim().split(" ")[1]);
      const wsc = new WebSocket(`ws://127.0.0.1:${port}`);
      wsc.binaryType = "arraybuffer";
      await new Promise((r) => (wsc.onopen = r));
      for (let i = 0; i < 2000; i++) {
        const t = performance.now();
        await new Promise<void>((r) => {
          wsc.onmessage = () => r();
          wsc.send(msg);
        });
        if (i >= 200) samples.push(performance.now() - t);
      }
      wsc.close();
    }
    return stats(samples);
  } finally {
    child.kill(9);
  }
}

/** Bun.sql's own two-phase commit: two rows per transaction, PostgreSQL's default durability. */
async function postgresBaseline(url: string, ms: number, warmUp: (op: () => Promise<unknown>) => Promise<unknown>) {
  const admin = new SQL(url, { max: 1 });
  try {
    const [{ max_prepared_transactions: mpt }] = await admin`SHOW max_prepared_transactions`;
    if (Number(mpt) === 0) throw new Error("max_prepared_transactions = 0 (run scripts/prepare-services.sh)");
    await admin`CREATE TABLE IF NOT EXISTS dtx_bench_baseline (id bigint PRIMARY KEY, v bigint)`;
    await admin`TRUNCATE dtx_bench_baseline`;
  } finally {
    await admin.close();
  }
  const db = new SQL(url, { max: 64 });
  let seq = 0;
  const txn = async () => {
    const id = ++seq;
    const name = `dtx_bench_${process.pid}_${id}`;
    await db.beginDistributed(name, async (tx) => {
      await tx`INSERT INTO dtx_bench_baseline VALUES (${id * 2}, 1)`;
      await tx`INSERT INTO dtx_bench_baseline VALUES (${id * 2 + 1}, 1)`;
    });
    await db.commitDistributed(name);
  };
  try {
    await warmUp(txn);
    const c1 = await load(txn, 1, ms);
    const c64 = await load(txn, 64, ms);
    return { p50C1Ms: c1.latency.p50, p99C1Ms: c1.latency.p99, perSecC64: c64.perSec, errors: c1.errors + c64.errors };
  } finally {
    await db.close();
  }
}

/** A log as a long-running sidecar would have it: 100,000 finished and 1,000 prepared transactions. */
async function writeLargeLog(path: string) {
  mkdirSync(path, { recursive: true });
  const wal = new LmdbWal(path);
  const at = Date.now();
  const branches = [{ id: "big.x.1", sidecar: "big" }];
  for (let start = 0; start < 100_000; start += 5_000) {
    const recs: LogRecord[] = [];
    for (let i = start; i < start + 5_000; i++) recs.push({ r: "c.end", name: `done-${i}`, protocol: "2pc", outcome: "commit", branches, createdAt: at, at });
    await wal.append(recs);
  }
  const prepared: LogRecord[] = [];
  for (let i = 0; i < 1_000; i++) {
    const b = [{ id: `big.x.${i}`, sidecar: "big" }];
    prepared.push({ r: "c.prepared", name: `open-${i}`, protocol: "2pc", branches: b, createdAt: at, at });
    prepared.push({ r: "p.prepared", name: `open-${i}`, branch: `big.x.${i}`, coordinator: "big", writes: [[`k/${i}`, i, false]], reads: [], at });
  }
  await wal.append(prepared);
  await wal.close();
}
