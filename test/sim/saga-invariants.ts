// Invariant 7 of DESIGN §8 for orchestrated Sagas: a Saga ends with each step
// either applied or compensated, never both half-way, and each compensation
// runs at most once. Counted where the effects land: at the services of the
// simulated participants (participants.ts, behind the production barrier)
// and, for store steps, in the orchestrating node's durable log and store.
//
// Per step: an operation the log already holds as finished is neither called
// nor logged again. When a call leaves: the records that justify it are
// durable (the engine rule, DESIGN §2). At the participant: an action or a
// compensation is applied at most once, and never an action once its barrier
// answered a compensation. Over durable state: a Saga's state only moves
// forward and a finished one never changes; what its client was told agrees
// with the log. After the settle phase: a committed Saga has every step
// applied exactly once and none compensated; a compensated one has every
// applied step compensated exactly once, newest first, and its store keys back
// at their before-images (absent: the keys are private to the Saga); a failed
// one stays failed until the operator resolves it; one that never began
// applied nothing.
//
// Orchestrated 2PC transactions (a quarter of the flows) are checked the same
// way: at the participant, a prepare, commit and abort are each applied at most
// once, never a prepare once an abort was answered, a commit only after its
// prepare and never beside an abort; calls leave only once o.begin, and for
// commit and abort the matching decision, are durable; a durable commit
// decision has every prepare durably ok. After the settle phase, a committed
// one (not resolved) has every participant committed, and a rolled-back one
// has none committed and every prepare that applied aborted: a participant
// that may have prepared is never left prepared.
import type { ParticipantCall } from "../../src/txn/types.ts";
import type { OrchestrationSummary, StepDone, StepOp } from "../../src/wal/orchestration-records.ts";
import type { Effect } from "../../src/txn/types.ts";
import type { Checker } from "./invariants.ts";
import type { ParticipantLedger } from "./participants.ts";
import type { SagaRecord, Sagas } from "./saga.ts";
import type { Sim, SimNode } from "./simulator.ts";

const rankOf: Record<string, number> = { active: 1, preparing: 1, compensating: 2, committing: 2, rolling_back: 2, failed: 3, committed: 4, compensated: 4, rolled_back: 4 };
const resolvedByOperator = (s: OrchestrationSummary) => (s.reason ?? "").startsWith("resolved by an operator");
/** The last logged `op` of participant i. */
const lastOf = (d: StepDone[], op: StepOp) => d.findLast((x) => x.op === op);
const finished = (d: StepDone[], op: "execute" | "compensate") => d.filter((x) => x.op === op && x.outcome === "ok");

export class SagaChecker {
  private readonly seen = new Map<string, { rank: number; state: string }>();
  /** Order in which store-step compensations were logged (the last logging counts: an earlier one was lost in a crash). */
  private readonly storeCompSeq = new Map<string, number>();

  constructor(
    private readonly sim: Sim,
    private readonly sagas: Sagas,
    private readonly checker: Checker,
  ) {}

  private fail(invariant: string, detail: string): void {
    this.checker.fail(invariant, detail);
  }

  durable(sagaNode: string, name: string): OrchestrationSummary | undefined {
    return this.sim.node(sagaNode).wal.durableSummaries().get(`o/${name}`) as OrchestrationSummary | undefined;
  }

  // ---- per step ----------------------------------------------------------------

  onStep(sn: SimNode, effects: Effect[]): void {
    for (const e of effects) {
      if (e.k === "call") this.onCall(sn, e.call);
      if (e.k !== "persist" || e.rec.r !== "o.step") continue;
      const rec = e.rec;
      const logged = sn.wal.orchestration(rec.name)?.done[rec.index] ?? [];
      if (logged.some((d) => d.op === rec.op)) {
        this.fail("7", `saga ${rec.name} on ${sn.id}: step ${rec.index} logs ${rec.op} ${rec.outcome} again; its log already holds ${JSON.stringify(logged.map((d) => `${d.op}:${d.outcome}`))}`);
      }
      if (rec.op === "compensate" && rec.writes) this.storeCompSeq.set(`${rec.name}/${rec.index}`, this.sagas.participants.nextSeq());
    }
  }

