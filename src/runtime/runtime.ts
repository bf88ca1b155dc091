// Carries out a node's effects, in the one order that is never broken:
// persist and wait until durable, then send, reply, feed back. What waits for
// what is the effect plan's (effect-plan.ts); this file keeps the positions.
// It waits on log positions the Wal reports durable, never on promises, and
// takes its clock and scheduler as inputs, so the simulator runs this same
// code over a MemoryWal whose flushes it decides.
import type { CallOutcome } from "../participants/outcome.ts";
import type { PeerMessage } from "../protocol/messages.ts";
import type { Effect, Input, ParticipantCall, ReplyBody, ReplyTo, ServiceInvoke } from "../txn/types.ts";
import type { LogRecord } from "../wal/records.ts";
import type { Wal } from "../wal/wal.ts";
import { type BrokenPlan, type EffectBatch, planEffects } from "./effect-plan.ts";

/** The pure step function the runtime drives (a Node). */
export interface Engine {
  readonly id: string;
  step(input: Input): Effect[];
}

export interface RuntimeIo {
  /**
   * Deliver a message to another sidecar (federation); dropped if there is no link. `ifLinked`: only over a
   * link that is up now, never queued. Returns why a message did not leave when that is certain (no such
   * peer; no link up for an ifLinked one): the engine hears it as "undeliverable".
   */
  sendPeer(to: string, msg: PeerMessage, ifLinked?: boolean): { code: string; reason: string } | void;
  /** Deliver a reply to a client connection (dropped if it has gone). */
  reply(to: ReplyTo, body: ReplyBody): void;
  /** Call a participant of an orchestrated transaction; each `done` is fed back as a call_result (a failure is outcome "retry"). */
  call(call: ParticipantCall, done: (o: CallOutcome) => void): void;
  /** Push an operation to the registered service on its connection; `done` once it answered, or its connection went. */
  invoke(invoke: ServiceInvoke, done: (o: CallOutcome) => void): void;
  /** Finish a branch's prepared SQL work (its decision is durable by now); `done(true)` once every database finished it. */
  finishSql(e: Extract<Effect, { k: "finish_sql" }>, done: (ok: boolean) => void): void;
  observe?: {
    /** Every step: its input and the effects it returned, before any is carried out (metrics, the simulator's checks). */
    step?(input: Input, effects: Effect[]): void;
    /** Every batch of records, once appended. */
    records?(records: LogRecord[]): void;
  };
  /** The log could not be written: stop, and let restart recover from what is durable. */
  onWalFailure(err: unknown): void;
}

export interface RuntimeOptions {
  /** The time stamped on inputs the runtime feeds back (the sidecar's Date.now, the simulator's virtual time). */
  now(): number;
  /** Run `carryOut` later, never inside this call (the sidecar's queueMicrotask, the simulator's event queue). */
  schedule(carryOut: () => void): void;
  /** The simulator's broken-rule tests only. */
  broken?: BrokenPlan;
}

export class Runtime {
  /** The position of the last records this runtime appended, and how far the log is durable. */
  private appended = 0;
  private durable = 0;
  /** Batches waiting for a position, in the order they were queued (two arrays: no object per batch). */
  private readonly waitingAt: number[] = [];
  private readonly waiting: Effect[][] = [];
  /** Batches the log covers, to carry out in order when the scheduler runs `carryOutReady`. */
  private readonly ready: Effect[][] = [];
  private scheduled = false;
  private stopped = false;

  constructor(
    readonly engine: Engine,
    private readonly wal: Wal,
    private readonly io: RuntimeIo,
    private readonly opts: RuntimeOptions,
  ) {
    wal.watch({ durable: (position) => this.durableUpTo(position), failed: (err) => io.onWalFailure(err) });
  }

  input(input: Input): void {
    if (this.stopped) return;
    const effects = this.engine.step(input);
    this.io.observe?.step?.(input, effects);
    if (effects.length) this.execute(effects);
  }

  private execute(effects: Effect[]): void {
    const plan = planEffects(effects, this.engine.id, this.opts.broken);
    const before = this.appended;
    for (const b of plan.replies) this.enqueue(b, before, before);
    if (plan.records.length) {
      this.appended = this.wal.write(plan.records, plan.waited);
      this.io.observe?.records?.(plan.records);
    }
    const after = this.appended;
    // Handled now, so their records join this group commit; what they send waits for their own records,
    // not the other way round: the coordinator's prepare goes out while its own branch's is made durable.
    for (const msg of plan.local) this.input({ k: "peer", msg, now: this.opts.now() });
    for (const b of plan.effects) this.enqueue(b, before, after);
  }

  private enqueue(b: EffectBatch, before: number, after: number): void {
    const at = b.wait === "nothing" ? 0 : b.wait === "before" ? before : after;
    if (at <= this.durable) return this.release(b.effects);
    this.wal.hurry?.(at);
    this.waitingAt.push(at);
    this.waiting.push(b.effects);
  }

  /** The Wal says everything up to `position` is durable: release, in order, every batch that waited for no more. */
  private durableUpTo(position: number): void {
    if (this.stopped || position <= this.durable) return;
    this.durable = position;
    const at = this.waitingAt;
    let kept = 0;
    for (let i = 0; i < at.length; i++) {
      if (at[i] <= position) this.release(this.waiting[i]);
      else {
        at[kept] = at[i];
        this.waiting[kept++] = this.waiting[i];
      }
    }
    at.length = kept;
    this.waiting.length = kept;
  }

  private release(effects: Effect[]): void {
    this.ready.push(effects);
    if (this.scheduled) return;
    this.scheduled = true;
    this.opts.schedule(this.carryOutReady);
  }

  /** Batches released while these are carried out (by an `after`'s step, say) go in the same turn, after them. */
  private readonly carryOutReady = (): void => {
    try {
      for (let i = 0; i < this.ready.length && !this.stopped; i++) for (const e of this.ready[i]) this.carryOut(e);
    } finally {
      this.ready.length = 0;
      this.scheduled = false;
    }
  };

  private carryOut(e: Effect): void {
    switch (e.k) {
      case "send": {
        const refused = this.io.sendPeer(e.to, e.msg, e.ifLinked);
        if (refused) this.input({ k: "undeliverable", to: e.to, msg: e.msg, ...refused, now: this.opts.now() });
        return;
      }
      case "reply":
        return this.io.reply(e.to, e.body);
      case "after":
        return this.input({ ...e.input, now: this.opts.now() } as Input);
      case "call": {
        const c = e.call;
        return this.io.call(c, (o) => this.input({ k: "call_result", name: c.name, index: c.index, callId: c.callId, ...o, now: this.opts.now() }));
      }
      case "invoke":
        return this.io.invoke(e.invoke, (o) => this.input({ k: "invoked", id: e.invoke.id, ...o, now: this.opts.now() }));
      case "finish_sql":
        return this.io.finishSql(e, (ok) => this.input({ k: "sql_finished", name: e.name, branch: e.branch, ok, now: this.opts.now() }));
      case "persist":
        throw new Error("persist effects are appended before the others are carried out");
    }
  }

  /** Batches not yet carried out: waiting for the log, or released and waiting for the scheduler. */
  get unreleased(): number {
    return this.waiting.length + this.ready.length;
  }

  /** Everything persisted so far is durable, and what waited for it has been carried out. */
  async drain(): Promise<void> {
    await this.wal.barrier();
    if (this.ready.length) this.carryOutReady();
  }

  stop(): void {
    this.stopped = true;
    this.waitingAt.length = 0;
    this.waiting.length = 0;
    this.ready.length = 0;
  }
}
