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

export function decodeToken(token: string): ContextToken | undefined {
  try {
    const parsed = tokenSchema.safeParse(JSON.parse(Buffer.from(token, "base64url").toString("utf8")));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}
