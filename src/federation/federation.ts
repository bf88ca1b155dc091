// Peer links between sidecars: dial every configured peer, accept peers that
// dial us, route the engine's messages over whichever authenticated link to
// the addressee is up, and hand validated inbound messages to the engine.
//
// Reachability: a sidecar can send to a peer only over a link. It dials every
// --peer entry, and a link a peer dialed to us carries our replies back to it,
// so each sidecar should list as --peer every sidecar whose transactions it
// joins (the coordinator in a token) and every sidecar that coordinates with it.
import type { WebSocketHandler } from "bun";
import type { Logger } from "pino";
import { limits } from "../limits.ts";
import { ErrorCode } from "../protocol/errors.ts";
import { encodeBody, decodeBody } from "../protocol/frame.ts";
import { describeZodError, type PeerMessage, peerMessage, sidecarId } from "../protocol/messages.ts";
import { CloseCode, isLoopbackAddress } from "./auth.ts";
import { binaryBytes, federationLimits, type Link, type LinkContext } from "./link.ts";
import { type AcceptedSocket, acceptHandlers, newAcceptedSocket } from "./peer-accept.ts";
import { type DialState, PeerLink } from "./peer-link.ts";

export interface PeerAddress {
  id: string;
  url: string;
}

export interface FederationOptions {
  self: string;
  /** Contents of --secret-file; undefined means the empty secret, loopback only. */
  secret?: string;
  peers: PeerAddress[];
  log: Logger;
  tlsCa?: string;
  /** A validated message from an authenticated peer, for the engine. */
  deliver(msg: PeerMessage): void;
  /** The runtime's PRNG, in [0, 1): redial jitter (Math.random when not given, e.g. in tests). */
  random?: () => number;
}

export type PeerState = "up" | "connecting" | "down";

export interface PeerInfo {
  id: string;
  /** The dialed url; null for a peer known only because it dialed us. */
  url: string | null;
  state: PeerState;
  /** When `state` last changed (ms since the epoch). */
  since: number;
  dialed: DialState | null;
  accepted: number;
  lastError: string | null;
  sent: number;
  received: number;
  /** Messages dropped because no link could take them (the engine resends what matters). */
  dropped: number;
  /** Inbound messages that failed validation or named another sender. */
  invalid: number;
}

interface Peer {
  id: string;
  dialer?: PeerLink;
  /** Authenticated links in the order they came up. */
  links: Link[];
  queue: { bytes: Uint8Array; at: number; messages: number }[];
  /** Messages sent this turn, leaving together in one WebSocket message at its end. */
  outbox: PeerMessage[];
  state: PeerState;
  since: number;
  sent: number;
  received: number;
  dropped: number;
  invalid: number;
  /** Set while a drop has been logged and the peer has not come back since. */
  dropLogged: boolean;
}

const unknownPeersLoggedMax = 256;

export class Federation {
  readonly self: string;
  /** Bun.serve `websocket` handlers for the accepting side of /v1/federation. */
  readonly websocket: WebSocketHandler<AcceptedSocket>;
  private readonly peersById = new Map<string, Peer>();
  private readonly log: Logger;
  private readonly deliver: (msg: PeerMessage) => void;
  private readonly unknownLogged = new Set<string>();
  private stopped = false;

  constructor(opts: FederationOptions) {
    this.self = opts.self;
    this.log = opts.log;
    this.deliver = opts.deliver;
    if (opts.secret === "") throw new Error("the --secret-file is empty; put a shared secret in it, the same on every sidecar");
    const secret = opts.secret ?? "";
    const ctx: LinkContext = {
      self: opts.self,
      secret,
      log: opts.log,
      tlsCa: opts.tlsCa,
      random: opts.random ?? Math.random,
      events: { up: (l) => this.linkUp(l), down: (l, code, reason) => this.linkDown(l, code, reason), receive: (l, d) => this.receive(l, d) },
    };
    for (const p of opts.peers) {
      if (p.id === opts.self) throw new Error(`--peer ${p.id}=${p.url} names this sidecar itself; list only other sidecars`);
      if (this.peersById.has(p.id)) throw new Error(`--peer ${p.id} is given twice`);
      if (!secret && !isLoopbackAddress(new URL(p.url).hostname)) {
        throw new Error(`--peer ${p.id}=${p.url} is not on loopback; peers on other hosts need --secret-file on every sidecar`);
      }
      const peer = this.newPeer(p.id);
      peer.dialer = new PeerLink(p.id, p.url, ctx, () => this.refresh(peer));
      peer.state = "connecting";
    }
    this.websocket = acceptHandlers(ctx);
  }

  /** Per-connection state for Bun's server.upgrade({ data }). */
  newSocketData = newAcceptedSocket;

  /** Dial every configured peer; call once the sidecar is ready to take their messages. */
  start(): void {
    for (const p of this.peersById.values()) p.dialer?.start();
  }

