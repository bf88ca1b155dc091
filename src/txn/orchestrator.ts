// Orchestrated transactions (the seed's DistributedTransactionManagerNode):
// createTransaction → addParticipant → execute, which picks 2PC or Saga and
// drives every participant to the end. Pure: calls to participants are
// effects, their results come back as inputs, time is handed in. What to do
// next is read from the log (orchestration-plan.ts); this file carries it out:
// calls with retries, the records, the decision and the end.
// Every finished operation is logged (o.step) before anything depends on it,
// so a restarted sidecar resumes where it was and never repeats a finished
// operation; retries reuse the operation's idempotency key.
import { idempotencyKeyOf } from "../participants/barrier.ts";
import type { CallOutcome } from "../participants/outcome.ts";
import { ErrorCode, type WireError, wireError } from "../protocol/errors.ts";
import { limits, timing } from "../limits.ts";
import type { PeerMessage, TxnState } from "../protocol/messages.ts";
import { type ParticipantSpec, type RetryPolicy, retryPolicy } from "../protocol/orchestration.ts";
import type { LockTable } from "../store/locks.ts";
import type { OrchestrationRecord, OrchestrationSummary, StepOp, StepOutcome } from "../wal/orchestration-records.ts";
import type { Protocol, Write } from "../wal/records.ts";
import { defined, isTerminal } from "../wal/records.ts";
import type { WalReader } from "../wal/wal.ts";
import { planSaga, planTwoPhase } from "./orchestration-plan.ts";
import { type Inflight, type Orch, hostOf, isStore, orchFromSummary, resultOf, statusOf } from "./orchestration-state.ts";
import { type Requirements, selectProtocol } from "./select.ts";
import { beforeImage, lockedKeyError, storeWrites } from "./store-step.ts";
import type { ParticipantCall, ReplyTo } from "./types.ts";

export interface OrchestratorHost {
  readonly reader: WalReader;
  readonly locks: LockTable;
  persist(rec: OrchestrationRecord): void;
  ok(to: ReplyTo, result: Record<string, unknown>): void;
  fail(to: ReplyTo, error: WireError): void;
  call(call: ParticipantCall): void;
  /** To a participant's sidecar (o_call: over a link that is up now, or not at all, see Effect "send"). */
  send(to: string, msg: PeerMessage): void;
  /** From the runtime's seeded PRNG: jitter only. */
  random(): number;
  nextVersion(): number;
  /** An id no other process of this sidecar makes: an execution's incarnation. */
  newId(): string;
}

type HostedResult = Extract<PeerMessage, { t: "o_result" }>;

type CreateReq = { name: string; protocol?: "auto" | Protocol; consistency?: Requirements["consistency"]; availability?: Requirements["availability"]; timeoutMs?: number; context?: unknown };

const policyOf = (s: ParticipantSpec): RetryPolicy => retryPolicy.parse(s.retryPolicy ?? {});
/** Passes one drive takes at most, each finishing something inline: a guard against a plan that never settles. */
const drivePassesMax = (o: Orch) => 4 * o.specs.length + 8;

export class Orchestrator {
  readonly orchs = new Map<string, Orch>();
  private callSeq = 0;

  constructor(
    private readonly host: OrchestratorHost,
    private readonly nodeId: string,
    /** This process: a hosted participant's answer counts only for a call this process made. */
    private readonly bootId: string,
  ) {}

  /** True when this name is taken by an orchestration that has not finished: `failed` holds it until resolved. */
  active(name: string): boolean {
    // Unfinished orchestrations, failed ones included, are all in memory (recovery loads them).
    const o = this.orchs.get(name);
    return !!o && !isTerminal(o.state);
  }

