// One real sidecar process, real clients over the real Unix socket.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { type Client, connect, NameInUseError, NotFoundError, ProtocolError, TransactionAbortedError, TransactionConflictError } from "../../client/index.ts";
import { limits } from "../../src/limits.ts";
import { encodeFrame } from "../../src/protocol/frame.ts";
import { beginAndHang } from "../helpers/hanging.ts";
import { rawExchange } from "../helpers/raw-socket.ts";
import { SidecarProcess, waitFor } from "../helpers/sidecar-process.ts";

let sc: SidecarProcess;
let dtx: Client;

beforeAll(async () => {
  sc = await new SidecarProcess({ id: "A" }).start();
  dtx = await connect({ socket: sc.socket });
});
afterAll(async () => {
  dtx?.close();
  await sc?.cleanup();
});

describe("local distributed transactions", () => {
  test("commit makes the writes visible and returns the outcome", async () => {
    const prepared = await dtx.beginDistributed("commit-1", async (tx) => {
      await tx.put("orders/1", { sku: "A", qty: 1 });
    });
    expect(prepared).toMatchObject({ name: "commit-1", state: "prepared", protocol: "2pc" });
    expect(await dtx.get("orders/1")).toBeUndefined();
    expect(await dtx.commitDistributed("commit-1")).toEqual({ name: "commit-1", outcome: "committed", protocol: "2pc", pending: [] });
    expect(await dtx.get("orders/1")).toEqual({ sku: "A", qty: 1 });
  });

  test("rollback discards the writes", async () => {
    await dtx.beginDistributed("rollback-1", async (tx) => {
      await tx.put("orders/2", 2);
    });
    expect(await dtx.rollbackDistributed("rollback-1")).toEqual({ name: "rollback-1", outcome: "rolled_back", protocol: "2pc", pending: [] });
    expect(await dtx.get("orders/2")).toBeUndefined();
    expect((await dtx.status("rollback-1")).state).toBe("rolled_back");
  });

  test("a transaction reads its own writes and deletes", async () => {
    await dtx.beginDistributed("ryw-1", async (tx) => {
      await tx.put("ryw/a", 1);
      expect(await tx.get("ryw/a")).toBe(1);
      await tx.delete("ryw/a");
      expect(await tx.get("ryw/a")).toBeUndefined();
      await tx.put("ryw/b", "b");
    });
    await dtx.commitDistributed("ryw-1");
    expect(await dtx.get("ryw/a")).toBeUndefined();
    expect(await dtx.get("ryw/b")).toBe("b");
  });

  test("a write refused at tx.put that the callback lets throw rolls the transaction back with its code", async () => {
    const err = await dtx
      .beginDistributed("too-big-1", async (tx) => {
        await tx.get("small"); // begun before its prepare: the refusal must roll it back
        await tx.put("small", 1);
        await tx.put("big", "x".repeat(2 * 1024 * 1024)); // over valueBytesMax: refused by tx.put itself
      })
      .catch((e) => e);
    expect(err).toBeInstanceOf(ProtocolError);
    expect(err.code).toBe("LIMIT_EXCEEDED");
    expect((await dtx.status("too-big-1")).state).toBe("rolled_back");
    expect(await dtx.get("small")).toBeUndefined();
  });

  test("a value changed after tx.put is checked again when the callback ends: grown past valueBytesMax, it fails the transaction naming its key", async () => {
    const err = await dtx
      .beginDistributed("too-big-2", async (tx) => {
        await tx.get("small2"); // begun before its prepare: the refusal must roll it back
        const doc = { body: "" };
        await tx.put("doc", doc);
        doc.body = "x".repeat(2 * 1024 * 1024); // values are read when the writes leave, at the end of the callback
      })
      .catch((e) => e);
    expect(err).toBeInstanceOf(ProtocolError);
    expect(err.code).toBe("LIMIT_EXCEEDED");
    expect(err.message).toStartWith('tx.put("doc"): value is ');
    expect(err.message).toEndWith("(the value changed after tx.put: it is read again when the callback ends)");
    expect((await dtx.status("too-big-2")).state).toBe("rolled_back");
  });

  test("a write set too big for one frame goes ahead as single writes and commits whole", async () => {
    const value = "v".repeat(900 * 1024);
    await dtx.beginDistributed("many-big-1", async (tx) => {
      for (let i = 0; i < 12; i++) await tx.put(`big/${i}`, `${i}:${value}`);
    });
    await dtx.commitDistributed("many-big-1");
    for (let i = 0; i < 12; i++) expect(((await dtx.get(`big/${i}`)) as string).startsWith(`${i}:`)).toBe(true);
  });

  test("more than 100,000 keys in one branch: the client refuses the next tx.put, and the sidecar a write set over it, with LIMIT_EXCEEDED", async () => {
    const refused = await dtx
      .beginDistributed("ops-max-1", async (tx) => {
        for (let i = 0; i < limits.opsPerBranchMax; i++) await tx.put(`ops/${i}`, i);
        await tx.put(`ops/${limits.opsPerBranchMax}`, 0);
      })
      .catch((e) => e);
    expect(refused).toBeInstanceOf(ProtocolError);
    expect(refused.code).toBe("LIMIT_EXCEEDED");
    expect(refused.message).toContain("opsPerBranchMax");
    const writes = Array.from({ length: limits.opsPerBranchMax + 1 }, (_, i) => [`ops/${i}`, i, false]);
    const r = await rawExchange(sc.socket, encodeFrame({ id: 1, op: "prepare", name: "ops-max-2", writes, begin: { elapsedMs: 0 } }), { timeoutMs: 10_000 });
    expect(r.replies[0]).toMatchObject({ id: 1, ok: false, error: { code: "LIMIT_EXCEEDED" } });
    expect((await dtx.status("ops-max-2")).state).toBe("rolled_back");
    expect(await dtx.get("ops/0")).toBeUndefined();
  });

  test("a callback that throws rolls back and rejects with the callback's error", async () => {
    const boom = new Error("payment declined");
    await expect(
      dtx.beginDistributed("throw-1", async (tx) => {
        await tx.get("orders/3");
        await tx.put("orders/3", 3);
        throw boom;
      }),
    ).rejects.toBe(boom);
    await waitFor(async () => (await dtx.status("throw-1")).state === "rolled_back", 5_000, "throw-1 rolled back");
    expect(await dtx.get("orders/3")).toBeUndefined();
  });

  test("a callback that only writes is begun by its prepare: if it throws, the sidecar never hears of it", async () => {
    const boom = new Error("payment declined");
    await expect(dtx.beginDistributed("throw-2", (tx) => tx.put("orders/4", 4).then(() => Promise.reject(boom)))).rejects.toBe(boom);
    await expect(dtx.status("throw-2")).rejects.toBeInstanceOf(NotFoundError);
    await dtx.beginDistributed("write-only-1", (tx) => tx.put("orders/5", 5));
    expect((await dtx.status("write-only-1")).state).toBe("prepared");
    await dtx.commitDistributed("write-only-1");
    expect(await dtx.get("orders/5")).toBe(5);
  });

  test("committing again returns the same result; committing a rolled-back name is refused", async () => {
    await dtx.beginDistributed("idem-1", async (tx) => tx.put("idem/1", 1));
    const first = await dtx.commitDistributed("idem-1");
    expect(await dtx.commitDistributed("idem-1")).toEqual(first);
    await dtx.beginDistributed("idem-2", async (tx) => tx.put("idem/2", 2));
    await dtx.rollbackDistributed("idem-2");
    await expect(dtx.commitDistributed("idem-2")).rejects.toBeInstanceOf(TransactionAbortedError);
    await expect(dtx.rollbackDistributed("idem-1")).rejects.toMatchObject({ code: "INVALID_STATE" });
  });

  test("a join that reaches its coordinator once the transaction is prepared is refused (INVALID_STATE), and once it rolled back is TransactionAbortedError", async () => {
    const other = await connect({ socket: sc.socket });
    let context = "";
    await dtx.beginDistributed("late-join-1", async (tx) => {
      await tx.put("late/1", 1);
      context = tx.context;
    });
    const late = await other.join(context, (t) => t.put("late/joined", 1)).catch((e) => e);
    expect(late).toBeInstanceOf(ProtocolError);
    expect(late.code).toBe("INVALID_STATE");
    expect(late.message).toContain("is prepared");
    await dtx.rollbackDistributed("late-join-1");
    const after = await other.join(context, (t) => t.put("late/joined", 1)).catch((e) => e);
    expect(after).toBeInstanceOf(TransactionAbortedError);
    expect(await dtx.get("late/joined")).toBeUndefined();
    other.close();
  });

  test("a second begin with an active name fails with NAME_IN_USE", async () => {
    let inside!: () => void;
    const entered = new Promise<void>((r) => (inside = r));
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const first = dtx.beginDistributed("dup-1", async (tx) => {
      void tx.context; // handing out the token begins it on the sidecar
      inside();
      await held;
    });
    await entered;
    const err = await dtx.beginDistributed("dup-1", async () => {}).catch((e) => e);
    expect(err).toBeInstanceOf(NameInUseError);
    expect(err.code).toBe("NAME_IN_USE");
    release();
    await first;
    await dtx.rollbackDistributed("dup-1");
  });

  test.each(["", "has space", "a/b", "x".repeat(65), "é"])("the bad name %p is rejected with BAD_REQUEST", async (name) => {
    const err = await dtx.beginDistributed(name, async () => {}).catch((e) => e);
    expect(err).toBeInstanceOf(ProtocolError);
    expect(err.code).toBe("BAD_REQUEST");
    expect(err.message).toContain("name");
  });

  test("50 concurrent read-modify-write increments end at exactly the number of commits", async () => {
    const clients = await Promise.all(Array.from({ length: 5 }, () => connect({ socket: sc.socket })));
    let commits = 0;
    let conflicts = 0;
    await Promise.all(
      Array.from({ length: 50 }, async (_, i) => {
        const c = clients[i % clients.length];
        for (let attempt = 0; attempt < 500; attempt++) {
          const name = `inc-${i}-${attempt}`;
          try {
            await c.beginDistributed(name, async (tx) => {
              const v = ((await tx.get<number>("counter")) ?? 0) as number;
              await tx.put("counter", v + 1);
            });
            await c.commitDistributed(name);
            commits++;
            return;
          } catch (e) {
            if (!(e instanceof TransactionConflictError)) throw e;
            expect(e.retryable).toBe(true);
            conflicts++;
          }
        }
        throw new Error(`increment ${i} never committed`);
      }),
    );
    for (const c of clients) c.close();
    expect(commits).toBe(50);
    expect(await dtx.get("counter")).toBe(commits);
    console.log(`increments: ${commits} commits, ${conflicts} conflicts retried`);
  });

  test("a client that disconnects before prepare has its transaction rolled back", async () => {
    const c = await connect({ socket: sc.socket });
    await beginAndHang(c, "dc-1", "dc/1", 1);
    c.close();
    await waitFor(async () => (await dtx.status("dc-1")).state === "rolled_back", 5_000, "dc-1 rolled back");
    expect(await dtx.get("dc/1")).toBeUndefined();
  });

  test("timeoutMs rolls back a transaction that does not prepare in time", async () => {
    const err = await dtx
      .beginDistributed(
        "to-1",
        async (tx) => {
          await tx.get("to/1");
          await tx.put("to/1", 1);
          await waitFor(async () => (await dtx.status("to-1")).state === "rolled_back", 5_000, "to-1 rolled back by timeout");
        },
        { timeoutMs: 100 },
      )
      .catch((e) => e);
    expect(err).toBeInstanceOf(TransactionAbortedError);
    expect(err.message).toContain("timed out");
    expect(await dtx.get("to/1")).toBeUndefined();
  });

  test("preparedTimeoutMs rolls back a prepared transaction nobody decided; without it a prepared transaction waits", async () => {
    await dtx.beginDistributed("pto-wait", (tx) => tx.put("pto/wait", 1));
    await dtx.beginDistributed("pto-policy", (tx) => tx.put("pto/policy", 1), { preparedTimeoutMs: 300 });
    await waitFor(async () => (await dtx.status("pto-policy")).state === "rolled_back", 5_000, "pto-policy rolled back by its policy");
    expect((await dtx.status("pto-policy")).error).toContain("preparedTimeoutMs");
    // Prepared before pto-policy, so it has waited at least as long: by default a prepared transaction waits.
    expect((await dtx.status("pto-wait")).state).toBe("prepared");
    expect((await dtx.commitDistributed("pto-wait")).outcome).toBe("committed");
  });

  test("timeoutMs counts from the call also when the begin travels with the prepare", async () => {
    const err = await dtx
      .beginDistributed(
        "to-2",
        async (tx) => {
          await tx.put("to/2", 2);
          await Bun.sleep(150); // the callback outlives its timeout: that is the case under test
        },
        { timeoutMs: 100 },
      )
      .catch((e) => e);
    expect(err).toBeInstanceOf(TransactionAbortedError);
    expect(err.message).toContain("timed out");
    expect((await dtx.status("to-2")).state).toBe("rolled_back");
    expect(await dtx.get("to/2")).toBeUndefined();
  });

  test("another client on the same sidecar joins with tx.context and commits as one", async () => {
    const other = await connect({ socket: sc.socket });
    await dtx.beginDistributed("join-1", async (tx) => {
      await tx.put("join/a", "A");
      await other.join(tx.context, async (t2) => {
        await t2.put("join/b", "B");
      });
    });
    const status = await dtx.status("join-1");
    expect(status.participants.length).toBe(2);
    await dtx.commitDistributed("join-1");
    expect(await dtx.get("join/a")).toBe("A");
    expect(await dtx.get("join/b")).toBe("B");
    other.close();
  });

  test("a joined callback that throws rolls the whole transaction back", async () => {
    const other = await connect({ socket: sc.socket });
    const err = await dtx
      .beginDistributed("join-2", async (tx) => {
        await tx.put("join2/a", "A");
        await other
          .join(tx.context, async () => {
            throw new Error("out of stock");
          })
          .catch(() => {});
      })
      .catch((e) => e);
    expect(err).toBeInstanceOf(TransactionAbortedError);
    expect(err.message).toContain("out of stock");
    expect(await dtx.get("join2/a")).toBeUndefined();
    other.close();
  });

  test("dtx status and dtx list answer from the command line", async () => {
    await dtx.beginDistributed("cli-1", async (tx) => tx.put("cli/1", 1));
    const run = (args: string[]) => Bun.spawnSync([process.execPath, "sidecar/cli.ts", ...args, "--socket", sc.socket]);
    const st = run(["status", "cli-1", "--json"]);
    expect(st.exitCode).toBe(0);
    expect(JSON.parse(st.stdout.toString()).state).toBe("prepared");
    const ls = run(["list", "--state", "prepared", "--json"]);
    expect(ls.exitCode).toBe(0);
    expect(JSON.parse(ls.stdout.toString()).map((t: { name: string }) => t.name)).toContain("cli-1");
    expect(run(["status", "no-such-txn"]).exitCode).toBe(1);
    await dtx.commitDistributed("cli-1");
  });
});