  /** The orchestrator never calls again an operation its log holds as finished. */
  private onCall(sn: SimNode, call: ParticipantCall): void {
    const s = sn.wal.orchestration(call.name);
    const d = s?.done[call.index] ?? [];
    if (d.some((x) => x.op === call.op)) this.fail("7", `saga ${call.name} on ${sn.id} calls ${call.op} of step ${call.index} again, though its log holds it finished`);
    if ((call.op === "execute" || call.op === "prepare") && s?.decision) this.fail("7", `${call.name} on ${sn.id} calls ${call.op} of participant ${call.index} after deciding to ${s.decision}`);
  }

  /** A call leaves the node: the records that justify it must be durable (persist, then call). */
  callLeaves(sn: SimNode, call: ParticipantCall): void {
    const s = this.durable(sn.id, call.name);
    const where = `saga ${call.name} on ${sn.id}: ${call.op} of step ${call.index} was called`;
    if (!s) return this.fail("§2", `${where} before its o.begin was durable`);
    if (call.op === "compensate" && s.decision !== "compensate") return this.fail("§2", `${where} while the durable log holds no compensate decision`);
    if (call.op === "commit" && s.decision !== "commit") return this.fail("§2", `${where} while the durable log holds no commit decision`);
    if (call.op === "abort" && s.decision !== "rollback") return this.fail("§2", `${where} while the durable log holds no rollback decision`);
    for (let j = 0; j < call.index && call.op === "execute"; j++) {
      if (!finished(s.done[j], "execute").length) return this.fail("§2", `${where} while step ${j}'s action is not durably finished`);
    }
    for (let j = call.index + 1; j < s.done.length && call.op === "compensate"; j++) {
      const ran = s.done[j].some((x) => x.op === "execute" && (x.outcome === "ok" || x.outcome === "maybe"));
      if (ran && !s.done[j].some((x) => x.op === "compensate")) return this.fail("§2", `${where} while step ${j}'s compensation is not durably finished`);
    }
  }

  // ---- at the participant --------------------------------------------------------

  actionApplied(p: ParticipantLedger): void {
    if (p.executed > 1) this.fail("7", `saga ${p.name}: participant ${p.participantId} applied the action ${p.executed} times`);
    if (p.compensated || p.compensationAnswered) this.fail("7", `saga ${p.name}: participant ${p.participantId} applied the action after its compensation`);
  }

  compensationApplied(p: ParticipantLedger): void {
    if (p.compensated > 1) this.fail("7", `saga ${p.name}: participant ${p.participantId} applied the compensation ${p.compensated} times`);
  }

  /** A 2PC participant applied `op` (participants.ts counted it). */
  twoPhaseApplied(p: ParticipantLedger, op: "prepare" | "commit" | "abort"): void {
    const who = `${p.name}: participant ${p.participantId}`;
    const times = { prepare: p.prepared, commit: p.committed, abort: p.aborted }[op];
    if (times > 1) this.fail("7", `${who} applied ${op} ${times} times`);
    if (op === "prepare" && (p.aborted || p.abortAnswered)) this.fail("7", `${who} prepared after its abort`);
    if (op === "commit" && !p.prepared) this.fail("3", `${who} committed without having prepared`);
    if (p.committed && p.aborted) this.fail("1", `${who} both committed and aborted`);
  }

  // ---- durable state and answers ---------------------------------------------------

  checkDurable(name: string): void {
    const t = this.sagas.saga(name);
    if (!t) return;
    const s = this.durable(t.node, name);
    if (!s) return;
    const before = this.seen.get(name);
    const rank = rankOf[s.state] ?? 0;
    if (before && rank < before.rank) this.fail("4", `saga ${name}: durable state went back from ${before.state} to ${s.state}`);
    if (before && before.rank === 4 && s.state !== before.state) this.fail("4", `saga ${name}: durably ${before.state}, now ${s.state}`);
    if (before?.state === "failed" && s.state !== "failed" && !(rankOf[s.state] === 4 && resolvedByOperator(s))) {
      this.fail("7", `saga ${name}: failed, then ${s.state} without the operator's resolve`);
    }
    if (s.state === "failed" && before?.state !== "failed") this.wentOn(name, s);
    if (s.decision === "commit" && s.protocol === "2pc") {
      const unprepared = s.done.findIndex((d) => lastOf(d, "prepare")?.outcome !== "ok");
      if (unprepared >= 0) this.fail("3", `${name}: a durable commit decision while participant ${unprepared} has no durable prepared vote (${JSON.stringify(s.done[unprepared])})`);
    }
    this.seen.set(name, { rank, state: s.state });
  }

