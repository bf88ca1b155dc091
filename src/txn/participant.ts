// The participant: a branch of a transaction that lives on this node, begin's own
// or one joined with a context token. It enlists with its coordinator, runs the
// client's reads and writes, prepares (locks and validates) when its callback
// ends, and then only follows its coordinator: a branch that voted yes never
// decides alone, it asks (DESIGN §8).
import { ErrorCode, type WireError, wireError } from "../protocol/errors.ts";
import type { ContextToken } from "../protocol/token.ts";
import { decodeToken } from "../protocol/token.ts";
import { limits, timing } from "../limits.ts";
import { staleRead } from "../store/locks.ts";
import type { BranchSummary, LogRecord, Write } from "../wal/records.ts";
import { type Engine, type Op, type Peer, bkey } from "./engine.ts";
import { clientBranchError, nameHeld, nameInUse } from "./names.ts";
import { abortedError } from "./rollback-errors.ts";
import { ackOnceSqlFinished, finishBranchSql, sqlRef } from "./sql-resources.ts";
import type { Branch } from "./state.ts";
import type { ReplyTo } from "./types.ts";

/** Enlist a new branch with the token's coordinator; `from` is answered once it is (or is refused). `branch`: an id the client chose. */
export function join(e: Engine, t: ContextToken | undefined, from: ReplyTo, now: number, branch?: string): Branch | undefined {
  if (!t) return void e.fail(from, wireError(ErrorCode.BAD_REQUEST, "token: not a dtx context token (pass tx.context unchanged)"));
  const badBranch = clientBranchError(e, t.name, branch);
  if (badBranch) return void e.fail(from, badBranch);
  const held = nameHeld(e, t.name, t.incarnation ?? null);
  if (held) return void e.fail(from, nameInUse(held));
  const branchId = branch ?? e.newBranchId();
  const b = e.newBranch(t.name, branchId, t.coordinator, "joining", from.conn, now + (t.timeoutMs ?? timing.defaultTimeoutMs), now, t.traceparent);
  b.joinWaiter = from;
  b.joinedAt = now;
  e.addBranch(b);
  b.incarnation = t.incarnation;
  if (t.traceparent) e.traces.set(t.name, t.traceparent);
  sendEnlist(e, b);
  return b;
}

export function get(e: Engine, req: Op<"get">, from: ReplyTo) {
  if (req.name === undefined) {
    const found = e.reader.kvGet(req.key);
    return e.ok(from, found ? { found: true, value: found.value } : { found: false });
  }
  const b = e.activeBranch(req.name, req.branch, from);
  if (!b) return;
  const w = b.writes.get(req.key);
  if (w) return e.ok(from, w.deleted ? { found: false } : { found: true, value: w.value });
  const found = e.reader.kvGet(req.key);
  if (!b.reads.has(req.key)) b.reads.set(req.key, found?.version ?? 0);
  e.ok(from, found ? { found: true, value: found.value } : { found: false });
}

export function write(e: Engine, req: Op<"put" | "delete">, from: ReplyTo) {
  const b = e.activeBranch(req.name, req.branch, from);
  if (!b) return;
  const refused = applyWrites(b, [[req.key, req.op === "put" ? req.value : null, req.op === "delete"]]);
  if (refused) return e.fail(from, refused);
  e.ok(from);
}

/** Writes into an active branch (one put/delete, or what the client buffered and sent with prepare/end). */
export function applyWrites(b: Branch, writes: [string, unknown, boolean][]): WireError | undefined {
  b.ops += writes.length;
  if (b.ops > limits.opsPerBranchMax) {
    return wireError(ErrorCode.LIMIT_EXCEEDED, `more than opsPerBranchMax (${limits.opsPerBranchMax}) operations in one branch`);
  }
  for (const [key, value, deleted] of writes) b.writes.set(key, deleted ? { value: null, deleted: true } : { value, deleted: false });
  return undefined;
}

