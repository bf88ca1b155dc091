// The SQL reconciler's rules, with a fake database and a fake log:
// decided → apply, in doubt → leave, running here → leave, orphan → roll back after orphanMs, others' gids → never.
import { describe, expect, test } from "bun:test";
import pino from "pino";
import { SqlBranches } from "../../src/participants/sql/branches.ts";
import type { FinishResult, SqlDriver } from "../../src/participants/sql/driver.ts";
import type { BranchSummary, Outcome } from "../../src/wal/records.ts";

class FakeDriver implements SqlDriver {
  readonly db = { name: "orders", url: "postgres://x", kind: "postgres" as const };
  readonly prepared = new Set<string>();
  readonly finished: [string, Outcome][] = [];
  busyOnce = new Set<string>();
  async probe() {}
  async listPrepared() {
    return [...this.prepared];
  }
  async finish(gid: string, outcome: Outcome): Promise<FinishResult> {
    if (this.busyOnce.delete(gid)) return "busy";
    if (!this.prepared.delete(gid)) return "unknown";
    this.finished.push([gid, outcome]);
    return "finished";
  }
  async close() {}
}

const gid = (sidecar: string, n: number, name = `t${n}`) => `dtx:${sidecar}:b.${n}:orders:${name}`;
const summary = (name: string, branch: string, state: BranchSummary["state"], resources: string[] = []): BranchSummary => ({
  name,
  branch,
  coordinator: "A",
  state,
  writes: [],
  reads: [],
  resources: resources.map((g) => ({ db: "orders", gid: g, kind: "postgres" })),
});

function setup(live: string[] = []) {
  const driver = new FakeDriver();
  const log = new Map<string, BranchSummary>();
  const branches = new SqlBranches({
    sidecar: "A",
    databases: [],
    drivers: [driver],
    reader: { branch: (name, branch) => log.get(`${name}/${branch}`) },
    branchLive: (name, branch) => live.includes(`${name}/${branch}`),
    log: pino({ level: "silent" }),
    reconcileMs: 1_000,
    orphanMs: 5_000,
  });
  return { driver, log, branches };
}

describe("SQL reconciler", () => {
  test("decided branches are finished by their decision; in-doubt and running ones are left", async () => {
    const { driver, log, branches } = setup(["t4/A.b.4"]);
    for (const n of [1, 2, 3, 4]) driver.prepared.add(gid("A", n));
    log.set("t1/A.b.1", summary("t1", "A.b.1", "committed"));
    log.set("t2/A.b.2", summary("t2", "A.b.2", "rolled_back"));
    log.set("t3/A.b.3", summary("t3", "A.b.3", "prepared", [gid("A", 3)]));
    log.set("t4/A.b.4", summary("t4", "A.b.4", "active", [gid("A", 4)]));
    const report = await branches.reconcile(0);
    expect(report).toEqual({ committed: [gid("A", 1)], rolledBack: [gid("A", 2)], inDoubt: [gid("A", 3)], waiting: [] });
    expect(driver.finished).toEqual([
      [gid("A", 1), "commit"],
      [gid("A", 2), "rollback"],
    ]);
  });

  test("an orphan is rolled back only once it has been seen for orphanMs", async () => {
    const { driver, log, branches } = setup();
    driver.prepared.add(gid("A", 5)); // no record at all
    driver.prepared.add(gid("A", 6)); // registered, branch no longer running
    log.set("t6/A.b.6", summary("t6", "A.b.6", "active", [gid("A", 6)]));
    expect((await branches.reconcile(1_000)).waiting.sort()).toEqual([gid("A", 5), gid("A", 6)]);
    expect((await branches.reconcile(5_999)).rolledBack).toEqual([]);
    expect((await branches.reconcile(6_000)).rolledBack.sort()).toEqual([gid("A", 5), gid("A", 6)]);
    expect(driver.prepared.size).toBe(0);
  });

  test("another sidecar's gids and non-dtx gids are never touched", async () => {
    const { driver, branches } = setup();
    driver.prepared.add(gid("B", 7));
    driver.prepared.add(gid("AB", 8));
    driver.prepared.add("someone-elses-xa");
    await branches.reconcile(0);
    await branches.reconcile(1_000_000);
    expect(driver.finished).toEqual([]);
  });

  test("a busy branch (still attached to its preparing connection) is retried until it finishes", async () => {
    const { driver, log, branches } = setup();
    driver.prepared.add(gid("A", 9));
    driver.busyOnce.add(gid("A", 9));
    log.set("t9/A.b.9", summary("t9", "A.b.9", "committed"));
    await branches.finish("orders", gid("A", 9), "commit");
    expect(driver.finished).toEqual([[gid("A", 9), "commit"]]);
  });
});
