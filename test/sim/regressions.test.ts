// Seeds on which the simulator found real bugs in src/txn/node.ts (and orchestrator.ts), run
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
  // src/txn/node.ts prepare(): once joined branches prepare when their callback ends, a conflict there rolls the
  // transaction back while it is still active; a client that asked to prepare after it was evicted from memory
  // got NOT_FOUND instead of the rollback (and its reason) from the log.
  { seed: 93302, bug: "prepare after an early rollback was evicted answered NOT_FOUND" },
  { seed: 99249, bug: "prepare after an early rollback was evicted answered NOT_FOUND" },
  { seed: 99862, bug: "prepare after an early rollback was evicted answered NOT_FOUND" },
];

describe("simulator regressions", () => {
  for (const { seed, bug } of regressions) {
    test(`seed ${seed}: ${bug}`, () => {
      expect(simulate(seed).violation?.message).toBeUndefined();
    });
  }
});