/** A joined branch's callback finished (ok) or threw (not ok). */
export function end(e: Engine, req: Op<"end">, from: ReplyTo, now: number) {
  if (req.join !== undefined) {
    // Join first; the end runs once the coordinator has the branch (onEnlisted), or fails with the join.
    const t = decodeToken(req.join);
    if (t && t.name !== req.name) return e.fail(from, wireError(ErrorCode.BAD_REQUEST, `join: the token names transaction "${t.name}", not "${req.name}"`));
    const joining = join(e, t, from, now, req.branch);
    if (joining) joining.pendingEnd = { ...req, join: undefined };
    return;
  }
  const b = e.branch(req.name, req.branch);
  if (!b) return e.fail(from, wireError(ErrorCode.NOT_FOUND, `no branch ${req.branch} of "${req.name}" on sidecar ${e.id}`));
  if (b.state !== "active") {
    if (b.state === "rolled_back") return e.fail(from, abortedError(req.name, "the transaction was rolled back"));
    return e.fail(from, wireError(ErrorCode.INVALID_STATE, `branch ${b.id} of "${req.name}" is ${b.state}`));
  }
  const refused = req.ok && req.writes?.length ? applyWrites(b, req.writes) : undefined;
  if (!req.ok || refused) {
    voteNo(e, b, refused?.message ?? req.reason ?? "the joined callback failed", false, now);
    return refused ? e.fail(from, refused) : e.ok(from);
  }
  b.state = "done";
  // The answer promises only that the callback's work reached the sidecar, not that it is prepared: it need not wait for p.prepared.
  e.ok(from, {}, "unlogged");
  // Prepare now, without waiting to be asked: the yes vote is usually at the coordinator before its client asks it to
  // prepare, so its prepare phase needs no round trip to this sidecar. Presumed abort is unchanged: if the coordinator
  // never records the transaction prepared, this branch asks and rolls back.
  prepareBranch(e, b, now);
}

export function onPrepare(e: Engine, msg: Peer<"prepare">, now: number) {
  const b = e.branch(msg.name, msg.branch);
  if (!b) {
    return e.send(msg.from, { t: "vote", name: msg.name, branch: msg.branch, from: e.id, vote: "no", reason: `branch ${msg.branch} is unknown on sidecar ${e.id} (lost before prepare)` });
  }
  b.lastContact = now;
  switch (b.state) {
    case "joining":
    case "active":
      b.pendingPrepare = true; // prepared when its callback ends
      return;
    case "done":
      return prepareBranch(e, b, now);
    case "prepared":
      return e.send(b.coordinator, { t: "vote", name: b.name, branch: b.id, from: e.id, vote: "yes" });
    case "committed":
      if (b.writes.size === 0) e.send(b.coordinator, { t: "vote", name: b.name, branch: b.id, from: e.id, vote: "readonly" });
      return;
    case "rolled_back":
      return e.send(b.coordinator, { t: "vote", name: b.name, branch: b.id, from: e.id, vote: "no", reason: `branch ${b.id} was rolled back` });
  }
}

function prepareBranch(e: Engine, b: Branch, now: number) {
  b.pendingPrepare = false;
  const unprepared = b.resources.find((r) => !r.prepared);
  if (unprepared) {
    return voteNo(e, b, `the SQL branch in database "${unprepared.db}" (gid ${unprepared.gid}) was not prepared`, false, now);
  }
  const keys = new Set([...b.reads.keys(), ...b.writes.keys()]);
  const held = e.locks.tryLockAll(bkey(b.name, b.id), keys);
  const stale = held === undefined ? staleRead(b.reads, e.reader) : undefined;
  if (held !== undefined || stale !== undefined) {
    if (held === undefined) e.locks.releaseAll(bkey(b.name, b.id), keys);
    const reason = held !== undefined ? `key "${held}" is locked by another prepared transaction` : `key "${stale}" changed after it was read`;
    return voteNo(e, b, reason, true, now);
  }
  if (b.writes.size === 0 && b.resources.length === 0) {
    // Read-only: validated now, nothing to commit, no phase 2.
    e.locks.releaseAll(bkey(b.name, b.id), keys);
    b.state = "committed";
    b.vote = "readonly";
    b.finishedAt = now;
    b.applied = true;
    return e.send(b.coordinator, { t: "vote", name: b.name, branch: b.id, from: e.id, vote: "readonly" });
  }
  b.locked = [...keys];
  b.state = "prepared";
  b.vote = "yes";
  b.preparedAt = now;
  const resources = b.resources.length ? { resources: b.resources.map(sqlRef) } : {};
  e.persist({ r: "p.prepared", name: b.name, branch: b.id, coordinator: b.coordinator, writes: writeSet(b), reads: [...b.reads.keys()], at: now, ...resources, ...branchOrigin(b) });
  e.send(b.coordinator, { t: "vote", name: b.name, branch: b.id, from: e.id, vote: "yes" });
}

