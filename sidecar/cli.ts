#!/usr/bin/env bun
// The dtx command: run a sidecar, or ask one about its transactions.
import { connect } from "../client/index.ts";
import { ConfigError, defaults, parseConfig } from "./config.ts";
import { AlreadyRunningError } from "./exclusive.ts";
import { startSidecar } from "./sidecar.ts";

const usage = `usage:
  dtx sidecar [--id A] [--socket ./.dtx/sidecar.sock] [--data ./.dtx/data] [--port 7400] [--host 127.0.0.1]
              [--peer B=ws://127.0.0.1:7401 ...] [--secret-file F] [--db name=url ...] [--log-level info]
  dtx status <name> [--socket S] [--json]
  dtx list [--state prepared] [--socket S] [--json]
  dtx resolve <name> --commit|--rollback [--socket S]
  dtx peers [--socket S] [--json]
  dtx bench [--json] [--duration S] [--warmup S] [--concurrency 1,16,64,256] [--pg postgres://…]
Every sidecar flag is also an environment variable: DTX_ID, DTX_SOCKET, DTX_DATA, DTX_PORT, ...`;

/** Exit codes: 0 ok, 1 the request failed (e.g. NOT_FOUND), 2 usage, 3 cannot reach the sidecar. */
async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case "sidecar":
      return runSidecar(rest);
    case "status":
    case "list":
    case "resolve":
    case "peers":
      return query(command, rest);
    case "bench":
      return bench(rest);
    case undefined:
    case "help":
    case "--help":
    case "-h":
      console.log(usage);
      return command === undefined ? 2 : 0;
    default:
      console.error(`dtx: unknown command "${command}"\n${usage}`);
      return 2;
  }
}

async function runSidecar(args: string[]): Promise<number> {
  let sidecar;
  try {
    sidecar = await startSidecar(parseConfig(args));
  } catch (e) {
    if (e instanceof ConfigError || e instanceof AlreadyRunningError) {
      console.error(`dtx sidecar: ${e.message}`);
      return 2;
    }
    throw e;
  }
  const shutdown = async (signal: string) => {
    sidecar.log.info({ signal }, "draining");
    await sidecar.stop();
    process.exit(0);
  };
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGINT", () => void shutdown("SIGINT"));
  return new Promise<number>(() => {}); // runs until a signal
}

async function bench(args: string[]): Promise<number> {
  const json = args.includes("--json");
  const { runBench } = await import("../bench/bench.ts");
  const durationS = Number(takeFlag(args, "--duration") ?? 3);
  const warmupS = Number(takeFlag(args, "--warmup") ?? 2);
  const concurrency = (takeFlag(args, "--concurrency") ?? "1,16,64,256").split(",").map(Number);
  if (!(durationS > 0) || !(warmupS >= 0) || concurrency.some((c) => !Number.isInteger(c) || c < 1)) {
    console.error("dtx bench: --duration takes seconds > 0, --warmup seconds ≥ 0, --concurrency a list of whole numbers ≥ 1");
    return 2;
  }
  const result = await runBench({
    durationS,
    warmupS,
    concurrency,
    json,
    pgUrl: takeFlag(args, "--pg") ?? process.env.DTX_BENCH_PG ?? "postgres://postgres@127.0.0.1:5432/test",
    progress: (line) => console.error(line),
  });
  if (json) console.log(JSON.stringify(result));
  else console.log(formatBench(result));
  return 0;
}

