// The participants this sidecar hosts for orchestrated transactions, its own
// or a peer's (DESIGN §5.2): the orchestrator asks for one operation at a time
// (o_call); this sidecar runs it behind the sub-transaction barrier
// (participants/barrier.ts), logs what the barrier names (b.op), calls the
// service registered on it (effect "invoke") or writes its own store, and
// answers (o_result) in the step that logged it, so the answer leaves only once
// its records are durable. A prepare that may have run and has no decision asks
// its orchestrator (o_query), like a 2PC branch: it never decides alone. Pure:
// a service's answer comes back as an input.
import { type BarrierLane, arrive, barrierKeyOf, barrierRecord, decide, idempotencyKeyOf, leave, resultRecord } from "../participants/barrier.ts";
import type { CallOutcome } from "../participants/outcome.ts";
import { ErrorCode } from "../protocol/errors.ts";
import type { PeerMessage } from "../protocol/messages.ts";
import { timing } from "../limits.ts";
import type { LockTable } from "../store/locks.ts";
import { type BarrierOp, type BarrierSummary, type HostedRef, type StepOp, foldBarrier, inDoubt } from "../wal/orchestration-records.ts";
import { type LogRecord, type Write, defined } from "../wal/records.ts";
import type { WalReader } from "../wal/wal.ts";
import { beforeImage, storeWrites } from "./store-step.ts";
import type { Input, ServiceInvoke } from "./types.ts";

export interface HostedHost {
  readonly id: string;
  readonly reader: WalReader;
  readonly locks: LockTable;
  persist(rec: LogRecord): void;
  send(to: string, msg: PeerMessage): void;
  invoke(inv: ServiceInvoke): void;
  /** Feed `input` back once everything persisted so far is durable. */
  after(input: Input): void;
  nextVersion(): number;
}

type HostedCall = Extract<PeerMessage, { t: "o_call" }>;
type Decision = Extract<PeerMessage, { t: "o_decision" }>;
/** Who waits for a run's outcome: the orchestrator's calls that joined it (its retries, duplicates). */
interface Ask {
  boot: string;
  callId: number;
}
interface Run {
  call: HostedCall;
  asks: Ask[];
}

/** Calls one run answers at most (an orchestrator accepts only its newest; older ones are kept for reordering). */
const asksPerRunMax = 8;
/** The lock holder of a hosted store prepare: never a 2PC branch's (those are <name>/<branch>). */
const lockHolder = (key: string) => `o:${key}`;

export class Hosted {
  /** Registered services: name → the client connection that serves it (the newest registration). */
  private readonly services = new Map<string, number>();
  private readonly lanes = new Map<string, BarrierLane>();
  private readonly runs = new Map<string, Run>();
  /**
   * The barrier entry of every key with a live lane or records not yet durable, with what was logged: the log
   * shows a step's records only once they are committed (in the sidecar, at the end of the turn), and the next
   * operation of a key may run in the same step or turn. `unsettled` counts each key's records not yet durable.
   */
  private readonly entries = new Map<string, BarrierSummary | undefined>();
  private readonly unsettled = new Map<string, number>();
  private readonly invokes = new Map<number, { key: string; op: StepOp }>();
  private invokeSeq = 0;
  /** Store keys a hosted prepare locked, by barrier key, until its commit or abort is durable. */
  private readonly locked = new Map<string, string[]>();
  /** Prepares that may have run and have no decision yet, by barrier key. */
  private readonly doubts = new Map<string, { ref: HostedRef; lastContact: number }>();
  /** How many of them each transaction name has here (names held, checked on every begin). */
  private readonly doubtNames = new Map<string, number>();

  constructor(private readonly host: HostedHost) {}

  register(conn: number, service: string): void {
    this.services.set(service, conn);
  }

  /** The connection went: its services are no longer registered (its calls in flight come back as "invoked"). */
  disconnected(conn: number): void {
    for (const [s, c] of this.services) if (c === conn) this.services.delete(s);
  }