export function onDecision(e: Engine, msg: Peer<"decision">, now: number) {
  const b = e.branch(msg.name, msg.branch);
  const ack = () => e.send(msg.from, { t: "ack", name: msg.name, branch: msg.branch, from: e.id });
  if (!b) return ack(); // finished and forgotten, or never prepared (presumed abort)
  b.lastContact = now;
  switch (b.state) {
    case "prepared": {
      const version = msg.outcome === "commit" ? e.nextVersion() : 0;
      b.state = msg.outcome === "commit" ? "committed" : "rolled_back";
      b.finishedAt = now;
      e.persist({ r: "p.end", name: b.name, branch: b.id, coordinator: b.coordinator, outcome: msg.outcome, writes: msg.outcome === "commit" ? writeSet(b) : [], version, at: now, ...branchOrigin(b) });
      // The databases are finished after p.end is durable, and the ack waits for them: decided means done, so a
      // commit that returns is visible in every database (the reconciler still finishes what a crash interrupts).
      if (b.resources.length) finishBranchSql(e, b, msg.outcome);
      // Locks are released only once the outcome (and its writes) are durable.
      e.out.push({ k: "after", input: { k: "applied", name: b.name, branch: b.id, now } });
      return ackOnceSqlFinished(e, b, msg.from);
    }
    case "joining":
    case "active":
    case "done":
      if (msg.outcome === "rollback") abortBranch(e, b, now, b.state !== "joining", `rolled back by its coordinator`);
      return ackOnceSqlFinished(e, b, msg.from);
    case "committed":
    case "rolled_back":
      if (b.sqlUnfinished) finishBranchSql(e, b, b.state === "committed" ? "commit" : "rollback");
      return ackOnceSqlFinished(e, b, msg.from);
  }
}

export function onEnlisted(e: Engine, msg: Peer<"enlisted" | "enlist_refused">, now: number) {
  const b = e.branch(msg.name, msg.branch);
  if (!b || b.state !== "joining") return;
  const waiter = b.joinWaiter;
  b.joinWaiter = undefined;
  if (msg.t === "enlisted") {
    b.state = "active";
    b.lastContact = now;
    const pending = b.pendingEnd;
    b.pendingEnd = undefined;
    if (pending && waiter) return end(e, pending, waiter, now);
    if (waiter) e.ok(waiter, { name: b.name, branch: b.id, coordinator: b.coordinator });
    return;
  }
  if (msg.unknown && now - b.joinedAt < timing.resendMs) {
    // The token can travel faster than its begin (the client sends begin without waiting for it). The
    // coordinator holds such an enlist for enlistParkMs before it refuses it as unknown; the branch, while
    // young, asks again: at once the first time, then at each tick.
    b.joinWaiter = waiter;
    if (b.enlistRepeated) b.lastContact = now - timing.resendMs; // the next tick asks
    else {
      b.enlistRepeated = true;
      b.lastContact = now;
      sendEnlist(e, b);
    }
    return;
  }
  abortBranch(e, b, now, false);
  if (!waiter) return;
  if (msg.code === "TRANSACTION_ABORTED") e.fail(waiter, abortedError(b.name, `join refused: ${msg.reason}`, msg.from));
  else e.fail(waiter, wireError(msg.code === "LIMIT_EXCEEDED" ? ErrorCode.LIMIT_EXCEEDED : ErrorCode.INVALID_STATE, `join refused: ${msg.reason}`));
}

/**
 * Roll back a branch that never prepared (presumed abort: nothing needs logging). `enlisted`: its
 * coordinator knows it, so its rollback is the transaction's: logged lazily, for status only (a crash
 * that loses it leaves the branch unknown here, which presumed abort reads the same way). A branch
 * with SQL work logs it durably, so the reconciler rolls its gids back whatever happens next.
 */
