// Orchestrated transactions in the simulator: simulated clients that create a
// Saga (o_create, consistency "eventual") or, for a quarter of them, an
// orchestrated 2PC transaction (consistency "immediate"), add participants,
// execute it and sometimes abort it. Saga steps are either external
// ("http://sim/<id>", answered by the simulated participants of
// participants.ts: services behind the production barrier) or built-in-store
// steps on the orchestrating node ("store:", payload {put}); 2PC participants
// are all external. Faults on the client side: an abort from another
// connection while it runs, a hang-up after execute, lost answers (the client
// polls status), and a failed transaction the simulated operator resolves once
// the faults stop. Each external participant gets a short retry policy, and a
// stuck or down one a budget it will exhaust.
import { ErrorCode } from "../../src/protocol/errors.ts";
import type { ParticipantSpec } from "../../src/protocol/orchestration.ts";
import type { CallOutcome } from "../../src/participants/outcome.ts";
import type { ParticipantCall } from "../../src/txn/types.ts";
import { type Behaviour, Participants } from "./participants.ts";
import type { Answer, Conn, Request, Sim } from "./simulator.ts";

export const simEndpoint = "http://sim/";

/** What a Saga's (or an orchestrated 2PC transaction's) client was told, for the checks. */
export interface SagaRecord {
  name: string;
  node: string;
  protocol: "saga" | "2pc";
  steps: Array<{ participantId: string; store: boolean; put?: Record<string, number> }>;
  /** Every store key the Saga writes: private to it, so its before-image is "absent". */
  keys: string[];
  /** o_execute was sent (the Saga may have begun). */
  executeSent: boolean;
  abortAck: boolean;
  resolved: boolean;
  /** Terminal (or failed) outcomes the client was told. */
  told: string[];
  done: boolean;
}

const isOk = (a: Answer): a is Extract<Answer, { ok: true }> => !("lost" in a) && a.ok;
const isLost = (a: Answer): a is { lost: true } => "lost" in a;
const errorCode = (a: Answer): string | undefined => ("lost" in a || a.ok ? undefined : a.error.code);
const finalStates = new Set(["committed", "compensated", "rolled_back"]);

export class Sagas {
  readonly sagas: SagaRecord[] = [];
  readonly participants: Participants;
  private readonly byName = new Map<string, SagaRecord>();
  private inFlight = 0;

  constructor(private readonly sim: Sim) {
    this.participants = new Participants(sim);
  }

  saga(name: string): SagaRecord | undefined {
    return this.byName.get(name);
  }

  waiting(): string[] {
    const open = this.sagas.filter((s) => !s.done).map((s) => `the client of saga ${s.name} is still waiting`);
    if (this.inFlight) open.push(`${this.inFlight} saga client calls unanswered`);
    return [...open, ...this.participants.waiting()];
  }

  // ---- the clients -----------------------------------------------------------

  start(): void {
    const rng = this.sim.rng;
    const up = this.sim.nodes.filter((sn) => sn.node).map((sn) => sn.id);
    if (up.length === 0) return;
    const protocol = rng.chance(0.25) ? "2pc" : "saga";
    const s: SagaRecord = { name: `s${this.sagas.length + 1}`, node: rng.pick(up), protocol, steps: [], keys: [], executeSent: false, abortAck: false, resolved: false, told: [], done: false };
    this.sagas.push(s);
    this.byName.set(s.name, s);
    const n = rng.range(2, 4);
    // Store steps share a few keys, so a later step's before-image is an earlier step's write.
    const keys = Array.from({ length: 2 }, (_, k) => `saga/${s.name}/k${k}`);
    s.keys = keys;
    const specs: ParticipantSpec[] = [];
    for (let i = 0; i < n; i++) {
      const participantId = `${s.name}-p${i}`;
      if (protocol === "saga" && rng.chance(0.3)) {
        const put: Record<string, number> = {};
        for (const k of keys) if (rng.chance(0.6)) put[k] = 100 * (i + 1) + rng.int(100);
        if (Object.keys(put).length === 0) put[keys[0]] = 100 * (i + 1);
        s.steps.push({ participantId, store: true, put });
        specs.push({ participantId, endpoint: "store:", supports2pc: false, supportsSaga: true, payload: { put } });
        continue;
      }
      const stuck = rng.chance(0.08);
      const down = rng.chance(0.08);
      const downAt = down ? this.sim.now + (rng.chance(0.5) ? 0 : rng.int(400)) : undefined;
      const behaviour: Behaviour = { refuse: rng.chance(0.12), retryP: rng.chance(0.5) ? rng.next() * 0.4 : 0, stuckCompensate: stuck, downP: rng.chance(0.3) ? rng.next() * 0.5 : 0, downAt };
      this.participants.add(s.name, participantId, behaviour);
      s.steps.push({ participantId, store: false });
      // Short policies so Sagas finish within a run; a stuck or down participant gets a budget it will exhaust.
      const retryPolicy = stuck || down
        ? { attempts: rng.range(2, 4), backoffMs: 5, maxBackoffMs: 20, budgetMs: rng.range(50, 200), callTimeoutMs: rng.range(20, 80) }
        : { attempts: rng.range(20, 60), backoffMs: rng.range(2, 10), maxBackoffMs: rng.range(20, 80), budgetMs: rng.range(1_500, 4_000), callTimeoutMs: rng.range(30, 150) };
      specs.push({ participantId, endpoint: `${simEndpoint}${participantId}`, supports2pc: protocol === "2pc" || rng.chance(0.5), supportsSaga: true, action: "do", compensationAction: "undo", payload: { step: i }, retryPolicy });
    }
    const conn = this.sim.openConn(s.node);
    const timeoutMs = rng.chance(0.15) ? rng.range(30, 300) : rng.range(1_000, 5_000);
    this.call(s, conn, { op: "o_create", name: s.name, consistency: protocol === "2pc" ? "immediate" : "eventual", timeoutMs, context: { saga: s.name } }, (a) => {
      if (!isOk(a)) return this.gaveUp(s, "o_create", a);
      this.addAll(s, conn, specs, 0);
    });
  }

