// Protocol selection, every combination (DESIGN §4).
import { describe, expect, test } from "bun:test";
import { selectProtocol } from "../../src/txn/select.ts";

const consistencies = ["eventual", "strong", "immediate"] as const;
const availabilities = ["high", "medium", "low"] as const;
const supports = {
  both: [{ participantId: "p", supports2pc: true, supportsSaga: true }],
  only2pc: [{ participantId: "p", supports2pc: true, supportsSaga: false }],
  onlySaga: [{ participantId: "p", supports2pc: false, supportsSaga: true }],
  mixed: [
    { participantId: "p", supports2pc: true, supportsSaga: true },
    { participantId: "legacy", supports2pc: false, supportsSaga: true },
  ],
  neither: [{ participantId: "p", supports2pc: false, supportsSaga: false }],
} as const;
type Support = keyof typeof supports;

// The rule written out literally: for each consistency × availability, the result
// for participants [both, only2pc, onlySaga, mixed, neither]. X = PROTOCOL_UNSUPPORTED.
const table: Record<string, string> = {
  "eventual/high": "saga X saga saga X",
  "eventual/medium": "saga X saga saga X",
  "eventual/low": "saga X saga saga X",
  "strong/high": "saga X saga saga X",
  "strong/medium": "2pc 2pc saga saga X",
  "strong/low": "2pc 2pc saga saga X",
  "immediate/high": "2pc 2pc X X X",
  "immediate/medium": "2pc 2pc X X X",
  "immediate/low": "2pc 2pc X X X",
};
const order: Support[] = ["both", "only2pc", "onlySaga", "mixed", "neither"];
const rows = consistencies.flatMap((c) =>
  availabilities.flatMap((a) =>
    table[`${c}/${a}`].split(" ").map((want, i) => [c, a, order[i], want === "X" ? "PROTOCOL_UNSUPPORTED" : want] as const),
  ),
);

describe("protocol: auto", () => {
  test.each(rows)("consistency %s, availability %s, participants %s → %s", (c, a, s, want) => {
    const r = selectProtocol("auto", { consistency: c, availability: a }, [...supports[s]]);
    if (want === "PROTOCOL_UNSUPPORTED") {
      expect(r.ok).toBe(false);
      if (!r.ok) expect(r.error.code).toBe("PROTOCOL_UNSUPPORTED");
    } else {
      expect(r).toEqual({ ok: true, protocol: want as "2pc" | "saga" });
    }
  });

  test("no requirements given means eventual consistency: Saga", () => {
    expect(selectProtocol("auto", {}, [...supports.both])).toEqual({ ok: true, protocol: "saga" });
  });

  test("the error names the participants that lack the protocol", () => {
    const r = selectProtocol("auto", { consistency: "immediate" }, [...supports.mixed]);
    expect(!r.ok && r.error.message).toContain("legacy");
  });
});

describe("protocol: fixed", () => {
  test.each([
    ["2pc", "both", "2pc"],
    ["2pc", "onlySaga", "PROTOCOL_UNSUPPORTED"],
    ["saga", "both", "saga"],
    ["saga", "only2pc", "PROTOCOL_UNSUPPORTED"],
  ] as const)("protocol %s with participants %s → %s", (choice, s, want) => {
    const r = selectProtocol(choice, { consistency: "immediate", availability: "high" }, [...supports[s]]);
    expect(r.ok ? r.protocol : r.error.code).toBe(want);
  });
});
