// The production Runtime over a MemoryWal, with a fake clock and scheduler:
// nothing leaves before the log says the records it rests on are durable, and
// fed-back inputs carry the runtime's clock.
import { describe, expect, test } from "bun:test";
import type { CallOutcome } from "../../src/participants/outcome.ts";
import type { PeerMessage } from "../../src/protocol/messages.ts";
import { type Engine, Runtime } from "../../src/runtime/runtime.ts";
import { Node } from "../../src/txn/node.ts";
import type { ClientInput, Effect, Input, ParticipantCall, ReplyBody } from "../../src/txn/types.ts";
import { MemoryWal } from "../../src/wal/memory-wal.ts";
import type { LogRecord } from "../../src/wal/records.ts";
import type { DurabilityWatcher } from "../../src/wal/wal.ts";
import type { Request } from "../sim/simulator.ts";

/** A MemoryWal whose durability the test reports position by position, and that records what it was asked. */
class SteppedWal extends MemoryWal {
  listener!: DurabilityWatcher;
  readonly writes: Array<{ position: number; waited?: boolean }> = [];
  readonly hurried: number[] = [];
  constructor() {
    super(false);
  }
  override watch(watcher: DurabilityWatcher): void {
    this.listener = watcher;
  }
  override write(records: LogRecord[], waited?: boolean): number {
    const position = super.write(records);
    this.writes.push({ position, waited });
    return position;
  }
  hurry(position: number): void {
    this.hurried.push(position);
  }
}

/** One runtime, its world faked: a clock the test moves, a scheduler the test runs, and what went out. */
class World {
  now = 1_000;
  readonly sent: Array<{ to: string; msg: PeerMessage }> = [];
  readonly replies: ReplyBody[] = [];
  readonly calls: Array<(o: CallOutcome) => void> = [];
  readonly sqlDone: Array<(ok: boolean) => void> = [];
  private readonly scheduled: Array<() => void> = [];
  readonly runtime: Runtime;
  private reqId = 0;

  constructor(
    engine: Engine,
    readonly wal: MemoryWal = new MemoryWal(false),
  ) {
    this.runtime = new Runtime(
      engine,
      wal,
      {
        sendPeer: (to, msg) => void this.sent.push({ to, msg }),
        reply: (_to, body) => this.replies.push(body),
        call: (_call, done) => this.calls.push(done),
        invoke: (_invoke, done) => this.calls.push(done),
        finishSql: (_e, done) => this.sqlDone.push(done),
        onWalFailure: (err) => {
          throw err;
        },
      },
      { now: () => this.now, schedule: (run) => this.scheduled.push(run) },
    );
  }

  client(req: Request): void {
    this.runtime.input({ k: "client", from: { conn: 1, id: ++this.reqId }, req: { ...req, id: this.reqId } as ClientInput, now: this.now });
  }

  /** The scheduler's turn: run what the runtime handed it. */
  turn(): void {
    for (const run of this.scheduled.splice(0)) run();
  }
}

/** An engine that answers each input with the effects `script` gives, and remembers its inputs. */
function scripted(script: (input: Input) => Effect[]): Engine & { inputs: Input[] } {
  const inputs: Input[] = [];
  return {
    id: "A",
    inputs,
    step: (input) => {
      inputs.push(input);
      return script(input);
    },
  };
}

const branches = [{ id: "A.b.1", sidecar: "A" }];
const rec = (name: string): LogRecord => ({ r: "c.end", name, protocol: "2pc", outcome: "commit", branches, createdAt: 1, at: 2 });
const decision = (to: string): PeerMessage => ({ t: "decision", name: "t", branch: `${to}.b.1`, from: "A", outcome: "commit" });
const call: ParticipantCall = { name: "s", index: 0, participantId: "p", endpoint: "http://p", op: "execute", callId: 7, idempotencyKey: "s/0", timeoutMs: 1_000 };
const ping: Input = { k: "tick", now: 0 };

