#!/usr/bin/env bun
// The dtx command: run a sidecar, or ask one about its transactions.
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import pkg from "../package.json" with { type: "json" };
import { type Client, connect } from "../client/index.ts";
import { type TxnState, txnState } from "../src/protocol/messages.ts";
import { defaults, parseConfig, sidecarFlagHelp } from "./config.ts";
import { AlreadyRunningError } from "./exclusive.ts";
import { describeFlags, type FlagSpec, lastValue, parseFlags, UsageError } from "./flags.ts";
import { startSidecar } from "./sidecar.ts";

/** How long a query command waits for its sidecar, connecting included, unless --timeout-ms says otherwise. */
const queryTimeoutMs = 30_000;
const socket: FlagSpec = { value: "PATH", env: "DTX_SOCKET", about: "the sidecar's socket", default: defaults.socket };
const json: FlagSpec = { switch: true, about: "print JSON" };
const timeout: FlagSpec = { value: "MS", about: "give up after this long, connecting included, and exit 1", default: queryTimeoutMs };

/** Every command but `sidecar` (whose flags are sidecarFlags in config.ts): what it takes, for parsing and for --help. */
const commands = {
  status: { args: "<name>", about: "one transaction: state, participants, timestamps", flags: { "--json": json, "--socket": socket, "--timeout-ms": timeout } },
  list: {
    args: "",
    about: "transactions this sidecar knows",
    flags: { "--state": { value: "STATE", about: "only those in this state: active, prepared, committed, failed, …" }, "--json": json, "--socket": socket, "--timeout-ms": timeout },
  },
  resolve: {
    args: "<name> --commit|--rollback",
    about: "decide a prepared transaction or close a failed one (a durable decision is never contradicted)",
    flags: { "--commit": { switch: true, about: "commit it" }, "--rollback": { switch: true, about: "roll it back (compensate a Saga)" }, "--json": json, "--socket": socket, "--timeout-ms": timeout },
  },
  peers: { args: "", about: "this sidecar's peer links", flags: { "--json": json, "--socket": socket, "--timeout-ms": timeout } },
  bench: {
    args: "",
    about: "start sidecars in a temporary directory and measure them",
    flags: {
      "--json": json,
      "--duration": { value: "S", about: "seconds per measurement", default: 3 },
      "--warmup": { value: "S", about: "unmeasured seconds at concurrency 16 before each path", default: 2 },
      "--concurrency": { value: "LIST", about: "comma-separated concurrencies", default: "1,16,64,256" },
      "--pg": { value: "URL", env: "DTX_BENCH_PG", about: "PostgreSQL for the baseline", default: "postgres://postgres@127.0.0.1:5432/test" },
    },
  },
} satisfies Record<string, { args: string; about: string; flags: Record<string, FlagSpec> }>;
type QueryCommand = "status" | "list" | "resolve" | "peers";

function usage(): string {
  const head = (line: string, about: string) => `  ${`${line}  `.padEnd(46)}${about}`;
  return [
    `dtx ${pkg.version}: distributed transactions beside your services`,
    "",
    "usage:",
    head("dtx sidecar [flags]", "run a sidecar; every flag is also an environment variable"),
    ...sidecarFlagHelp().map((l) => `  ${l}`),
    ...Object.entries(commands).flatMap(([name, c]) => [
      head(`dtx ${name}${c.args ? ` ${c.args}` : ""} [flags]`, c.about),
      ...describeFlags(c.flags).map((l) => `  ${l}`),
    ]),
    head("dtx --version | -v", "print the version"),
    head("dtx --help | -h", "print this help"),
    "",
    "exit codes: 0 ok, 1 the request failed, 2 usage or configuration, 3 the sidecar cannot be reached",
  ].join("\n");
}

/** Exit codes: 0 ok, 1 the request failed (e.g. NOT_FOUND), 2 usage or configuration, 3 cannot reach the sidecar. */
async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (rest.includes("--help") || rest.includes("-h")) {
    console.log(usage());
    return 0;
  }
  try {
    switch (command) {
      case "sidecar":
        return await runSidecar(rest);
      case "status":
      case "list":
      case "resolve":
      case "peers":
        return await query(command, rest);
      case "bench":
        return await bench(rest);
      case "--version":
      case "-v":
      case "version":
        console.log(`dtx ${pkg.version}`);
        return 0;
      case undefined:
      case "help":
      case "--help":
      case "-h":
        console.log(usage());
        return command === undefined ? 2 : 0;
      default:
        throw new UsageError(`unknown command "${command}"; the commands are sidecar, ${Object.keys(commands).join(", ")} (see dtx --help)`);
    }
  } catch (e) {
    if (!(e instanceof UsageError || e instanceof AlreadyRunningError)) throw e;
    console.error(`${command === "sidecar" || Object.hasOwn(commands, command ?? "") ? `dtx ${command}` : "dtx"}: ${e.message}`);
    return 2;
  }
}

