// Helpers for tests that run several federated sidecars: free ports chosen up
// front (each sidecar's --peer names the others' ports), link readiness, and a
// hand-driven peer for a peer's misbehaviour a test is about.
import { peerMac } from "../../src/federation/auth.ts";
import { FEDERATION_VERSION } from "../../src/limits.ts";
import { decodeBody, encodeBody } from "../../src/protocol/frame.ts";
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

/** A hand-driven WebSocket to a sidecar's /v1/federation, for speaking (or faking) the handshake. */
export class RawPeer {
  readonly received: Record<string, unknown>[] = [];
  closed?: { code: number; reason: string };
  private constructor(readonly ws: WebSocket) {
    ws.binaryType = "arraybuffer";
    ws.onmessage = (ev) => {
      const m = decodeBody(new Uint8Array(ev.data as ArrayBuffer)) as Record<string, unknown>;
      // Messages sent in one turn arrive together as {t: "batch", msgs}.
      this.received.push(...(m.t === "batch" ? (m.msgs as Record<string, unknown>[]) : [m]));
    };
    ws.onclose = (ev) => (this.closed = { code: ev.code, reason: ev.reason });
  }

  static async open(port: number): Promise<RawPeer> {
    const raw = new RawPeer(new WebSocket(`ws://127.0.0.1:${port}/v1/federation`));
    await waitFor(() => raw.ws.readyState === WebSocket.OPEN, 5_000, "raw peer socket open");
    return raw;
  }

  send(body: unknown): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(encodeBody(body));
  }

  async next(t: string): Promise<Record<string, unknown>> {
    await waitFor(() => this.received.some((m) => m.t === t), 5_000, `a ${t} message`);
    return this.received.find((m) => m.t === t)!;
  }

  async closedWith(): Promise<{ code: number; reason: string }> {
    await waitFor(() => this.closed !== undefined, 5_000, "the sidecar to close the socket");
    return this.closed!;
  }

  /** Run the dialer's half of the handshake as `id` with `key`; resolves with the challenge. */
  async authenticate(id: string, key: string): Promise<Record<string, unknown>> {
    const challenge = await this.next("challenge");
    this.send({ t: "auth", v: FEDERATION_VERSION, id, mac: peerMac(key, challenge.nonce as string, id), nonce: "0123456789abcdef0123456789abcdef" });
    return challenge;
  }
}
