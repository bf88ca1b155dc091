// The engine rule for one step (DESIGN §2), as data: which records to append,
// which messages this node handles at once, and which effects wait for which
// log position. Pure: no I/O, no promises. The runtime carries a plan out
// (runtime.ts), in the sidecar and in the simulator alike, so the simulator's
// evidence is about this function and the runtime that follows it.
import type { PeerMessage } from "../protocol/messages.ts";
import type { Effect } from "../txn/types.ts";
import type { LogRecord } from "../wal/records.ts";

/**
 * What a batch waits for: nothing, the log durable up to where it was before this step's records
 * (what earlier steps appended), or up to the end of this step's records.
 */
export type Wait = "nothing" | "before" | "after";

export interface EffectBatch {
  wait: Wait;
  effects: Effect[];
}

/**
 * Deliberately broken plans, only for the simulator's proof that its checks catch them (broken.test.ts):
 * - send-before-persist: nothing waits for the log;
 * - unpersisted-step-skips-wait: a step that logs nothing does not wait for what earlier steps logged;
 * - call-before-persist: participant calls of orchestrated transactions wait for nothing.
 */
export type BrokenPlan = "send-before-persist" | "unpersisted-step-skips-wait" | "call-before-persist";

export interface EffectPlan {
  /** The step's records, appended together: those its effects wait for first, then the lazy ones. */
  records: LogRecord[];
  /** Something waits for the records (the hint Wal.write takes: when to sync, never whether). */
  waited: boolean;
  /** Replies marked `immediate` or `unlogged`: queued before `local` is handled. */
  replies: readonly EffectBatch[];
  /** Messages to this node: they never leave the process, so they are handled at once, after the records are appended. */
  local: readonly PeerMessage[];
  /** The step's other effects (sends, replies, afters, calls, finish_sql), queued after `local` is handled. */
  effects: readonly EffectBatch[];
}

/** Shared by every plan with nothing of a kind (most steps): frozen, so no caller can fill it. */
const none = Object.freeze([]) as never[];

export function planEffects(effects: readonly Effect[], self: string, broken?: BrokenPlan): EffectPlan {
  let durable: LogRecord[] | undefined;
  let lazy: LogRecord[] | undefined;
  let local: PeerMessage[] | undefined;
  let immediate: Effect[] | undefined;
  let unlogged: Effect[] | undefined;
  let rest: Effect[] | undefined;
  for (const e of effects) {
    if (e.k === "persist") (e.lazy ? (lazy ??= []) : (durable ??= [])).push(e.rec);
    else if (e.k === "send" && e.to === self) (local ??= []).push(e.msg);
    else if (e.k === "reply" && e.immediate) (immediate ??= []).push(e);
    else if (e.k === "reply" && e.unlogged) (unlogged ??= []).push(e);
    else (rest ??= []).push(e);
  }
  const skipAll = broken === "send-before-persist";
  const replies: EffectBatch[] = immediate || unlogged ? [] : none;
  // An immediate reply depends on nothing any step logged; an unlogged one only on what earlier steps did.
  if (immediate) replies.push({ wait: "nothing", effects: immediate });
  if (unlogged) replies.push({ wait: skipAll ? "nothing" : "before", effects: unlogged });
  // The rest waits for this step's records and everything before them; lazy records are nobody's reason to wait.
  let wait: Wait = durable ? "after" : "before";
  if (skipAll || (broken === "unpersisted-step-skips-wait" && !durable)) wait = "nothing";
  let batches: EffectBatch[] = none;
  if (rest && broken === "call-before-persist" && rest.some((e) => e.k === "call")) {
    const others = rest.filter((e) => e.k !== "call");
    batches = [{ wait: "nothing", effects: rest.filter((e) => e.k === "call") }];
    if (others.length) batches.push({ wait, effects: others });
  } else if (rest) batches = [{ wait, effects: rest }];
  return {
    records: lazy ? (durable ? durable.concat(lazy) : lazy) : (durable ?? none),
    waited: durable !== undefined && (rest !== undefined || local !== undefined),
    replies,
    local: local ?? none,
    effects: batches,
  };
}
