// One branch of a transaction while its callback runs: beginDistributed's own and a joined one.
// A branch lives on the connection that opened it (the sidecar rolls it back if that connection
// drops), so its operations never move to a reconnected socket.
// Writes are checked (key, value, size: src/protocol/value.ts) and buffered here, and travel with the
// branch's prepare (or end): one round trip for the whole write set. Values are checked again as they
// leave: one changed after tx.put must still be stored exactly. tx.get sees the buffer first, as the
// sidecar would. What only the sidecar can refuse fails the transaction there.
import { limits } from "../src/limits.ts";
import { beginOptionsSchema, type ClientOp, txnName } from "../src/protocol/messages.ts";
import type { ReplyOf } from "../src/protocol/replies.ts";
import { contextToken, decodeToken } from "../src/protocol/token.ts";
import { callLabel, checkValue, checkWrite } from "../src/protocol/value.ts";
import { checked, checkKey, encodedBytes, reasonOf, refusalError } from "./checks.ts";
import type { Args, Conn, Connection } from "./connection.ts";
import { ProtocolError } from "./errors.ts";
import { type SqlHandle, type SqlPools, TxSql } from "./sql.ts";

export type BeginOptions = Omit<Args<"begin">, "name" | "branch">;

/** One branch of a transaction, usable only while its callback runs. */
export interface Tx {
  readonly name: string;
  readonly branch: string;
  /** Token another service passes to `join` to enlist in this transaction. */
  readonly context: string;
  put(key: string, value: unknown): Promise<void>;
  get<T = unknown>(key: string): Promise<T | undefined>;
  delete(key: string): Promise<void>;
  /** Run SQL in database `db` (a --db name of this sidecar) as part of this transaction; see client/sql.ts. */
  sql(db: string): SqlHandle;
}

type Writes = [string, unknown, boolean][];

/** Codes of a request the sidecar refused before its engine saw it: the transaction is still active there. */
const refusedAtTheDoor = new Set(["LIMIT_EXCEEDED", "BAD_REQUEST"]);

// Begin is sent only when the callback first needs the sidecar (tx.get, tx.sql, tx.context), without
// waiting for its answer: the branch id is chosen here, so tx.branch and tx.context are known at once.
// A callback that only writes never needs it, and its begin travels inside the prepare: one request.
export async function beginDistributed(link: Connection, pools: SqlPools, name: string, fn: (tx: Tx) => unknown, opts: BeginOptions): Promise<ReplyOf<"prepare">> {
  checked(txnName, name, "beginDistributed name");
  checked(beginOptionsSchema, opts, "beginDistributed options");
  if (typeof fn !== "function") throw new ProtocolError("BAD_REQUEST", "beginDistributed: the second argument must be the callback (tx) => …");
  const c = await link.ready();
  const branch = newBranchId(c.sidecar);
  const started = performance.now();
  const begin = sendOnce(c, "begin", { ...opts, name, branch });
  const context = (running: boolean) => {
    if (running) void begin.send();
    return contextToken(name, c.sidecar, branch, opts.timeoutMs ?? c.defaultTimeoutMs, opts.traceparent);
  };
  const { tx, sqls, finish, takeWrites } = openTx(c, pools, name, branch, context, begin.send);
  let writes: Writes | undefined;
  try {
    await fn(tx);
    finish();
    await sqls.prepareAll(); // a database that refuses to prepare rolls everything back, rejecting with its SqlError
    writes = await takeWrites();
    await begin.sent; // a begin that failed (NAME_IN_USE, say) says so itself
  } catch (err) {
    finish();
    await sqls.rollbackAll();
    if (begin.sent) await c.request("rollback", { name, branch, reason: reasonOf(err) }).catch(() => {});
    throw err;
  }
  const args: Args<"prepare"> = begin.sent ? { name, branch } : { name, branch, begin: { ...opts, elapsedMs: Math.round(performance.now() - started) } };
  if (writes) args.writes = writes;
  try {
    return await c.request("prepare", args);
  } catch (err) {
    // Refused before the engine saw it (e.g. a value over valueBytesMax): do not leave it active until its timeout.
    if (begin.sent && err instanceof ProtocolError && refusedAtTheDoor.has(err.code)) await c.request("rollback", { name, branch, reason: err.message }).catch(() => {});
    throw err;
  }
}

// Join is sent only when the callback first needs the sidecar (tx.get, tx.sql); a callback that only
// writes is joined and ended by one request, its end carrying the token. Either way the branch is
// enlisted before the end answers, and a callback that throws makes it vote no.
export async function join<T>(link: Connection, pools: SqlPools, token: string, fn: (tx: Tx) => T | Promise<T>): Promise<T> {
  const c = await link.ready();
  const name = decodeToken(token)?.name;
  if (name === undefined) throw new ProtocolError("BAD_REQUEST", "token: not a dtx context token (pass tx.context unchanged)");
  const branch = newBranchId(c.sidecar);
  const join = sendOnce(c, "join", { token, branch });
  const end = (args: Omit<Args<"end">, "name" | "branch" | "join">) => c.request("end", join.sent ? { name, branch, ...args } : { name, branch, join: token, ...args });
  const { tx, sqls, finish, takeWrites } = openTx(c, pools, name, branch, () => token, join.send);
  let result: Awaited<T>;
  let writes: Writes | undefined;
  try {
    result = await fn(tx);
    finish();
    await sqls.prepareAll();
    writes = await takeWrites();
    await join.sent; // a join that was refused says so itself
  } catch (err) {
    finish();
    await sqls.rollbackAll();
    await end({ ok: false, reason: reasonOf(err) }).catch(() => {});
    throw err;
  }
  try {
    await end(writes ? { ok: true, writes } : { ok: true });
  } catch (err) {
    if (err instanceof ProtocolError && refusedAtTheDoor.has(err.code)) await end({ ok: false, reason: err.message }).catch(() => {});
    throw err;
  }
  return result;
}