  // ---- operations --------------------------------------------------------------

  onCall(msg: HostedCall, now: number): void {
    const key = barrierKeyOf(msg.name, msg.participantId, msg.incarnation);
    const doubt = this.doubts.get(key);
    if (doubt) doubt.lastContact = now;
    this.enter(key, msg, { boot: msg.boot, callId: msg.callId }, now);
  }

  /** The orchestrator's decision for a prepare held here: run its commit or abort, as its own call would. */
  onDecision(msg: Decision, now: number): void {
    const key = barrierKeyOf(msg.name, msg.participantId, msg.incarnation);
    const doubt = this.doubts.get(key);
    if (!doubt || doubt.ref.orchestrator !== msg.from) return;
    doubt.lastContact = now;
    const op: StepOp = msg.outcome === "commit" ? "commit" : "abort";
    const { ref } = doubt;
    const call: HostedCall = {
      t: "o_call",
      name: ref.name,
      from: ref.orchestrator,
      participantId: ref.participantId,
      index: ref.index,
      boot: "",
      callId: 0,
      endpoint: ref.endpoint,
      op,
      idempotencyKey: idempotencyKeyOf(ref.name, ref.participantId, op),
      ...defined({ incarnation: ref.incarnation, traceparent: msg.traceparent, payload: msg.payload, context: msg.context, action: msg.action }),
    };
    this.enter(key, call, undefined, now);
  }

  onInvoked(id: number, o: CallOutcome, now: number): void {
    const inv = this.invokes.get(id);
    if (!inv) return;
    this.invokes.delete(id);
    const run = this.runs.get(`${inv.key}/${inv.op}`);
    if (!run) return;
    const result = resultRecord(inv.op, o);
    if (result) this.record(inv.key, run.call, result, now);
    this.finish(inv.key, inv.op, o, now);
  }

  /** The records of `key` are durable, and in the log's view: its store keys go, unless it holds a prepare. */
  onDurable(key: string): void {
    const n = (this.unsettled.get(key) ?? 1) - 1;
    if (n > 0) return void this.unsettled.set(key, n);
    this.unsettled.delete(key);
    const ops = this.entry(key)?.ops;
    const keys = this.locked.get(key);
    if (keys && !(ops && inDoubt(ops))) {
      this.locked.delete(key);
      this.host.locks.releaseAll(lockHolder(key), keys);
    }
    if (!this.lanes.has(key)) this.entries.delete(key);
  }

  /** In-doubt prepares ask their orchestrator, once a while after they last heard from it. */
  tick(now: number): void {
    for (const d of this.doubts.values()) {
      if (now - d.lastContact < timing.askCoordinatorMs) continue;
      d.lastContact = now;
      const { ref } = d;
      this.host.send(ref.orchestrator, { t: "o_query", name: ref.name, from: this.host.id, participantId: ref.participantId, index: ref.index, ...defined({ incarnation: ref.incarnation }) });
    }
  }

  /** Start-up: prepares in doubt ask at the first tick; a store prepare takes its locks again. */
  recover(summaries: BarrierSummary[]): void {
    for (const s of summaries) {
      if (s.state !== "prepared" || !s.hosted) continue;
      this.doubt(s.key, s.hosted, -Infinity);
      const prepared = s.ops.prepare?.prepared;
      if (!prepared) continue;
      const keys = prepared.map((w) => w[0]);
      const clash = this.host.locks.tryLockAll(lockHolder(s.key), keys);
      if (clash !== undefined) throw new Error(`recovery: key ${clash} locked by two prepared transactions`);
      this.locked.set(s.key, keys);
    }
  }

  // ---- views -------------------------------------------------------------------

  /** A prepare of a transaction named `name` is in doubt here (whichever sidecar orchestrates it). */
  holdsName(name: string): boolean {
    return (this.doubtNames.get(name) ?? 0) > 0;
  }