  /**
   * A transaction ends failed only once phase 2 was tried everywhere it was needed, and gave up somewhere:
   * every Saga step that ran (or may have) was compensated or given up on; every 2PC participant was
   * committed, or (if it may have prepared) aborted, or given up on.
   */
  private wentOn(name: string, s: OrchestrationSummary): void {
    const op: StepOp = s.protocol === "saga" ? "compensate" : s.decision === "commit" ? "commit" : "abort";
    const current = s.done.findIndex((d) => !finished(d, "execute").length);
    for (const [j, d] of s.done.entries()) {
      const ran = lastOf(d, s.protocol === "saga" ? "execute" : "prepare")?.outcome;
      const needs = s.protocol === "saga" ? ran === "ok" || ran === "maybe" || (ran === undefined && j === current) : op === "commit" || (ran !== "no" && ran !== "unreached");
      if (needs && !lastOf(d, op)) this.fail("7", `${name} ended failed while participant ${j} was never sent ${op} (nor given up on): phase 2 stopped at the first that gave up`);
    }
    if (!s.done.some((d) => lastOf(d, op)?.outcome === "failed")) this.fail("7", `${name} ended failed, but no ${op} gave up`);
  }

  /** The client was told `state` (released after the flush, so the log holds it or a later state). */
  answered(t: SagaRecord, op: string, state: string): void {
    const s = this.durable(t.node, t.name);
    if (!s) {
      // Never begun (an abort before execute answers rolled_back; status of a created Saga answers active).
      if (state !== "rolled_back" && state !== "active") this.fail("6", `saga ${t.name}: ${op} answered ${state}, but ${t.node}'s durable log holds nothing`);
      return;
    }
    const ok = rankOf[state] === 4 ? s.state === state : (rankOf[s.state] ?? 0) >= (rankOf[state] ?? 0);
    if (!ok) this.fail("6", `saga ${t.name}: ${op} answered ${state}, but ${t.node}'s durable log holds ${s.state}`);
    if (op === "o_abort" && state === "committed") this.fail("6", `saga ${t.name}: an abort was answered committed`);
  }

  // ---- after the faults stop -------------------------------------------------------

