// The Unix-socket server clients talk to: frames in, validated requests to
// the runtime, replies out (possibly out of order, matched by request id).
import { chmodSync } from "node:fs";
import type { Socket, UnixSocketListener } from "bun";
import type { Logger } from "pino";
import { limits, PROTOCOL_VERSION, timing } from "../src/limits.ts";
import { ErrorCode, type WireError, wireError } from "../src/protocol/errors.ts";
import { encodeBody, encodeFrame, FrameDecoder } from "../src/protocol/frame.ts";
import { type ClientRequest, describeKeyIssue, describeZodError, parseClientRequest } from "../src/protocol/messages.ts";
import { orchestratedValueRefusal } from "../src/protocol/orchestration.ts";
import { checkWrite, type Refusal } from "../src/protocol/value.ts";
import type { ClientInput, ReplyBody } from "../src/txn/types.ts";

interface ConnState {
  id: number;
  decoder: FrameDecoder;
  queue: Uint8Array[];
  queued: number;
  backlog?: Uint8Array;
  scheduled: boolean;
  closing: boolean;
}

export interface ClientServerHooks {
  sidecarId: string;
  log: Logger;
  /** Hand a validated request to the engine. */
  request(conn: number, req: ClientInput): void;
  disconnected(conn: number): void;
  /** This connection serves calls for `service` (dtx.register). */
  register(conn: number, service: string): void;
  /** A client answered a callback the sidecar sent it. */
  callbackResult(conn: number, answer: Extract<ClientRequest, { op: "callback_result" }>): void;
  /** The links to peer sidecars (dtx peers). */
  peers(): unknown[];
  /** undefined when the request is accepted; otherwise the error to answer with. */
  refusal(req: ClientRequest): WireError | undefined;
}

export class ClientServer {
  private listener?: UnixSocketListener<ConnState>;
  private conns = new Map<number, Socket<ConnState>>();
  private nextConn = 1;

  constructor(private readonly hooks: ClientServerHooks) {}

  listen(path: string): void {
    this.listener = Bun.listen<ConnState>({
      unix: path,
      socket: {
        open: (s) => {
          s.data = { id: this.nextConn++, decoder: new FrameDecoder(), queue: [], queued: 0, scheduled: false, closing: false };
          this.conns.set(s.data.id, s);
        },
        data: (s, chunk) => this.onData(s, chunk),
        drain: (s) => this.flush(s),
        close: (s) => this.onClose(s),
        error: (s, err) => this.hooks.log.warn({ conn: s.data?.id, err: err.message }, "client socket error"),
      },
    });
    chmodSync(path, 0o600);
  }

  /** Stop accepting new connections; existing ones stay until closed. */
  stopAccepting(): void {
    this.listener?.stop(false);
  }

  closeAll(): void {
    this.listener?.stop(true);
    for (const s of this.conns.values()) s.end();
  }

  get connections(): number {
    return this.conns.size;
  }

  /** Send a sidecar-initiated frame (a service callback); false if the connection is gone. */
  push(conn: number, frame: Record<string, unknown>): boolean {
    const s = this.conns.get(conn);
    if (!s) return false;
    this.write(s, frame);
    return true;
  }

  reply(conn: number, id: number, body: ReplyBody): void {
    const s = this.conns.get(conn);
    if (s) this.write(s, { id, ...body });
  }

  private onData(s: Socket<ConnState>, chunk: Uint8Array) {
    for (const ev of s.data.decoder.push(chunk)) {
      if (ev.kind === "too_large") {
        this.write(s, { id: 0, ok: false, error: wireError(ErrorCode.FRAME_TOO_LARGE, `frame of ${ev.length} bytes is over frameBytesMax (${limits.frameBytesMax})`) });
        s.data.closing = true;
        this.flush(s);
        return;
      }
      if (ev.kind === "undecodable") {
        this.write(s, { id: 0, ok: false, error: wireError(ErrorCode.BAD_REQUEST, `frame body is not MessagePack: ${ev.error}`) });
        continue;
      }
      this.onBody(s, ev.body, ev.bytes);
    }
  }

