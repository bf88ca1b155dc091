// The context token a service passes to another service so it can join.
import { z } from "zod";
import { sidecarId, txnName } from "./messages.ts";

const tokenSchema = z.object({
  v: z.literal(1),
  name: txnName,
  coordinator: sidecarId,
  timeoutMs: z.number().int().positive().optional(),
  /** The coordinator's own branch id: names this transaction, not an earlier one with the same name. */
  incarnation: z.string().max(96).optional(),
  traceparent: z.string().max(128).optional(),
});
export type ContextToken = z.infer<typeof tokenSchema>;

export function encodeToken(t: ContextToken): string {
  return Buffer.from(JSON.stringify(t)).toString("base64url");
}

/** The token of a transaction begun on `coordinator` with `branch` as its own branch. The sidecar and the client make the same one. */
export function contextToken(name: string, coordinator: string, branch: string, timeoutMs: number, traceparent?: string): string {
  return encodeToken({ v: 1, name, coordinator, timeoutMs, traceparent, incarnation: branch });
}

export function decodeToken(token: string): ContextToken | undefined {
  try {
    const parsed = tokenSchema.safeParse(JSON.parse(Buffer.from(token, "base64url").toString("utf8")));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}