  create(req: CreateReq, from: ReplyTo, now: number) {
    if (this.active(req.name)) {
      return this.host.fail(from, wireError(ErrorCode.NAME_IN_USE, `transaction "${req.name}" is ${this.orchs.get(req.name)?.state}; a name stays taken until its transaction is final (a failed one until dtx resolve closes it)`));
    }
    const timeoutMs = req.timeoutMs ?? timing.orchestrationTimeoutMs;
    this.orchs.set(req.name, {
      name: req.name,
      state: "active",
      choice: req.protocol ?? "auto",
      requirements: { consistency: req.consistency, availability: req.availability },
      context: req.context,
      timeoutMs,
      createdAt: now,
      deadline: now + timeoutMs,
      specs: [],
      done: [],
      before: {},
      inflight: new Map(),
      waiters: [],
      executed: false,
      calledBefore: new Set(),
    });
    this.host.ok(from, { name: req.name, state: "active" });
  }

  add(name: string, spec: ParticipantSpec, from: ReplyTo) {
    const o = this.orchs.get(name);
    if (!o) return this.host.fail(from, wireError(ErrorCode.NOT_FOUND, `no orchestrated transaction "${name}" on sidecar ${this.nodeId}; createTransaction first`));
    if (o.executed || o.state !== "active") return this.host.fail(from, wireError(ErrorCode.INVALID_STATE, `transaction "${name}" is already executing; add participants before execute`));
    if (o.specs.some((s) => s.participantId === spec.participantId)) {
      return this.host.fail(from, wireError(ErrorCode.BAD_REQUEST, `participantId "${spec.participantId}" is already in "${name}"`));
    }
    if (o.specs.length >= limits.branchesPerTxnMax) {
      return this.host.fail(from, wireError(ErrorCode.LIMIT_EXCEEDED, `more than branchesPerTxnMax (${limits.branchesPerTxnMax}) participants in "${name}"`));
    }
    // This sidecar's store (store:) takes part in Sagas only; store:<sidecar-id> is hosted, and takes part in 2PC too.
    o.specs.push(isStore(spec) ? { ...spec, supports2pc: false } : spec);
    o.done.push([]);
    this.host.ok(from, { name, participants: o.specs.length });
  }

  execute(name: string, from: ReplyTo, now: number) {
    const o = this.orchs.get(name) ?? this.fromSummary(name, now);
    if (!o) return this.host.fail(from, wireError(ErrorCode.NOT_FOUND, `no orchestrated transaction "${name}" on sidecar ${this.nodeId}`));
    if (isTerminal(o.state) || o.state === "failed") return this.host.ok(from, resultOf(o, this.nodeId));
    o.waiters.push(from);
    if (o.executed) return;
    if (o.specs.length === 0) {
      o.waiters = [];
      return this.host.fail(from, wireError(ErrorCode.BAD_REQUEST, `transaction "${name}" has no participants; addParticipant first`));
    }
    const chosen = selectProtocol(o.choice, o.requirements, o.specs.map((s) => ({ participantId: s.participantId, supports2pc: s.supports2pc, supportsSaga: s.supportsSaga })));
    if (!chosen.ok) {
      // Nothing has run: the transaction is simply dropped.
      this.orchs.delete(name);
      o.waiters = [];
      return this.host.fail(from, chosen.error);
    }
    o.protocol = chosen.protocol;
    o.incarnation = this.host.newId();
    o.executed = true;
    o.state = o.protocol === "2pc" ? "preparing" : "active";
    o.deadline = now + o.timeoutMs;
    this.host.persist({
      r: "o.begin",
      name,
      protocol: o.protocol,
      participants: o.specs,
      requirements: { ...o.requirements },
      context: o.context,
      createdAt: o.createdAt,
      at: now,
      timeoutMs: o.timeoutMs,
      incarnation: o.incarnation,
    });
    this.drive(o, now);
  }