  private onBody(s: Socket<ConnState>, body: unknown, bytes: number) {
    const rawId = (body as { id?: unknown })?.id;
    const id = typeof rawId === "number" && Number.isInteger(rawId) && rawId >= 0 ? rawId : 0;
    // The version comes first: a newer client's hello may carry fields this version does not know.
    const hello = body as { op?: unknown; version?: unknown } | null;
    if (hello?.op === "hello" && typeof hello.version === "number" && hello.version !== PROTOCOL_VERSION) {
      return this.write(s, { id, ok: false, error: wireError(ErrorCode.PROTOCOL_VERSION, `client speaks protocol ${hello.version}, this sidecar speaks ${PROTOCOL_VERSION}; upgrade the older side`) });
    }
    const parsed = parseClientRequest(body);
    if (!parsed.success) {
      return this.write(s, { id, ok: false, error: wireError(ErrorCode.BAD_REQUEST, describeKeyIssue(body, parsed.error) ?? describeZodError(parsed.error)) });
    }
    const req = parsed.data;
    if (req.op === "hello") {
      return this.write(s, { id, ok: true, version: PROTOCOL_VERSION, sidecar: this.hooks.sidecarId, defaultTimeoutMs: timing.defaultTimeoutMs });
    }
    if (req.op === "peers") return this.write(s, { id, ok: true, peers: this.hooks.peers() });
    if (req.op === "callback_result") {
      this.hooks.callbackResult(s.data.id, req);
      return this.write(s, { id, ok: true });
    }
    const refusal = this.hooks.refusal(req);
    if (!refusal && req.op === "register") {
      this.hooks.register(s.data.id, req.service);
      return this.write(s, { id, ok: true, service: req.service });
    }
    if (refusal) return this.write(s, { id, ok: false, error: refusal });
    const refusedValue = valueRefusal(req, bytes);
    if (refusedValue) return this.write(s, { id, ok: false, error: wireError(ErrorCode[refusedValue.code], refusedValue.message) });
    try {
      this.hooks.request(s.data.id, req as ClientInput);
    } catch (err) {
      this.hooks.log.error({ err, op: req.op, name: (req as { name?: string }).name }, "request failed inside the engine");
      this.write(s, { id, ok: false, error: wireError(ErrorCode.INTERNAL, `internal error: ${(err as Error).message}`) });
    }
  }

  private onClose(s: Socket<ConnState>) {
    if (!this.conns.delete(s.data.id)) return;
    this.hooks.disconnected(s.data.id);
  }

  // Replies written in the same turn leave in one socket write.
  private write(s: Socket<ConnState>, body: unknown) {
    const frame = encodeFrame(body);
    s.data.queue.push(frame);
    s.data.queued += frame.length;
    if (!s.data.scheduled) {
      s.data.scheduled = true;
      queueMicrotask(() => {
        s.data.scheduled = false;
        this.flush(s);
      });
    }
  }

  private flush(s: Socket<ConnState>) {
    const d = s.data;
    if (d.queue.length) {
      const merged = new Uint8Array((d.backlog?.length ?? 0) + d.queued);
      let off = 0;
      if (d.backlog) {
        merged.set(d.backlog, 0);
        off = d.backlog.length;
      }
      for (const f of d.queue) {
        merged.set(f, off);
        off += f.length;
      }
      d.queue = [];
      d.queued = 0;
      d.backlog = merged;
    }
    if (d.backlog) {
      const n = s.write(d.backlog);
      d.backlog = n >= d.backlog.length ? undefined : d.backlog.subarray(Math.max(n, 0));
    }
    if (!d.backlog && d.closing) s.end();
  }
}

const encodedSize = (v: unknown) => encodeBody(v).length;

/**
 * The first value of the request that cannot be stored exactly or is over valueBytesMax (value.ts, the
 * rule the client applies at tx.put), named by its key: clients in other languages may send anything.
 */
function valueRefusal(req: ClientRequest, frameBytes: number): Refusal | undefined {
  // A value is no bigger than the frame it came in (give or take the widths of its headers): measure it
  // exactly only when the frame is over the limit.
  const encodedBytes = frameBytes <= limits.valueBytesMax ? () => frameBytes : encodedSize;
  switch (req.op) {
    case "put": {
      const r = checkWrite("put", req.key, req.value, encodedBytes);
      return typeof r === "number" ? undefined : r;
    }
    case "prepare":
    case "end":
      for (const [key, value, deleted] of req.writes ?? []) {
        const r = checkWrite(deleted ? "delete" : "put", key, value, encodedBytes);
        if (typeof r !== "number") return r;
      }
      return undefined;
    case "o_create":
    case "o_add":
      return orchestratedValueRefusal(req, encodedBytes);
    default:
      return undefined;
  }
}
