// Schemas of the orchestrated API (createTransaction / addParticipant /
// execute) and of service callbacks (dtx.register).
import { z } from "zod";

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

export const participantSpec = z.strictObject({
  participantId,
  /** http(s)://… (the seed's HTTP protocol), service:<name> (dtx.register), or store: (this sidecar's store). */
  endpoint: z
    .string()
    .max(2048)
    .refine((e) => /^https?:\/\/./.test(e) || /^service:[A-Za-z0-9_.-]{1,64}$/.test(e) || e === "store:", "endpoint must be http(s)://…, service:<name> or store:"),
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
