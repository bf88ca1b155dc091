// A branch's SQL work (DESIGN §5.3): each database it runs SQL in is logged
// before the service learns the gid, reported prepared by the service, finished
// by the runtime after the decision is durable, and the decision's ack waits
// until the databases are finished ("decided means done").
import { ErrorCode, wireError } from "../protocol/errors.ts";
import { formatGid } from "../protocol/sql-branch.ts";
import { limits } from "../limits.ts";
import type { Outcome, SqlResourceRef } from "../wal/records.ts";
import type { Engine, Op } from "./engine.ts";
import { abortedError } from "./rollback-errors.ts";
import type { Branch } from "./state.ts";
import type { ReplyTo } from "./types.ts";

export function sqlRef(r: SqlResourceRef): SqlResourceRef {
  return { db: r.db, gid: r.gid, kind: r.kind };
}

/** Register a database for a branch's SQL work: logged before the service learns the gid (DESIGN §5.3). */
export function sqlOpen(e: Engine, req: Op<"sql_open">, from: ReplyTo, now: number) {
  const b = e.activeBranch(req.name, req.branch, from);
  if (!b) return;
  const db = e.databases.get(req.db);
  if (!db) {
    const known = [...e.databases.keys()].join(", ") || "none";
    return e.fail(from, wireError(ErrorCode.SQL_DB_UNKNOWN, `no database "${req.db}" is configured on sidecar ${e.id} (configured: ${known}); start the sidecar with --db ${req.db}=postgres://… or mysql://…`));
  }
  if (b.resources.some((r) => r.db === req.db)) {
    return e.fail(from, wireError(ErrorCode.SQL_GID_DUPLICATE, `branch ${b.id} of "${b.name}" already has a SQL branch in "${req.db}"; use one tx.sql("${req.db}") handle`));
  }
  if (b.resources.length >= limits.sqlResourcesPerBranchMax) {
    return e.fail(from, wireError(ErrorCode.LIMIT_EXCEEDED, `more than sqlResourcesPerBranchMax (${limits.sqlResourcesPerBranchMax}) databases in one branch`));
  }
  const made = formatGid({ sidecar: e.id, branch: b.id, db: req.db, name: b.name }, db.kind);
  if ("error" in made) return e.fail(from, wireError(ErrorCode.LIMIT_EXCEEDED, made.error));
  const resource: SqlResourceRef = { db: req.db, gid: made.gid, kind: db.kind };
  b.resources.push({ ...resource, prepared: false });
  e.persist({ r: "p.resource", name: b.name, branch: b.id, coordinator: b.coordinator, resource, at: now });
  e.ok(from, { ...resource, url: db.url });
}

/** The service prepared a branch's SQL work under its gid and closed that connection. */
export function sqlPrepared(e: Engine, req: Op<"sql_prepared">, from: ReplyTo) {
  const b = e.branch(req.name, req.branch);
  const r = b?.resources.find((x) => x.db === req.db);
  if (!b || !r || r.gid !== req.gid) {
    return e.fail(from, wireError(ErrorCode.SQL_GID_UNKNOWN, `sidecar ${e.id} has no SQL branch ${req.gid} in "${req.db}" for branch ${req.branch} of "${req.name}"`));
  }
  r.prepared = true;
  switch (b.state) {
    case "active":
    case "done":
      return e.ok(from);
    case "rolled_back":
      // Rolled back while the service was preparing: finish the now-prepared work as well.
      e.out.push({ k: "finish_sql", name: b.name, branch: b.id, resources: [sqlRef(r)], outcome: "rollback" });
      return e.fail(from, abortedError(b.name, e.coords.get(b.name)?.reason));
    default:
      return e.fail(from, wireError(ErrorCode.INVALID_STATE, `branch ${b.id} of "${b.name}" is ${b.state}; SQL branches are reported prepared before the callback's branch prepares`));
  }
}

/** Have the runtime finish every database of a decided branch; until "sql_finished" says it did, the branch stays unfinished. */
export function finishBranchSql(e: Engine, b: Branch, outcome: Outcome) {
  b.sqlUnfinished = true;
  e.out.push({ k: "finish_sql", name: b.name, branch: b.id, resources: b.resources.map(sqlRef), outcome });
}

/** Ack a decision, once the branch's SQL work is finished in its databases (at once without any). */
export function ackOnceSqlFinished(e: Engine, b: Branch, coordinator: string) {
  if (b.sqlUnfinished) return void (b.ackOwed = coordinator);
  e.send(coordinator, { t: "ack", name: b.name, branch: b.id, from: e.id });
}

/** The runtime finished (ok) or could not yet finish a branch's SQL work; a resent decision tries again. */
export function onSqlFinished(e: Engine, name: string, branch: string, ok: boolean) {
  const b = e.branch(name, branch);
  if (!b || !b.sqlUnfinished) return;
  // Not finished and no decision waits on it (the branch voted no): the reconciler finishes it from the log.
  if (!ok && !b.ackOwed) b.sqlUnfinished = false;
  if (!ok) return;
  b.sqlUnfinished = false;
  const to = b.ackOwed;
  b.ackOwed = undefined;
  if (to) e.send(to, { t: "ack", name: b.name, branch: b.id, from: e.id });
}
