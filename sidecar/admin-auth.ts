// Who may use the transaction API (/v1/… but federation) and so the
// dashboard's data (DESIGN §3). The rule follows the bind, not the caller's
// address: a loopback sidecar without a token answers anyone on the host; a
// sidecar given --admin-token-file answers only its bearer token, on loopback
// too; a sidecar beyond loopback without one answers no one (401 saying how
// to start it). docs/decisions.md, "Admin API access".
import { createHash, timingSafeEqual } from "node:crypto";
import { ErrorCode, wireError } from "../src/protocol/errors.ts";
import { ConfigError, isLoopback } from "./config.ts";

/** The shortest admin token accepted: a token one can guess is no lock. */
export const adminTokenCharsMin = 16;

/** A refusal (401) for a request that may not use the API, or undefined to let it through. */
export type AdminGate = (req: Request) => Response | undefined;

const sendIt = "send it as the header Authorization: Bearer <token>";
const whereFrom = "the token is the contents of the file this sidecar was started with as --admin-token-file (env DTX_ADMIN_TOKEN_FILE)";

export function adminGate(host: string, token: string | undefined): AdminGate {
  if (token === undefined) {
    if (isLoopback(host)) return () => undefined;
    const closed =
      `this sidecar listens beyond loopback (--host ${host}) and was started without --admin-token-file, so its transaction API and dashboard answer no one; ` +
      `restart it with --admin-token-file F (env DTX_ADMIN_TOKEN_FILE), F holding a token of at least ${adminTokenCharsMin} characters, and ${sendIt}. ` +
      "On the sidecar's host, dtx list / status / peers answer over the Unix socket without a token";
    return () => unauthorized(closed, 'Bearer realm="dtx"');
  }
  if (token.length < adminTokenCharsMin) {
    throw new ConfigError(`the --admin-token-file holds ${token.length} characters; put a token of at least ${adminTokenCharsMin} in it (e.g. openssl rand -hex 32)`);
  }
  const expected = digest(token);
  return (req) => {
    const given = bearerToken(req.headers.get("authorization"));
    if (given === undefined) return unauthorized(`this sidecar's transaction API needs its admin token: ${sendIt}; ${whereFrom}`, 'Bearer realm="dtx"');
    // Digests have one length, so the comparison takes the same time whatever was sent.
    if (!timingSafeEqual(digest(given), expected)) {
      return unauthorized(`the bearer token does not match this sidecar's admin token; ${whereFrom}, and ${sendIt}`, 'Bearer realm="dtx", error="invalid_token"');
    }
    return undefined;
  };
}

/** The token of an `Authorization: Bearer <token>` header (scheme case-insensitive, RFC 6750), or undefined. */
function bearerToken(header: string | null): string | undefined {
  const m = header ? /^Bearer +(\S+) *$/i.exec(header) : null;
  return m ? m[1] : undefined;
}

function digest(token: string): Buffer {
  return createHash("sha256").update(token).digest();
}

function unauthorized(message: string, challenge: string): Response {
  return Response.json(wireError(ErrorCode.UNAUTHORIZED, message), {
    status: 401,
    headers: { "www-authenticate": challenge, "cache-control": "no-store" },
  });
}
