// Executes a Node's effects with real I/O, in the one order that is never
// broken: persist and wait until durable, then send, reply, feed back.
import type { Logger } from "pino";
import type { PeerMessage } from "../protocol/messages.ts";
import type { Node } from "../txn/node.ts";
import type { CallOutcome } from "../participants/outcome.ts";
import type { Effect, Input, ParticipantCall, ReplyBody, ReplyTo } from "../txn/types.ts";
import type { LogRecord } from "../wal/records.ts";
import type { Wal } from "../wal/wal.ts";

export interface RuntimeIo {
  /** Deliver a message to another sidecar (federation); false if there is no link. */
  sendPeer(to: string, msg: PeerMessage): void;
  /** Deliver a reply to a client connection (dropped if it has gone). */
  reply(to: ReplyTo, body: ReplyBody): void;
  log: Logger;
  /** Call a participant of an orchestrated transaction. */
  call(call: ParticipantCall): Promise<CallOutcome>;
  /** Finish a branch's prepared SQL work (its decision is durable by now): true once every database finished it. Absent where no databases are configured. */
  finishSql?(e: Extract<Effect, { k: "finish_sql" }>): Promise<boolean>;
  /** Sees every input and every appended batch of records (metrics). */
  observe?: { input(input: Input): void; records(records: LogRecord[]): void };
  /** The log could not be written: stop, and let restart recover from what is durable. */
  onWalFailure(err: unknown): void;
}

export class Runtime {
  /** Resolves when everything appended so far is durable. */
  private durable: Promise<void> = Promise.resolve();
  private stopped = false;

  constructor(
    readonly node: Node,
    private readonly wal: Wal,
    private readonly io: RuntimeIo,
  ) {}

  input(input: Input): void {
    if (this.stopped) return;
    this.io.observe?.input(input);
    const effects = this.node.step(input);
    if (effects.length) this.execute(effects);
  }

  private execute(effects: Effect[]): void {
    const records: LogRecord[] = [];
    const lazy: LogRecord[] = [];
    const rest: Effect[] = [];
    const local: PeerMessage[] = [];
    const unlogged: Effect[] = [];
    for (const e of effects) {
      if (e.k === "persist") (e.lazy ? lazy : records).push(e.rec);
      else if (e.k === "send" && e.to === this.node.id) local.push(e.msg);
      else if (e.k === "reply" && e.immediate) this.carryOut(e);
      else if (e.k === "reply" && e.unlogged) unlogged.push(e);
      else rest.push(e);
    }
    if (unlogged.length) this.release(this.durable, unlogged);
    const before = this.durable;
    if (records.length || lazy.length) {
      const all = lazy.length ? [...records, ...lazy] : records;
      this.durable = this.wal.append(all, records.length > 0 && (rest.length > 0 || local.length > 0));
      this.io.observe?.records(all);
    }
    // This step's effects wait for what this step and every earlier one logged
    // (lazy records aside: nothing depends on them), not for what the messages
    // it sends itself will log: the coordinator's prepare reaches remote
    // participants while its own branch's prepare is still being made durable.
    const logged = records.length ? this.durable : before;
    // A message to this node never leaves the process, so it needs no durability
    // first: handled now, its records join the same group commit, and whatever it
    // sends or replies still waits for everything logged before it.
    for (const msg of local) this.input({ k: "peer", msg, now: Date.now() });
    if (rest.length) this.release(logged, rest);
  }

  private release(durable: Promise<void>, effects: Effect[]): void {
    this.wal.hurry?.(durable);
    durable.then(
      () => {
        for (const e of effects) this.carryOut(e);
      },
      (err) => this.io.onWalFailure(err),
    );
  }

  private carryOut(e: Effect): void {
    switch (e.k) {
      case "send":
        return this.io.sendPeer(e.to, e.msg);
      case "reply":
        return this.io.reply(e.to, e.body);
      case "after": {
        const input = e.input;
        return this.input({ ...input, now: Date.now() } as Input);
      }
      case "call": {
        const c = e.call;
        this.io.call(c).then(
          (o) => this.input({ k: "call_result", name: c.name, index: c.index, callId: c.callId, ...o, now: Date.now() }),
          (err) => this.input({ k: "call_result", name: c.name, index: c.index, callId: c.callId, outcome: "retry", error: String(err), now: Date.now() }),
        );
        return;
      }
      case "finish_sql": {
        const finished = (ok: boolean) => this.input({ k: "sql_finished", name: e.name, branch: e.branch, ok, now: Date.now() });
        if (this.io.finishSql) return void this.io.finishSql(e).then(finished, () => finished(false));
        this.io.log.error({ name: e.name, branch: e.branch, gids: e.resources.map((r) => r.gid) }, "no SQL databases configured to finish this branch");
        return finished(false);
      }
      case "persist":
        throw new Error("persist effects are executed before the others");
    }
  }

  /** Everything persisted so far is durable. */
  drain(): Promise<void> {
    return this.durable.then(() => this.wal.barrier());
  }

  stop(): void {
    this.stopped = true;
  }
}
