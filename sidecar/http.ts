// HTTP on the sidecar port: health, readiness, the transaction API, and the
// WebSocket endpoint peers dial (/v1/federation). Everything else under /v1/
// passes the admin gate first (admin-auth.ts); health, readiness, metrics,
// the dashboard's page and the federation endpoint (its own HMAC handshake) stay open.
import type { Server, WebSocketHandler } from "bun";
import { version } from "../package.json" with { type: "json" };
import type { Federation } from "../src/federation/federation.ts";
import type { AcceptedSocket } from "../src/federation/peer-accept.ts";
import type { ReplyBody } from "../src/txn/types.ts";
import type { AdminGate } from "./admin-auth.ts";
import { ConfigError, type SidecarConfig } from "./config.ts";
import { dashboardHtml } from "./dashboard.ts";

/** What HTTP reads of the sidecar it answers for (sidecar.ts's Sidecar, which imports this file). */
export interface HttpSidecar {
  readonly config: { readonly id: string };
  readonly ready: boolean;
  readonly federation: Pick<Federation, "newSocketData" | "peers">;
  readonly metrics: { render(): string };
  ask(req: { op: string; [k: string]: unknown }): Promise<ReplyBody>;
}

export interface SidecarHttp {
  server: Server<AcceptedSocket>;
  /** Answer for the sidecar from now on; until then /healthz says ok and everything else 503. */
  serve(sidecar: HttpSidecar): void;
}

/**
 * Bind the port first thing, before the data directory is locked or the socket claimed, so that a
 * port in use (or an address this machine lacks) is a configuration error that leaves nothing behind.
 */
export function bindHttp(config: SidecarConfig, websocket: WebSocketHandler<AcceptedSocket>, gate: AdminGate): SidecarHttp {
  try {
    return startHttp(config, websocket, gate);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "EADDRINUSE") {
      throw new ConfigError(`port ${config.port} on ${config.host} is in use by another process; stop it, or choose another port with --port (DTX_PORT; 0 picks a free one)`);
    }
    if (code === "EADDRNOTAVAIL") throw new ConfigError(`cannot listen on ${config.host}: this machine has no such address; choose another with --host (DTX_HOST)`);
    throw e;
  }
}

function startHttp(config: SidecarConfig, websocket: WebSocketHandler<AcceptedSocket>, gate: AdminGate): SidecarHttp {
  const json = (body: unknown, status = 200) => Response.json(body, { status });
  let sidecar: HttpSidecar | undefined;
  const server = Bun.serve<AcceptedSocket>({
    hostname: config.host,
    port: config.port,
    // Optional TLS: the HTTP API and /v1/federation then answer on https:// and wss://.
    tls: config.tlsCert && config.tlsKey ? { cert: Bun.file(config.tlsCert), key: Bun.file(config.tlsKey) } : undefined,
    fetch: async (req, server) => {
      const url = new URL(req.url);
      const path = url.pathname;
      // Bound while the sidecar still recovers: alive, not ready, and nothing reaches the engine yet.
      if (!sidecar) return path === "/healthz" ? new Response("ok\n") : new Response("not ready: starting\n", { status: 503 });
      if (path === "/v1/federation") {
        if (server.upgrade(req, { data: sidecar.federation.newSocketData() })) return undefined;
        return new Response("expected a WebSocket upgrade from a dtx peer\n", { status: 426 });
      }
      if (path === "/healthz") return new Response("ok\n");
      if (path === "/readyz") return sidecar.ready ? new Response("ready\n") : new Response("not ready\n", { status: 503 });
      if (path === "/metrics") return new Response(sidecar.metrics.render(), { headers: { "content-type": "text/plain; version=0.0.4" } });
      if (path === "/" || path === "/ui") return new Response(dashboardHtml, { headers: { "content-type": "text/html; charset=utf-8" } });
      // Closed by default: an endpoint added under /v1/ later is behind the gate without anyone remembering to put it there.
      if (path.startsWith("/v1/")) {
        const refused = gate(req);
        if (refused) return refused;
      }
      if (path === "/v1/sidecar") return json({ id: sidecar.config.id, version, ready: sidecar.ready });
      if (path === "/v1/peers") return json(sidecar.federation.peers());
      if (path === "/v1/transactions") {
        const state = url.searchParams.get("state") ?? undefined;
        const r = await sidecar.ask({ op: "list", state, limit: Number(url.searchParams.get("limit") ?? 1000) });
        return r.ok ? json(r.transactions) : json(r.error, 400);
      }
      if (path.startsWith("/v1/transactions/")) {
        const r = await sidecar.ask({ op: "status", name: decodeURIComponent(path.slice("/v1/transactions/".length)) });
        return r.ok ? json(r) : json(r.error, r.error.code === "NOT_FOUND" ? 404 : 400);
      }
      return new Response("not found\n", { status: 404 });
    },
    websocket,
  });
  return { server, serve: (s) => void (sidecar = s) };
}
