// The coordinator of a 2PC transaction begun on this node: it opens the
// transaction with its own branch, accepts enlists, collects votes, writes
// c.prepared before beginDistributed resolves, decides, announces the decision
// until every branch has acked, and resends what may have been lost. It talks to
// its branches only by messages, also to the branch on its own node.
import { ErrorCode, wireError } from "../protocol/errors.ts";
import type { TxnState } from "../protocol/messages.ts";
import { contextToken } from "../protocol/token.ts";
import { limits, timing } from "../limits.ts";
import type { BranchRef, Outcome, Protocol } from "../wal/records.ts";
import { isTerminal } from "../wal/records.ts";
import { parkEnlist, refuseUnknown, takeParked } from "./early-enlist.ts";
import { type Engine, FORWARDED, type Op, type Peer, type Release } from "./engine.ts";
import { forwardDecision } from "./forwarding.ts";
import { clientBranchError, nameHeld, nameInUse } from "./names.ts";
import { applyWrites } from "./participant.ts";
import { abortedError, rolledBackError } from "./rollback-errors.ts";
import { selectProtocol } from "./select.ts";
import type { Branch, Coord, CoordBranch } from "./state.ts";
import type { ReplyTo } from "./types.ts";

/** The client's begin: open the transaction and answer with its context token. */
export function begin(e: Engine, req: Op<"begin">, from: ReplyTo, now: number) {
  const c = openTransaction(e, req, from, now);
  // Nothing here was logged, nor depends on what an earlier step logged and has not made durable yet (the
  // name check reads memory; a crash forgets this transaction either way): the reply need not wait for the
  // previous transaction's last records, which would add a sync to every begin at low load.
  if (c) e.ok(from, { name: c.name, branch: c.ownBranch, context: contextToken(c.name, e.id, c.ownBranch!, c.timeoutMs, c.traceparent), protocol: c.protocol }, "immediate");
}

/** Open a transaction and its own branch; on a refusal, answer `from` and return undefined. `branch`: an id the client chose. */
function openTransaction(e: Engine, req: Omit<Op<"begin">, "id" | "op">, from: ReplyTo, now: number): Coord | undefined {
  // Every unfinished transaction and branch is in memory (recovery loads them), so memory answers NAME_IN_USE.
  const held = nameHeld(e, req.name);
  if (held) return void e.fail(from, nameInUse(held));
  if (e.coords.size >= limits.inflightTxnsMax) {
    return void e.fail(from, wireError(ErrorCode.LIMIT_EXCEEDED, `more than inflightTxnsMax (${limits.inflightTxnsMax}) transactions in flight; retry later`));
  }
  const chosen = selectProtocol(req.protocol ?? "2pc", { consistency: req.consistency, availability: req.availability }, []);
  if (!chosen.ok) return void e.fail(from, chosen.error);
  if (chosen.protocol !== "2pc") {
    return void e.fail(from, wireError(ErrorCode.PROTOCOL_UNSUPPORTED, "beginDistributed runs 2PC; use createTransaction for Sagas"));
  }
  const badBranch = clientBranchError(e, req.name, req.branch);
  if (badBranch) return void e.fail(from, badBranch);
  const timeoutMs = req.timeoutMs ?? timing.defaultTimeoutMs;
  const branchId = req.branch ?? e.newBranchId();
  const c: Coord = {
    name: req.name,
    protocol: "2pc",
    state: "active",
    branches: new Map([[branchId, { id: branchId, sidecar: e.id, acked: false }]]),
    createdAt: now,
    deadline: now + timeoutMs,
    timeoutMs,
    preparedTimeoutMs: req.preparedTimeoutMs,
    traceparent: req.traceparent,
    owner: from.conn,
    ownBranch: branchId,
    durablePrepared: false,
    decideWaiters: [],
    lastResend: now,
  };
  e.addCoord(c);
  const own = e.newBranch(req.name, branchId, e.id, "active", from.conn, now + timeoutMs, now, req.traceparent);
  own.incarnation = branchId; // what its context token names
  e.addBranch(own);
  if (req.traceparent) e.traces.set(req.name, req.traceparent);
  for (const msg of takeParked(e, req.name)) onEnlist(e, msg, now);
  return c;
}

/**
 * The coordinator's client finished its callback: prepare every branch. With `begin`, the callback never
 * needed the sidecar and the transaction is begun here, as if `elapsedMs` ago (its timeout counts from then).
 */