  finalCheck(): void {
    for (const t of this.sagas.sagas) {
      const s = this.durable(t.node, t.name);
      const store = this.sim.node(t.node).wal;
      const where = `saga ${t.name}`;
      if (!s) {
        for (const [i, step] of t.steps.entries()) {
          const p = this.sagas.participants.ledgers.get(step.participantId);
          if (p?.executed || p?.prepared) this.fail("7", `${where} never began on ${t.node}, yet step ${i} (${step.participantId}) applied its ${p.executed ? "action" : "prepare"}`);
        }
        for (const k of t.keys) if (store.kvGet(k)) this.fail("7", `${where} never began, yet the store of ${t.node} holds ${k}`);
        continue;
      }
      if (s.state === "failed") this.fail("8", `${where} is still failed after the operator's resolve`);
      const resolved = resolvedByOperator(s);
      if (t.abortAck && s.state === "committed") this.fail("6", `${where}: its abort was acknowledged, yet it committed`);
      if (t.protocol === "2pc") {
        this.finalTwoPhase(t, s, resolved);
        continue;
      }
      // Applied actions and compensations, per step, in the order the checks need.
      const comps: Array<{ i: number; seq: number }> = [];
      // Compensations the orchestrator gave up on (the others went on): the operator's to settle.
      const gaveUp = (i: number) => (s.done[i] ?? []).some((x) => x.op === "compensate" && x.outcome === "failed");
      for (const [i, step] of t.steps.entries()) {
        const d = s.done[i] ?? [];
        let executed: number;
        let compensated: number;
        if (step.store) {
          executed = finished(d, "execute").length;
          // Compensating a store step that never wrote anything writes nothing (a null compensation).
          compensated = executed ? d.filter((x) => x.op === "compensate" && x.outcome === "ok").length : 0;
          if (compensated && executed) comps.push({ i, seq: this.storeCompSeq.get(`${t.name}/${i}`) ?? 0 });
        } else {
          const p = this.sagas.participants.ledgers.get(step.participantId)!;
          executed = p.executed;
          compensated = p.compensated;
          // A compensation given up on may still land late: no order for it.
          if (compensated && !gaveUp(i)) comps.push({ i, seq: p.compensatedSeq ?? 0 });
        }
        const what = `${where} ended ${s.state}${resolved ? " (resolved by the operator)" : ""}, but step ${i} (${step.store ? "store" : step.participantId})`;
        if (executed > 1 || compensated > 1) this.fail("7", `${what} applied its action ${executed} and its compensation ${compensated} times`);
        if (s.state === "committed" && (executed !== 1 || compensated)) this.fail("7", `${what} applied its action ${executed} times and its compensation ${compensated} times`);
        // Resolved or not, every step but one whose compensation gave up ends undone (compensation went on past it).
        if (s.state === "compensated" && !(resolved && gaveUp(i)) && executed !== compensated) this.fail("7", `${what} applied its action ${executed} times and its compensation ${compensated} times`);
        if (d.some((x) => x.op === "execute" && x.outcome === "unreached") && executed) this.fail("7", `${what}'s log holds its action as never reached, yet the participant applied it`);
        // The orchestrator's own log agrees: a compensated Saga logged the compensation of every step that ran.
        const ran = d.some((x) => x.op === "execute" && (x.outcome === "ok" || x.outcome === "maybe"));
        if (s.state === "compensated" && !resolved && ran && !d.some((x) => x.op === "compensate")) this.fail("7", `${what} ran, and its log holds no compensation`);
      }
      // Newest first: compensations of higher steps were applied earlier.
      comps.sort((a, b) => b.i - a.i);
      for (let k = 1; k < comps.length; k++) {
        if (comps[k].seq < comps[k - 1].seq) this.fail("7", `${where}: step ${comps[k].i} was compensated before step ${comps[k - 1].i}`);
      }
      if (s.state === "compensated" && !t.steps.some((step, i) => step.store && gaveUp(i))) {
        for (const k of t.keys) {
          const e = store.kvGet(k);
          if (e) this.fail("7", `${where} was compensated, but the store of ${t.node} holds ${k} = ${JSON.stringify(e.value)} (its before-image is absent)`);
        }
      }
      if (s.state === "committed") {
        const want = new Map<string, number>();
        for (const step of t.steps) for (const [k, v] of Object.entries(step.put ?? {})) want.set(k, v);
        for (const k of t.keys) {
          const got = store.kvGet(k)?.value;
          if (got !== want.get(k)) this.fail("7", `${where} committed, but the store of ${t.node} holds ${k} = ${JSON.stringify(got)}, not ${want.get(k)}`);
        }
      }
    }
  }

  /** After the settle phase, an orchestrated 2PC transaction: all committed, or none and every prepare undone. */
  private finalTwoPhase(t: SagaRecord, s: OrchestrationSummary, resolved: boolean): void {
    for (const [i, step] of t.steps.entries()) {
      const p = this.sagas.participants.ledgers.get(step.participantId)!;
      const d = s.done[i] ?? [];
      const what = `${t.name} ended ${s.state}${resolved ? " (resolved by the operator)" : ""}, but participant ${i} (${p.participantId}) prepared ${p.prepared}, committed ${p.committed} and aborted ${p.aborted} times`;
      // The operator settles by hand a participant whose commit or abort gave up.
      const gaveUp = lastOf(d, "commit")?.outcome === "failed" || lastOf(d, "abort")?.outcome === "failed";
      if (s.state === "committed" && p.aborted) this.fail("1", what);
      if (s.state === "committed" && !(resolved && gaveUp) && p.committed !== 1) this.fail("7", what);
      if (s.state === "rolled_back" && p.committed) this.fail("1", what);
      if (s.state === "rolled_back" && !(resolved && gaveUp) && p.aborted !== p.prepared) this.fail("7", `${what}: a prepare that applied was left in place`);
      if (lastOf(d, "prepare")?.outcome === "unreached" && p.prepared) this.fail("7", `${what}, though its log holds its prepare as never reached`);
    }
  }
}
