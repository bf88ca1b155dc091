// Schemas of the orchestrated API (createTransaction / addParticipant /
// execute) and of service callbacks (dtx.register).
import { z } from "zod";
import { checkValue, keyProblem, keyText, type Refusal } from "./value.ts";

export const retryPolicy = z.strictObject({
  /** Calls of one operation before it gives up. */
  attempts: z.number().int().min(1).max(1000).default(5),
  backoffMs: z.number().int().min(1).max(60_000).default(100),
  maxBackoffMs: z.number().int().min(1).max(600_000).default(2_000),
  /** Total time one operation may spend retrying (the retry budget). */
  budgetMs: z.number().int().min(1).max(7 * 24 * 3600_000).default(30_000),
  /** How long one call may take before it counts as failed and is retried. */
  callTimeoutMs: z.number().int().min(1).max(600_000).default(10_000),
});
export type RetryPolicy = z.infer<typeof retryPolicy>;

export const participantId = z.string().regex(/^[A-Za-z0-9_.:-]{1,64}$/, "participantId must match ^[A-Za-z0-9_.:-]{1,64}$");

/** The characters of a sidecar id (--id), of a registered service's name, and the endpoints that name them. */
export const sidecarIdChars = "[A-Za-z0-9_.-]{1,32}";
const serviceNameChars = "[A-Za-z0-9_.-]{1,64}";
const serviceEndpoint = new RegExp(`^service:(${serviceNameChars})(?:@(${sidecarIdChars}))?$`);
const storeEndpoint = new RegExp(`^store:(${sidecarIdChars})?$`);
/** What a participant's sidecar is asked to run: a service registered on it, or its store (no sidecar id: it is the one asked). */
export const hostedEndpointPattern = new RegExp(`^(service:${serviceNameChars}|store:)$`);

/**
 * What an endpoint names. `sidecar`: the sidecar the service is registered on or whose store it is, when
 * the endpoint names one (`service:<name>@<id>`, `store:<id>`); absent, it is the orchestrating sidecar.
 */
export type Endpoint = { kind: "http" } | { kind: "service"; service: string; sidecar?: string } | { kind: "store"; sidecar?: string };

export function parseEndpoint(endpoint: string): Endpoint | undefined {
  if (/^https?:\/\/./.test(endpoint)) return { kind: "http" };
  const service = serviceEndpoint.exec(endpoint);
  if (service) return service[2] === undefined ? { kind: "service", service: service[1] } : { kind: "service", service: service[1], sidecar: service[2] };
  const store = storeEndpoint.exec(endpoint);
  if (store) return store[1] === undefined ? { kind: "store" } : { kind: "store", sidecar: store[1] };
  return undefined;
}

export const participantSpec = z.strictObject({
  participantId,
  /**
   * http(s)://… (the seed's HTTP protocol), service:<name> (dtx.register on this sidecar), service:<name>@<sidecar-id>
   * (registered on that peer), store: (this sidecar's store) or store:<sidecar-id> (that peer's).
   */
  endpoint: z
    .string()
    .max(2048)
    .refine((e) => parseEndpoint(e) !== undefined, "endpoint must be http(s)://…, service:<name>[@<sidecar-id>] or store:[<sidecar-id>]"),
  supports2pc: z.boolean().default(true),
  supportsSaga: z.boolean().default(true),
  /** Name of the compensating action, passed to the participant (the seed's compensation_action). */
  compensationAction: z.string().max(200).optional(),
  action: z.string().max(200).optional(),
  /** Sent to the participant with every call. For store: { put?: {key: value}, delete?: [key] }. */
  payload: z.unknown().optional(),
  retryPolicy: retryPolicy.optional(),
});
export type ParticipantSpec = z.infer<typeof participantSpec>;

export const storePayload = z.strictObject({
  put: z.record(z.string(), z.unknown()).optional(),
  delete: z.array(z.string()).optional(),
});

/**
 * Why createTransaction's context or a participant's payload cannot be logged exactly (value.ts), or
 * undefined; a store: payload's keys must be store keys. The client asks before sending, the sidecar again.
 */
export function orchestratedValueRefusal(
  req: { op: "o_create"; name: string; context?: unknown } | { op: "o_add"; participant: { participantId: string; endpoint: string; payload?: unknown } },
  encodedBytes: (v: unknown) => number,
): Refusal | undefined {
  if (req.op === "o_create") {
    if (req.context === undefined) return undefined;
    const r = checkValue(req.context, () => `createTransaction(${JSON.stringify(req.name)})`, encodedBytes, "context");
    return typeof r === "number" ? undefined : r;
  }
  const { participantId, endpoint, payload } = req.participant;
  if (payload === undefined) return undefined;
  const what = () => `addParticipant(${JSON.stringify(participantId)})`;
  const r = checkValue(payload, what, encodedBytes, "payload");
  if (typeof r !== "number") return r;
  if (!endpoint.startsWith("store:") || typeof payload !== "object" || payload === null) return undefined;
  const { put, delete: deletes } = payload as { put?: unknown; delete?: unknown };
  const keys = [...(put && typeof put === "object" ? Object.keys(put) : []), ...(Array.isArray(deletes) ? deletes : [])];
  for (const k of keys) {
    const bad = keyProblem(k);
    if (bad) return { code: "BAD_REQUEST", message: `${what()}: store payload key ${keyText(k)}: ${bad}` };
  }
  return undefined;
}
