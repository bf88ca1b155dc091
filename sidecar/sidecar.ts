// The sidecar process: lock, open the log, recover, then report ready and
// accept clients. SIGTERM drains: not-ready first, stop accepting, make
// everything durable, close, exit 0.
import { existsSync, readFileSync, statfsSync } from "node:fs";
import { mkdirSync } from "node:fs";
import { resolve } from "node:path";
import type { Logger } from "pino";
import { timing } from "../src/limits.ts";
import { ErrorCode, wireError } from "../src/protocol/errors.ts";
import { carriedOp, describeZodError, type PeerMessage, parseClientRequest } from "../src/protocol/messages.ts";
import { Federation, parsePeers } from "../src/federation/federation.ts";
import { createLogger } from "../src/observability/log.ts";
import { SidecarMetrics } from "../src/observability/sidecar-metrics.ts";
import { seededPrng } from "../src/runtime/prng.ts";
import { Runtime } from "../src/runtime/runtime.ts";
import { Node } from "../src/txn/node.ts";
import type { ClientInput, ReplyBody, ReplyTo } from "../src/txn/types.ts";
import { LmdbWal } from "../src/wal/lmdb-wal.ts";
import { callHttp } from "../src/participants/http.ts";
import { ServiceCalls } from "../src/participants/service.ts";
import { SqlBranches } from "../src/participants/sql/branches.ts";
import { type SqlDatabase, parseDatabases } from "../src/participants/sql/databases.ts";
import { type AdminGate, adminGate } from "./admin-auth.ts";
import { ClientServer } from "./client-server.ts";
import { ConfigError, type SidecarConfig, isLoopback } from "./config.ts";
import { checkDataDirId, claimDataDirId, claimSocketPath, lockDataDir } from "./exclusive.ts";
import { bindHttp } from "./http.ts";

/** conn 0 is the sidecar's own internal client (HTTP API, admin). */
const INTERNAL_CONN = 0;

export interface Sidecar {
  config: SidecarConfig;
  log: Logger;
  runtime: Runtime;
  wal: LmdbWal;
  federation: Federation;
  metrics: SidecarMetrics;
  port: number;
  ready: boolean;
  /** Run a client request as the sidecar's own internal client. */
  ask(req: { op: string; [k: string]: unknown }): Promise<ReplyBody>;
  stop(): Promise<void>;
}

