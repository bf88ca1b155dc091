// One namespace for both faces: what holds a transaction name on this node, and
// which branch ids a client may choose for itself.
import { ErrorCode, type WireError, wireError } from "../protocol/errors.ts";
import { localBranchCharsMax } from "../protocol/sql-branch.ts";
import { isTerminal } from "../wal/records.ts";
import type { Engine } from "./engine.ts";
import type { BranchState } from "./state.ts";

/** The part after "<sidecar>." of a branch id a client chose: no dot, so never one this node makes (<boot>.<seq>). */
const clientBranchLocal = /^[A-Za-z0-9_-]+$/;

/**
 * What holds `name` on this node, if anything: an unfinished transaction of that name (plain or
 * orchestrated, `failed` included) or an unfinished branch of one (in doubt, say). One namespace for
 * both faces, so `status`, `list` and `resolve` can never mean two things. `joining`: the incarnation a
 * join names; that transaction itself is no clash (null: a token without one clashes only with the others).
 */
export function nameHeld(e: Engine, name: string, joining?: string | null): string | undefined {
  const c = e.coords.get(name);
  if (c && !isTerminal(c.state) && (joining === undefined || (joining !== null && c.ownBranch !== joining))) return `transaction "${name}" is ${c.state} on sidecar ${e.id}`;
  if (e.orchestrator.active(name)) return `orchestrated transaction "${name}" is not finished on sidecar ${e.id}`;
  if (e.hosted.holdsName(name)) return `sidecar ${e.id} holds a prepared participant of another sidecar's orchestrated transaction "${name}", waiting for its decision`;
  for (const b of e.byName.get(name) ?? []) {
    // A joining branch is in no transaction yet (its enlist may still be refused): it holds nothing.
    if (b.state === "committed" || b.state === "rolled_back" || b.state === "joining") continue;
    if (joining !== undefined && (joining === null || b.incarnation === undefined || b.incarnation === joining)) continue;
    return `sidecar ${e.id} holds an unfinished (${branchStateName(b.state)}) branch of another transaction "${name}", coordinated by ${b.coordinator}`;
  }
  return undefined;
}

export function nameInUse(held: string): WireError {
  return wireError(ErrorCode.NAME_IN_USE, `${held}; a name is unique while its transaction is not finished (failed ones until resolved)`);
}

/** A branch id a client chose (begin, join): this sidecar's id, a dot, a short local part; not yet used by the name. */
export function clientBranchError(e: Engine, name: string, branch: string | undefined): WireError | undefined {
  if (branch === undefined) return undefined;
  const local = branch.startsWith(e.id) && branch[e.id.length] === "." ? branch.slice(e.id.length + 1) : "";
  if (!clientBranchLocal.test(local) || local.length > localBranchCharsMax) {
    return wireError(ErrorCode.BAD_REQUEST, `branch: must be "${e.id}." and 1 to ${localBranchCharsMax} of [A-Za-z0-9_-]`);
  }
  if (e.branch(name, branch)) return wireError(ErrorCode.BAD_REQUEST, `branch: ${branch} is already a branch of "${name}" here; choose a fresh id`);
  return undefined;
}

function branchStateName(state: BranchState): string {
  return state === "done" || state === "joining" ? "active" : state;
}
