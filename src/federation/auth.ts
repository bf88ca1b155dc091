// Peer authentication: each side proves it holds the shared secret by an
// HMAC-SHA256 over a nonce the other side just chose (DESIGN §3). Nothing a
// peer sends reaches the engine before both proofs have been checked.
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { z } from "zod";
import { FEDERATION_VERSION } from "../limits.ts";
import { sidecarId } from "../protocol/messages.ts";

export const nonceHexLength = 32;
const nonce = z.string().regex(new RegExp(`^[0-9a-f]{${nonceHexLength}}$`), `nonce must be ${nonceHexLength} lowercase hex digits`);
const mac = z.string().regex(/^[0-9a-f]{64}$/, "mac must be 64 lowercase hex digits (HMAC-SHA256)");
const version = z.number().int();

/** Accepting side, first message: who it is and the nonce the dialer must sign. */
export const challengeMessage = z.object({ t: z.literal("challenge"), v: version, id: sidecarId, nonce });
/** Dialer's answer: its id, its proof over the challenge, and its own nonce for the accepting side to sign. */
export const authMessage = z.object({ t: z.literal("auth"), v: version, id: sidecarId, mac, nonce });
/** Accepting side's proof over the dialer's nonce; after it both directions carry peer messages. */
export const welcomeMessage = z.object({ t: z.literal("welcome"), id: sidecarId, mac });
export type ChallengeMessage = z.infer<typeof challengeMessage>;
export type AuthMessage = z.infer<typeof authMessage>;
export type WelcomeMessage = z.infer<typeof welcomeMessage>;

/** WebSocket close codes of the federation link (4000–4999 are the application's). */
export const CloseCode = {
  normal: 1000,
  goingAway: 1001,
  unsupportedData: 1003,
  tooLarge: 1009,
  unauthorized: 4001,
  protocolVersion: 4002,
  badHandshake: 4003,
  replaced: 4004,
} as const;

export function newNonce(): string {
  return randomBytes(nonceHexLength / 2).toString("hex");
}

/** HMAC-SHA256(secret, nonce + id + protocolVersion), hex. The nonce has a fixed length, so the concatenation is unambiguous. */
export function peerMac(secret: string, nonceHex: string, id: string, protocolVersion: number = FEDERATION_VERSION): string {
  return createHmac("sha256", secret).update(`${nonceHex}${id}${protocolVersion}`).digest("hex");
}

/** Constant-time comparison of two hex macs. */
export function macMatches(expected: string, given: string): boolean {
  const a = Buffer.from(expected, "hex");
  const b = Buffer.from(given, "hex");
  return a.length === b.length && a.length > 0 && timingSafeEqual(a, b);
}

/** Without a configured secret the empty secret is used, and only between loopback addresses. */
export function isLoopbackAddress(address: string): boolean {
  const a = address.toLowerCase();
  return a === "localhost" || a === "::1" || a === "[::1]" || a.startsWith("127.") || a.startsWith("::ffff:127.");
}