function abortBranch(e: Engine, b: Branch, now: number, enlisted = true, reason?: string) {
  if (b.state === "prepared") throw new Error(`abortBranch on prepared branch ${b.id}: only the coordinator decides`);
  b.pendingEnd = undefined;
  if (b.locked.length) e.locks.releaseAll(bkey(b.name, b.id), b.locked);
  b.locked = [];
  b.state = "rolled_back";
  b.finishedAt = now;
  b.applied = true;
  b.reason ??= reason;
  const rec: LogRecord = {
    r: "p.end",
    name: b.name,
    branch: b.id,
    coordinator: b.coordinator,
    outcome: "rollback",
    writes: [],
    version: 0,
    at: now,
    ...branchOrigin(b),
    ...(b.vote === "no" ? { vote: "no" as const } : {}),
    ...(b.reason ? { reason: b.reason.slice(0, limits.reasonCharsMax) } : {}),
  };
  if (b.resources.length) {
    e.persist(rec);
    finishBranchSql(e, b, "rollback");
  } else if (enlisted && b.coordinator !== e.id) {
    e.persistLazy(rec); // the coordinator's own branch needs none: its c.end says it all
  }
  if (b.joinWaiter) {
    e.fail(b.joinWaiter, abortedError(b.name, "the transaction was rolled back before the join completed"));
    b.joinWaiter = undefined;
  }
}

/** The branch votes no and rolls back: it will never prepare. */
export function voteNo(e: Engine, b: Branch, reason: string, conflict: boolean, now: number) {
  b.vote = "no";
  abortBranch(e, b, now, b.state !== "joining", reason);
  e.send(b.coordinator, { t: "vote", name: b.name, branch: b.id, from: e.id, vote: "no", reason, ...(conflict ? { conflict: true } : {}) });
}

/** The runtime made the branch's final record durable: its locks go. */
export function onApplied(e: Engine, name: string, branch: string) {
  const b = e.branch(name, branch);
  if (!b) return;
  e.locks.releaseAll(bkey(name, branch), b.locked);
  b.locked = [];
  b.applied = true;
}

export function tickBranch(e: Engine, b: Branch, now: number) {
  switch (b.state) {
    case "joining":
      if (now >= b.deadline) abortBranch(e, b, now, false);
      else if (now - b.lastContact >= timing.resendMs) {
        b.lastContact = now;
        sendEnlist(e, b);
      }
      break;
    case "active":
    case "done":
      // A remote coordinator that never asked us to prepare in time has given up.
      if (b.coordinator !== e.id && now >= b.deadline) voteNo(e, b, `branch ${b.id} timed out before prepare`, false, now);
      break;
    case "prepared":
      // In doubt: ask, never decide alone.
      if (now - b.lastContact >= timing.askCoordinatorMs) {
        b.lastContact = now;
        e.send(b.coordinator, { t: "query", name: b.name, branch: b.id, from: e.id });
      }
      break;
    case "committed":
    case "rolled_back":
      // Kept live until its writes are applied, its locks released and its SQL work finished.
      if (b.applied && !b.sqlUnfinished) e.retireBranch(b, now);
      break;
  }
}

// ---- presumed abort at recovery ------------------------------------------------

/** SQL resources registered, branch never prepared: presumed abort, made durable; roll the databases back. */
export function abortUnprepared(e: Engine, s: BranchSummary, now: number) {
  e.persist({ r: "p.end", name: s.name, branch: s.branch, coordinator: s.coordinator, outcome: "rollback", writes: [], version: 0, at: now });
  if (s.resources?.length) e.out.push({ k: "finish_sql", name: s.name, branch: s.branch, resources: s.resources, outcome: "rollback" });
}

/**
 * A recovered prepared branch whose coordinator is this node, whose log does not list it: presumed abort,
 * decided here and now, so the name is free again as soon as the sidecar is ready (the branch would only
 * ask itself at the first tick).
 */
export function abortIfCoordinatorForgot(e: Engine, b: Branch, now: number) {
  if (b.coordinator !== e.id) return;
  const c = e.reader.coordinator(b.name);
  if (!c || c.state === "rolled_back" || !c.branches.some((x) => x.id === b.id)) {
    onDecision(e, { t: "decision", name: b.name, branch: b.id, from: e.id, outcome: "rollback" }, now);
  }
}

// ---- helpers -----------------------------------------------------------------

function sendEnlist(e: Engine, b: Branch) {
  e.send(b.coordinator, { t: "enlist", name: b.name, branch: b.id, from: e.id, traceparent: b.traceparent, incarnation: b.incarnation });
}

/** Who the branch belongs to, for its records: the transaction's incarnation and when the branch began. */
function branchOrigin(b: Branch): { incarnation?: string; begun?: number } {
  return { ...(b.incarnation ? { incarnation: b.incarnation } : {}), ...(b.joinedAt ? { begun: b.joinedAt } : {}) };
}

function writeSet(b: Branch): Write[] {
  return [...b.writes].map(([k, w]) => [k, w.value, w.deleted]);
}
