// The sidecar's side of SQL branches: finish each prepared branch after its
// decision is durable, and reconcile each database's prepared branches with
// the log at start and every reconcileMs (DESIGN §5.3, §6):
//   decided in the log            → apply the decision
//   prepared in the log, undecided → leave it (in doubt; the engine asks its coordinator)
//   branch still running here     → leave it (its service may be about to report it)
//   anything else (an orphan)     → roll back once first seen orphanMs ago
// Only gids naming this sidecar are ever touched.
import type { Logger } from "pino";
import { DtxError, ErrorCode } from "../../protocol/errors.ts";
import { parseGid } from "../../protocol/sql-branch.ts";
import type { Outcome, SqlResourceRef } from "../../wal/records.ts";
import type { WalReader } from "../../wal/wal.ts";
import type { SqlDatabase } from "./databases.ts";
import type { SqlDriver } from "./driver.ts";
import { MysqlDriver } from "./mysql.ts";
import { PostgresDriver } from "./postgres.ts";

/** Quick retries of one finish (MariaDB's preparing connection may still be closing); after them the reconciler takes over. */
const finishRetryDelaysMs = [0, 20, 50, 100, 200, 400, 800, 1600];
/** Start-up reconciliation may not hold readiness longer than this. */
export const startReconcileMaxMs = 15_000;

export interface SqlBranchesOptions {
  sidecar: string;
  databases: SqlDatabase[];
  reader: Pick<WalReader, "branch">;
  /** The engine holds this branch unfinished in memory: its service may still prepare and report it. */
  branchLive(name: string, branch: string): boolean;
  log: Logger;
  reconcileMs: number;
  orphanMs: number;
  /** For tests: drivers to use instead of real connections. */
  drivers?: SqlDriver[];
}

export interface ReconcileReport {
  committed: string[];
  rolledBack: string[];
  inDoubt: string[];
  /** Orphans seen but younger than orphanMs. */
  waiting: string[];
}

export function createDriver(db: SqlDatabase): SqlDriver {
  switch (db.kind) {
    case "postgres":
      return new PostgresDriver(db);
    case "mysql":
      return new MysqlDriver(db);
  }
}

export class SqlBranches {
  private readonly drivers = new Map<string, SqlDriver>();
  private readonly finishing = new Map<string, Promise<boolean>>();
  private readonly orphanSeen = new Map<string, number>();
  /** Gids this process already tried to commit: "unknown" afterwards means an earlier try succeeded. */
  private readonly commitTried = new Set<string>();
  private timer?: ReturnType<typeof setInterval>;
  private reconciling?: Promise<ReconcileReport>;
  private stopped = false;
  readonly stats = { finished: 0, orphansRolledBack: 0, failures: 0 };

  constructor(private readonly opts: SqlBranchesOptions) {
    for (const d of opts.drivers ?? opts.databases.map(createDriver)) this.drivers.set(d.db.name, d);
  }

  get size(): number {
    return this.drivers.size;
  }

  /** Probe every database and reconcile once (bounded), then every reconcileMs. */
  async start(): Promise<void> {
    const { log } = this.opts;
    await Promise.all(
      [...this.drivers.values()].map((d) =>
        d.probe().then(
          () => log.info({ db: d.db.name, kind: d.db.kind }, "SQL database ready for distributed transactions"),
          (err) => log.error({ db: d.db.name, code: (err as DtxError).code ?? ErrorCode.SQL_CONNECTION_FAILED, err: (err as Error).message }, "SQL database not usable for distributed transactions"),
        ),
      ),
    );
    const first = this.reconcile();
    const bounded = await Promise.race([first.then(() => true), Bun.sleep(startReconcileMaxMs).then(() => false)]);
    if (!bounded) log.warn({ ms: startReconcileMaxMs }, "SQL reconciliation at start-up is still running; going ready, it continues in the background");
    this.timer = setInterval(() => void this.reconcile(), this.opts.reconcileMs);
  }

  /** The runtime's finish_sql effect: the branch's decision is durable. True once every database finished it. */
  async finishBranch(name: string, branch: string, resources: SqlResourceRef[], outcome: Outcome): Promise<boolean> {
    const done = await Promise.all(resources.map((r) => this.finish(r.db, r.gid, outcome, { name, branch })));
    return done.every(Boolean);
  }

  /** Finish one gid (true: it is finished, or was never prepared); concurrent calls for the same gid share one attempt. */
  finish(db: string, gid: string, outcome: Outcome, ctx: Record<string, unknown> = {}): Promise<boolean> {
    const running = this.finishing.get(gid);
    if (running) return running;
    const p = this.finishNow(db, gid, outcome, ctx).finally(() => this.finishing.delete(gid));
    this.finishing.set(gid, p);
    return p;
  }

