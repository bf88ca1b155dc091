// The engine rule for one step, as the runtime (and through it the simulator)
// applies it: planEffects turns a step's effects into what to append, what to
// handle now, and what waits for which log position.
import { describe, expect, test } from "bun:test";
import { type BrokenPlan, type EffectBatch, planEffects } from "../../src/runtime/effect-plan.ts";
import type { PeerMessage } from "../../src/protocol/messages.ts";
import type { Effect, ParticipantCall } from "../../src/txn/types.ts";
import type { LogRecord } from "../../src/wal/records.ts";

const branches = [{ id: "A.b.1", sidecar: "A" }];
const decision: LogRecord = { r: "c.decision", name: "t", protocol: "2pc", outcome: "commit", branches, createdAt: 1, at: 2 };
const end: LogRecord = { r: "c.end", name: "t", protocol: "2pc", outcome: "commit", branches, createdAt: 1, at: 3 };
const branchEnd: LogRecord = { r: "p.end", name: "t", branch: "A.b.2", coordinator: "A", outcome: "rollback", writes: [], version: 0, at: 3 };
const msg = (to: string): PeerMessage => ({ t: "decision", name: "t", branch: `${to}.b.1`, from: "A", outcome: "commit" });
const call: ParticipantCall = { name: "s", index: 0, participantId: "p", endpoint: "http://p", op: "execute", callId: 1, idempotencyKey: "s/0", timeoutMs: 1_000 };

const persist = (rec: LogRecord, lazy?: true): Effect => (lazy ? { k: "persist", rec, lazy } : { k: "persist", rec });
const send = (to: string): Effect => ({ k: "send", to, msg: msg(to) });
const reply = (id: number, mark?: "unlogged" | "immediate"): Effect => ({ k: "reply", to: { conn: 1, id }, body: { ok: true }, ...(mark && { [mark]: true }) });
const after: Effect = { k: "after", input: { k: "applied", name: "t", branch: "A.b.1", now: 0 } };
const finishSql: Effect = { k: "finish_sql", name: "t", branch: "A.b.1", resources: [], outcome: "commit" };

/** Each batch as [what it waits for, the kinds of its effects]. */
const shape = (batches: readonly EffectBatch[]) => batches.map((b) => [b.wait, b.effects.map((e) => e.k)]);

describe("the effect plan of one step", () => {
  test("a step's records are appended together, the lazy ones after those its effects wait for", () => {
    const plan = planEffects([persist(branchEnd, true), persist(decision), send("B"), persist(end)], "A");
    expect(plan.records).toEqual([decision, end, branchEnd]);
  });

  test("sends, afters, calls and finish_sql wait until the log is durable past the step's own records", () => {
    const plan = planEffects([persist(decision), send("B"), after, { k: "call", call }, finishSql, reply(1)], "A");
    expect(shape(plan.effects)).toEqual([["after", ["send", "after", "call", "finish_sql", "reply"]]]);
    expect(plan.replies).toEqual([]);
    expect(plan.waited).toBe(true);
  });

  test("a step that logs nothing still waits for what earlier steps logged", () => {
    const plan = planEffects([send("B"), reply(1)], "A");
    expect(shape(plan.effects)).toEqual([["before", ["send", "reply"]]]);
    expect(plan.records).toEqual([]);
  });

  test("lazy records join the log but nothing waits for them", () => {
    const plan = planEffects([persist(branchEnd, true), send("B")], "A");
    expect(plan.records).toEqual([branchEnd]);
    expect(shape(plan.effects)).toEqual([["before", ["send"]]]);
    expect(plan.waited).toBe(false);
  });

  test("with lazy and other records, the step's effects wait for the whole append", () => {
    const plan = planEffects([persist(branchEnd, true), persist(decision), send("B")], "A");
    expect(shape(plan.effects)).toEqual([["after", ["send"]]]);
  });

  test("an immediate reply waits for nothing, an unlogged one only for what earlier steps logged", () => {
    const plan = planEffects([persist(end), reply(1, "unlogged"), reply(2, "immediate"), reply(3)], "A");
    expect(shape(plan.replies)).toEqual([
      ["nothing", ["reply"]],
      ["before", ["reply"]],
    ]);
    expect(shape(plan.effects)).toEqual([["after", ["reply"]]]);
  });

  test("a message to the node itself is handled at once, not sent, and its records are waited for", () => {
    const plan = planEffects([persist(decision), send("A"), send("B")], "A");
    expect(plan.local).toEqual([msg("A")]);
    expect(shape(plan.effects)).toEqual([["after", ["send"]]]);
    // Something waits for the records even with no other effect: the message's own sends follow them.
    expect(planEffects([persist(decision), send("A")], "A").waited).toBe(true);
  });

  test("records nobody waits for say so, so the log may hold them back", () => {
    expect(planEffects([persist(end)], "A").waited).toBe(false);
    expect(planEffects([persist(end), reply(1, "unlogged")], "A").waited).toBe(false);
  });
});

describe("the broken plans the simulator must catch", () => {
  const step = [persist(decision), reply(1, "unlogged"), send("B"), { k: "call", call } as Effect];
  const broken = (b: BrokenPlan, effects = step) => planEffects(effects, "A", b);

  test("send-before-persist: nothing waits", () => {
    const plan = broken("send-before-persist");
    expect(shape(plan.replies)).toEqual([["nothing", ["reply"]]]);
    expect(shape(plan.effects)).toEqual([["nothing", ["send", "call"]]]);
  });

  test("unpersisted-step-skips-wait: only a step that logs nothing stops waiting", () => {
    expect(shape(broken("unpersisted-step-skips-wait").effects)).toEqual([["after", ["send", "call"]]]);
    expect(shape(broken("unpersisted-step-skips-wait", [send("B")]).effects)).toEqual([["nothing", ["send"]]]);
  });

  test("call-before-persist: participant calls wait for nothing, the rest as before", () => {
    expect(shape(broken("call-before-persist").effects)).toEqual([
      ["nothing", ["call"]],
      ["after", ["send"]],
    ]);
    expect(shape(broken("call-before-persist").replies)).toEqual([["before", ["reply"]]]);
  });
});
