// The simulated participants of orchestrated Sagas and 2PC: each is a service
// behind the production sub-transaction barrier (src/participants/barrier.ts),
// run the way its sidecar runs it (src/participants/service.ts): the barrier's
// decisions, its b.op records, the lane that runs one (transaction,
// participant)'s operations in arrival order, retries joining the run in
// flight. Its records live in a log of its own that is durable at every
// append: the sidecar waits for each before it acts on it, so a crash that
// lost one would look like the request never arriving.
//
// The service itself keeps no barrier: as the README asks of service handlers,
// a compensation or abort with nothing to undo does nothing. A handler takes
// simulated time and applies its operation when it answers. Every operation it
// applies is counted in its ledger, which the checks of invariant 7
// (saga-invariants.ts) read.
//
// Faults on the participant side, drawn from the PRNG: definitive refusals
// (an action refused, a prepare voting no), retryable failures (503: nothing
// applied), slow handlers, compensations, commits and aborts that keep failing
// while the faults last, and refused connections (in `refuses`: the call never
// reaches the sidecar), now and then or, once it went down, every call.
import { type BarrierBrokenRule, type BarrierLane, arrive, barrierBrokenRules, barrierKeyOf, barrierRecord, decide, leave, resultRecord } from "../../src/participants/barrier.ts";
import type { CallOutcome } from "../../src/participants/outcome.ts";
import type { ParticipantCall } from "../../src/txn/types.ts";
import { MemoryWal } from "../../src/wal/memory-wal.ts";
import type { BarrierOp, StepOp } from "../../src/wal/orchestration-records.ts";
import type { Sim } from "./simulator.ts";

export interface Behaviour {
  /** Refuses the action for good (a business "no"). */
  refuse: boolean;
  retryP: number;
  /** Compensations (Saga), commits and aborts (2PC) answer "retry" while the faults last. */
  stuckCompensate: boolean;
  /** Chance that a call's connection is refused while the faults last (it never reaches the participant). */
  downP: number;
  /** From this time on, while the faults last, it refuses every connection (it went down). */
  downAt?: number;
}

/** One simulated participant's view of one step (per participant id: ids are unique per transaction). */
export interface ParticipantLedger {
  name: string;
  participantId: string;
  behaviour: Behaviour;
  /** How many times the service applied the action (must end 0 or 1). */
  executed: number;
  /** How many times it applied the compensation (must end 0 or 1), and a global order number for the last one. */
  compensated: number;
  compensatedSeq?: number;
  /** The barrier answered a compensation ok (a no-op or the service's): no action may apply from then on. */
  compensationAnswered: boolean;
  /** 2PC: how many times the prepare, commit and abort were applied (each must end 0 or 1). */
  prepared: number;
  committed: number;
  aborted: number;
  /** 2PC: the barrier answered an abort ok: no prepare may apply from then on. */
  abortAnswered: boolean;
}

/** An operation in a lane: its call, and everyone waiting for its outcome (retries join it). */
interface Run {
  call: ParticipantCall;
  answers: Array<(o: CallOutcome) => void>;
}

export class Participants {
  readonly ledgers = new Map<string, ParticipantLedger>();
  /** The barrier's b.op records, read back through the production fold (wal.barrierEntry). */
  private readonly log = new MemoryWal(true);
  private readonly lanes = new Map<string, BarrierLane>();
  private readonly runs = new Map<string, Run>();
  private readonly broken?: BarrierBrokenRule;
  /** Orders applied compensations across participants and store steps (see the checker). */
  private seq = 0;

  constructor(private readonly sim: Sim) {
    const rule = sim.opts.brokenRule as BarrierBrokenRule | undefined;
    if (rule && barrierBrokenRules.includes(rule)) this.broken = rule;
  }

  add(name: string, participantId: string, behaviour: Behaviour): void {
    this.ledgers.set(participantId, { name, participantId, behaviour, executed: 0, compensated: 0, compensationAnswered: false, prepared: 0, committed: 0, aborted: 0, abortAnswered: false });
  }

  /** The next number in the order compensations are applied in. */
  nextSeq(): number {
    return ++this.seq;
  }

  /** Operations still in a lane (waiting for their turn or for the service). */
  waiting(): string[] {
    return [...this.runs.keys()].map((k) => `the barrier still runs ${k}`);
  }

  /** Whether the connection of this call is refused: then it never reaches the participant. */
  refuses(call: ParticipantCall): boolean {
    const b = this.ledgers.get(call.participantId)?.behaviour;
    if (!b || !this.sim.faultsOn) return false;
    return (b.downAt !== undefined && this.sim.now >= b.downAt) || this.sim.rng.chance(b.downP);
  }

