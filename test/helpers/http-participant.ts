// A real HTTP participant speaking the seed's protocol, for tests. It honours
// idempotency keys (applies each operation once) and records every call.
export interface ParticipantBehaviour {
  /** Vote on /prepare. */
  vote?: "prepared" | "abort";
  /** Fail /execute for good (409). */
  failExecute?: boolean;
  /** Answer 503 to these operations (the participant is "down" for them). */
  unavailable?: Set<string>;
  /** Hold these operations until released (to crash the caller mid-call). */
  hold?: Set<string>;
}

let arrivals = 0;

export interface Call {
  /** Arrival order across every participant of the test process. */
  seq: number;
  op: string;
  key: string;
  body: Record<string, unknown>;
}

export class HttpParticipant {
  readonly calls: Call[] = [];
  /** Operations applied, once per idempotency key, in order. */
  readonly applied: Call[] = [];
  private seen = new Map<string, unknown>();
  private held: (() => void)[] = [];
  private server: ReturnType<typeof Bun.serve>;
  private waiters: { cond: () => boolean; resolve: () => void }[] = [];

  constructor(
    readonly id: string,
    public behaviour: ParticipantBehaviour = {},
  ) {
    this.server = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: (req) => this.handle(req) });
  }

  get endpoint(): string {
    return `http://127.0.0.1:${this.server.port}/${this.id}`;
  }

  appliedOps(op?: string): string[] {
    return this.applied.filter((c) => !op || c.op === op).map((c) => `${c.op}:${c.body.transaction_id}`);
  }

  /** Resolve when cond holds (checked after every call), or reject after timeoutMs. */
  until(cond: () => boolean, timeoutMs = 10_000, what = "participant condition"): Promise<void> {
    if (cond()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const w = { cond, resolve };
      this.waiters.push(w);
      setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== w);
        reject(new Error(`${this.id}: timed out after ${timeoutMs} ms waiting for ${what}; calls: ${this.calls.map((c) => c.op).join(",")}`));
      }, timeoutMs);
    });
  }

  release(): void {
    this.behaviour.hold = undefined;
    for (const r of this.held.splice(0)) r();
  }

  stop(): void {
    this.server.stop(true);
  }

  private notify() {
    for (const w of [...this.waiters]) {
      if (w.cond()) {
        this.waiters = this.waiters.filter((x) => x !== w);
        w.resolve();
      }
    }
  }

  private async handle(req: Request): Promise<Response> {
    const op = new URL(req.url).pathname.split("/").pop() ?? "";
    const body = (await req.json()) as Record<string, unknown>;
    const key = req.headers.get("idempotency-key") ?? "";
    const call = { seq: ++arrivals, op, key, body };
    this.calls.push(call);
    this.notify();
    if (this.behaviour.hold?.has(op)) await new Promise<void>((r) => this.held.push(r));
    if (this.behaviour.unavailable?.has(op)) return new Response("down", { status: 503 });
    if (this.seen.has(key)) return Response.json(this.seen.get(key)); // a duplicate: answer as before, apply nothing
    let answer: unknown = { status: "ok", participant: this.id };
    if (op === "prepare") answer = { vote: this.behaviour.vote ?? "prepared" };
    if (op === "execute" && this.behaviour.failExecute) return Response.json({ status: "failure", reason: `${this.id} refused` }, { status: 409 });
    this.seen.set(key, answer);
    this.applied.push(call);
    this.notify();
    return Response.json(answer);
  }
}

/** A proxy that delivers every request twice (duplicated messages) and answers with the first response. */
export function duplicatingProxy(target: string): { url: string; stop(): void; forwarded: () => number } {
  let forwarded = 0;
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch: async (req) => {
      const url = new URL(req.url);
      const to = `${target}${url.pathname.replace(/^\/dup/, "")}`;
      const init = { method: "POST", headers: req.headers, body: await req.text() };
      const [first] = await Promise.all([fetch(to, init), fetch(to, init)]);
      forwarded += 2;
      return new Response(await first.text(), { status: first.status, headers: { "content-type": "application/json" } });
    },
  });
  return { url: `http://127.0.0.1:${server.port}/dup`, stop: () => server.stop(true), forwarded: () => forwarded };
}

/** An endpoint on a port nothing listens on: every connection is refused. */
export function refusingEndpoint(): string {
  const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = probe.port;
  probe.stop(true);
  return `http://127.0.0.1:${port}/refusing`;
}
