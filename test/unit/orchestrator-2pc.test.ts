// Orchestrated 2PC (createTransaction with consistency "immediate"), driven
// through Node.step with no I/O (test/helpers/orchestrator-harness.ts).
import { describe, expect, test } from "bun:test";
import type { ParticipantCall } from "../../src/txn/types.ts";
import { Sidecar, calls, exhaust, fast, http, started } from "../helpers/orchestrator-harness.ts";

const short = { attempts: 3, backoffMs: 5, maxBackoffMs: 10, budgetMs: 10_000, callTimeoutMs: 50 };
const refused = { outcome: "retry", reached: false, error: "ECONNREFUSED" } as const;
const timedOut = { outcome: "retry", error: "did not answer within 50 ms" } as const;

/** A 2PC transaction "t" over p0, p1, p2 (p1 with a short retry policy); the three prepares are in flight. */
function preparing(): { sc: Sidecar; prepares: ParticipantCall[] } {
  const sc = new Sidecar();
  const prepares = started(sc, "t", [http("p0", fast, true), http("p1", short, true), http("p2", fast, true)], "immediate");
  expect(prepares.map((c) => `${c.op}:${c.index}`)).toEqual(["prepare:0", "prepare:1", "prepare:2"]);
  return { sc, prepares };
}
const aborts = (cs: ParticipantCall[]) => cs.filter((c) => c.op === "abort").map((c) => c.participantId);

describe("orchestrated 2PC: who is sent abort", () => {
  test("a participant whose prepare timed out on every attempt may have prepared, and is sent abort with the others", () => {
    const { sc, prepares } = preparing();
    sc.answer(prepares[0], "ok");
    sc.answer(prepares[2], "ok");
    const phase2 = exhaust(sc, prepares[1], timedOut);
    expect(sc.wal.orchestration("t")?.decision).toBe("rollback");
    expect(aborts(phase2).sort()).toEqual(["p0", "p1", "p2"]);
    expect(phase2.find((c) => c.participantId === "p1")?.idempotencyKey).toBe("t/p1/abort");
    expect(sc.steps("t")?.[1]).toEqual(["prepare:maybe"]);
  });

  test("a definitive no did not prepare and is not sent abort; a participant still preparing is", () => {
    const { sc, prepares } = preparing();
    sc.answer(prepares[0], "ok");
    const phase2 = calls(sc.answer(prepares[1], "fail"));
    expect(aborts(phase2).sort()).toEqual(["p0", "p2"]);
  });

  test("a participant none of whose prepares reached it is not sent abort, and the transaction rolls back", () => {
    const { sc, prepares } = preparing();
    sc.answer(prepares[0], "ok");
    sc.answer(prepares[2], "ok");
    const phase2 = exhaust(sc, prepares[1], refused);
    expect(aborts(phase2).sort()).toEqual(["p0", "p2"]);
    for (const c of phase2) sc.answer(c, "ok");
    expect(sc.wal.orchestration("t")?.state).toBe("rolled_back");
    expect(sc.steps("t")?.[1]).toEqual(["prepare:unreached"]);
  });

  test("after a restart, an abort is sent to a participant whose prepare had no answer before the restart", () => {
    const { sc, prepares } = preparing();
    sc.answer(prepares[0], "fail");
    sc.restart();
    const phase2 = calls(sc.tick(20));
    expect(aborts(phase2).sort()).toEqual(["p1", "p2"]);
  });
});

describe("orchestrated 2PC: phase 2 goes on past a participant that gave up", () => {
  function committing(): { sc: Sidecar; commits: ParticipantCall[] } {
    const { sc, prepares } = preparing();
    sc.answer(prepares[0], "ok");
    sc.answer(prepares[1], "ok");
    const commits = calls(sc.answer(prepares[2], "ok"));
    expect(commits.map((c) => `${c.op}:${c.index}`)).toEqual(["commit:0", "commit:1", "commit:2"]);
    return { sc, commits };
  }

  test("a commit that gives up on one participant does not stop the others; the transaction ends failed naming it", () => {
    const { sc, commits } = committing();
    exhaust(sc, commits[1], timedOut);
    expect(sc.wal.orchestration("t")?.state).toBe("committing");
    sc.answer(commits[0], "ok");
    sc.answer(commits[2], "ok");
    const s = sc.wal.orchestration("t");
    expect(s?.state).toBe("failed");
    expect(s?.reason).toContain("p1 commit gave up after 3 attempts");
    expect(sc.steps("t")).toEqual([["prepare:ok", "commit:ok"], ["prepare:ok", "commit:failed"], ["prepare:ok", "commit:ok"]]);
  });

  test("an abort that gives up on one participant does not stop the others; the transaction ends failed naming it", () => {
    const { sc, prepares } = preparing();
    sc.answer(prepares[0], "ok");
    const phase2 = calls(sc.answer(prepares[2], "fail"));
    expect(aborts(phase2)).toEqual(["p0", "p1"]);
    exhaust(sc, phase2[1], timedOut);
    expect(sc.wal.orchestration("t")?.state).toBe("rolling_back");
    sc.answer(phase2[0], "ok");
    expect(sc.wal.orchestration("t")?.state).toBe("failed");
    expect(sc.wal.orchestration("t")?.reason).toContain("p1 abort gave up after 3 attempts");
  });

  test("after a restart, the participant that gave up is not called again and the others finish", () => {
    const { sc, commits } = committing();
    exhaust(sc, commits[1], timedOut);
    sc.restart();
    const again = calls(sc.tick(20));
    expect(again.map((c) => `${c.op}:${c.index}`)).toEqual(["commit:0", "commit:2"]);
    for (const c of again) sc.answer(c, "ok");
    expect(sc.wal.orchestration("t")?.state).toBe("failed");
  });
});
