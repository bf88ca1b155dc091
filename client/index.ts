// The dtx client: one Unix-socket connection to this service's sidecar, pipelined msgpack frames.
// No transaction logic lives here; every decision is the sidecar's.
import type { Socket } from "bun";
import { limits, PROTOCOL_VERSION } from "../src/limits.ts";
import { encodeBody, encodeFrame, FrameDecoder } from "../src/protocol/frame.ts";
import { contextToken, decodeToken } from "../src/protocol/token.ts";
import { callLabel, checkValue, checkWrite, keyProblem, type Refusal } from "../src/protocol/value.ts";
import type { z } from "zod";
import { orchestratedValueRefusal, participantSpec } from "../src/protocol/orchestration.ts";
import {
  beginOptionsSchema,
  type ClientOp,
  type ClientRequest,
  createOptionsSchema,
  describeZodError,
  listOptionsSchema,
  type TxnState,
  txnName,
} from "../src/protocol/messages.ts";
import { DtxClientError, errorFromWire, OutcomeUnknownError, ProtocolError } from "./errors.ts";
import { type SqlHandle, type SqlOpened, SqlPools, TxSql } from "./sql.ts";

export * from "./errors.ts";
export type { SqlHandle } from "./sql.ts";

type Args<Op extends ClientOp> = Omit<Extract<ClientRequest, { op: Op }>, "id" | "op">;
type Reply = Record<string, unknown>;
export type Protocol = "2pc" | "saga";

export type ConnectOptions = { socket?: string; reconnect?: boolean; connectTimeoutMs?: number };
export type BeginOptions = Omit<Args<"begin">, "name" | "branch">;
export type ListOptions = Args<"list">;
export type PrepareResult = { name: string; state: "prepared"; protocol: Protocol };
export type CommitResult = { name: string; outcome: "committed"; protocol: Protocol; pending: string[] };
export type RollbackResult = { name: string; outcome: "rolled_back"; protocol: Protocol; pending: string[] };
export type StatusResult = {
  name: string;
  state: TxnState;
  /** null: an orchestrated transaction not executed yet. */
  protocol: Protocol | null;
  /** The sidecar that coordinates it; on a sidecar that only holds branches of it, participants are those branches. */
  coordinator: string;
  participants: Record<string, unknown>[];
  timestamps: { begun: number | null; prepared: number | null; decided: number | null; finished: number | null };
  /** Why it rolled back or failed, when it did. */
  error: string | null;
  /** "orchestrated" for createTransaction's face. */
  kind?: "orchestrated";
};
export type TransactionSummary = { name: string; state: TxnState; protocol: Protocol } & Record<string, unknown>;

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

/** What a service callback receives: the transaction, the participant, and what to do. */
export interface CallbackCall {
  name: string;
  participantId: string;
  idempotencyKey: string;
  payload?: unknown;
  context?: unknown;
  action?: string;
}

/**
 * Handlers of a participant that is a service: TCC (prepare/commit/abort) and/or
 * Saga (action/compensate). A prepare that returns false or throws votes abort;
 * an action that throws fails the step (retried only if the error has retryable: true);
 * commit, abort and compensate are retried until they succeed or their budget runs out.
 */
export interface ServiceHandlers {
  prepare?(call: CallbackCall): unknown;
  commit?(call: CallbackCall): unknown;
  abort?(call: CallbackCall): unknown;
  action?(call: CallbackCall): unknown;
  compensate?(call: CallbackCall): unknown;
}

export type CreateOptions = Omit<Args<"o_create">, "name">;
/** What addParticipant takes: defaults (supports2pc, supportsSaga, retryPolicy) may be left out. */
export type ParticipantOptions = z.input<typeof participantSpec>;
export type ExecuteResult = {
  name: string;
  outcome: TxnState;
  protocol: Protocol | null;
  reason: string | null;
  participants: { participantId: string; status: string; result: unknown; error: string | null }[];
};