  stop(): void {
    this.stopped = true;
    for (const p of this.peersById.values()) {
      p.dialer?.stop();
      for (const l of [...p.links]) l.close(CloseCode.goingAway, "sidecar shutting down");
      p.queue = [];
    }
  }

  /**
   * RuntimeIo.sendPeer: over an up link to `to`, else a small bounded queue, else dropped. `ifLinked`: over an
   * up link or not at all. Returns why the message certainly did not leave, when it did not.
   */
  send(to: string, msg: PeerMessage, ifLinked = false): { code: string; reason: string } | undefined {
    if (this.stopped) return { code: ErrorCode.SHUTTING_DOWN, reason: `sidecar ${this.self} is shutting down` };
    const peer = this.peersById.get(to);
    if (!peer) {
      if (!this.unknownLogged.has(to)) {
        if (this.unknownLogged.size >= unknownPeersLoggedMax) this.unknownLogged.clear();
        this.unknownLogged.add(to);
        this.log.warn({ to, t: msg.t, name: msg.name }, "no link to sidecar; it is not a --peer and has not connected to us (add --peer for it)");
      }
      return { code: ErrorCode.PARTICIPANT_UNAVAILABLE, reason: `sidecar ${to} is not a --peer of ${this.self} and has not connected to it` };
    }
    if (ifLinked && peer.links.length === 0) {
      return { code: ErrorCode.PEER_UNREACHABLE, reason: `no link to sidecar ${to} is up (${peer.state}${peer.dialer?.lastError ? `: ${peer.dialer.lastError}` : ""})` };
    }
    peer.outbox.push(msg);
    if (peer.outbox.length === 1) queueMicrotask(() => this.flushOutbox(peer));
    return undefined;
  }

  /**
   * Everything sent to a peer in one turn leaves as one WebSocket message: a
   * lone message as itself, several as {t:"batch", msgs}. Under load this
   * turns hundreds of small frames (and wake-ups on the other side) into a few.
   */
  private flushOutbox(peer: Peer): void {
    const msgs = peer.outbox;
    peer.outbox = [];
    for (let at = 0; at < msgs.length; at += federationLimits.batchMessagesMax) {
      const part = msgs.slice(at, at + federationLimits.batchMessagesMax);
      const bytes = encodeBody(part.length === 1 ? part[0] : { t: "batch", msgs: part });
      if (this.sendOnLink(peer, bytes, part.length)) continue;
      if (peer.queue.length >= federationLimits.peerQueueMax) {
        peer.queue.shift();
        this.dropped(peer);
      }
      peer.queue.push({ bytes, at: Date.now(), messages: part.length });
    }
  }

  peers(): PeerInfo[] {
    return [...this.peersById.values()].map((p) => ({
      id: p.id,
      url: p.dialer?.url ?? null,
      state: p.state,
      since: p.since,
      dialed: p.dialer?.state ?? null,
      accepted: p.links.filter((l) => l.direction === "accepted").length,
      lastError: p.dialer?.lastError ?? null,
      sent: p.sent,
      received: p.received,
      dropped: p.dropped,
      invalid: p.invalid,
    }));
  }

  // ---- links ---------------------------------------------------------------

  /** The newest link first: after a peer restarts, an older link may be dead without knowing it yet. */
  private sendOnLink(peer: Peer, bytes: Uint8Array, messages = 1): boolean {
    for (let i = peer.links.length - 1; i >= 0; i--) {
      if (peer.links[i].send(bytes)) return this.counted(peer, messages);
    }
    return false;
  }

  private counted(peer: Peer, messages: number): true {
    peer.sent += messages;
    return true;
  }

  private dropped(peer: Peer) {
    peer.dropped++;
    if (!peer.dropLogged) {
      peer.dropLogged = true;
      this.log.warn({ peer: peer.id, queued: peer.queue.length }, "no link to peer; dropping messages until it is back (the engine resends them)");
    }
  }

  private linkUp(link: Link): void {
    if (this.stopped) return link.close(CloseCode.goingAway, "sidecar shutting down");
    const peer = this.peersById.get(link.peer) ?? this.newPeer(link.peer);
    if (link.direction === "accepted") {
      // A peer that redials after a restart replaces its old link; two at once would only reorder messages.
      for (const old of peer.links.filter((l) => l.direction === "accepted")) {
        this.removeLink(peer, old);
        old.close(CloseCode.replaced, `replaced by a newer connection from ${link.peer}`);
      }
    }
    peer.links.push(link);
    this.log.info({ peer: link.peer, direction: link.direction, remote: link.remote }, "peer link up");
    const now = Date.now();
    const queued = peer.queue;
    peer.queue = [];
    for (const q of queued) {
      if (now - q.at > federationLimits.peerQueueAgeMaxMs || !this.sendOnLink(peer, q.bytes, q.messages)) peer.dropped += q.messages;
    }
    this.refresh(peer);
  }