function formatBench(r: Awaited<ReturnType<typeof import("../bench/bench.ts").runBench>>): string {
  const rows = [
    ["floor", `fsync p50 ${r.floor.fsyncP50Ms} ms`, `uds rtt ${r.floor.udsRoundTripP50Ms} ms`, `ws rtt ${r.floor.wsRoundTripP50Ms} ms`],
    ...(["local", "cross", "saga"] as const).map((k) => [
      k,
      `p50 ${r[k].c1.p50} ms (${r.ratios[`${k}P50OverFloor`]}x floor, fsync ${r[k].fsyncP50Ms} ms)`,
      `p99 ${r[k].c1.p99} ms`,
      Object.entries(r[k].perSec).map(([c, n]) => `c${c}: ${n}/s`).join("  "),
    ]),
    ["baseline", "skipped" in r.baseline ? r.baseline.skipped : `p50 ${r.baseline.p50C1Ms} ms`, "", "skipped" in r.baseline ? "" : `c64: ${r.baseline.perSecC64}/s`],
    ["footprint", `rss idle ${r.footprint.rssIdleMb} MB, peak ${r.footprint.rssPeakMb} MB`, `start ${r.footprint.startToReadyMs} ms`, `restart (100k+1k log) ${r.footprint.restartLargeLogMs} ms`],
  ];
  const f = r.ratios.formulas;
  return [
    ...rows.map((cols) => cols.map((c, i) => String(c).padEnd(i === 0 ? 10 : 34)).join(" ").trimEnd()),
    `floors: local = ${f.local}; cross = ${f.cross}; saga = ${f.saga}; ${f.fsync}`,
    `cross best / baseline c64: ${r.ratios.crossBestPerSecOverBaselineC64 ?? "n/a"}; local best / baseline c64: ${r.ratios.localBestPerSecOverBaselineC64 ?? "n/a"}`,
  ].join("\n");
}

function takeFlag(args: string[], flag: string): string | undefined {
  const i = args.indexOf(flag);
  if (i < 0) return undefined;
  const v = args[i + 1];
  args.splice(i, 2);
  return v;
}

async function query(command: "status" | "list" | "resolve" | "peers", args: string[]): Promise<number> {
  const json = args.includes("--json");
  if (json) args.splice(args.indexOf("--json"), 1);
  const socket = takeFlag(args, "--socket") ?? process.env.DTX_SOCKET ?? defaults.socket;
  const state = takeFlag(args, "--state");
  let dtx;
  try {
    dtx = await connect({ socket, reconnect: false });
  } catch (e) {
    console.error(`dtx ${command}: cannot reach the sidecar at ${socket}: ${(e as Error).message}`);
    return 3;
  }
  try {
    if (command === "peers") {
      const peers = await dtx.peers();
      if (json) console.log(JSON.stringify(peers));
      else for (const p of peers) console.log(`${String(p.id).padEnd(20)} ${String(p.state).padEnd(8)} ${p.url ?? "(accepted)"}`);
      return 0;
    }
    if (command === "resolve") {
      const commit = args.includes("--commit");
      const rollback = args.includes("--rollback");
      const name = args.find((a) => !a.startsWith("--"));
      if (!name || commit === rollback) {
        console.error("dtx resolve: give a transaction name and exactly one of --commit or --rollback");
        return 2;
      }
      const r = await dtx.resolve(name, commit ? "commit" : "rollback");
      console.log(json ? JSON.stringify(r) : `${name}: ${String(r.outcome ?? r.state)}`);
      return 0;
    }
    if (command === "status") {
      const name = args[0];
      if (!name) {
        console.error("dtx status: give a transaction name");
        return 2;
      }
      const s = await dtx.status(name);
      console.log(json ? JSON.stringify(s) : formatStatus(s as unknown as Record<string, unknown>));
    } else {
      const list = await dtx.list({ state: state as never });
      if (json) console.log(JSON.stringify(list));
      else for (const t of list as unknown as Record<string, unknown>[]) console.log(`${String(t.name).padEnd(32)} ${String(t.state).padEnd(13)} ${t.protocol}`);
    }
    return 0;
  } catch (e) {
    const err = e as { code?: string; message: string };
    console.error(`dtx ${command}: ${err.code ?? "ERROR"}: ${err.message}`);
    return 1;
  } finally {
    dtx.close();
  }
}

function formatStatus(s: Record<string, unknown>): string {
  const lines = [`name:      ${s.name}`, `state:     ${s.state}`, `protocol:  ${s.protocol}`, `coordinator: ${s.coordinator}`];
  for (const p of (s.participants as Record<string, unknown>[]) ?? []) lines.push(`  branch ${p.branch} on ${p.sidecar} vote=${p.vote} acked=${p.acked}`);
  if (s.error) lines.push(`error:     ${s.error}`);
  return lines.join("\n");
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