/** An orchestrated transaction: requirements pick 2PC or Saga at execute. */
export interface OrchestratedTransaction {
  readonly name: string;
  addParticipant(p: ParticipantOptions): Promise<void>;
  execute(): Promise<ExecuteResult>;
  getStatus(): Promise<StatusResult>;
  abort(): Promise<ExecuteResult>;
}

export interface Client {
  createTransaction(opts: { name: string } & CreateOptions): Promise<OrchestratedTransaction>;
  /** Serve calls for participants with endpoint `service:<service>` on this sidecar. */
  register(service: string, handlers: ServiceHandlers): Promise<void>;
  /** This sidecar's links to its peers: id, url, state, since, counters. */
  peers(): Promise<Record<string, unknown>[]>;
  /** Retry every unfinished orchestrated transaction now; returns their names. */
  recover(): Promise<string[]>;
  /** Operator: decide a prepared transaction, or close a failed one. Refuses to contradict a durable decision. */
  resolve(name: string, outcome: "commit" | "rollback"): Promise<Record<string, unknown>>;
  beginDistributed(name: string, fn: (tx: Tx) => unknown, opts?: BeginOptions): Promise<PrepareResult>;
  join<T>(token: string, fn: (tx: Tx) => T | Promise<T>): Promise<T>;
  commitDistributed(name: string): Promise<CommitResult>;
  rollbackDistributed(name: string): Promise<RollbackResult>;
  status(name: string): Promise<StatusResult>;
  list(opts?: ListOptions): Promise<TransactionSummary[]>;
  /** The committed value of `key` in this sidecar's store, outside any transaction. */
  get<T = unknown>(key: string): Promise<T | undefined>;
  close(): void;
}

// A commit, rollback or prepare cut off mid-flight may have taken effect: its caller must ask `status`.
const outcomeOps: ReadonlySet<string> = new Set(["commit", "rollback", "prepare"]);
const reasonLengthMax = 1000;
const backoffMinMs = 20;
const backoffMaxMs = 500;

interface Pending {
  op: string;
  name?: string;
  resolve(reply: Reply): void;
  reject(error: Error): void;
}

interface Conn {
  socket?: Socket<undefined>;
  decoder: FrameDecoder;
  pending: Map<number, Pending>;
  out: Uint8Array[]; // frames written this tick, or a remainder the kernel has not taken yet
  flushQueued: boolean;
  draining: boolean; // the last write was short; wait for `drain`
  slotWaiters: (() => void)[]; // requests waiting for requestsInFlightPerConnMax to allow them
  lost?: DtxClientError;
  /** From the sidecar's hello: its id and the timeout of a transaction begun without one (for context tokens made here). */
  sidecar: string;
  defaultTimeoutMs: number;
}

/** Codes of a request the sidecar refused before its engine saw it: the transaction is still active there. */
const refusedAtTheDoor = new Set(["LIMIT_EXCEEDED", "BAD_REQUEST"]);

