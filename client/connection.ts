// The client's connection to its sidecar: one Unix socket, pipelined msgpack frames, replies matched by
// id and read with their op's schema (src/protocol/replies.ts), redialed when lost: when next needed, or
// at once (in the background, until close) by a client that serves callbacks. node:net, so the same code
// runs on Node.js and on Bun (docs/decisions.md, "One client for Node.js and Bun").
import { createConnection, type Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { limits, PROTOCOL_VERSION } from "../src/limits.ts";
import { encodeFrame, FrameDecoder } from "../src/protocol/frame.ts";
import { type ClientOp, type ClientRequest, describeZodError } from "../src/protocol/messages.ts";
import { replies, type ReplyOf } from "../src/protocol/replies.ts";
import { DtxClientError, errorFromWire, OutcomeUnknownError, ProtocolError } from "./errors.ts";

export type Args<Op extends ClientOp> = Omit<Extract<ClientRequest, { op: Op }>, "id" | "op">;
export type ConnectOptions = { socket?: string; reconnect?: boolean; connectTimeoutMs?: number };

// A commit, rollback or prepare cut off mid-flight may have taken effect: its caller must ask `status`.
const outcomeOps: ReadonlySet<string> = new Set(["commit", "rollback", "prepare"]);
const backoffMinMs = 20;
const backoffMaxMs = 500;

interface Pending {
  op: ClientOp;
  name?: string;
  resolve(reply: unknown): void;
  reject(error: Error): void;
}

/** What the rest of the client gives the connection: service callbacks, and what to send again after a redial. */
export interface ConnectionHooks {
  /** A callback frame the sidecar pushed (`op: "callback"`), unchecked. */
  callback(c: Conn, frame: Record<string, unknown>): void;
  /** Runs on every new socket after hello, before anyone else may use it. */
  opened(c: Conn): Promise<void>;
  /** True while the client serves callbacks: then a lost socket is dialed again at once, not when next needed. */
  serving(): boolean;
}

/** One socket to the sidecar, from hello until it is lost. */
export class Conn {
  /** From the sidecar's hello: its id and the timeout of a transaction begun without one (for context tokens made here). */
  sidecar = "";
  defaultTimeoutMs = 0;
  lost?: DtxClientError;
  socket?: Socket;
  private readonly decoder = new FrameDecoder();
  private readonly pending = new Map<number, Pending>();
  private out: Uint8Array[] = []; // frames written this tick, or while the socket drains
  private flushQueued = false;
  private draining = false; // the socket's buffer is full; wait for `drain`
  private readonly slotWaiters: (() => void)[] = []; // requests waiting for requestsInFlightPerConnMax to allow them

  constructor(
    private readonly nextId: () => number,
    private readonly hooks: ConnectionHooks,
    /** Told once, when this socket is lost. */
    private readonly onLost: (c: Conn) => void,
  ) {}

  /** Send once there is room; pipelined with everything else in flight. */
  async request<Op extends ClientOp>(op: Op, args: Args<Op>): Promise<ReplyOf<Op>> {
    while (this.pending.size >= limits.requestsInFlightPerConnMax && !this.lost) {
      await new Promise<void>((wake) => this.slotWaiters.push(wake));
    }
    return this.send(op, args);
  }

  /** Send now, however many are in flight (hello, and what `opened` sends). */
  send<Op extends ClientOp>(op: Op, args: Args<Op>): Promise<ReplyOf<Op>> {
    if (this.lost) return Promise.reject(this.lost);
    const id = this.nextId();
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
      return Promise.reject(new ProtocolError("FRAME_TOO_LARGE", `${op}: request is ${frame.length - 4} bytes, over frameBytesMax (${limits.frameBytesMax})`));
    }
    return new Promise((resolve, reject) => {
      this.pending.set(id, { op, name: typeof body.name === "string" ? body.name : undefined, resolve: resolve as (reply: unknown) => void, reject });
      this.out.push(frame);
      if (!this.flushQueued) {
        this.flushQueued = true;
        queueMicrotask(() => this.flush()); // coalesce every frame written this tick into one socket write
      }
    });
  }

  /** Reject everything in flight: a decision cut off may have taken effect, so it is OutcomeUnknownError. */
  lose(error: DtxClientError): void {
    if (this.lost) return;
    this.lost = error;
    this.out = [];
    for (const p of this.pending.values()) {
      p.reject(
        outcomeOps.has(p.op)
          ? new OutcomeUnknownError(
              `${p.op} of ${p.name} was cut off before its reply arrived (${error.message}); read the outcome with status(${JSON.stringify(p.name)})`,
              { cause: error },
            )
          : error,
      );
    }
    this.pending.clear();
    for (const wake of this.slotWaiters.splice(0)) wake();
    this.onLost(this);
  }

  break(error: DtxClientError): void {
    this.lose(error);
    this.socket?.destroy();
  }

  drained(): void {
    this.draining = false;
    this.flush();
  }

  private flush(): void {
    this.flushQueued = false;
    if (this.lost || this.draining || this.out.length === 0 || !this.socket) return;
    const bytes = this.out.length === 1 ? this.out[0] : Buffer.concat(this.out);
    this.out = [];
    this.draining = !this.socket.write(bytes); // the socket keeps what the kernel has not taken yet
  }

  data(chunk: Uint8Array): void {
    for (const event of this.decoder.push(chunk)) {
      if (event.kind !== "body") {
        const what = event.kind === "too_large" ? `a ${event.length}-byte frame` : `an undecodable frame (${event.error})`;
        return this.break(new ProtocolError("BAD_REPLY", `the sidecar sent ${what}`));
      }
      const reply = event.body as { id?: unknown; ok?: unknown; error?: unknown; op?: unknown; cb?: unknown } | null;
      if (reply && typeof reply === "object" && reply.op === "callback" && typeof reply.cb === "number") {
        this.hooks.callback(this, reply);
        continue;
      }
      if (typeof reply !== "object" || reply === null || typeof reply.id !== "number" || typeof reply.ok !== "boolean") {
        return this.break(new ProtocolError("BAD_REPLY", `the sidecar sent a reply without id and ok: ${JSON.stringify(reply)}`));
      }
      // Id 0 answers no request: the sidecar refused the connection itself (e.g. FRAME_TOO_LARGE).
      if (reply.id === 0) return this.break(errorFromWire(reply.error));
      const p = this.pending.get(reply.id);
      if (!p) return this.break(new ProtocolError("BAD_REPLY", `the sidecar answered request ${reply.id}, which is not in flight`));
      this.pending.delete(reply.id);
      this.slotWaiters.shift()?.();
      if (!reply.ok) {
        p.reject(errorFromWire(reply.error));
        continue;
      }
      const { id: _id, ok: _ok, ...result } = reply;
      const read = replies[p.op].safeParse(result);
      if (read.success) p.resolve(read.data);
      else p.reject(new ProtocolError("BAD_REPLY", `the sidecar's reply to ${p.op} is not one this client reads: ${describeZodError(read.error)}`));
    }
  }
}