export function prepare(e: Engine, req: Op<"prepare">, from: ReplyTo, now: number) {
  const { name, writes, branch } = req;
  if (req.begin) {
    const { elapsedMs, ...opts } = req.begin;
    const begun = openTransaction(e, { ...opts, name, branch }, from, now - elapsedMs);
    if (!begun) return;
    if (now >= begun.deadline) {
      abort(e, begun, `timed out after ${begun.timeoutMs} ms before every branch prepared`, undefined, false, now);
      return e.fail(from, abortedError(name, begun.reason));
    }
  }
  const c = e.coords.get(name);
  if (!c || (branch !== undefined && c.ownBranch !== branch)) {
    // Rolled back before its client asked to prepare (a branch voted no when its callback ended) and already
    // forgotten from memory: the log still says why.
    const s = e.reader.coordinator(name);
    if (s?.state === "rolled_back" && (branch === undefined || s.branches.some((b) => b.id === branch))) {
      return e.fail(from, rolledBackError(name, s.conflict, s.reason, s.participant));
    }
    const which = branch === undefined ? "" : ` with branch ${branch}`;
    return e.fail(from, wireError(ErrorCode.NOT_FOUND, `no active transaction "${name}"${which} coordinated by sidecar ${e.id}`));
  }
  switch (c.state) {
    case "active":
      break;
    case "prepared":
      if (writes?.length) return e.fail(from, wireError(ErrorCode.INVALID_STATE, `transaction "${name}" is already prepared; it takes no more writes`));
      return e.ok(from, { name, state: "prepared", protocol: c.protocol });
    case "rolling_back":
    case "rolled_back":
      return e.fail(from, rolledBackError(name, c.conflict, c.reason, c.participant));
    default:
      return e.fail(from, wireError(ErrorCode.INVALID_STATE, `transaction "${name}" is ${c.state}`));
  }
  if (writes?.length) {
    const own = ownBranch(e, c);
    const refused = own?.state === "active" ? applyWrites(own, writes) : wireError(ErrorCode.INVALID_STATE, `the branch of "${name}" is ${own?.state ?? "gone"}`);
    if (refused) {
      abort(e, c, refused.message, undefined, false, now);
      return e.fail(from, refused);
    }
  }
  c.state = "preparing";
  c.prepareWaiter = from;
  c.lastResend = now;
  // Only begin's own branch: a joined branch on this node is still running until its client ends it.
  const own = ownBranch(e, c);
  if (own && own.state === "active") own.state = "done";
  askVotes(e, c, false);
}

/**
 * Ask the branches that have not voted to prepare. A joined branch prepares
 * and votes by itself when its callback ends, so it is asked only on a
 * resend (its vote may have been lost, or its sidecar restarted). Begin's
 * own branch is asked last, once every other branch voted yes: its prepared
 * record then joins c.prepared in one sync instead of taking one before it.
 */
function askVotes(e: Engine, c: Coord, resend: boolean) {
  let othersVoted = true;
  for (const b of c.branches.values()) {
    if (b.id === c.ownBranch || b.vote !== undefined) continue;
    othersVoted = false;
    if (resend) e.send(b.sidecar, { t: "prepare", name: c.name, branch: b.id, from: e.id });
  }
  const own = c.ownBranch === undefined ? undefined : c.branches.get(c.ownBranch);
  if (othersVoted && own && own.vote === undefined) e.send(own.sidecar, { t: "prepare", name: c.name, branch: own.id, from: e.id });
}