export async function connect(opts: ConnectOptions = {}): Promise<Client> {
  unknownKeys(opts, ["socket", "reconnect", "connectTimeoutMs"], "connect options");
  const path = opts.socket ?? process.env.DTX_SOCKET ?? "./.dtx/sidecar.sock";
  const reconnect = opts.reconnect !== false;
  const connectTimeoutMs = opts.connectTimeoutMs ?? 5000;
  let nextId = 1;
  let conn: Conn | undefined;
  let connecting: Promise<Conn> | undefined;
  let closed = false;
  const sqlPools = new SqlPools(); // tx.sql connections, per database URL

  const closedError = () => new ProtocolError("CLIENT_CLOSED", "the dtx client was closed; connect() again");

  function lose(c: Conn, error: DtxClientError): void {
    if (c.lost) return;
    c.lost = error;
    c.out = [];
    for (const p of c.pending.values()) {
      p.reject(
        outcomeOps.has(p.op)
          ? new OutcomeUnknownError(
              `${p.op} of ${p.name} was cut off before its reply arrived (${error.message}); read the outcome with status(${JSON.stringify(p.name)})`,
              { cause: error },
            )
          : error,
      );
    }
    c.pending.clear();
    for (const wake of c.slotWaiters.splice(0)) wake();
  }

  function breakConn(c: Conn, error: DtxClientError): void {
    lose(c, error);
    c.socket?.terminate();
  }

  function flush(c: Conn): void {
    c.flushQueued = false;
    if (c.lost || c.draining || c.out.length === 0 || !c.socket) return;
    const bytes = c.out.length === 1 ? c.out[0] : Buffer.concat(c.out);
    const written = Math.max(0, c.socket.write(bytes));
    c.draining = written < bytes.length;
    c.out = c.draining ? [bytes.subarray(written)] : [];
  }

  function send<Op extends ClientOp>(c: Conn, op: Op, args: Args<Op>): Promise<Reply> {
    if (c.lost) return Promise.reject(c.lost);
    const id = nextId++;
    const body: Record<string, unknown> = { id, op };
    const fields = args as Record<string, unknown>;
    for (const k in fields) if (fields[k] !== undefined) body[k] = fields[k];
    let frame: Uint8Array;
    try {
      frame = encodeFrame(body);
    } catch (e) {
      return Promise.reject(new ProtocolError("BAD_REQUEST", `${op}: cannot encode the request: ${(e as Error).message}`));
    }
    if (frame.length - 4 > limits.frameBytesMax) {
      return Promise.reject(
        new ProtocolError("FRAME_TOO_LARGE", `${op}: request is ${frame.length - 4} bytes, over frameBytesMax (${limits.frameBytesMax})`),
      );
    }
    return new Promise((resolve, reject) => {
      c.pending.set(id, { op, name: typeof body.name === "string" ? body.name : undefined, resolve, reject });
      c.out.push(frame);
      if (!c.flushQueued) {
        c.flushQueued = true;
        queueMicrotask(() => flush(c)); // coalesce every frame written this tick into one socket write
      }
    });
  }

  /** A request sent only when first asked for (begin, join), then the same promise; its failure is thrown to whoever awaits it. */
  function sendOnce<Op extends ClientOp>(c: Conn, op: Op, args: Args<Op>): { sent?: Promise<Reply>; send(): Promise<Reply> } {
    const once: { sent?: Promise<Reply>; send(): Promise<Reply> } = {
      send() {
        if (!once.sent) {
          once.sent = request(c, op, args);
          once.sent.catch(() => {});
        }
        return once.sent;
      },
    };
    return once;
  }

  /** Send on this connection once it has room; pipelined with everything else in flight. */
  async function request<Op extends ClientOp>(c: Conn, op: Op, args: Args<Op>): Promise<Reply> {
    while (c.pending.size >= limits.requestsInFlightPerConnMax && !c.lost) {
      await new Promise<void>((wake) => c.slotWaiters.push(wake));
    }
    return send(c, op, args);
  }

  function onData(c: Conn, chunk: Uint8Array): void {
    for (const event of c.decoder.push(chunk)) {
      if (event.kind !== "body") {
        const what = event.kind === "too_large" ? `a ${event.length}-byte frame` : `an undecodable frame (${event.error})`;
        return breakConn(c, new ProtocolError("BAD_REPLY", `the sidecar sent ${what}`));
      }
      const inbound = event.body as { cb?: unknown; op?: unknown } | null;
      if (inbound && typeof inbound === "object" && inbound.op === "callback" && typeof inbound.cb === "number") {
        void serveCallback(c, inbound as unknown as CallbackFrame);
        continue;
      }
      const reply = event.body as { id?: unknown; ok?: unknown; error?: unknown } | null;
      if (typeof reply !== "object" || reply === null || typeof reply.id !== "number" || typeof reply.ok !== "boolean") {
        return breakConn(c, new ProtocolError("BAD_REPLY", `the sidecar sent a reply without id and ok: ${JSON.stringify(reply)}`));
      }
      // Id 0 answers no request: the sidecar refused the connection itself (e.g. FRAME_TOO_LARGE).
      if (reply.id === 0) return breakConn(c, errorFromWire(reply.error));
      const p = c.pending.get(reply.id);
      if (!p) return breakConn(c, new ProtocolError("BAD_REPLY", `the sidecar answered request ${reply.id}, which is not in flight`));
      c.pending.delete(reply.id);
      c.slotWaiters.shift()?.();
      if (reply.ok) {
        const { id: _id, ok: _ok, ...result } = reply;
        p.resolve(result);
      } else {
        p.reject(errorFromWire(reply.error));
      }
    }
  }

  const services = new Map<string, ServiceHandlers>();
  const methods: Record<string, keyof ServiceHandlers> = { prepare: "prepare", commit: "commit", abort: "abort", execute: "action", compensate: "compensate" };

  async function serveCallback(c: Conn, f: CallbackFrame): Promise<void> {
    const method = methods[f.method];
    const handler = method ? services.get(f.service)?.[method] : undefined;
    let answer: Args<"callback_result">;
    if (!handler) {
      answer = { cb: f.cb, ok: false, error: `service ${f.service} has no ${method ?? f.method} handler`, retryable: method !== "action" && method !== "prepare" };
    } else {
      try {
        const result = await handler({ name: f.name, participantId: f.participantId, idempotencyKey: f.idempotencyKey, payload: f.payload, context: f.context, action: f.action });
        answer = method === "prepare" && result === false ? { cb: f.cb, ok: false, error: "voted abort", retryable: false } : { cb: f.cb, ok: true, result: result ?? null };
      } catch (err) {
        const retryable = (err as { retryable?: unknown })?.retryable === true || (method !== "action" && method !== "prepare");
        answer = { cb: f.cb, ok: false, error: reasonOf(err), retryable };
      }
    }
    await request(c, "callback_result", answer).catch(() => {}); // lost: the sidecar retries the call
  }

  async function dial(deadline: number): Promise<Conn> {
    const c: Conn = { decoder: new FrameDecoder(), pending: new Map(), out: [], flushQueued: false, draining: false, slotWaiters: [], sidecar: "", defaultTimeoutMs: 0 };
    c.socket = await Bun.connect({
      unix: path,
      socket: {
        data: (_s, chunk) => onData(c, chunk),
        drain: () => {
          c.draining = false;
          flush(c);
        },
        close: (_s, error) =>
          lose(c, new ProtocolError("CONNECTION_LOST", `lost the connection to the sidecar at ${path}`, true, { cause: error })),
        error: (_s, error) => breakConn(c, new ProtocolError("CONNECTION_LOST", `socket error: ${error.message}`, true, { cause: error })),
      },
    });
    const timer = setTimeout(
      () => breakConn(c, new ProtocolError("TIMEOUT", `the sidecar at ${path} did not answer hello within ${connectTimeoutMs} ms`, true)),
      Math.max(0, deadline - Date.now()),
    );
    try {
      const hello = await send(c, "hello", { version: PROTOCOL_VERSION, client: `dtx-client bun/${Bun.version}` });
      c.sidecar = text(hello, "sidecar");
      if (typeof hello.defaultTimeoutMs !== "number") throw new ProtocolError("BAD_REPLY", `hello reply has no defaultTimeoutMs: ${JSON.stringify(hello)}`);
      c.defaultTimeoutMs = hello.defaultTimeoutMs;
      for (const service of services.keys()) await send(c, "register", { service }); // serve again after a reconnect
      return c;
    } catch (e) {
      breakConn(c, e as DtxClientError);
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  // Bounded retry: a sidecar that is starting or restarting gets connectTimeoutMs to accept us.
  async function open(): Promise<Conn> {
    const deadline = Date.now() + connectTimeoutMs;
    for (let delay = backoffMinMs; ; delay = Math.min(delay * 2, backoffMaxMs)) {
      let failure: unknown;
      try {
        const c = await dial(deadline);
        if (!closed) return (conn = c);
        breakConn(c, closedError());
      } catch (e) {
        failure = e;
      }
      if (closed) throw closedError();
      if (failure instanceof DtxClientError && !failure.retryable) throw failure; // e.g. PROTOCOL_VERSION
      if (Date.now() + delay >= deadline) {
        const why = failure instanceof Error ? failure.message : String(failure);
        throw new ProtocolError(
          "CONNECTION_FAILED",
          `could not connect to the dtx sidecar at ${path} within ${connectTimeoutMs} ms (${why}); is it running? Set DTX_SOCKET or connect({ socket })`,
          true,
          { cause: failure },
        );
      }
      await Bun.sleep(delay);
    }
  }

  function ready(): Promise<Conn> {
    if (closed) return Promise.reject(closedError());
    if (conn && !conn.lost) return Promise.resolve(conn);
    if (conn && !reconnect) {
      return Promise.reject(new ProtocolError("CONNECTION_LOST", `lost the connection to the sidecar at ${path} and reconnect is off; connect() again`));
    }
    connecting ??= open().finally(() => (connecting = undefined));
    return connecting;
  }

  async function call<Op extends ClientOp>(op: Op, args: Args<Op>): Promise<Reply> {
    return request(await ready(), op, args);
  }

  // A branch lives on the connection that opened it (the sidecar rolls it back if that connection
  // drops), so its operations never move to a reconnected socket.
  // Writes are checked (key, value, size: src/protocol/value.ts) and buffered here, and travel with the
  // branch's prepare (or end): one round trip for the whole write set. Values are checked again as they
  // leave: one changed after tx.put must still be stored exactly. tx.get sees the buffer first, as the
  // sidecar would. What only the sidecar can refuse fails the transaction there.
  // `opened` makes sure the branch exists on the sidecar before a request names it (beginDistributed sends
  // begin only once something needs it); `context` is read only when the callback asks for it, and told
  // whether the callback still runs (a token read afterwards must not begin anything).
  function openTx(c: Conn, name: string, branch: string, context: (running: boolean) => string, opened: () => Promise<unknown>) {
    let running = true;
    const writes = new Map<string, [unknown, boolean]>();
    const closed = (o: string) => new ProtocolError("INVALID_STATE", `transaction ${name}: tx.${o} after its callback returned; use tx only inside the callback`);
    const op = async <Op extends ClientOp>(o: Op, args: Args<Op>) => {
      if (!running) throw closed(o);
      await opened();
      return request(c, o, args);
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
    const takeWrites = async (): Promise<[string, unknown, boolean][] | undefined> => {
      if (writes.size === 0) return undefined;
      let bytes = 0;
      const all: [string, unknown, boolean][] = [];
      for (const [k, [v, d]] of writes) {
        const b = d ? 0 : checkValue(v, () => callLabel("tx.put", k), encodedBytes);
        if (typeof b !== "number") throw refusalError({ ...b, message: `${b.message} (the value changed after tx.put: it is read again when the callback ends)` });
        bytes += k.length * 3 + b + 8;
        all.push([k, v, d]);
      }
      writes.clear();
      if (bytes <= limits.frameBytesMax / 2) return all;
      await opened();
      await Promise.all(all.map(([key, value, deleted]) => (deleted ? request(c, "delete", { name, branch, key }) : request(c, "put", { name, branch, key, value }))));
      return undefined;
    };
    const sqls = new TxSql(
      name,
      async (db) => (await op("sql_open", { name, branch, db })) as unknown as SqlOpened,
      async (db, gid) => void (await request(c, "sql_prepared", { name, branch, db, gid })),
      () => running,
      sqlPools,
    );
    return { tx, sqls, finish: () => void (running = false), takeWrites };
  }

  await ready();

  return {
    async createTransaction({ name, ...opts }) {
      checked(txnName, name, "createTransaction name");
      checked(createOptionsSchema, opts, "createTransaction");
      const refused = orchestratedValueRefusal({ op: "o_create", name, context: opts.context }, encodedBytes);
      if (refused) throw refusalError(refused);
      await call("o_create", { ...opts, name });
      return {
        name,
        async addParticipant(participant) {
          checked(participantSpec, participant, "addParticipant");
          const refused = orchestratedValueRefusal({ op: "o_add", participant }, encodedBytes);
          if (refused) throw refusalError(refused);
          await call("o_add", { name, participant: participant as Args<"o_add">["participant"] });
        },
        async execute() {
          return (await call("o_execute", { name })) as unknown as ExecuteResult;
        },
        async getStatus() {
          return (await call("status", { name })) as StatusResult;
        },
        async abort() {
          return (await call("o_abort", { name })) as unknown as ExecuteResult;
        },
      };
    },

    async register(service, handlers) {
      unknownKeys(handlers, Object.values(methods), `register("${service}") handlers`);
      services.set(service, handlers);
      await call("register", { service });
    },

    async peers() {
      const r = await call("peers", {});
      return Array.isArray(r.peers) ? (r.peers as Record<string, unknown>[]) : [];
    },

    async recover() {
      const r = await call("recover", {});
      return Array.isArray(r.resumed) ? (r.resumed as string[]) : [];
    },

    async resolve(name, outcome) {
      return call("resolve", { name, outcome });
    },

    // Begin is sent only when the callback first needs the sidecar (tx.get, tx.sql, tx.context), without
    // waiting for its answer: the branch id is chosen here, so tx.branch and tx.context are known at once.
    // A callback that only writes never needs it, and its begin travels inside the prepare: one request.
    async beginDistributed(name, fn, opts = {}) {
      checked(txnName, name, "beginDistributed name");
      checked(beginOptionsSchema, opts, "beginDistributed options");
      if (typeof fn !== "function") throw new ProtocolError("BAD_REQUEST", "beginDistributed: the second argument must be the callback (tx) => …");
      const c = await ready();
      const branch = newBranchId(c.sidecar);
      const started = performance.now();
      const begin = sendOnce(c, "begin", { ...opts, name, branch });
      const context = (running: boolean) => {
        if (running) void begin.send();
        return contextToken(name, c.sidecar, branch, opts.timeoutMs ?? c.defaultTimeoutMs, opts.traceparent);
      };
      const { tx, sqls, finish, takeWrites } = openTx(c, name, branch, context, begin.send);
      let writes: [string, unknown, boolean][] | undefined;
      try {
        await fn(tx);
        finish();
        await sqls.prepareAll(); // a database that refuses to prepare rolls everything back, rejecting with its SqlError
        writes = await takeWrites();
        await begin.sent; // a begin that failed (NAME_IN_USE, say) says so itself
      } catch (err) {
        finish();
        await sqls.rollbackAll();
        if (begin.sent) await request(c, "rollback", { name, branch, reason: reasonOf(err) }).catch(() => {});
        throw err;
      }
      const args: Args<"prepare"> = begin.sent ? { name, branch } : { name, branch, begin: { ...opts, elapsedMs: Math.round(performance.now() - started) } };
      if (writes) args.writes = writes;
      try {
        return (await request(c, "prepare", args)) as PrepareResult;
      } catch (err) {
        // Refused before the engine saw it (e.g. a value over valueBytesMax): do not leave it active until its timeout.
        if (begin.sent && err instanceof ProtocolError && refusedAtTheDoor.has(err.code)) await request(c, "rollback", { name, branch, reason: err.message }).catch(() => {});
        throw err;
      }
    },

    // Join is sent only when the callback first needs the sidecar (tx.get, tx.sql); a callback that only
    // writes is joined and ended by one request, its end carrying the token. Either way the branch is
    // enlisted before the end answers, and a callback that throws makes it vote no.
    async join<T>(token: string, fn: (tx: Tx) => T | Promise<T>): Promise<T> {
      const c = await ready();
      const name = decodeToken(token)?.name;
      if (name === undefined) throw new ProtocolError("BAD_REQUEST", "token: not a dtx context token (pass tx.context unchanged)");
      const branch = newBranchId(c.sidecar);
      const join = sendOnce(c, "join", { token, branch });
      const end = (args: Omit<Args<"end">, "name" | "branch" | "join">) => request(c, "end", join.sent ? { name, branch, ...args } : { name, branch, join: token, ...args });
      const { tx, sqls, finish, takeWrites } = openTx(c, name, branch, () => token, join.send);
      let result: Awaited<T>;
      let writes: [string, unknown, boolean][] | undefined;
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
    },

    async commitDistributed(name) {
      const r = await call("commit", { name });
      return { ...r, pending: Array.isArray(r.pending) ? r.pending : [] } as CommitResult;
    },

    async rollbackDistributed(name) {
      const r = await call("rollback", { name });
      return { ...r, pending: Array.isArray(r.pending) ? r.pending : [] } as RollbackResult;
    },

    async status(name) {
      return (await call("status", { name })) as StatusResult;
    },

    async list(opts = {}) {
      checked(listOptionsSchema, opts, "list options");
      const r = await call("list", opts);
      if (!Array.isArray(r.transactions)) throw new ProtocolError("BAD_REPLY", "list reply has no transactions array");
      return r.transactions as TransactionSummary[];
    },

    async get<T>(key: string) {
      checkKey("dtx.get", key);
      const r = await call("get", { key });
      return r.found ? (r.value as T) : undefined;
    },

    close() {
      closed = true;
      void sqlPools.close();
      if (!conn || conn.lost) return;
      const c = conn;
      lose(c, closedError());
      c.socket?.end();
    },
  };
}

/** A call the sidecar sends to a registered service: a CallbackCall plus routing. */
interface CallbackFrame extends CallbackCall {
  cb: number;
  op: "callback";
  service: string;
  method: string;
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

/** The same schema the sidecar applies, so a bad option is refused here, before anything is sent, with the same code. */
function checked(schema: z.ZodType, value: unknown, what: string): void {
  const r = schema.safeParse(value);
  if (!r.success) throw new ProtocolError("BAD_REQUEST", `${what}: ${describeZodError(r.error)}`);
}

/** Options objects of the client itself: a key nobody reads is refused by name, never ignored. */
function unknownKeys(value: unknown, known: readonly string[], what: string): void {
  if (typeof value !== "object" || value === null) throw new ProtocolError("BAD_REQUEST", `${what}: expected an object`);
  const unknown = Object.keys(value).filter((k) => !known.includes(k));
  if (unknown.length) throw new ProtocolError("BAD_REQUEST", `${what}: ${unknown.join(", ")}: unknown field${unknown.length > 1 ? "s" : ""} (known: ${known.join(", ")})`);
}

function text(reply: Reply, field: string): string {
  const v = reply[field];
  if (typeof v !== "string") throw new ProtocolError("BAD_REPLY", `reply has no string field ${field}: ${JSON.stringify(reply)}`);
  return v;
}

function reasonOf(err: unknown): string {
  return String(err instanceof Error ? err.message : err).slice(0, reasonLengthMax);
}

const encodedBytes = (v: unknown) => encodeBody(v).length;

function checkKey(call: string, key: unknown): void {
  const bad = keyProblem(key);
  if (bad) throw new ProtocolError("BAD_REQUEST", `${callLabel(call, key)}: ${bad}`);
}

function refusalError(r: Refusal): ProtocolError {
  return new ProtocolError(r.code, r.message);
}