  /** A request reaches participant `call.participantId`'s sidecar: it joins the lane of its key, behind the barrier. */
  handle(call: ParticipantCall, answer: (o: CallOutcome) => void): void {
    if (!this.ledgers.has(call.participantId)) throw new Error(`call to unknown simulated participant ${call.participantId}`);
    const key = barrierKeyOf(call.name, call.participantId);
    const arrived = arrive(this.lanes.get(key) ?? [], call.op, this.broken);
    if (arrived.join) return void this.runs.get(`${key}/${call.op}`)!.answers.push(answer);
    this.lanes.set(key, arrived.lane);
    this.runs.set(`${key}/${call.op}`, { call, answers: [answer] });
    if (arrived.start) this.run(key, call);
  }

  /** Its turn came: what the barrier decides, carried out as service.ts does. */
  private run(key: string, call: ParticipantCall): void {
    const d = decide(this.log.barrierEntry(key), call, this.broken);
    if (d.record) this.record(key, call.op, d.record);
    if (d.k === "answer") return this.finished(key, call.op, d.answer);
    this.sim.later(this.handlerMs(), () => {
      const o = this.serve(this.ledgers.get(call.participantId)!, call);
      const result = resultRecord(call.op, o);
      if (result) this.record(key, call.op, result);
      this.finished(key, call.op, o);
    });
  }

  private record(key: string, op: StepOp, b: BarrierOp): void {
    this.log.write([barrierRecord(key, op, b, this.sim.now)]);
  }

  private finished(key: string, op: StepOp, o: CallOutcome): void {
    const run = this.runs.get(`${key}/${op}`)!;
    this.runs.delete(`${key}/${op}`);
    const p = this.ledgers.get(run.call.participantId)!;
    if (o.outcome === "ok" && op === "compensate") p.compensationAnswered = true;
    if (o.outcome === "ok" && op === "abort") p.abortAnswered = true;
    const left = leave(this.lanes.get(key) ?? [], op);
    if (left.lane.length) this.lanes.set(key, left.lane);
    else this.lanes.delete(key);
    for (const answer of run.answers) answer(o);
    if (left.start) this.run(key, this.runs.get(`${key}/${left.start}`)!.call);
  }

  /** How long the service's handler takes; now and then, while the faults last, much longer. */
  private handlerMs(): number {
    const f = this.sim.faults;
    return 1 + this.sim.rng.int(f.delayMaxMs) + (this.sim.faultsOn && this.sim.rng.chance(f.longDelayP) ? this.sim.rng.int(1_000) : 0);
  }

  /** The service's handler: it applies the operation (or fails) as it answers. */
  private serve(p: ParticipantLedger, call: ParticipantCall): CallOutcome {
    if (this.sim.faultsOn && this.sim.rng.chance(p.behaviour.retryP)) return { outcome: "retry", error: "HTTP 503" };
    const stuck = this.sim.faultsOn && p.behaviour.stuckCompensate;
    const checker = this.sim.sagaChecker;
    switch (call.op) {
      case "execute":
        if (p.behaviour.refuse) return { outcome: "fail", error: "HTTP 409 insufficient funds" };
        p.executed++;
        checker.actionApplied(p);
        return { outcome: "ok", result: { applied: call.participantId } };
      case "compensate":
        if (stuck) return { outcome: "retry", error: "HTTP 503 (compensation backend down)" };
        if (!p.executed) return { outcome: "ok", result: null }; // nothing to undo
        p.compensated++;
        p.compensatedSeq = this.nextSeq();
        checker.compensationApplied(p);
        return { outcome: "ok", result: { compensated: call.participantId } };
      case "prepare":
        if (p.behaviour.refuse) return { outcome: "fail", error: "votes abort: insufficient funds" };
        p.prepared++;
        checker.twoPhaseApplied(p, "prepare");
        return { outcome: "ok", result: { vote: "prepared" } };
      case "commit":
        if (stuck) return { outcome: "retry", error: "HTTP 503 (commit backend down)" };
        p.committed++;
        checker.twoPhaseApplied(p, "commit");
        return { outcome: "ok", result: null };
      case "abort":
        if (stuck) return { outcome: "retry", error: "HTTP 503 (abort backend down)" };
        if (!p.prepared) return { outcome: "ok", result: null }; // nothing to undo
        p.aborted++;
        checker.twoPhaseApplied(p, "abort");
        return { outcome: "ok", result: null };
    }
  }
}
