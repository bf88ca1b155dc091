// What the federation routes over: one authenticated WebSocket to one peer,
// dialed by us or accepted from it. Either direction carries both ways.
import type { Logger } from "pino";

export type Direction = "dialed" | "accepted";

export interface Link {
  /** The peer's id, proven by its mac. */
  readonly peer: string;
  readonly direction: Direction;
  readonly remote: string;
  /** false if the socket is gone or too far behind; the caller may try another link or queue. */
  send(bytes: Uint8Array): boolean;
  close(code: number, reason: string): void;
}

/** What a link reports to the federation once it is authenticated. */
export interface LinkEvents {
  up(link: Link): void;
  down(link: Link, code: number, reason: string): void;
  receive(link: Link, data: unknown): void;
}

export interface LinkContext {
  self: string;
  /** "" when no --secret-file is configured: allowed only between loopback addresses. */
  secret: string;
  log: Logger;
  events: LinkEvents;
  /** CA certificates (PEM) to trust when dialing wss:// peers (--tls-ca); the system's otherwise. */
  tlsCa?: string;
  /** The runtime's PRNG, in [0, 1): redial jitter. */
  random(): number;
}

export const federationLimits = {
  /** Messages kept per peer while no link is up; the engine resends anything that matters. */
  peerQueueMax: 256,
  /** Messages to one peer sent in one turn travel together, at most this many per WebSocket message. */
  batchMessagesMax: 1024,
  /** Queued messages older than this are not worth sending on reconnect. */
  peerQueueAgeMaxMs: 2_000,
  /** Bytes a link may have unsent before further messages to it are dropped. */
  peerBufferedBytesMax: 8 * 1024 * 1024,
  /** Both proofs must be exchanged within this time after the socket opens. */
  authTimeoutMs: 5_000,
  /** A dialed link pings this often and is dropped after deadAfterMs of silence (the accepting side pings too). */
  heartbeatMs: 5_000,
  deadAfterMs: 15_000,
  /** The accepting side's idle timeout, in seconds; it pings shortly before. */
  acceptedIdleSeconds: 20,
  backoffMinMs: 50,
  backoffMaxMs: 2_000,
  /** WebSocket close reasons are limited to 123 bytes. */
  closeReasonBytesMax: 123,
} as const;

/** A close reason the WebSocket layer will accept (<= 123 bytes of UTF-8). */
export function closeReason(text: string): string {
  const buf = Buffer.from(text);
  return buf.length <= federationLimits.closeReasonBytesMax ? text : buf.subarray(0, federationLimits.closeReasonBytesMax - 3).toString("utf8").replace(/\uFFFD$/, "") + "...";
}

/** Binary WebSocket payloads as bytes; undefined for text. */
export function binaryBytes(data: unknown): Uint8Array | undefined {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  return undefined;
}
