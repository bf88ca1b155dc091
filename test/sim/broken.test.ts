// The simulator is evidence only if it fails when a rule is broken. Each test
// breaks one rule — the engine rule in the production runtime's effect plan
// (src/runtime/effect-plan.ts, which the simulator drives), or another around
// the Node (the Node itself is unchanged) — and expects a violation within the
// seeds `npm test` runs.
import { describe, expect, test } from "bun:test";
import { type BrokenRule, simulate } from "./simulator.ts";
import type { Violation } from "./invariants.ts";

const seedsMax = 2_000;

function firstViolation(brokenRule: BrokenRule, ignore?: string[]): Violation | undefined {
  for (let seed = 1; seed <= seedsMax; seed++) {
    const r = simulate(seed, { brokenRule, ignore });
    if (r.violation) {
      console.log(`${brokenRule}${ignore ? ` (not checking invariant ${ignore.join(", ")})` : ""}: caught at seed ${seed}\n  ${r.violation.message}`);
      return r.violation;
    }
  }
  return undefined;
}

describe("the simulator catches a deliberately broken rule", () => {
  test("send-before-persist: votes, decisions and replies leave before their records are durable", () => {
    expect(firstViolation("send-before-persist")).toBeDefined();
  });

  test("send-before-persist, without the client-acknowledgement and call-time checks: a branch commits before its decision is durable, or a commit is decided on a vote that is not", () => {
    // Sagas are left out (invariant 7): this one is about the 2PC invariants.
    expect(["2", "3"]).toContain(firstViolation("send-before-persist", ["6", "§2", "7"])?.invariant ?? "none");
  });

  test("unpersisted-step-skips-wait: a step that logs nothing answers before what earlier steps logged is durable", () => {
    expect(firstViolation("unpersisted-step-skips-wait")).toBeDefined();
  });

  test("participant-decides-alone: a branch in doubt rolls back by itself after a timeout", () => {
    expect(firstViolation("participant-decides-alone")?.invariant).toBe("5");
  });

  test("participant-decides-alone, without invariant 5: the transaction ends split or commits without a yes vote", () => {
    expect(["1", "3"]).toContain(firstViolation("participant-decides-alone", ["5"])?.invariant ?? "none");
  });

  test("call-before-persist: a Saga calls a participant before the records that justify the call are durable", () => {
    expect(firstViolation("call-before-persist")?.invariant).toBe("§2");
  });

  test("call-before-persist, without the call-time check: a Saga's steps end applied while it never began, or half-way", () => {
    expect(["6", "7"]).toContain(firstViolation("call-before-persist", ["§2"])?.invariant ?? "none");
  });

  test("compensation-unlogged: a finished compensation is not logged, so the Saga moves on while its log says otherwise", () => {
    expect(firstViolation("compensation-unlogged")).toBeDefined();
  });

  test("compensation-unlogged, without the call-time check: a compensated Saga lacks a compensation in its log or its store", () => {
    expect(firstViolation("compensation-unlogged", ["§2"])?.invariant).toBe("7");
  });

  test("a failing seed replays exactly, and says how", () => {
    const found = firstViolation("participant-decides-alone")!;
    const again = simulate(found.seed, { brokenRule: "participant-decides-alone" });
    expect(again.violation?.message).toBe(found.message);
    expect(found.message).toContain(`replay: npm run sim:replay -- ${found.seed} --broken=participant-decides-alone`);
    expect(simulate(found.seed, { brokenRule: "participant-decides-alone" }).stats).toEqual(again.stats);
  });
});

// The simulated participants run the production barrier (src/participants/barrier.ts); these break one of its
// rules there. When written, each was caught at the seed named (replay: npm run sim:replay -- <seed> --broken=<rule>).
describe("the simulator catches a deliberately broken rule of the shared barrier", () => {
  const caught = (rule: BrokenRule) => {
    const v = firstViolation(rule);
    expect(v?.invariant).toBe("7");
    expect(v?.message).toMatch(/(applied the action|prepared) after its (compensation|abort)/);
    expect(v?.message).toContain(`replay: npm run sim:replay -- ${v?.seed} --broken=${rule}`);
  };

  test("barrier-forgets-null-compensation (seed 2): a compensation before its action is not recorded, so the late action runs after it", () => {
    caught("barrier-forgets-null-compensation");
  });

  test("barrier-forgets-refusal (seed 2): an action after its compensation is not refused", () => {
    caught("barrier-forgets-refusal");
  });

  test("barrier-out-of-turn (seed 1): an abort does not wait for its prepare still running, finds nothing to undo, and the prepare lands after it", () => {
    caught("barrier-out-of-turn");
  });
});
