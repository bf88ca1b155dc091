// The accepting side of a federation link (Bun.serve WebSocket handlers on
// /v1/federation): send a challenge, check the dialer's proof, prove our own
// secret back, and only then hand the link to the federation.
import type { ServerWebSocket, WebSocketHandler } from "bun";
import { limits, FEDERATION_VERSION } from "../limits.ts";
import { describeZodError } from "../protocol/messages.ts";
import { decodeBody, encodeBody } from "../protocol/frame.ts";
import { authMessage, CloseCode, isLoopbackAddress, macMatches, newNonce, peerMac } from "./auth.ts";
import { binaryBytes, closeReason, federationLimits, type Link, type LinkContext } from "./link.ts";

export interface AcceptedSocket {
  nonce: string;
  remote: string;
  link?: Link;
  refused: boolean;
  authTimer?: ReturnType<typeof setTimeout>;
}

export function newAcceptedSocket(): AcceptedSocket {
  return { nonce: newNonce(), remote: "", refused: false };
}

export function acceptHandlers(ctx: LinkContext): WebSocketHandler<AcceptedSocket> {
  const { self, secret, log, events } = ctx;

  const refuse = (ws: ServerWebSocket<AcceptedSocket>, code: number, why: string, claimed?: string) => {
    ws.data.refused = true;
    clearTimeout(ws.data.authTimer);
    log.warn({ peer: claimed ?? null, remote: ws.data.remote, reason: why }, "peer refused");
    ws.close(code, closeReason(why));
  };

  return {
    maxPayloadLength: limits.frameBytesMax,
    backpressureLimit: federationLimits.peerBufferedBytesMax,
    closeOnBackpressureLimit: false,
    idleTimeout: federationLimits.acceptedIdleSeconds,
    sendPings: true,
    perMessageDeflate: false,

    open(ws) {
      ws.binaryType = "uint8array";
      ws.data.remote = ws.remoteAddress;
      if (!secret && !isLoopbackAddress(ws.remoteAddress)) {
        return refuse(ws, CloseCode.unauthorized, `unauthorized: no --secret-file is configured, so only loopback peers are accepted`);
      }
      ws.data.authTimer = setTimeout(
        () => refuse(ws, CloseCode.unauthorized, `unauthorized: no auth message within ${federationLimits.authTimeoutMs} ms`),
        federationLimits.authTimeoutMs,
      );
      ws.sendBinary(encodeBody({ t: "challenge", v: FEDERATION_VERSION, id: self, nonce: ws.data.nonce }));
    },

    message(ws, data) {
      const s = ws.data;
      if (s.link) return events.receive(s.link, data);
      if (s.refused) return; // refused: nothing it sends is read
      const bytes = binaryBytes(data);
      if (!bytes) return refuse(ws, CloseCode.unauthorized, "unauthorized: the first message must be a binary auth message");
      let body: unknown;
      try {
        body = decodeBody(bytes);
      } catch {
        return refuse(ws, CloseCode.unauthorized, "unauthorized: the first message is not MessagePack");
      }
      const claimed = typeof (body as { id?: unknown })?.id === "string" ? (body as { id: string }).id.slice(0, 64) : undefined;
      const auth = authMessage.safeParse(body);
      if (!auth.success) return refuse(ws, CloseCode.unauthorized, `unauthorized: the first message must be {t:"auth"} (${describeZodError(auth.error)})`, claimed);
      const a = auth.data;
      if (a.v !== FEDERATION_VERSION) {
        return refuse(ws, CloseCode.protocolVersion, `PROTOCOL_VERSION: peer speaks federation v${a.v}, sidecar ${self} speaks v${FEDERATION_VERSION}`, a.id);
      }
      if (!macMatches(peerMac(secret, s.nonce, a.id), a.mac)) {
        return refuse(ws, CloseCode.unauthorized, `unauthorized: wrong mac for peer ${a.id} (check both sidecars use the same --secret-file)`, a.id);
      }
      if (a.id === self) return refuse(ws, CloseCode.badHandshake, `peer claims this sidecar's own id ${self}; every sidecar needs its own --id`, a.id);
      clearTimeout(s.authTimer);
      ws.sendBinary(encodeBody({ t: "welcome", id: self, mac: peerMac(secret, a.nonce, self) }));
      s.link = {
        peer: a.id,
        direction: "accepted",
        remote: s.remote,
        send: (out) => ws.readyState === 1 && ws.getBufferedAmount() <= federationLimits.peerBufferedBytesMax && ws.sendBinary(out) !== 0,
        close: (code, reason) => ws.close(code, closeReason(reason)),
      };
      events.up(s.link);
    },

    close(ws, code, reason) {
      clearTimeout(ws.data.authTimer);
      const link = ws.data.link;
      ws.data.link = undefined;
      if (link) events.down(link, code, reason);
    },
  };
}
