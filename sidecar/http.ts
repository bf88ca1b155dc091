// HTTP on the sidecar port: health, readiness, the transaction API, and the
// WebSocket endpoint peers dial (/v1/federation). Everything else under /v1/
// passes the admin gate first (admin-auth.ts); health, readiness, metrics,
// the dashboard's page and the federation endpoint (its own HMAC handshake) stay open.
import { version } from "../package.json" with { type: "json" };
import type { AcceptedSocket } from "../src/federation/peer-accept.ts";
import type { AdminGate } from "./admin-auth.ts";
import { dashboardHtml } from "./dashboard.ts";
import type { Sidecar } from "./sidecar.ts";

export function startHttp(sidecar: Sidecar, gate: AdminGate) {
  const json = (body: unknown, status = 200) => Response.json(body, { status });
  return Bun.serve<AcceptedSocket>({
    hostname: sidecar.config.host,
    port: sidecar.config.port,
    // Optional TLS: the HTTP API and /v1/federation then answer on https:// and wss://.
    tls: sidecar.config.tlsCert && sidecar.config.tlsKey ? { cert: Bun.file(sidecar.config.tlsCert), key: Bun.file(sidecar.config.tlsKey) } : undefined,
    fetch: async (req, server) => {
      const url = new URL(req.url);
      const path = url.pathname;
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
    websocket: sidecar.federation.websocket,
  });
}
