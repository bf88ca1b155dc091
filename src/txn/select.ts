// Protocol selection (DESIGN §4), fixed when a transaction begins and recorded in its log.
import { ErrorCode, type WireError, wireError } from "../protocol/errors.ts";
import type { Protocol } from "../wal/records.ts";

export interface Requirements {
  consistency?: "eventual" | "strong" | "immediate";
  availability?: "high" | "medium" | "low";
}

export interface Capabilities {
  participantId?: string;
  supports2pc: boolean;
  supportsSaga: boolean;
}

export type Selection = { ok: true; protocol: Protocol } | { ok: false; error: WireError };

export function selectProtocol(choice: "auto" | Protocol, req: Requirements, participants: Capabilities[]): Selection {
  const lacking = (p: Protocol) => participants.filter((x) => !(p === "2pc" ? x.supports2pc : x.supportsSaga));
  const require = (p: Protocol, why: string): Selection => {
    const missing = lacking(p);
    if (missing.length === 0) return { ok: true, protocol: p };
    const ids = missing.map((m) => m.participantId ?? "?").join(", ");
    return { ok: false, error: wireError(ErrorCode.PROTOCOL_UNSUPPORTED, `${why} needs ${p === "2pc" ? "2PC" : "Saga"}, which ${ids} do not support`) };
  };
  if (choice !== "auto") return require(choice, `protocol "${choice}"`);
  const consistency = req.consistency ?? "eventual";
  if (consistency === "immediate") return require("2pc", 'consistency "immediate"');
  if (consistency === "strong" && lacking("2pc").length === 0 && req.availability !== "high") return { ok: true, protocol: "2pc" };
  return require("saga", `consistency "${consistency}" with availability "${req.availability ?? "medium"}"`);
}