  get inDoubtCount(): number {
    return this.doubts.size;
  }

  // ---- the lane and the barrier ------------------------------------------------

  private enter(key: string, call: HostedCall, ask: Ask | undefined, now: number): void {
    const runKey = `${key}/${call.op}`;
    const arrived = arrive(this.lanes.get(key) ?? [], call.op);
    if (arrived.join) {
      const run = this.runs.get(runKey)!;
      if (ask && !run.asks.some((a) => a.boot === ask.boot && a.callId === ask.callId)) {
        run.asks.push(ask);
        if (run.asks.length > asksPerRunMax) run.asks.shift();
      }
      return;
    }
    this.lanes.set(key, arrived.lane);
    this.runs.set(runKey, { call, asks: ask ? [ask] : [] });
    if (arrived.start) this.run(key, call.op, now);
  }

  /** Its turn came: what the barrier decides, carried out. */
  private run(key: string, op: StepOp, now: number): void {
    const { call } = this.runs.get(`${key}/${op}`)!;
    const d = decide(this.entry(key), { op, participantId: call.participantId });
    if (d.k === "answer") {
      if (d.record) this.record(key, call, d.record, now);
      return this.finish(key, op, d.answer, now);
    }
    if (call.endpoint === "store:") return this.finish(key, op, this.storeOp(key, call, now), now);
    const service = call.endpoint.slice("service:".length);
    const conn = this.services.get(service);
    // Not registered: provably never called, so nothing is logged (an abort of it is then a no-op).
    if (conn === undefined) return this.finish(key, op, unavailable(service, this.host.id), now);
    if (d.record) this.record(key, call, d.record, now); // the sent mark: from here on it may have run
    const id = ++this.invokeSeq;
    this.invokes.set(id, { key, op });
    this.host.invoke({
      id,
      conn,
      service,
      method: op,
      name: call.name,
      participantId: call.participantId,
      idempotencyKey: call.idempotencyKey,
      ...defined({ payload: call.payload, context: call.context, action: call.action }),
    });
  }

  /** A run finished: every call that joined it is answered, and the next operation of its lane starts. */
  private finish(key: string, op: StepOp, o: CallOutcome, now: number): void {
    const runKey = `${key}/${op}`;
    const run = this.runs.get(runKey)!;
    this.runs.delete(runKey);
    for (const ask of run.asks) this.host.send(run.call.from, answerOf(run.call, ask, o, this.host.id));
    const left = leave(this.lanes.get(key) ?? [], op);
    if (left.lane.length) this.lanes.set(key, left.lane);
    else {
      this.lanes.delete(key);
      if (!this.unsettled.has(key)) this.entries.delete(key);
    }
    if (left.start) this.run(key, left.start, now);
  }

  private entry(key: string): BarrierSummary | undefined {
    return this.entries.has(key) ? this.entries.get(key) : this.host.reader.barrierEntry(key);
  }

  private record(key: string, call: HostedCall, b: BarrierOp, now: number, store: { writes: Write[]; version: number } | {} = {}): void {
    const ref: HostedRef = { name: call.name, participantId: call.participantId, index: call.index, orchestrator: call.from, endpoint: call.endpoint, ...defined({ incarnation: call.incarnation }) };
    const rec = barrierRecord(key, call.op, b, now, { hosted: ref, ...store });
    const entry = foldBarrier(this.entry(key), rec);
    this.entries.set(key, entry);
    this.host.persist(rec);
    this.unsettled.set(key, (this.unsettled.get(key) ?? 0) + 1);
    this.host.after({ k: "hosted_durable", key, now });
    if (inDoubt(entry.ops)) this.doubt(key, ref, now);
    else this.settled(key);
  }

  private doubt(key: string, ref: HostedRef, lastContact: number): void {
    if (this.doubts.has(key)) return;
    this.doubts.set(key, { ref, lastContact });
    this.doubtNames.set(ref.name, (this.doubtNames.get(ref.name) ?? 0) + 1);
  }

