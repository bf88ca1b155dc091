// Seeds on which the simulator found real bugs in the engine (src/txn, orchestrator.ts included), run
// explicitly so they keep passing. A seed reproduces its run only while the
// simulator itself is unchanged; each bug also has a direct unit test in
// test/unit/node.test.ts (or orchestrator-saga.test.ts) that does not depend on the simulator.
import { describe, expect, test } from "bun:test";
import { simulate } from "./simulator.ts";

const regressions: Array<{ seed: number; bug: string }> = [
  // Prepare marked every branch on the coordinator's sidecar "done", also a branch a joined
  // service was still working in: its writes were refused, its hang-up no longer rolled it back,
  // and the transaction committed with half of that branch's work (seed 3632 catches it in the store).
  { seed: 2, bug: "prepare ended a joined branch on the coordinator's own sidecar" },
  { seed: 3, bug: "prepare ended a joined branch on the coordinator's own sidecar" },
  { seed: 3632, bug: "prepare ended a joined branch on the coordinator's own sidecar: the store disagreed with the acknowledged transfers" },
  // src/txn/orchestrator.ts: a Saga aborted (or timed out) while a step's action was in flight compensated that
  // step only while o.inflight still held the action; its own compensation replaced that entry (and a restart
  // cleared it), so the next tick compensated the earlier steps and ended "compensated" with the step applied.
  // Direct unit tests: test/unit/orchestrator-saga.test.ts.
  { seed: 4, bug: "a Saga compensated earlier steps before the step whose action was in flight at the abort" },
  { seed: 2, bug: "a Saga ended compensated with the in-flight step's action applied and never compensated" },
  // src/txn/coordinator.ts prepare(): once joined branches prepare when their callback ends, a conflict there rolls the
  // transaction back while it is still active; a client that asked to prepare after it was evicted from memory
  // got NOT_FOUND instead of the rollback (and its reason) from the log.
  { seed: 93302, bug: "prepare after an early rollback was evicted answered NOT_FOUND" },
  { seed: 99249, bug: "prepare after an early rollback was evicted answered NOT_FOUND" },
  { seed: 99862, bug: "prepare after an early rollback was evicted answered NOT_FOUND" },
  // src/txn/orchestration-plan.ts (orchestrated 2PC, in the workload since): a participant whose prepare gave up
  // after an attempt that may have arrived was counted as a no vote and never sent abort, so its prepare stayed
  // applied under a rolled-back transaction. Unit tests: test/unit/orchestrator-2pc.test.ts.
  { seed: 4, bug: "a rolled-back orchestrated 2PC left a prepare that timed out in place" },
  { seed: 12, bug: "a rolled-back orchestrated 2PC left a prepare that timed out in place" },
  // A commit, abort or compensation that gave up ended the transaction failed at once; the participants
  // after it were never sent theirs. Unit tests: orchestrator-2pc.test.ts, orchestrator-saga.test.ts.
  { seed: 5, bug: "orchestrated 2PC phase 2 stopped at the first participant that gave up" },
  { seed: 8, bug: "a Saga stopped compensating at the first compensation that gave up" },
  { seed: 10, bug: "a Saga stopped compensating at the first compensation that gave up" },
  // Not a bug found in main but the rule that prevents one: after a restart, the action that was due may have
  // been called by the earlier process, so refused calls since do not make it "never reached" (it applied).
  { seed: 40, bug: "a Saga step applied before a restart was logged never reached after it and not compensated" },
];

describe("simulator regressions", () => {
  for (const { seed, bug } of regressions) {
    test(`seed ${seed}: ${bug}`, () => {
      expect(simulate(seed).violation?.message).toBeUndefined();
    });
  }
});