export async function startSidecar(config: SidecarConfig): Promise<Sidecar> {
  const started = performance.now();
  const log = createLogger(config.id, config.logLevel);
  if (!!config.tlsCert !== !!config.tlsKey) throw new ConfigError("--tls-cert and --tls-key go together");
  if (!isLoopback(config.host) && !config.secretFile) {
    throw new ConfigError(`refusing to listen on non-loopback host ${config.host} without --secret-file: peers could not be authenticated`);
  }
  let gate: AdminGate;
  try {
    gate = adminGate(config.host, readSecret(config.adminTokenFile, "--admin-token-file"));
  } catch (e) {
    throw e instanceof ConfigError ? e : new ConfigError((e as Error).message);
  }
  if (!isLoopback(config.host) && !config.adminTokenFile) {
    log.warn({ host: config.host }, "no --admin-token-file: the transaction API and the dashboard's data answer 401 to everyone beyond loopback");
  }
  // The runtime's one PRNG: boot id, retry jitter, redial jitter.
  const prng = seededPrng();
  let federation: Federation;
  try {
    federation = new Federation({
      self: config.id,
      secret: readSecret(config.secretFile, "--secret-file"),
      peers: parsePeers(config.peers),
      log,
      tlsCa: config.tlsCa ? readFileSync(config.tlsCa, "utf8") : undefined,
      deliver: (msg) => runtime.input({ k: "peer", msg, now: Date.now() }),
      random: () => prng.next(),
    });
  } catch (e) {
    throw new ConfigError((e as Error).message);
  }
  let databases: SqlDatabase[];
  try {
    databases = parseDatabases(config.dbs, config.id);
  } catch (e) {
    throw new ConfigError((e as Error).message);
  }
  const socketPath = resolve(config.socket);
  const dataDir = resolve(config.data);
  // The port and the id first: a start refused for either leaves the data directory and the socket as they were.
  const http = bindHttp(config, federation.websocket, gate);
  let unlock = () => {};
  try {
    checkDataDirId(dataDir, config.id);
    unlock = lockDataDir(dataDir);
    claimDataDirId(dataDir, config.id);
    await claimSocketPath(socketPath);
  } catch (e) {
    unlock();
    http.server.stop(true);
    throw e;
  }
  mkdirSync(dataDir, { recursive: true });
  const wal = new LmdbWal(resolve(dataDir, "wal"));
  const node = new Node({
    id: config.id,
    bootId: prng.bootId(),
    reader: wal,
    random: () => prng.next(),
    databases: new Map(databases.map((d) => [d.name, d])),
    peers: parsePeers(config.peers).map((p) => p.id),
  });
  const sqlBranches = new SqlBranches({
    sidecar: config.id,
    databases,
    reader: wal,
    branchLive: (name, branch) => node.branchLive(name, branch),
    log,
    reconcileMs: config.sqlReconcileMs,
    orphanMs: config.sqlOrphanMs,
  });

  // Admission control on free disk: new work is refused before the log could run out of room,
  // so what was acknowledged can always be finished from the reserve.
  const newWork = new Set(["begin", "join", "o_create", "o_execute", "sql_open"]);
  const storage = {
    low: false,
    check() {
      try {
        const st = statfsSync(dataDir);
        const low = st.bavail * st.bsize < config.storageReserveMb * 1024 * 1024;
        if (low !== storage.low) log.warn({ freeBytes: st.bavail * st.bsize, reserveMb: config.storageReserveMb }, low ? "storage low: refusing new transactions" : "storage back: accepting new transactions");
        storage.low = low;
      } catch (err) {
        log.warn({ err }, "cannot read free space of the data directory");
      }
    },
  };
  storage.check();
  const internal = new Map<number, (b: ReplyBody) => void>();
  let internalId = 0;
  let draining = false;

  const server: ClientServer = new ClientServer({
    sidecarId: config.id,
    log,
    request: (conn, req) => runtime.input({ k: "client", from: { conn, id: req.id }, req, now: Date.now() }),
    disconnected: (conn) => {
      services.disconnected(conn);
      runtime.input({ k: "disconnect", conn, now: Date.now() });
    },
    register: (conn, service) => runtime.input({ k: "register", conn, service, now: Date.now() }),
    peers: () => federation.peers(),
    callbackResult: (conn, answer) => services.answer(conn, answer.cb, answer),
    refusal: (req) => {
      if (draining) return wireError(ErrorCode.SHUTTING_DOWN, "the sidecar is shutting down; reconnect to its replacement");
      // A prepare that carries its begin, or an end that carries its join, is new work too.
      const carried = carriedOp(req);
      if (storage.low && (newWork.has(req.op) || (carried !== undefined && newWork.has(carried)))) {
        return wireError(ErrorCode.STORAGE_FULL, `less than ${config.storageReserveMb} MiB free in ${dataDir}; new transactions are refused until space returns (work already acknowledged continues)`);
      }
      return undefined;
    },
  });

  const services = new ServiceCalls({ push: (conn, frame) => server.push(conn, frame) });
  const metrics = new SidecarMetrics({
    clientConnections: () => server.connections,
    inDoubtBranches: () => node.inDoubtBranches(),
    transactionsByState: () => node.transactionsByState(),
    peerLinks: () => Object.fromEntries(federation.peers().map((p) => [p.id, p.state === "up" ? 1 : 0])),
  });
  wal.onFlush = (ms, appends) => metrics.flush(ms, appends);
  // Effects go out in the microtask after the log reports them durable, where a promise callback ran them before.
  const runtime: Runtime = new Runtime(node, wal, {
    call: (call, done) => void callHttp(call).then(done, (err) => done({ outcome: "retry", error: String(err) })),
    invoke: (invoke, done) => void services.invoke(invoke).then(done),
    sendPeer: (to: string, msg: PeerMessage, ifLinked?: boolean) => federation.send(to, msg, ifLinked),
    reply: (to: ReplyTo, body: ReplyBody) => {
      if (to.conn === INTERNAL_CONN) {
        internal.get(to.id)?.(body);
        internal.delete(to.id);
      } else server.reply(to.conn, to.id, body);
    },
    observe: {
      step: (input) => metrics.input(input),
      records: (records) => {
        metrics.records(records);
        // One debug line per logged fact, with the transaction's name and W3C traceparent.
        if (log.isLevelEnabled("debug")) {
          for (const rec of records) {
            const name = "name" in rec ? rec.name : undefined;
            log.debug({ name, traceparent: name ? node.traceOf(name) : undefined, record: rec.r, branch: (rec as { branch?: unknown }).branch }, `logged ${rec.r}`);
          }
        }
        for (const rec of records) {
          if (rec.r === "o.end" && rec.state === "failed") log.warn({ name: rec.name, traceparent: node.traceOf(rec.name), reason: rec.reason }, "transaction failed: an operator must resolve it");
        }
      },
    },
    finishSql: (e, done) => void sqlBranches.finishBranch(e.name, e.branch, e.resources, e.outcome).then(done, () => done(false)),
    onWalFailure: (err) => {
      log.fatal({ err }, "the write-ahead log could not be written; exiting so a restart recovers from what is durable");
      process.exit(70);
    },
  }, { now: Date.now, schedule: queueMicrotask });

  // Recover before anything else can reach the engine.
  const { coordinators, branches, orchestrations, hosted } = wal.unfinished();
  runtime.input({ k: "recover", coordinators, branches, orchestrations, hosted, now: Date.now() });
  log.info({ coordinators: coordinators.length, branches: branches.length, orchestrations: orchestrations.length, hosted: hosted.length }, "recovered");
  // Finish or roll back what the databases hold for us before going ready (DESIGN §5.3).
  if (sqlBranches.size) await sqlBranches.start();

  const sidecar: Sidecar = {
    config,
    log,
    runtime,
    wal,
    federation,
    metrics,
    port: 0,
    ready: false,
    ask: (req) =>
      new Promise((res) => {
        const id = ++internalId;
        const parsed = parseClientRequest({ ...req, id });
        if (!parsed.success) return res({ ok: false, error: wireError(ErrorCode.BAD_REQUEST, describeZodError(parsed.error)) });
        internal.set(id, res);
        runtime.input({ k: "client", from: { conn: INTERNAL_CONN, id }, req: parsed.data as ClientInput, now: Date.now() });
      }),
    stop: async () => {},
  };

  http.serve(sidecar);
  sidecar.port = http.server.port ?? config.port;
  server.listen(socketPath);
  federation.start();

  const tick = setInterval(() => runtime.input({ k: "tick", now: Date.now() }), timing.tickMs);
  const storageWatch = setInterval(() => storage.check(), timing.storageCheckMs);
  const prune = setInterval(() => wal.prune(Date.now() - timing.retentionMs), timing.pruneEveryMs);

  sidecar.stop = async () => {
    if (draining) return;
    draining = true;
    sidecar.ready = false;
    server.stopAccepting();
    clearInterval(tick);
    clearInterval(storageWatch);
    clearInterval(prune);
    await Promise.race([runtime.drain(), Bun.sleep(timing.drainMaxMs)]);
    runtime.stop();
    await sqlBranches.stop();
    federation.stop();
    server.closeAll();
    http.server.stop(true);
    await wal.close();
    unlock();
    log.info("stopped");
  };

  sidecar.ready = true;
  log.info({ socket: socketPath, port: sidecar.port, data: dataDir, ms: Math.round(performance.now() - started) }, "ready");
  return sidecar;
}

/** The trimmed contents of a secret's file (`flag` names it in errors), or undefined when none was given. */
export function readSecret(file: string | undefined, flag: string): string | undefined {
  if (!file) return undefined;
  if (!existsSync(file)) throw new Error(`${flag} ${file} does not exist`);
  return readFileSync(file, "utf8").trim();
}