  private settled(key: string): void {
    const d = this.doubts.get(key);
    if (!d) return;
    this.doubts.delete(key);
    const n = (this.doubtNames.get(d.ref.name) ?? 1) - 1;
    if (n > 0) this.doubtNames.set(d.ref.name, n);
    else this.doubtNames.delete(d.ref.name);
  }

  // ---- this sidecar's store as the participant ---------------------------------

  /** Lock the keys of `writes` for `key` (all or none); why not, when another transaction holds one. */
  private lock(key: string, writes: readonly Write[]): string | undefined {
    const keys = writes.map((w) => w[0]);
    const held = this.host.locks.tryLockAll(lockHolder(key), keys);
    if (held !== undefined) return `key "${held}" is locked by another transaction`;
    this.locked.set(key, [...new Set([...(this.locked.get(key) ?? []), ...keys])]);
    return undefined;
  }

  /**
   * A store operation the barrier let through, written with its record (the write and its record are one
   * append, so it needs no sent mark). Its keys are locked until the record is durable and in the log's view (a
   * prepare's until its decision is), so no other transaction reads or writes around it meanwhile; a key
   * another transaction holds makes it retry: nothing was written.
   */
  private storeOp(key: string, call: HostedCall, now: number): CallOutcome {
    const op = call.op;
    const ops = this.entry(key)?.ops ?? {};
    const ok: CallOutcome = { outcome: "ok", result: null };
    switch (op) {
      case "execute":
      case "prepare": {
        const writes = storeWrites(call.payload);
        if (typeof writes === "string") {
          const no: CallOutcome = { outcome: "fail", error: writes };
          this.record(key, call, resultRecord(op, no)!, now);
          return no;
        }
        const busy = this.lock(key, writes);
        if (busy) return { outcome: "retry", error: busy, reached: false };
        if (op === "execute") this.record(key, call, { outcome: "ok", result: null, before: beforeImage(writes, this.host.reader) }, now, { writes, version: this.host.nextVersion() });
        else this.record(key, call, { outcome: "ok", result: null, prepared: writes }, now);
        return ok;
      }
      case "compensate": {
        const writes = ops.execute?.before ?? [];
        const busy = this.lock(key, writes);
        if (busy) return { outcome: "retry", error: busy };
        this.record(key, call, { outcome: "ok", result: null }, now, { writes, version: this.host.nextVersion() });
        return ok;
      }
      case "commit": {
        if (ops.prepare?.outcome !== "ok" || ops.abort) return { outcome: "fail", error: `${call.participantId} has no prepared write set to commit on sidecar ${this.host.id}` };
        this.record(key, call, { outcome: "ok", result: null }, now, { writes: ops.prepare.prepared ?? [], version: this.host.nextVersion() });
        return ok; // its locks go once this is durable (onDurable)
      }
      case "abort":
        this.record(key, call, { outcome: "ok", result: null }, now);
        return ok;
    }
  }
}

function unavailable(service: string, self: string): CallOutcome {
  return {
    outcome: "retry",
    reached: false,
    code: ErrorCode.PARTICIPANT_UNAVAILABLE,
    error: `service ${service} is not registered on sidecar ${self} (no client of it has called dtx.register("${service}", …))`,
  };
}

function answerOf(call: HostedCall, ask: Ask, o: CallOutcome, self: string): Extract<PeerMessage, { t: "o_result" }> {
  return {
    t: "o_result",
    name: call.name,
    from: self,
    participantId: call.participantId,
    index: call.index,
    boot: ask.boot,
    callId: ask.callId,
    op: call.op,
    outcome: o.outcome,
    ...defined({ incarnation: call.incarnation, traceparent: call.traceparent, result: o.result, error: o.error?.slice(0, 2000), code: o.code, reached: o.reached }),
  };
}
