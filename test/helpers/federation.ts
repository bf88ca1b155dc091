// Helpers for tests that run several federated sidecars: free ports chosen up
// front (each sidecar's --peer names the others' ports), and link readiness.
import { type SidecarProcess, waitFor } from "./sidecar-process.ts";

/** Ports the kernel considers free right now; each sidecar keeps its port across restarts. */
export function freePorts(n: number): number[] {
  const servers = Array.from({ length: n }, () => Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } }));
  const ports = servers.map((s) => s.port);
  for (const s of servers) s.stop(true);
  return ports;
}

export interface PeerView {
  id: string;
  state: string;
  url: string | null;
  accepted: number;
}

export async function peersOf(sc: SidecarProcess): Promise<PeerView[]> {
  return (await fetch(`http://127.0.0.1:${sc.port}/v1/peers`)).json() as Promise<PeerView[]>;
}

/** Wait until `sc` has an authenticated link to every sidecar in `ids`. */
export async function waitForLinks(sc: SidecarProcess, ids: string[], timeoutMs = 10_000): Promise<void> {
  await waitFor(
    async () => {
      const up = new Set((await peersOf(sc)).filter((p) => p.state === "up").map((p) => p.id));
      return ids.every((id) => up.has(id));
    },
    timeoutMs,
    `${sc.opts.id} linked to ${ids.join(", ")}`,
  );
}