/** `branch`: begin's branch, given by a client rolling back its own transaction; never another one of the same name. */
export function decide(e: Engine, name: string, outcome: Outcome, from: ReplyTo, now: number, reason?: string, branch?: string) {
  const c = e.coords.get(name);
  if (branch !== undefined && c?.ownBranch !== branch) {
    const s = e.reader.coordinator(name);
    if (s?.state === "rolled_back" && s.branches.some((b) => b.id === branch)) return replyDecided(e, from, name, s.state, s.protocol, outcome, s.reason, s.participant);
    return e.fail(from, wireError(ErrorCode.NOT_FOUND, `no transaction "${name}" with branch ${branch} coordinated by sidecar ${e.id}`));
  }
  if (!c) {
    const s = e.reader.coordinator(name);
    if (s && (s.state === "committed" || s.state === "rolled_back")) return replyDecided(e, from, name, s.state, s.protocol, outcome, s.reason, s.participant);
    if (from.conn !== FORWARDED) return forwardDecision(e, name, outcome, from, now);
    return e.fail(from, wireError(ErrorCode.NOT_FOUND, `no transaction "${name}" coordinated by sidecar ${e.id}`));
  }
  switch (c.state) {
    case "active":
    case "preparing":
      if (outcome === "commit") {
        return e.fail(from, wireError(ErrorCode.INVALID_STATE, `transaction "${name}" is ${c.state}; commit it after beginDistributed resolves`));
      }
      c.decideWaiters.push({ to: from, since: now });
      return abort(e, c, reason ?? "rolled back by the client", undefined, false, now);
    case "prepared":
      c.decideWaiters.push({ to: from, since: now });
      if (outcome === "commit") return commit(e, c, now);
      return abort(e, c, reason ?? "rolled back by the client", undefined, false, now);
    case "committing":
      if (outcome === "commit") return void c.decideWaiters.push({ to: from, since: now });
      return e.fail(from, wireError(ErrorCode.INVALID_STATE, `transaction "${name}" is committing; a decision is never changed`));
    case "rolling_back":
      if (outcome === "rollback") return void c.decideWaiters.push({ to: from, since: now });
      return e.fail(from, abortedError(name, c.reason, c.participant));
    case "committed":
    case "rolled_back":
      return replyDecided(e, from, name, c.state, c.protocol, outcome, c.reason, c.participant, pendingOf(c));
    default:
      return e.fail(from, wireError(ErrorCode.INVALID_STATE, `transaction "${name}" is ${c.state}`));
  }
}

/** `unlogged`: the answer depends only on what earlier steps logged (the decision), not on this step's records. */
function replyDecided(e: Engine, to: ReplyTo, name: string, state: TxnState, protocol: Protocol, asked: Outcome, reason?: string, participant?: string, pending: string[] = [], release?: Release) {
  if (state === "committed") {
    if (asked === "commit") return e.ok(to, { name, outcome: "committed", protocol, pending }, release);
    return e.fail(to, wireError(ErrorCode.INVALID_STATE, `transaction "${name}" is committed; a decision is never changed`), release);
  }
  if (asked === "rollback") return e.ok(to, { name, outcome: "rolled_back", protocol, pending }, release);
  return e.fail(to, abortedError(name, reason, participant), release);
}

function commit(e: Engine, c: Coord, now: number) {
  c.state = "committing";
  c.outcome = "commit";
  c.decidedAt = now;
  c.lastResend = now;
  e.persist({ r: "c.decision", name: c.name, protocol: c.protocol, outcome: "commit", branches: refs(c), createdAt: c.createdAt, at: now });
  announce(e, c);
  maybeFinish(e, c, now);
}

/** Roll back: logged first once c.prepared is durable, so the decision can never flip. */
export function abort(e: Engine, c: Coord, reason: string, participant: string | undefined, conflict: boolean, now: number) {
  c.state = "rolling_back";
  c.outcome = "rollback";
  c.decidedAt = now;
  c.lastResend = now;
  c.reason = reason;
  c.participant = participant;
  c.conflict = conflict;
  if (c.durablePrepared) {
    e.persist({ r: "c.decision", name: c.name, protocol: c.protocol, outcome: "rollback", branches: refs(c), createdAt: c.createdAt, at: now, reason, participant });
  }
  if (c.prepareWaiter) {
    e.fail(c.prepareWaiter, rolledBackError(c.name, conflict, reason, participant));
    c.prepareWaiter = undefined;
  }
  announce(e, c);
  maybeFinish(e, c, now);
}

/** Send the decision to every branch that still owes an ack. */
export function announce(e: Engine, c: Coord) {
  for (const b of c.branches.values()) {
    if (needsAck(b, c.outcome)) e.send(b.sidecar, { t: "decision", name: c.name, branch: b.id, from: e.id, outcome: c.outcome! });
  }
}

function maybeFinish(e: Engine, c: Coord, now: number) {
  for (const b of c.branches.values()) if (needsAck(b, c.outcome)) return;
  c.state = c.outcome === "commit" ? "committed" : "rolled_back";
  c.finishedAt = now;
  e.persist({ r: "c.end", name: c.name, protocol: c.protocol, outcome: c.outcome!, branches: refs(c), createdAt: c.createdAt, at: now, reason: c.reason, participant: c.participant, ...(c.conflict ? { conflict: true } : {}) });
  // The outcome was durable before any branch heard it and every branch has acked: the answer need not wait for c.end,
  // which only lets the log forget the transaction (lost in a crash, recovery re-announces and the branches ack again).
  for (const w of c.decideWaiters) replyDecided(e, w.to, c.name, c.state, c.protocol, c.outcome!, c.reason, c.participant, [], "unlogged");
  c.decideWaiters = [];
}