  abort(name: string, from: ReplyTo, now: number, reason = "aborted by the client") {
    const o = this.orchs.get(name) ?? this.fromSummary(name, now);
    if (!o) return this.host.fail(from, wireError(ErrorCode.NOT_FOUND, `no orchestrated transaction "${name}" on sidecar ${this.nodeId}`));
    if (!o.executed) {
      o.state = "rolled_back";
      o.reason = reason;
      o.finishedAt = now;
      return this.host.ok(from, resultOf(o, this.nodeId));
    }
    if (o.decision === "commit") return this.host.fail(from, wireError(ErrorCode.INVALID_STATE, `transaction "${name}" decided to commit; a decision is never changed`));
    if (isTerminal(o.state) || o.state === "failed") {
      if (o.state === "committed") return this.host.fail(from, wireError(ErrorCode.INVALID_STATE, `transaction "${name}" is committed`));
      return this.host.ok(from, resultOf(o, this.nodeId));
    }
    o.waiters.push(from);
    if (!o.decision) this.decide(o, o.protocol === "saga" ? "compensate" : "rollback", reason, now);
    this.drive(o, now);
  }

  /** The operator closes a transaction: decide a prepared one, or close a failed one. */
  resolve(name: string, outcome: "commit" | "rollback", from: ReplyTo, now: number) {
    const o = this.orchs.get(name) ?? this.fromSummary(name, now);
    if (!o) return false;
    const wants: TxnState = outcome === "commit" ? "committed" : o.protocol === "saga" ? "compensated" : "rolled_back";
    const decidedCommit = o.decision === "commit";
    if (o.decision && decidedCommit !== (outcome === "commit")) {
      this.host.fail(from, wireError(ErrorCode.INVALID_STATE, `transaction "${name}" has a durable ${o.decision} decision; resolve it with --${decidedCommit ? "commit" : "rollback"}`));
      return true;
    }
    if (isTerminal(o.state)) {
      if (o.state === wants) this.host.ok(from, resultOf(o, this.nodeId));
      else this.host.fail(from, wireError(ErrorCode.INVALID_STATE, `transaction "${name}" is ${o.state}`));
      return true;
    }
    if (o.state !== "failed") {
      this.host.fail(from, wireError(ErrorCode.INVALID_STATE, `transaction "${name}" is ${o.state}; only failed transactions need resolving, the others finish by themselves`));
      return true;
    }
    this.end(o, wants, `resolved by an operator (was failed: ${o.reason ?? "unknown"})`, now);
    this.host.ok(from, resultOf(o, this.nodeId));
    return true;
  }

  onResult(r: CallOutcome & { name: string; index: number; callId: number }, now: number) {
    const o = this.orchs.get(r.name);
    const f = o?.inflight.get(r.index);
    // A duplicate, late or stale result (the barrier of this side): ignore it.
    if (!o || !f || f.callId !== r.callId || !f.outstanding) return;
    f.outstanding = false;
    this.settle(o, r.index, f, r, now);
    this.drive(o, now);
  }

  /** A hosted participant's sidecar answered: it counts only for the call of this process and execution it names. */
  onHostedResult(m: HostedResult, now: number) {
    const o = this.orchs.get(m.name);
    const f = o?.inflight.get(m.index);
    const spec = o?.specs[m.index];
    if (!o || !f || !spec || m.boot !== this.bootId || f.op !== m.op || o.incarnation !== m.incarnation || spec.participantId !== m.participantId) return;
    if (hostOf(spec, this.nodeId)?.sidecar !== m.from) return; // only the sidecar that hosts it answers for it
    this.onResult({ name: m.name, index: m.index, callId: m.callId, outcome: m.outcome, ...defined({ result: m.result, error: m.error, code: m.code, reached: m.reached }) }, now);
  }

  /** An o_call that did not leave (no such peer, or no link up): that attempt provably never reached the participant. */
  onUndeliverable(m: Extract<PeerMessage, { t: "o_call" }>, code: string, reason: string, now: number) {
    if (m.boot !== this.bootId || this.orchs.get(m.name)?.incarnation !== m.incarnation) return;
    this.onResult({ name: m.name, index: m.index, callId: m.callId, outcome: "retry", reached: false, code, error: reason }, now);
  }