  private addAll(s: SagaRecord, conn: Conn, specs: ParticipantSpec[], i: number): void {
    if (i === specs.length) return this.execute(s, conn);
    this.call(s, conn, { op: "o_add", name: s.name, participant: specs[i] }, (a) => {
      if (!isOk(a)) return this.gaveUp(s, "o_add", a);
      this.addAll(s, conn, specs, i + 1);
    });
  }

  /** The Saga was never executed: its node restarted (and forgot it) or the connection died. */
  private gaveUp(s: SagaRecord, op: string, a: Answer): void {
    if (!isLost(a) && errorCode(a) !== ErrorCode.NOT_FOUND) return this.unexpected(s, op, a);
    s.done = true;
  }

  private execute(s: SagaRecord, conn: Conn): void {
    const rng = this.sim.rng;
    s.executeSent = true;
    this.call(s, conn, { op: "o_execute", name: s.name }, (a) => this.finished(s, "o_execute", a));
    // Sometimes the client (or another one) aborts it while it runs.
    if (rng.chance(0.2)) {
      this.sim.later(rng.int(150), () => {
        const c = this.sim.openConn(s.node);
        this.call(s, c, { op: "o_abort", name: s.name, reason: "the client changed its mind" }, (a) => {
          if (isOk(a)) s.abortAck = true;
          else if (!isLost(a) && errorCode(a) !== ErrorCode.INVALID_STATE && errorCode(a) !== ErrorCode.NOT_FOUND) return this.unexpected(s, "o_abort", a);
          this.told(s, "o_abort", a);
        });
      });
    }
    if (this.sim.faultsOn && rng.chance(this.sim.faults.disconnectP)) this.sim.disconnect(conn);
  }

  /** An answer carrying the outcome (execute, abort, resolve, status): it must agree with the durable log. */
  private told(s: SagaRecord, op: string, a: Answer): void {
    if (!isOk(a)) return;
    const state = (a.outcome ?? a.state) as string;
    s.told.push(state);
    this.sim.sagaChecker.answered(s, op, state);
  }

  private finished(s: SagaRecord, op: string, a: Answer): void {
    if (isLost(a)) return this.statusLater(s);
    if (!isOk(a)) {
      if (errorCode(a) === ErrorCode.NOT_FOUND) return void (s.done = true); // created but forgotten before execute
      return this.unexpected(s, op, a);
    }
    this.told(s, op, a);
    const state = a.outcome as string;
    if (state === "failed") return this.statusLater(s);
    if (!finalStates.has(state)) return this.unexpected(s, op, a);
    s.done = true;
  }

  /** Ask status until the Saga is final; a failed one is resolved by the operator once the faults have stopped. */
  private statusLater(s: SagaRecord): void {
    this.sim.later(this.sim.rng.range(50, 300), () => {
      const conn = this.sim.openConn(s.node);
      this.call(s, conn, { op: "status", name: s.name }, (a) => {
        if (isLost(a)) return this.statusLater(s);
        if (!isOk(a)) {
          if (errorCode(a) !== ErrorCode.NOT_FOUND) return this.unexpected(s, "status", a);
          // Its node lost it before o.begin was durable: it never ran.
          s.done = true;
          return;
        }
        this.told(s, "status", a);
        const state = a.state as string;
        if (finalStates.has(state)) return void (s.done = true);
        if (state === "failed" && !this.sim.faultsOn) return this.resolve(s, conn, a.participants as Array<{ status?: string }>);
        this.statusLater(s);
      });
    });
  }

  /** The operator closes a failed transaction the way it was decided: a 2PC one whose commits ran, with commit. */
  private resolve(s: SagaRecord, conn: Conn, participants: Array<{ status?: string }>): void {
    const outcome = participants.some((p) => p.status === "committed" || p.status === "commit_failed") ? "commit" : "rollback";
    this.call(s, conn, { op: "resolve", name: s.name, outcome }, (a) => {
      if (isOk(a)) s.resolved = true;
      else if (!isLost(a)) return this.unexpected(s, "resolve", a);
      this.told(s, "resolve", a);
      this.statusLater(s);
    });
  }

  private call(s: SagaRecord, conn: Conn, req: Request, cb: (a: Answer) => void): void {
    this.inFlight++;
    this.sim.call(conn, req, (a) => {
      this.inFlight--;
      cb(a);
      this.sim.checker.touch(s.name);
    });
  }

  private unexpected(s: SagaRecord, op: string, a: Answer): void {
    this.sim.checker.fail("6", `saga ${s.name}: ${op} answered ${isLost(a) ? "nothing" : JSON.stringify(a)}, which the client's own actions cannot explain`);
  }

  // ---- the simulated participants (participants.ts) --------------------------

  refuses(call: ParticipantCall): boolean {
    return this.participants.refuses(call);
  }

  handle(call: ParticipantCall, answer: (o: CallOutcome) => void): void {
    this.participants.handle(call, answer);
  }
}