function pendingOf(c: Coord): string[] {
  return [...c.branches.values()].filter((b) => needsAck(b, c.outcome)).map((b) => b.sidecar);
}

export function onVote(e: Engine, msg: Peer<"vote">, now: number) {
  const c = e.coords.get(msg.name);
  const b = c?.branches.get(msg.branch);
  if (!c || !b) {
    // A yes from a branch we do not know (stale, or we lost an undecided txn): presumed abort.
    if (msg.vote === "yes") e.send(msg.from, { t: "decision", name: msg.name, branch: msg.branch, from: e.id, outcome: c ? "rollback" : presumed(e, msg.name, msg.branch) });
    return;
  }
  if (c.state !== "preparing" && c.state !== "active") {
    // Duplicate or late vote: tell a prepared branch the decision if there is one.
    if (msg.vote === "yes" && c.outcome) e.send(msg.from, { t: "decision", name: c.name, branch: b.id, from: e.id, outcome: c.outcome });
    return;
  }
  if (msg.vote === "no") {
    b.vote = "no";
    b.acked = true;
    return abort(e, c, msg.reason ?? `branch ${b.id} on ${b.sidecar} voted no`, b.sidecar, msg.conflict ?? false, now);
  }
  // A branch that prepared when its callback ended votes before the coordinator prepares: keep the vote.
  b.vote = msg.vote;
  if (msg.vote === "readonly") b.acked = true;
  if (c.state !== "preparing") return;
  for (const x of c.branches.values()) {
    if (x.vote === "yes" || x.vote === "readonly") continue;
    // The last vote missing is begin's own branch's: ask it now (askVotes held it back).
    if (x.id === c.ownBranch && msg.branch !== c.ownBranch) askVotes(e, c, false);
    return;
  }
  // Every branch voted yes durably: record it before beginDistributed resolves (DESIGN §8).
  c.state = "prepared";
  c.preparedAt = now;
  c.durablePrepared = true;
  e.persist({
    r: "c.prepared",
    name: c.name,
    protocol: c.protocol,
    branches: refs(c),
    createdAt: c.createdAt,
    at: now,
    preparedTimeoutMs: c.preparedTimeoutMs,
    traceparent: c.traceparent,
  });
  if (c.prepareWaiter) {
    e.ok(c.prepareWaiter, { name: c.name, state: "prepared", protocol: c.protocol });
    c.prepareWaiter = undefined;
  }
}

/** The outcome for a transaction this node does not hold in memory. */
function presumed(e: Engine, name: string, branch: string): Outcome {
  const s = e.reader.coordinator(name);
  // A commit counts only for the branches it names: another branch is from an earlier transaction of the same name.
  return s && (s.state === "committed" || s.state === "committing") && s.branches.some((b) => b.id === branch) ? "commit" : "rollback";
}

export function onEnlist(e: Engine, msg: Peer<"enlist">, now: number) {
  const c = e.coords.get(msg.name);
  if (c?.branches.has(msg.branch)) {
    // Retransmitted enlist: answer again once the enlist record is durable (it is, or is pending before this).
    if (c.state === "active" || c.state === "preparing") e.send(msg.from, { t: "enlisted", name: msg.name, branch: msg.branch, from: e.id });
    return;
  }
  const otherIncarnation = c && msg.incarnation && c.ownBranch && msg.incarnation !== c.ownBranch;
  if (!c || (otherIncarnation && isTerminal(c.state))) {
    // Maybe not begun yet: the token names a transaction whose begin has not arrived (the one in memory, if any, finished).
    if (!parkEnlist(e, msg, now)) refuseUnknown(e, msg);
    return;
  }
  if (otherIncarnation) {
    // A token of an earlier transaction with the same name must not join this one.
    return e.send(msg.from, { t: "enlist_refused", name: msg.name, branch: msg.branch, from: e.id, reason: `the token belongs to an earlier transaction named "${msg.name}"` });
  }
  if (c.state !== "active") {
    const code = c.state === "rolling_back" || c.state === "rolled_back" ? "TRANSACTION_ABORTED" : "INVALID_STATE";
    return e.send(msg.from, { t: "enlist_refused", name: msg.name, branch: msg.branch, from: e.id, reason: `transaction "${msg.name}" is ${c.state}; joins are accepted only while it is active`, code });
  }
  if (c.branches.size >= limits.branchesPerTxnMax) {
    return e.send(msg.from, { t: "enlist_refused", name: msg.name, branch: msg.branch, from: e.id, reason: `more than branchesPerTxnMax (${limits.branchesPerTxnMax}) branches`, code: "LIMIT_EXCEEDED" });
  }
  const ref = { id: msg.branch, sidecar: msg.from };
  c.branches.set(msg.branch, { ...ref, acked: false });
  e.persist({ r: "c.enlist", name: c.name, protocol: c.protocol, branch: ref, at: now });
  e.send(msg.from, { t: "enlisted", name: msg.name, branch: msg.branch, from: e.id });
}