  private linkDown(link: Link, code: number, reason: string): void {
    const peer = this.peersById.get(link.peer);
    if (!peer || !this.removeLink(peer, link)) return;
    this.log.info({ peer: link.peer, direction: link.direction, remote: link.remote, code, reason }, "peer link down");
    this.refresh(peer);
  }

  private removeLink(peer: Peer, link: Link): boolean {
    const i = peer.links.indexOf(link);
    if (i < 0) return false;
    peer.links.splice(i, 1);
    return true;
  }

  /** Recompute a peer's overall state after any of its links changed. */
  private refresh(peer: Peer): void {
    const dial = peer.dialer?.state;
    const state: PeerState = peer.links.length ? "up" : dial === "connecting" || dial === "authenticating" ? "connecting" : "down";
    if (state === "up") peer.dropLogged = false;
    if (state === peer.state) return;
    peer.since = Date.now();
    peer.state = state;
  }

  // ---- inbound -------------------------------------------------------------

  private receive(link: Link, data: unknown): void {
    const peer = this.peersById.get(link.peer);
    if (!peer || this.stopped) return;
    const bytes = binaryBytes(data);
    if (!bytes) return this.invalid(peer, link, "a text message (peer messages are binary MessagePack)");
    if (bytes.length > limits.frameBytesMax) {
      this.invalid(peer, undefined, `a ${bytes.length}-byte message`);
      return link.close(CloseCode.tooLarge, `FRAME_TOO_LARGE: message of ${bytes.length} bytes is over frameBytesMax (${limits.frameBytesMax})`);
    }
    let body: unknown;
    try {
      body = decodeBody(bytes);
    } catch (e) {
      return this.invalid(peer, link, `undecodable MessagePack (${(e as Error).message})`);
    }
    const report = body as { t?: unknown; code?: unknown; message?: unknown; msgs?: unknown } | null;
    if (report?.t === "error") {
      this.log.warn({ peer: peer.id, code: report.code }, `peer ${peer.id} refused a message from us: ${String(report.message)}`);
      return;
    }
    if (report?.t === "batch") {
      if (!Array.isArray(report.msgs) || report.msgs.length > federationLimits.batchMessagesMax) {
        return this.invalid(peer, link, `a batch that is not an array of at most ${federationLimits.batchMessagesMax} messages`);
      }
      for (const m of report.msgs) this.receiveOne(peer, link, m);
      return;
    }
    this.receiveOne(peer, link, body);
  }

  private receiveOne(peer: Peer, link: Link, body: unknown): void {
    const parsed = peerMessage.safeParse(body);
    if (!parsed.success) return this.invalid(peer, link, `an invalid peer message: ${describeZodError(parsed.error)}`, body);
    const msg = parsed.data;
    if (msg.from !== link.peer) return this.invalid(peer, link, `a message claiming to be from ${msg.from}`, body);
    peer.received++;
    this.deliver(msg);
  }

  /** Drop a bad message, log it, and tell the peer why (never in answer to an error, so two sidecars cannot ping-pong). */
  private invalid(peer: Peer, link: Link | undefined, what: string, body?: unknown): void {
    peer.invalid++;
    const b = body as { t?: unknown; name?: unknown } | undefined;
    this.log.warn({ peer: peer.id, t: b?.t, name: b?.name }, `dropped ${what} from peer ${peer.id}`);
    if (link && b?.t !== "error") link.send(encodeBody({ t: "error", code: ErrorCode.BAD_REQUEST, message: `dropped ${what}`.slice(0, 500) }));
  }

  private newPeer(id: string): Peer {
    const peer: Peer = { id, links: [], queue: [], outbox: [], state: "down", since: Date.now(), sent: 0, received: 0, dropped: 0, invalid: 0, dropLogged: false };
    this.peersById.set(id, peer);
    return peer;
  }
}

/** Parse `--peer id=url` entries; a url without a path gets /v1/federation. */
export function parsePeers(entries: string[]): PeerAddress[] {
  return entries.map((entry) => {
    const eq = entry.indexOf("=");
    const id = entry.slice(0, eq);
    const raw = entry.slice(eq + 1);
    if (eq < 1 || !sidecarId.safeParse(id).success) throw new Error(`--peer ${entry}: expected id=ws://host:port with id matching ^[A-Za-z0-9_.-]{1,32}$`);
    let url: URL;
    try {
      url = new URL(raw);
    } catch {
      throw new Error(`--peer ${entry}: ${raw} is not a url; expected ws://host:port`);
    }
    if (url.protocol !== "ws:" && url.protocol !== "wss:") throw new Error(`--peer ${entry}: the url must start with ws:// or wss://`);
    if (url.pathname === "" || url.pathname === "/") url.pathname = "/v1/federation";
    return { id, url: url.toString() };
  });
}
