// What the client refuses before it sends anything, with the code the sidecar would answer.
import type { z } from "zod";
import { encodeBody } from "../src/protocol/frame.ts";
import { describeZodError } from "../src/protocol/messages.ts";
import { callLabel, keyProblem, type Refusal } from "../src/protocol/value.ts";
import { ProtocolError } from "./errors.ts";

const reasonLengthMax = 1000;

/** The same schema the sidecar applies, so a bad option is refused here, before anything is sent, with the same code. */
export function checked(schema: z.ZodType, value: unknown, what: string): void {
  const r = schema.safeParse(value);
  if (!r.success) throw new ProtocolError("BAD_REQUEST", `${what}: ${describeZodError(r.error)}`);
}

/** Options objects of the client itself: a key nobody reads is refused by name, never ignored. */
export function unknownKeys(value: unknown, known: readonly string[], what: string): void {
  if (typeof value !== "object" || value === null) throw new ProtocolError("BAD_REQUEST", `${what}: expected an object`);
  const unknown = Object.keys(value).filter((k) => !known.includes(k));
  if (unknown.length) throw new ProtocolError("BAD_REQUEST", `${what}: ${unknown.join(", ")}: unknown field${unknown.length > 1 ? "s" : ""} (known: ${known.join(", ")})`);
}

export function checkKey(call: string, key: unknown): void {
  const bad = keyProblem(key);
  if (bad) throw new ProtocolError("BAD_REQUEST", `${callLabel(call, key)}: ${bad}`);
}

export function refusalError(r: Refusal): ProtocolError {
  return new ProtocolError(r.code, r.message);
}

export const encodedBytes = (v: unknown) => encodeBody(v).length;

/** An error as the reason a rollback or a failed callback sends. */
export function reasonOf(err: unknown): string {
  return String(err instanceof Error ? err.message : err).slice(0, reasonLengthMax);
}