export function onAck(e: Engine, msg: Peer<"ack">, now: number) {
  const c = e.coords.get(msg.name);
  const b = c?.branches.get(msg.branch);
  if (!c || !b || !c.outcome || b.acked) return;
  b.acked = true;
  if (c.state === "committing" || c.state === "rolling_back") maybeFinish(e, c, now);
}

export function onQuery(e: Engine, msg: Peer<"query">) {
  const c = e.coords.get(msg.name);
  if (c && c.branches.has(msg.branch)) {
    // Undecided: the branch keeps waiting (it must never decide alone).
    if (c.outcome) e.send(msg.from, { t: "decision", name: c.name, branch: msg.branch, from: e.id, outcome: c.outcome });
    return;
  }
  // Not a branch of the transaction held under this name (never enlisted, or left from an earlier one of the same name): abort it.
  e.send(msg.from, { t: "decision", name: msg.name, branch: msg.branch, from: e.id, outcome: c ? "rollback" : presumed(e, msg.name, msg.branch) });
}

/** Timeouts and resends of one live transaction; a finished one leaves the tick. */
export function tickCoord(e: Engine, c: Coord, now: number) {
  switch (c.state) {
    case "active":
    case "preparing":
      if (now >= c.deadline) abort(e, c, `timed out after ${c.timeoutMs} ms before every branch prepared`, undefined, false, now);
      else if (c.state === "preparing" && now - c.lastResend >= timing.resendMs) {
        // A prepare lost while its participant was down would otherwise wait out the whole timeoutMs.
        c.lastResend = now;
        askVotes(e, c, true);
      }
      break;
    case "prepared":
      if (c.preparedTimeoutMs !== undefined && now - (c.preparedAt ?? now) >= c.preparedTimeoutMs) {
        abort(e, c, `no decision within preparedTimeoutMs (${c.preparedTimeoutMs} ms)`, undefined, false, now);
      }
      break;
    case "committing":
    case "rolling_back":
      if (now - c.lastResend >= timing.resendMs) {
        c.lastResend = now;
        announce(e, c);
      }
      // Durable decision, some participants unreachable: whoever waited ackWaitMs is answered, with them as pending;
      // the decision is retried in the background. (Recovered and re-asked decisions are bounded the same way.)
      if (c.decideWaiters.length && now - c.decideWaiters[0].since >= e.ackWaitMs) {
        const due = c.decideWaiters.filter((w) => now - w.since >= e.ackWaitMs);
        c.decideWaiters = c.decideWaiters.filter((w) => now - w.since < e.ackWaitMs);
        const pending = pendingOf(c);
        const decided = c.outcome === "commit" ? "committed" : "rolled_back";
        for (const w of due) replyDecided(e, w.to, c.name, decided, c.protocol, c.outcome!, c.reason, c.participant, pending);
      }
      break;
    case "committed":
    case "rolled_back":
      e.retireCoord(c, now);
      break;
  }
}

/** The branch begin opened for the transaction on this node, while it is in memory. */
function ownBranch(e: Engine, c: Coord): Branch | undefined {
  return c.ownBranch === undefined ? undefined : e.branch(c.name, c.ownBranch);
}

function needsAck(b: CoordBranch, outcome: Outcome | undefined): boolean {
  if (b.acked || b.vote === "readonly" || b.vote === "no") return false;
  // On commit only yes-voters take part in phase 2; on rollback everyone not yet finished does.
  return outcome === "commit" ? b.vote === "yes" : true;
}

function refs(c: Coord): BranchRef[] {
  return [...c.branches.values()].map((b) => (b.vote === "readonly" ? { id: b.id, sidecar: b.sidecar, readonly: true } : { id: b.id, sidecar: b.sidecar }));
}
