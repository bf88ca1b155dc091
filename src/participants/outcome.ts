// What one call to a participant came back with, for the orchestrator.
export interface CallOutcome {
  /** ok; fail: a definitive no (a vote to abort, a business refusal); retry: try again later. */
  outcome: "ok" | "fail" | "retry";
  result?: unknown;
  error?: string;
  /**
   * false: the call provably never reached the participant (connection refused, no such host, the service
   * is not connected), so it applied nothing. Absent: it may have (a timeout, a reset, a lost answer).
   */
  reached?: false;
  /** A stable code for why, when there is one (PARTICIPANT_UNAVAILABLE, PEER_UNREACHABLE). */
  code?: string;
}