async function runSidecar(args: string[]): Promise<number> {
  const sidecar = await startSidecar(parseConfig(args));
  const shutdown = async (signal: string) => {
    sidecar.log.info({ signal }, "draining");
    await sidecar.stop();
    process.exit(0);
  };
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGINT", () => void shutdown("SIGINT"));
  return new Promise<number>(() => {}); // runs until a signal
}

async function bench(argv: string[]): Promise<number> {
  const { flags } = commands.bench;
  const args = parseFlags("bench", argv, flags);
  const json = args.flags.has("--json");
  const durationS = Number(lastValue(args, "--duration") ?? flags["--duration"].default);
  const warmupS = Number(lastValue(args, "--warmup") ?? flags["--warmup"].default);
  const concurrency = (lastValue(args, "--concurrency") ?? flags["--concurrency"].default).split(",").map(Number);
  if (!(durationS > 0) || !(warmupS >= 0) || concurrency.some((c) => !Number.isInteger(c) || c < 1)) {
    throw new UsageError("--duration takes seconds > 0, --warmup seconds ≥ 0, --concurrency a list of whole numbers ≥ 1");
  }
  const { runBench } = await import("../bench/bench.ts");
  const result = await runBench({
    durationS,
    warmupS,
    concurrency,
    json,
    pgUrl: lastValue(args, "--pg") ?? process.env.DTX_BENCH_PG ?? flags["--pg"].default,
    progress: (line) => console.error(line),
  });
  if (json) console.log(JSON.stringify(result));
  else console.log(formatBench(result));
  return 0;
}