  /**
   * A participant's sidecar holds a prepare of ours with no decision and asks for it: answered once decided,
   * with what the operation is called with. Presumed abort: no record of this execution means rollback.
   */
  onQuery(m: Extract<PeerMessage, { t: "o_query" }>) {
    const live = this.orchs.get(m.name);
    const s = live ? undefined : this.summary(m.name);
    const o = live ?? (s ? orchFromSummary(s, 0) : undefined);
    const spec = o?.specs[m.index];
    const known = o && o.executed && o.incarnation === m.incarnation && spec?.participantId === m.participantId;
    if (known && !o.decision) return; // undecided: it keeps waiting
    const outcome: "commit" | "rollback" = known && o.decision === "commit" ? "commit" : "rollback";
    const reply = { t: "o_decision" as const, name: m.name, from: this.nodeId, participantId: m.participantId, index: m.index, outcome, ...defined({ incarnation: m.incarnation }) };
    this.host.send(m.from, known ? { ...reply, ...defined({ payload: spec!.payload, context: o.context, action: spec!.action }) } : reply);
  }

  tick(now: number) {
    for (const o of this.orchs.values()) {
      if (!o.executed) {
        if (now >= o.deadline) this.orchs.delete(o.name); // created, never executed: forget it
        continue;
      }
      if (o.state === "failed") continue; // stays in memory (and in the failed gauge) until an operator resolves it
      if (isTerminal(o.state)) {
        if (now - (o.finishedAt ?? now) >= timing.orchestrationEvictAfterMs && o.waiters.length === 0) this.orchs.delete(o.name);
        continue;
      }
      if (!o.decision && now >= o.deadline) this.decide(o, o.protocol === "saga" ? "compensate" : "rollback", `timed out after ${o.timeoutMs} ms`, now);
      this.expireHostedCalls(o, now);
      this.drive(o, now);
    }
  }

  recover(summaries: OrchestrationSummary[], now: number) {
    for (const s of summaries) this.fromSummary(s.name, now, s);
  }

  /** Retry everything now instead of waiting for backoff (dtx.recover()). */
  kick(now: number): string[] {
    const names: string[] = [];
    for (const o of this.orchs.values()) {
      if (!o.executed || isTerminal(o.state) || o.state === "failed") continue;
      for (const f of o.inflight.values()) f.nextAt = now;
      this.drive(o, now);
      names.push(o.name);
    }
    return names;
  }

  status(name: string): Record<string, unknown> | undefined {
    const o = this.orchs.get(name);
    if (o) return statusOf(o, this.nodeId);
    const s = this.summary(name);
    return s ? statusOf(orchFromSummary(s, 0), this.nodeId) : undefined;
  }

  list(state: TxnState | undefined): Record<string, unknown>[] {
    const out: Record<string, unknown>[] = [];
    for (const o of this.orchs.values()) if (o.executed && (!state || o.state === state)) out.push(statusOf(o, this.nodeId));
    return out;
  }

  /** A hosted participant that did not answer within the call's timeout: retried like an HTTP call that timed out. */
  private expireHostedCalls(o: Orch, now: number) {
    for (const [i, f] of o.inflight) {
      if (!f.outstanding || f.deadline === undefined || now < f.deadline) continue;
      f.outstanding = false;
      this.settle(o, i, f, { outcome: "retry", error: `${o.specs[i].endpoint} did not answer ${f.op} within ${policyOf(o.specs[i]).callTimeoutMs} ms` }, now);
    }
  }

  // ---- driving -----------------------------------------------------------------

  private drive(o: Orch, now: number) {
    // Store steps finish inside this call, so loop until nothing moves.
    for (let guard = 0; guard < drivePassesMax(o); guard++) {
      if (!this.advance(o, now)) return;
    }
  }

  /** One pass: start what is due. Returns true if something finished inline (a store step, a decision). */
  private advance(o: Orch, now: number): boolean {
    if (isTerminal(o.state) || o.state === "failed") return false;
    const plan = o.protocol === "2pc" ? planTwoPhase(o) : planSaga(o);
    switch (plan.k) {
      case "decide":
        this.decide(o, plan.outcome, plan.reason, now);
        return true;
      case "end":
        this.end(o, plan.state, plan.reason, now);
        return false;
      case "call": {
        let moved = false;
        for (const i of plan.indexes) moved = this.want(o, i, plan.op, now) || moved;
        return moved;
      }
    }
  }