/** A request sent only when first asked for (begin, join), then the same promise; its failure is thrown to whoever awaits it. */
function sendOnce<Op extends ClientOp>(c: Conn, op: Op, args: Args<Op>): { sent?: Promise<ReplyOf<Op>>; send(): Promise<ReplyOf<Op>> } {
  const once: { sent?: Promise<ReplyOf<Op>>; send(): Promise<ReplyOf<Op>> } = {
    send() {
      if (!once.sent) {
        once.sent = c.request(op, args);
        once.sent.catch(() => {});
      }
      return once.sent;
    },
  };
  return once;
}

// `opened` makes sure the branch exists on the sidecar before a request names it (beginDistributed sends
// begin only once something needs it); `context` is read only when the callback asks for it, and told
// whether the callback still runs (a token read afterwards must not begin anything).
function openTx(c: Conn, pools: SqlPools, name: string, branch: string, context: (running: boolean) => string, opened: () => Promise<unknown>) {
  let running = true;
  const writes = new Map<string, [unknown, boolean]>();
  const closed = (o: string) => new ProtocolError("INVALID_STATE", `transaction ${name}: tx.${o} after its callback returned; use tx only inside the callback`);
  const op = async <Op extends ClientOp>(o: Op, args: Args<Op>) => {
    if (!running) throw closed(o);
    await opened();
    return c.request(o, args);
  };
  const buffer = (o: "put" | "delete", key: string, value: unknown) => {
    if (!running) throw closed(o);
    const checked = checkWrite(o, key, value, encodedBytes);
    if (typeof checked !== "number") throw refusalError(checked);
    if (!writes.has(key) && writes.size >= limits.opsPerBranchMax) {
      throw new ProtocolError("LIMIT_EXCEEDED", `tx.${o}(${JSON.stringify(key.slice(0, 64))}): more than opsPerBranchMax (${limits.opsPerBranchMax}) keys written in one branch`);
    }
    writes.delete(key); // keep the order of last writes
    writes.set(key, [value, o === "delete"]);
  };
  const tx: Tx = {
    name,
    branch,
    get context() {
      return context(running);
    },
    async put(key, value) {
      buffer("put", key, value);
    },
    async get<T>(key: string) {
      checkKey("tx.get", key);
      const mine = running ? writes.get(key) : undefined;
      if (mine) return mine[1] ? undefined : (mine[0] as T);
      const r = await op("get", { name, branch, key });
      return r.found ? (r.value as T) : undefined;
    },
    async delete(key) {
      buffer("delete", key, null);
    },
    sql: (db) => sqls.handle(db),
  };
  /** The buffered writes, to send with prepare/end; a set too big for one frame goes ahead as single writes. */
  const takeWrites = async (): Promise<Writes | undefined> => {
    if (writes.size === 0) return undefined;
    let bytes = 0;
    const all: Writes = [];
    for (const [k, [v, d]] of writes) {
      const b = d ? 0 : checkValue(v, () => callLabel("tx.put", k), encodedBytes);
      if (typeof b !== "number") throw refusalError({ ...b, message: `${b.message} (the value changed after tx.put: it is read again when the callback ends)` });
      bytes += k.length * 3 + b + 8;
      all.push([k, v, d]);
    }
    writes.clear();
    if (bytes <= limits.frameBytesMax / 2) return all;
    await opened();
    await Promise.all(all.map(([key, value, deleted]) => (deleted ? c.request("delete", { name, branch, key }) : c.request("put", { name, branch, key, value }))));
    return undefined;
  };
  const sqls = new TxSql(
    name,
    (db) => op("sql_open", { name, branch, db }),
    async (db, gid) => void (await c.request("sql_prepared", { name, branch, db, gid })),
    () => running,
    pools,
  );
  return { tx, sqls, finish: () => void (running = false), takeWrites };
}

/**
 * An id for begin's branch, chosen here: `<sidecar>.c` + 60 random bits (12 base-36 digits), within the
 * length SQL gids allow (localBranchCharsMax), never equal to one the sidecar makes (those have a dot).
 */
function newBranchId(sidecar: string): string {
  const [a, b] = crypto.getRandomValues(new Uint32Array(2));
  const part = (x: number) => (x & 0x3fffffff).toString(36).padStart(6, "0");
  return `${sidecar}.c${part(a)}${part(b)}`;
}