  private async finishNow(db: string, gid: string, outcome: Outcome, ctx: Record<string, unknown>): Promise<boolean> {
    const { log } = this.opts;
    const driver = this.drivers.get(db);
    if (!driver) {
      this.stats.failures++;
      log.error({ ...ctx, db, gid, code: ErrorCode.SQL_DB_UNKNOWN }, `cannot finish a SQL branch: database "${db}" is no longer configured; add --db ${db}=… back`);
      return false;
    }
    let last: unknown;
    for (const delay of finishRetryDelaysMs) {
      if (this.stopped) return false;
      if (delay) await Bun.sleep(delay);
      const triedBefore = this.commitTried.has(gid);
      if (outcome === "commit") this.commitTried.add(gid);
      try {
        const result = await driver.finish(gid, outcome);
        if (result === "busy") {
          last = undefined;
          continue;
        }
        this.commitTried.delete(gid);
        if (result === "finished") {
          this.stats.finished++;
          log.info({ ...ctx, db, gid, outcome }, "SQL branch finished");
        } else if (outcome === "commit" && !triedBefore) {
          // Decided commit, no such gid, and no earlier try in this process: finished before a restart, or by an operator.
          log.warn({ ...ctx, db, gid, outcome, code: ErrorCode.SQL_GID_UNKNOWN }, "SQL branch to commit is not prepared in the database; it was finished earlier (before a restart) or by an operator");
        } else {
          log.debug({ ...ctx, db, gid, outcome }, "SQL branch already finished or never prepared");
        }
        return true;
      } catch (err) {
        last = err;
      }
    }
    this.stats.failures++;
    const why = last === undefined ? "the connection that prepared it has not closed yet" : (last as Error).message;
    log.warn({ ...ctx, db, gid, outcome, code: (last as DtxError | undefined)?.code, err: why }, "could not finish a SQL branch yet; the reconciler retries");
    return false;
  }

  /** One reconciliation pass over every database (passes never overlap). */
  reconcile(now = Date.now()): Promise<ReconcileReport> {
    this.reconciling ??= this.reconcileAll(now).finally(() => (this.reconciling = undefined));
    return this.reconciling;
  }

  private async reconcileAll(now: number): Promise<ReconcileReport> {
    const report: ReconcileReport = { committed: [], rolledBack: [], inDoubt: [], waiting: [] };
    const listed = new Set<string>();
    await Promise.all([...this.drivers.values()].map((d) => this.reconcileOne(d, now, report, listed)));
    for (const gid of this.orphanSeen.keys()) if (!listed.has(gid)) this.orphanSeen.delete(gid);
    return report;
  }

  private async reconcileOne(driver: SqlDriver, now: number, report: ReconcileReport, listed: Set<string>): Promise<void> {
    const { log, sidecar, reader, orphanMs } = this.opts;
    let gids: string[];
    try {
      gids = await driver.listPrepared();
    } catch (err) {
      return void log.warn({ db: driver.db.name, code: (err as DtxError).code ?? ErrorCode.SQL_CONNECTION_FAILED, err: (err as Error).message }, "cannot list prepared SQL branches; retrying at the next pass");
    }
    const work: Promise<boolean>[] = [];
    for (const gid of gids) {
      const p = parseGid(gid);
      if (!p || p.sidecar !== sidecar || p.db !== driver.db.name) continue; // someone else's
      listed.add(gid);
      const s = reader.branch(p.name, p.branch);
      let outcome: Outcome | undefined;
      if (s?.state === "committed") outcome = "commit";
      else if (s?.state === "rolled_back") outcome = "rollback";
      else if (s?.state === "prepared" && s.resources?.some((r) => r.gid === gid)) {
        report.inDoubt.push(gid);
        this.orphanSeen.delete(gid);
        continue;
      } else if (this.opts.branchLive(p.name, p.branch)) {
        this.orphanSeen.delete(gid);
        continue;
      } else {
        // An orphan: prepared by a service the branch never heard back from.
        const seen = this.orphanSeen.get(gid) ?? now;
        this.orphanSeen.set(gid, seen);
        if (now - seen < orphanMs) {
          report.waiting.push(gid);
          continue;
        }
        log.warn({ name: p.name, branch: p.branch, db: p.db, gid, ageMs: now - seen }, "rolling back an orphaned SQL branch (prepared, never reported to this sidecar)");
        this.stats.orphansRolledBack++;
        outcome = "rollback";
      }
      (outcome === "commit" ? report.committed : report.rolledBack).push(gid);
      this.orphanSeen.delete(gid);
      work.push(this.finish(driver.db.name, gid, outcome, { name: p.name, branch: p.branch, by: "reconciler" }));
    }
    await Promise.all(work);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    await Promise.race([Promise.all([...this.finishing.values()]), Bun.sleep(2_000)]);
    await Promise.all([...this.drivers.values()].map((d) => d.close().catch(() => {})));
  }
}