  /** Make sure operation `op` on participant i is under way; returns true if it finished inline. */
  private want(o: Orch, i: number, op: StepOp, now: number): boolean {
    let f = o.inflight.get(i);
    if (f && f.op !== op) {
      o.inflight.delete(i); // a late result of the old operation is ignored
      f = undefined;
    }
    if (!f) {
      f = { op, callId: 0, attempts: 0, firstAt: now, nextAt: now, outstanding: false, reached: o.calledBefore.has(i) };
      o.inflight.set(i, f);
    }
    if (f.outstanding || now < f.nextAt) return false;
    f.attempts++;
    f.callId = ++this.callSeq;
    const spec = o.specs[i];
    if (isStore(spec)) {
      const r = this.storeStep(o, i, op);
      if (r.outcome === "ok") {
        o.inflight.delete(i);
        if (op === "execute") o.before[i] = r.extra!.before!;
        this.record(o, i, op, "ok", undefined, undefined, now, r.extra);
      } else this.settle(o, i, f, { outcome: r.outcome, error: r.error, reached: false }, now); // nothing was written
      return true;
    }
    f.outstanding = true;
    const idempotencyKey = idempotencyKeyOf(o.name, spec.participantId, op);
    const action = op === "compensate" ? spec.compensationAction : spec.action;
    const timeoutMs = policyOf(spec).callTimeoutMs;
    const hosted = hostOf(spec, this.nodeId);
    if (hosted) {
      f.deadline = now + timeoutMs;
      this.host.send(hosted.sidecar, {
        t: "o_call",
        name: o.name,
        from: this.nodeId,
        participantId: spec.participantId,
        index: i,
        boot: this.bootId,
        callId: f.callId,
        endpoint: hosted.endpoint,
        op,
        idempotencyKey,
        ...defined({ incarnation: o.incarnation, payload: spec.payload, context: o.context, action }),
      });
      return false;
    }
    this.host.call({ name: o.name, index: i, participantId: spec.participantId, endpoint: spec.endpoint, op, callId: f.callId, idempotencyKey, payload: spec.payload, context: o.context, action, timeoutMs });
    return false;
  }

  private settle(o: Orch, i: number, f: Inflight, r: CallOutcome, now: number) {
    const op = f.op;
    if (r.outcome === "ok") {
      o.inflight.delete(i);
      return this.record(o, i, op, "ok", r.result, undefined, now);
    }
    if (r.outcome === "fail" && (op === "prepare" || op === "execute")) {
      o.inflight.delete(i);
      return this.record(o, i, op, op === "prepare" ? "no" : "failed", undefined, r.error, now, defined({ code: r.code }));
    }
    // Only a call that provably never left counts as not having reached the participant.
    if (r.reached !== false) f.reached = true;
    const p = policyOf(o.specs[i]);
    f.lastError = r.error;
    f.lastCode = r.code;
    if (f.attempts < p.attempts && now - f.firstAt < p.budgetMs) {
      const backoff = Math.min(p.maxBackoffMs, p.backoffMs * 2 ** (f.attempts - 1));
      f.nextAt = now + Math.floor(backoff / 2 + this.host.random() * (backoff / 2)); // equal jitter
      return;
    }
    o.inflight.delete(i);
    const who = o.specs[i].participantId;
    const tried = `${f.attempts} attempts in ${now - f.firstAt} ms${r.error ? `: ${r.error}` : ""}`;
    const code = defined({ code: r.code });
    if (op === "prepare" || op === "execute") {
      // A prepare or action that gave up may have applied (then it is aborted or compensated), unless none reached.
      if (!f.reached) return this.record(o, i, op, "unreached", undefined, `${who} ${op} never reached the participant in ${tried}`, now, code);
      return this.record(o, i, op, "maybe", undefined, `${who} ${op} gave up after ${tried}`, now, code);
    }
    // A commit, abort or compensation that cannot finish needs an operator; the others go on (see ending()).
    this.record(o, i, op, "failed", undefined, `${who} ${op} gave up after ${tried}`, now, code);
  }

