// The link this sidecar dials to one configured peer: connect, prove our
// secret and check the peer's proof, carry messages, and on any loss
// reconnect with exponential backoff and jitter until stopped.
import { FEDERATION_VERSION } from "../limits.ts";
import { decodeBody, encodeBody } from "../protocol/frame.ts";
import { CloseCode, challengeMessage, macMatches, newNonce, peerMac, welcomeMessage } from "./auth.ts";
import { binaryBytes, closeReason, federationLimits, type Link, type LinkContext } from "./link.ts";

export type DialState = "connecting" | "authenticating" | "up" | "backoff" | "stopped";

export class PeerLink {
  state: DialState = "backoff";
  since = Date.now();
  /** Why the last attempt failed, for logs and `dtx peers`. */
  lastError?: string;
  private ws?: WebSocket;
  private attempt = 0;
  private retry?: ReturnType<typeof setTimeout>;
  private loggedFailure?: string;

  constructor(
    readonly peer: string,
    readonly url: string,
    private readonly ctx: LinkContext,
    private readonly onState: () => void,
  ) {}

  start(): void {
    if (this.state === "stopped") return;
    this.dial();
  }

  stop(): void {
    this.setState("stopped");
    clearTimeout(this.retry);
    this.ws?.close(CloseCode.goingAway, "sidecar shutting down");
    this.ws = undefined;
  }

  private setState(s: DialState) {
    if (this.state === s) return;
    this.state = s;
    this.since = Date.now();
    this.onState();
  }

  private dial(): void {
    const { self, secret, log, events } = this.ctx;
    this.setState("connecting");
    const myNonce = newNonce();
    let ws: WebSocket;
    try {
      ws = this.ctx.tlsCa && this.url.startsWith("wss:") ? new WebSocket(this.url, { tls: { ca: this.ctx.tlsCa } } as never) : new WebSocket(this.url);
    } catch (e) {
      return this.failed(`cannot open ${this.url}: ${(e as Error).message}`);
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    let link: Link | undefined;
    let refusal: string | undefined; // why we closed the socket ourselves, if we did

    const refuse = (code: number, why: string) => {
      refusal = why;
      log.warn({ peer: this.peer, url: this.url, reason: why }, "peer link refused during handshake");
      if (ws.readyState === WebSocket.CONNECTING) ws.terminate();
      else ws.close(code, closeReason(why));
    };
    const authTimer = setTimeout(
      () => refuse(CloseCode.badHandshake, `no handshake from ${this.peer} within ${federationLimits.authTimeoutMs} ms`),
      federationLimits.authTimeoutMs,
    );

    ws.onopen = () => {
      if (this.ws === ws) this.setState("authenticating");
    };
    let heardAt = Date.now();
    let heartbeat: ReturnType<typeof setInterval> | undefined;
    ws.addEventListener("pong", () => void (heardAt = Date.now()));
    ws.onmessage = (ev) => {
      heardAt = Date.now();
      if (link) return events.receive(link, ev.data);
      if (refusal) return;
      const bytes = binaryBytes(ev.data);
      let body: unknown;
      try {
        body = bytes ? decodeBody(bytes) : undefined;
      } catch {
        body = undefined;
      }
      const t = (body as { t?: unknown } | undefined)?.t;
      if (t === "challenge") {
        const c = challengeMessage.safeParse(body);
        if (!c.success) return refuse(CloseCode.badHandshake, `bad challenge from ${this.url}`);
        if (c.data.v !== FEDERATION_VERSION) {
          return refuse(CloseCode.protocolVersion, `PROTOCOL_VERSION: ${this.peer} speaks federation v${c.data.v}, we speak v${FEDERATION_VERSION}`);
        }
        if (c.data.id !== this.peer) return refuse(CloseCode.badHandshake, `${this.url} answered as sidecar ${c.data.id}, but --peer names it ${this.peer}`);
        ws.send(encodeBody({ t: "auth", v: FEDERATION_VERSION, id: self, mac: peerMac(secret, c.data.nonce, self), nonce: myNonce }));
        return;
      }
      if (t === "welcome") {
        const w = welcomeMessage.safeParse(body);
        if (!w.success || w.data.id !== this.peer || !macMatches(peerMac(secret, myNonce, this.peer), w.data.mac)) {
          return refuse(CloseCode.unauthorized, `unauthorized: ${this.peer} at ${this.url} did not prove the shared secret (check --secret-file on both sides)`);
        }
        clearTimeout(authTimer);
        link = {
          peer: this.peer,
          direction: "dialed",
          remote: this.url,
          send: (bytes) => {
            if (ws.readyState !== WebSocket.OPEN || ws.bufferedAmount > federationLimits.peerBufferedBytesMax) return false;
            ws.send(bytes);
            return true;
          },
          close: (code, reason) => ws.close(code, closeReason(reason)),
        };
        // A peer whose host vanished never closes the socket; silence is how we notice.
        heartbeat = setInterval(() => {
          if (Date.now() - heardAt > federationLimits.deadAfterMs) {
            refusal = `no message or pong from ${this.peer} for ${federationLimits.deadAfterMs} ms`;
            ws.terminate();
          } else ws.ping();
        }, federationLimits.heartbeatMs);
        this.attempt = 0;
        this.lastError = undefined;
        this.loggedFailure = undefined;
        this.setState("up");
        events.up(link);
        return;
      }
      refuse(CloseCode.badHandshake, `expected a challenge or welcome from ${this.peer}, got ${bytes ? JSON.stringify(t ?? null) : "a text message"}`);
    };
    ws.onerror = () => {}; // a close event always follows and says why
    ws.onclose = (ev) => {
      clearTimeout(authTimer);
      clearInterval(heartbeat);
      if (link) {
        events.down(link, ev.code, ev.reason);
        link = undefined;
      }
      if (this.ws !== ws) return;
      this.ws = undefined;
      if (this.state === "stopped") return;
      const why = refusal ?? (ev.reason ? `closed by ${this.peer} (${ev.code}): ${ev.reason}` : `connection to ${this.url} closed (${ev.code})`);
      // The peer refusing us is a configuration problem an operator must see; a peer that is down is routine.
      if (!refusal && ev.code >= 4000 && ev.code < 5000 && this.loggedFailure !== why) {
        log.warn({ peer: this.peer, url: this.url, code: ev.code, reason: ev.reason }, "peer refused our link");
        this.loggedFailure = why;
      }
      this.failed(why);
    };
  }

  private failed(why: string): void {
    if (this.state === "stopped") return;
    this.lastError = why;
    const ceiling = Math.min(federationLimits.backoffMaxMs, federationLimits.backoffMinMs * 2 ** this.attempt);
    this.attempt = Math.min(this.attempt + 1, 16);
    const delay = ceiling / 2 + this.ctx.random() * (ceiling / 2); // jitter: peers restarted together do not redial in lockstep
    this.ctx.log.debug({ peer: this.peer, url: this.url, reason: why, retryMs: Math.round(delay) }, "peer link down; redialing");
    this.setState("backoff");
    this.retry = setTimeout(() => this.dial(), delay);
  }
}
