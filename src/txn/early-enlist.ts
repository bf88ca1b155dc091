// Enlists that overtook their begin. The client sends begin before it hands out
// the token, but the token's enlist can still be read first (another socket, same
// turn): the coordinator parks it, answers it when the begin arrives, and refuses
// it as unknown after enlistParkMs (the joiner asks again while it is young).
import { limits, timing } from "../limits.ts";
import type { Engine, Peer } from "./engine.ts";

/** Hold an enlist for a name not begun here; false when parkedEnlistsMax are held already. */
export function parkEnlist(e: Engine, msg: Peer<"enlist">, now: number): boolean {
  if (e.parkedCount >= limits.parkedEnlistsMax) return false;
  const list = e.parkedEnlists.get(msg.name);
  if (list) list.push({ msg, at: now });
  else e.parkedEnlists.set(msg.name, [{ msg, at: now }]);
  e.parkedCount++;
  return true;
}

/** The enlists parked for `name`, oldest first, taken out to be answered now that it is begun. */
export function takeParked(e: Engine, name: string): Peer<"enlist">[] {
  const parked = e.parkedEnlists.get(name);
  if (!parked) return [];
  e.parkedEnlists.delete(name);
  e.parkedCount -= parked.length;
  return parked.map((p) => p.msg);
}

export function refuseUnknown(e: Engine, msg: Peer<"enlist">) {
  // Never begun there, or lost before it prepared (a coordinator crash): either way rolled back (presumed abort).
  const why = `sidecar ${e.id} coordinates no active transaction "${msg.name}" that this token names (it was rolled back, or never begun)`;
  e.send(msg.from, { t: "enlist_refused", name: msg.name, branch: msg.branch, from: e.id, reason: why, unknown: true, code: "TRANSACTION_ABORTED" });
}

/** Parked enlists whose begin did not come within enlistParkMs are refused as unknown (the joiner asks again while it is young). */
export function expireParkedEnlists(e: Engine, now: number) {
  for (const [name, list] of e.parkedEnlists) {
    // Oldest first: refuse the expired prefix, keep the rest.
    let expired = 0;
    while (expired < list.length && now - list[expired].at >= timing.enlistParkMs) refuseUnknown(e, list[expired++].msg);
    if (!expired) continue;
    e.parkedCount -= expired;
    if (expired === list.length) e.parkedEnlists.delete(name);
    else list.splice(0, expired);
  }
}