/** The client's connection: one Conn at a time, dialed when first needed and again after it is lost. */
export interface Connection {
  /** The current socket, dialed (with bounded retry) if there is none. */
  ready(): Promise<Conn>;
  call<Op extends ClientOp>(op: Op, args: Args<Op>): Promise<ReplyOf<Op>>;
  close(): void;
}

const runtime = process.versions.bun ? `bun/${process.versions.bun}` : `node/${process.versions.node}`;

/** A connected socket to `path` that feeds `c`; rejects if it cannot connect (no sidecar there yet, say). */
function openSocket(path: string, c: Conn): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = createConnection({ path });
    let connected = false;
    s.on("data", (chunk: Buffer) => c.data(chunk));
    s.on("drain", () => c.drained());
    s.on("close", () => c.lose(new ProtocolError("CONNECTION_LOST", `lost the connection to the sidecar at ${path}`, true)));
    s.on("error", (error) => {
      if (connected) c.break(new ProtocolError("CONNECTION_LOST", `socket error: ${error.message}`, true, { cause: error }));
      else reject(error);
    });
    s.once("connect", () => {
      connected = true;
      resolve(s);
    });
  });
}

export function connection(opts: ConnectOptions, hooks: ConnectionHooks): Connection {
  const path = opts.socket ?? process.env.DTX_SOCKET ?? "./.dtx/sidecar.sock";
  const reconnect = opts.reconnect !== false;
  const connectTimeoutMs = opts.connectTimeoutMs ?? 5000;
  let lastId = 0;
  const nextId = () => ++lastId;
  let conn: Conn | undefined;
  let connecting: Promise<Conn> | undefined;
  let closed = false;
  let redialing = false;
  const stop = new AbortController(); // close() ends every backoff wait at once
  const pause = (ms: number) => sleep(ms, undefined, { signal: stop.signal }).catch(() => {});

  const closedError = () => new ProtocolError("CLIENT_CLOSED", "the dtx client was closed; connect() again");

  async function dial(deadline: number): Promise<Conn> {
    const c = new Conn(nextId, hooks, lost);
    c.socket = await openSocket(path, c);
    const timer = setTimeout(
      () => c.break(new ProtocolError("TIMEOUT", `the sidecar at ${path} did not answer hello within ${connectTimeoutMs} ms`, true)),
      Math.max(0, deadline - Date.now()),
    );
    try {
      const hello = await c.send("hello", { version: PROTOCOL_VERSION, client: `dtx-client ${runtime}` });
      c.sidecar = hello.sidecar;
      c.defaultTimeoutMs = hello.defaultTimeoutMs;
      await hooks.opened(c);
      return c;
    } catch (e) {
      c.break(e as DtxClientError);
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
        c.break(closedError());
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
      await pause(delay);
      if (closed) throw closedError();
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

  /**
   * The current socket was lost. A client that serves callbacks gets nothing pushed to it until it is connected
   * and registered again, and may never call anything itself: so it dials again now, in the background, with
   * the same bounded retry as a call (shared with any call meanwhile), and again after backoffMaxMs for as long
   * as the sidecar stays away, until it is back or close() is called. A sidecar that speaks another protocol
   * version ends the loop (the next call reports it); any other refusal (one shutting down, say) is tried again.
   */
  function lost(c: Conn): void {
    if (c !== conn || closed || !reconnect || redialing || !hooks.serving()) return;
    redialing = true;
    void (async () => {
      try {
        while (!closed && conn?.lost) {
          const failure = await ready().then(
            () => undefined,
            (e: unknown) => e,
          );
          if (failure instanceof DtxClientError && failure.code === "PROTOCOL_VERSION") return;
          if (failure) await pause(backoffMaxMs);
        }
      } finally {
        redialing = false;
      }
    })();
  }

  return {
    ready,
    call: async (op, args) => (await ready()).request(op, args),
    close() {
      closed = true;
      stop.abort();
      if (!conn || conn.lost) return;
      const c = conn;
      c.lose(closedError());
      c.socket?.end();
    },
  };
}