  private record(o: Orch, i: number, op: StepOp, outcome: StepOutcome, result: unknown, error: string | undefined, now: number, extra: Partial<Extract<OrchestrationRecord, { r: "o.step" }>> = {}) {
    o.done[i].push({ op, outcome, at: now, ...defined({ result, error, code: extra.code }) });
    this.host.persist({ r: "o.step", name: o.name, index: i, op, outcome, result, error, at: now, ...extra });
  }

  private decide(o: Orch, outcome: "commit" | "rollback" | "compensate", reason: string | undefined, now: number) {
    if (outcome !== "commit") this.closeUnreached(o, now);
    o.decision = outcome;
    o.decidedAt = now;
    o.reason = reason;
    o.state = outcome === "commit" ? "committing" : outcome === "rollback" ? "rolling_back" : "compensating";
    this.host.persist({ r: "o.decision", name: o.name, outcome, reason, at: now });
  }

  /**
   * At a rollback or compensate decision, a prepare or action waiting to be retried that no attempt could
   * have reached is logged as never reached: it needs no abort or compensation, which would not reach either.
   * One still in flight may yet arrive, and is undone like any other.
   */
  private closeUnreached(o: Orch, now: number) {
    for (const [i, f] of o.inflight) {
      if ((f.op !== "prepare" && f.op !== "execute") || f.outstanding || f.reached || f.attempts === 0) continue;
      o.inflight.delete(i);
      this.record(o, i, f.op, "unreached", undefined, `${o.specs[i].participantId} ${f.op} never reached the participant in ${f.attempts} attempts${f.lastError ? `: ${f.lastError}` : ""}`, now, defined({ code: f.lastCode }));
    }
  }

  private end(o: Orch, state: TxnState, reason: string | undefined, now: number) {
    o.state = state;
    o.reason = reason;
    o.finishedAt = now;
    o.inflight.clear();
    this.host.persist({ r: "o.end", name: o.name, state, reason, at: now });
    for (const w of o.waiters) this.host.ok(w, resultOf(o, this.nodeId));
    o.waiters = [];
  }

  // ---- the built-in store under a Saga -----------------------------------------

  /** The writes of a store step (or of its undo), logged atomically with the step; the record keeps the before-image. */
  private storeStep(o: Orch, i: number, op: StepOp): { outcome: "ok" | "fail" | "retry"; error?: string; extra?: { writes: Write[]; version: number; before?: Write[] } } {
    if (op !== "execute" && op !== "compensate") return { outcome: "fail", error: "this sidecar's store (store:) takes part in Sagas only; store:<sidecar-id> takes part in 2PC too" };
    const planned = op === "compensate" ? (o.before[i] ?? []) : storeWrites(o.specs[i].payload);
    if (typeof planned === "string") return { outcome: "fail", error: planned };
    const busy = lockedKeyError(planned, this.host.locks);
    if (busy) return { outcome: "retry", error: busy };
    if (op === "compensate") return { outcome: "ok", extra: { writes: planned, version: this.host.nextVersion() } };
    return { outcome: "ok", extra: { writes: planned, version: this.host.nextVersion(), before: beforeImage(planned, this.host.reader) } };
  }

  // ---- views -------------------------------------------------------------------

  private summary(name: string): OrchestrationSummary | undefined {
    return this.host.reader.orchestration?.(name);
  }

  private fromSummary(name: string, now: number, given?: OrchestrationSummary): Orch | undefined {
    const s = given ?? this.summary(name);
    if (!s) return undefined;
    const o = orchFromSummary(s, now);
    this.orchs.set(name, o);
    return o;
  }
}
