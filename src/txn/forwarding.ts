// Deciding a transaction another sidecar coordinates: a client may commit or roll
// back any prepared name on any sidecar (DESIGN §4). This node asks the coordinator
// (`decide`) and relays its answer (`decided`); a decision another sidecar's client
// asked of this node is answered back the same way.
import { ErrorCode, wireError } from "../protocol/errors.ts";
import { timing } from "../limits.ts";
import type { Outcome } from "../wal/records.ts";
import { type Engine, FORWARDED, type Peer } from "./engine.ts";
import type { ReplyBody, ReplyTo } from "./types.ts";

/** Ask the coordinator: the one a local branch names, else every configured peer. */
export function forwardDecision(e: Engine, name: string, outcome: Outcome, from: ReplyTo, now: number) {
  let coordinator: string | undefined;
  for (const b of e.byName.get(name) ?? []) if (b.coordinator !== e.id) coordinator = b.coordinator;
  if (!coordinator) for (const b of e.reader.branchesOf(name)) if (b.coordinator !== e.id) coordinator = b.coordinator;
  const targets = coordinator ? [coordinator] : e.peers;
  if (targets.length === 0) return e.fail(from, wireError(ErrorCode.NOT_FOUND, `no transaction "${name}" coordinated by sidecar ${e.id}, and it has no peers to ask`));
  const req = `${e.id}.${e.bootId}.f${(++e.forwardSeq).toString(36)}`;
  // The coordinator answers within its ackWaitMs; the margin covers the two hops.
  e.forwardedOut.set(req, { to: from, name, asked: targets.length, notFound: 0, deadline: now + e.ackWaitMs + timing.forwardedDecisionMarginMs });
  for (const to of targets) e.send(to, { t: "decide", name, outcome, req, from: e.id });
}

/** Another sidecar's client asks this node to decide: where its answer goes. */
export function acceptForwarded(e: Engine, msg: Peer<"decide">): ReplyTo {
  const id = ++e.forwardSeq;
  e.forwardedIn.set(id, { peer: msg.from, req: msg.req, name: msg.name });
  return { conn: FORWARDED, id };
}

/** The answer to another sidecar's client goes back over the federation. */
export function onDecided(e: Engine, msg: Peer<"decided">) {
  const f = e.forwardedOut.get(msg.req);
  if (!f) return; // answered already, or timed out
  const body = msg.body as ReplyBody;
  const notFound = !body.ok && (body as { error?: { code?: string } }).error?.code === ErrorCode.NOT_FOUND;
  if (notFound && ++f.notFound < f.asked) return; // wait for the sidecar that coordinates it
  e.forwardedOut.delete(msg.req);
  if (notFound) return e.fail(f.to, wireError(ErrorCode.NOT_FOUND, `no sidecar among ${f.asked} asked coordinates a transaction "${f.name}"`));
  e.reply(f.to, body);
}

/** A forwarded decision whose coordinator did not answer by its deadline: its outcome is unknown here. */
export function expireForwarded(e: Engine, now: number) {
  for (const [req, f] of e.forwardedOut) {
    if (now < f.deadline) continue;
    e.forwardedOut.delete(req);
    e.fail(f.to, wireError(ErrorCode.OUTCOME_UNKNOWN, `the sidecar coordinating "${f.name}" did not answer in time; the decision may or may not have been made: ask status, or retry`));
  }
}