describe("Runtime over a MemoryWal", () => {
  test("a local transaction's answers leave only once the log is flushed past their records", () => {
    const wal = new MemoryWal(false);
    const world = new World(new Node({ id: "A", bootId: "b1", reader: wal }), wal);
    world.client({ op: "begin", name: "t" });
    world.turn();
    const begun = world.replies.shift() as { ok: true; branch: string };
    expect(begun.ok).toBe(true); // begin's answer waits for nothing
    world.client({ op: "put", name: "t", branch: begun.branch, key: "k", value: 1 });
    world.client({ op: "prepare", name: "t" });
    world.turn();
    expect(world.replies).toEqual([{ ok: true }]); // the put's: nothing it rests on was logged
    world.replies.length = 0;
    expect(world.wal.appended).toBeGreaterThan(0);
    world.turn();
    expect(world.replies).toEqual([]); // prepared, but not durable yet
    world.wal.flush();
    world.turn();
    expect(world.replies).toEqual([expect.objectContaining({ ok: true, state: "prepared" })]);
  });

  test("a message to the node itself is handled at once; what it sends waits for its own records, the sender's effects do not", () => {
    const engine = scripted((input) =>
      input.k === "tick"
        ? [{ k: "persist", rec: rec("outer") }, { k: "send", to: "A", msg: decision("A") }, { k: "send", to: "B", msg: decision("B") }]
        : [{ k: "persist", rec: rec("inner") }, { k: "send", to: "C", msg: decision("C") }],
    );
    const wal = new SteppedWal();
    const world = new World(engine, wal);
    world.now = 5;
    world.runtime.input(ping);
    expect(engine.inputs[1]).toEqual({ k: "peer", msg: decision("A"), now: 5 });
    expect(wal.writes.map((w) => w.position)).toEqual([1, 2]);
    wal.listener.durable(1);
    world.turn();
    expect(world.sent.map((s) => s.to)).toEqual(["B"]);
    wal.listener.durable(2);
    world.turn();
    expect(world.sent.map((s) => s.to)).toEqual(["B", "C"]);
  });

  test("an unlogged reply waits only for earlier steps' records, an immediate one for nothing", () => {
    let n = 0;
    const engine = scripted(() => {
      n++;
      if (n === 1) return [{ k: "persist", rec: rec("first") }];
      return [
        { k: "persist", rec: rec("second") },
        { k: "reply", to: { conn: 1, id: 1 }, body: { ok: true, unlogged: true }, unlogged: true },
        { k: "reply", to: { conn: 1, id: 2 }, body: { ok: true, immediate: true }, immediate: true },
        { k: "reply", to: { conn: 1, id: 3 }, body: { ok: true } },
      ];
    });
    const wal = new SteppedWal();
    const world = new World(engine, wal);
    world.runtime.input(ping);
    world.runtime.input(ping);
    world.turn();
    expect(world.replies).toEqual([{ ok: true, immediate: true }]);
    wal.listener.durable(1);
    world.turn();
    expect(world.replies.at(-1)).toEqual({ ok: true, unlogged: true });
    wal.listener.durable(2);
    world.turn();
    expect(world.replies.at(-1)).toEqual({ ok: true });
  });

  test("records nobody waits for are written with waited false, and the log is hurried once someone waits", () => {
    let n = 0;
    const engine = scripted((): Effect[] => (++n === 1 ? [{ k: "persist", rec: rec("end") }] : [{ k: "send", to: "B", msg: decision("B") }]));
    const wal = new SteppedWal();
    const world = new World(engine, wal);
    world.runtime.input(ping);
    expect(wal.writes).toEqual([{ position: 1, waited: false }]);
    expect(wal.hurried).toEqual([]);
    world.runtime.input(ping);
    expect(wal.hurried).toEqual([1]);
    expect(world.sent).toEqual([]);
  });

  test("after, call and finish_sql feed their inputs back once durable, stamped with the runtime's clock", () => {
    const engine = scripted((input) =>
      input.k === "tick"
        ? [
            { k: "persist", rec: rec("t") },
            { k: "after", input: { k: "applied", name: "t", branch: "A.b.1", now: 0 } },
            { k: "call", call },
            { k: "finish_sql", name: "t", branch: "A.b.1", resources: [], outcome: "commit" },
          ]
        : [],
    );
    const world = new World(engine);
    world.runtime.input(ping);
    world.turn();
    expect(engine.inputs).toHaveLength(1);
    world.wal.flush();
    world.now = 2_000;
    world.turn();
    expect(engine.inputs[1]).toEqual({ k: "applied", name: "t", branch: "A.b.1", now: 2_000 });
    world.now = 3_000;
    world.calls[0]({ outcome: "ok", result: 1 });
    world.sqlDone[0](true);
    expect(engine.inputs.slice(2)).toEqual([
      { k: "call_result", name: "s", index: 0, callId: 7, outcome: "ok", result: 1, now: 3_000 },
      { k: "sql_finished", name: "t", branch: "A.b.1", ok: true, now: 3_000 },
    ]);
  });

  test("a stopped runtime carries out nothing more and takes no input", () => {
    const engine = scripted((): Effect[] => [{ k: "persist", rec: rec("t") }, { k: "send", to: "B", msg: decision("B") }]);
    const world = new World(engine);
    world.runtime.input(ping);
    world.runtime.stop();
    world.wal.flush();
    world.turn();
    world.runtime.input(ping);
    expect(world.sent).toEqual([]);
    expect(engine.inputs).toHaveLength(1);
  });
});