function formatBench(r: Awaited<ReturnType<typeof import("../bench/bench.ts").runBench>>): string {
  const rows = [
    ["floor", `fsync p50 ${r.floor.fsyncP50Ms} ms`, `uds rtt ${r.floor.udsRoundTripP50Ms} ms`, `ws rtt ${r.floor.wsRoundTripP50Ms} ms`],
    ...(["local", "cross", "saga", "sagaCross"] as const).map((k) => [
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
    `floors: local = ${f.local}; cross = ${f.cross}; saga = ${f.saga}; sagaCross = ${f.sagaCross}; ${f.fsync}`,
    `cross best / baseline c64: ${r.ratios.crossBestPerSecOverBaselineC64 ?? "n/a"}; local best / baseline c64: ${r.ratios.localBestPerSecOverBaselineC64 ?? "n/a"}`,
  ].join("\n");
}

async function query(command: QueryCommand, argv: string[]): Promise<number> {
  const named = command === "status" || command === "resolve";
  const args = parseFlags(command, argv, commands[command].flags, named ? 1 : 0);
  const json = args.flags.has("--json");
  const socketPath = lastValue(args, "--socket") ?? process.env.DTX_SOCKET ?? defaults.socket;
  const timeoutMs = Number(lastValue(args, "--timeout-ms") ?? queryTimeoutMs);
  if (!Number.isInteger(timeoutMs) || timeoutMs < 1) throw new UsageError(`--timeout-ms takes whole milliseconds ≥ 1, not ${lastValue(args, "--timeout-ms")}`);
  const name = args.positionals[0];
  const state = lastValue(args, "--state");
  if (state !== undefined && !txnState.safeParse(state).success) throw new UsageError(`--state takes one of ${txnState.options.join(", ")}, not "${state}"`);
  const outcome = args.flags.has("--commit") ? "commit" : "rollback";
  if (command === "resolve" && args.flags.has("--commit") === args.flags.has("--rollback")) throw new UsageError("give exactly one of --commit or --rollback");
  // Without the file there is no sidecar to wait for: say so at once (the client's retry loop waits for one that is starting).
  if (!existsSync(socketPath)) {
    console.error(`dtx ${command}: no sidecar socket at ${resolve(socketPath)} (the file does not exist); start one with dtx sidecar, or point at its socket with --socket or DTX_SOCKET`);
    return 3;
  }
  const deadline = Date.now() + timeoutMs;
  let client: Client;
  try {
    client = await connect({ socket: socketPath, reconnect: false, connectTimeoutMs: Math.min(5_000, timeoutMs) });
  } catch (e) {
    console.error(`dtx ${command}: cannot reach the sidecar at ${resolve(socketPath)}: ${(e as Error).message} (the socket comes from --socket or DTX_SOCKET)`);
    return 3;
  }
  const ask = async (): Promise<string> => {
    if (command === "peers") {
      const peers = await client.peers();
      return json ? JSON.stringify(peers) : peers.map((p) => `${String(p.id).padEnd(20)} ${String(p.state).padEnd(8)} ${p.url ?? "(accepted)"}`).join("\n");
    }
    if (command === "resolve") {
      const r = await client.resolve(name, outcome);
      return json ? JSON.stringify(r) : `${name}: ${r.outcome}`;
    }
    if (command === "status") {
      const s = await client.status(name);
      return json ? JSON.stringify(s) : formatStatus(s as unknown as Record<string, unknown>);
    }
    const list = await client.list({ state: state as TxnState | undefined });
    return json ? JSON.stringify(list) : (list as unknown as Record<string, unknown>[]).map((t) => `${String(t.name).padEnd(32)} ${String(t.state).padEnd(13)} ${t.protocol}`).join("\n");
  };
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<"late">((res) => (timer = setTimeout(() => res("late"), Math.max(0, deadline - Date.now()))));
  try {
    const out = await Promise.race([ask(), late]);
    if (out === "late") {
      console.error(
        command === "resolve"
          ? `dtx resolve: the sidecar did not answer within ${timeoutMs} ms, so the outcome of ${name} is unknown (the ${outcome} may still happen); read it with dtx status ${name}`
          : `dtx ${command}: the sidecar at ${resolve(socketPath)} did not answer within ${timeoutMs} ms; try again, or wait longer with --timeout-ms`,
      );
      return 1;
    }
    if (out) console.log(out);
    return 0;
  } catch (e) {
    const err = e as { code?: string; message: string };
    console.error(`dtx ${command}: ${err.code ?? "ERROR"}: ${err.message}`);
    return 1;
  } finally {
    clearTimeout(timer);
    client.close();
  }
}

/** A status reply as text. Participants come in two shapes: 2PC branches and orchestrated participants (with the sidecar each lives on). */
function formatStatus(s: Record<string, unknown>): string {
  const text = (v: unknown) => (v === null || v === undefined ? "" : typeof v === "object" ? JSON.stringify(v) : String(v));
  const errorText = (e: unknown) => (e && typeof e === "object" && "message" in e ? `${text((e as { code?: unknown }).code)}: ${text(e.message)}` : text(e));
  const out = [
    `name:         ${s.name}`,
    `state:        ${s.state}`,
    `protocol:     ${s.protocol ?? "not chosen yet"}${s.kind === "orchestrated" ? " (orchestrated)" : ""}`,
    `coordinator:  ${s.coordinator}`,
  ];
  const participants = (s.participants as Record<string, unknown>[] | undefined) ?? [];
  out.push(`participants: ${participants.length === 0 ? "none" : ""}`.trimEnd());
  const rows = participants.map((p): [string, string, string, string] =>
    "participantId" in p
      ? [text(p.participantId), `${text(p.endpoint)}${p.sidecar ? ` on ${text(p.sidecar)}` : ""}`, text(p.status), (p.steps as { op: string; outcome: string }[] | undefined)?.map((d) => `${d.op} ${d.outcome}`).join(", ") ?? ""]
      : [text(p.branch), `on ${text(p.sidecar)}`, `vote ${text(p.vote) || "not yet"}`, p.acked ? "acked" : "not acked"],
  );
  const widths = [0, 1, 2].map((c) => Math.max(...rows.map((r) => r[c].length)));
  rows.forEach((r, i) => {
    out.push(`  ${r.map((col, c) => (c < 3 ? col.padEnd(widths[c]) : col)).join("  ")}`.trimEnd());
    const error = participants[i].error;
    if (error) out.push(`    error: ${errorText(error)}`);
  });
  const times = Object.entries((s.timestamps as Record<string, number | null> | undefined) ?? {}).filter(([, t]) => typeof t === "number");
  if (times.length) out.push("timestamps:", ...times.map(([k, t]) => `  ${k.padEnd(9)} ${new Date(t as number).toISOString()}`));
  if (s.error) out.push(`error:        ${errorText(s.error)}`);
  return out.join("\n");
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
