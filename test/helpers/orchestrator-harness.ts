// One sidecar's engine (Node.step) with no I/O, for unit tests of orchestrated
// transactions: persist effects go to a MemoryWal (durable at once), "call"
// effects are answered by hand, time moves only when the test says so.
import { expect } from "bun:test";
import type { CallOutcome } from "../../src/participants/outcome.ts";
import type { ParticipantSpec } from "../../src/protocol/orchestration.ts";
import { Node } from "../../src/txn/node.ts";
import type { ClientInput, Effect, ParticipantCall } from "../../src/txn/types.ts";
import { MemoryWal } from "../../src/wal/memory-wal.ts";
import type { Request } from "../sim/simulator.ts";

export class Sidecar {
  node: Node;
  now = 1_000;
  private reqId = 0;
  private boots = 1;

  constructor(readonly wal = new MemoryWal(true)) {
    this.node = new Node({ id: "A", bootId: "b1", reader: wal });
  }

  step(input: Parameters<Node["step"]>[0]): Effect[] {
    const effects = this.node.step(input);
    const records = effects.flatMap((e) => (e.k === "persist" ? [e.rec] : []));
    if (records.length) this.wal.write(records);
    return effects;
  }

  client(req: Request): Effect[] {
    return this.step({ k: "client", from: { conn: 1, id: ++this.reqId }, req: { ...req, id: this.reqId } as ClientInput, now: this.now });
  }

  /** Answer call c: "ok" | "fail" | "retry" (which may have reached the participant) or a full outcome. */
  answer(c: ParticipantCall, outcome: CallOutcome["outcome"] | CallOutcome): Effect[] {
    const o = typeof outcome === "string" ? { outcome } : outcome;
    return this.step({ k: "call_result", name: c.name, index: c.index, callId: c.callId, ...o, now: this.now });
  }

  tick(ms: number): Effect[] {
    this.now += ms;
    return this.step({ k: "tick", now: this.now });
  }

  restart(): Effect[] {
    this.node = new Node({ id: "A", bootId: `b${++this.boots}`, reader: this.wal });
    return this.step({ k: "recover", ...this.wal.unfinished(), now: this.now });
  }

  /** Each participant's logged operations, as "op:outcome". */
  steps(name: string): string[][] | undefined {
    return this.wal.orchestration(name)?.done.map((d) => d.map((x) => `${x.op}:${x.outcome}`));
  }
}

export const calls = (effects: Effect[]) => effects.flatMap((e) => (e.k === "call" ? [e.call] : []));
export const replies = (effects: Effect[]) => effects.flatMap((e) => (e.k === "reply" ? [e.body] : []));
export const fast = { attempts: 50, backoffMs: 5, maxBackoffMs: 10, budgetMs: 10_000, callTimeoutMs: 50 };
export const http = (id: string, retryPolicy = fast, supports2pc = false): ParticipantSpec => ({ participantId: id, endpoint: `http://p/${id}`, supports2pc, supportsSaga: true, retryPolicy });

/** Create `name` with these participants and execute it; returns the first calls. */
export function started(sc: Sidecar, name: string, specs: ParticipantSpec[], consistency: "eventual" | "immediate" = "eventual"): ParticipantCall[] {
  sc.client({ op: "o_create", name, consistency });
  for (const p of specs) sc.client({ op: "o_add", name, participant: p });
  return calls(sc.client({ op: "o_execute", name }));
}

/** Answer every call with `outcome` and tick until no call of operation `op` on participant `index` is left; returns the other calls made meanwhile. */
export function exhaust(sc: Sidecar, first: ParticipantCall, outcome: CallOutcome, tickMs = 20, max = 200): ParticipantCall[] {
  let pending = [first];
  const others: ParticipantCall[] = [];
  for (let k = 0; k < max && pending.length; k++) {
    const next = [...calls(sc.answer(pending[0], outcome)), ...calls(sc.tick(tickMs))];
    pending = next.filter((c) => c.index === first.index && c.op === first.op);
    others.push(...next.filter((c) => !(c.index === first.index && c.op === first.op)));
  }
  expect(pending).toEqual([]);
  return others;
}
