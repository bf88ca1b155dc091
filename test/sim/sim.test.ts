// The deterministic simulator over many seeds, every fault on (see simulator.ts).
//   npm test                  2,000 seeds
//   npm run test:long         100,000 seeds (DTX_LONG=1)
//   DTX_SIM_FROM=n            start the range at seed n instead of 1
//   DTX_SIM_SEED=n            run only seed n (DTX_SIM_TRACE=1 prints every event);
//                             `npm run sim:replay -- n` does the same outside the test runner
import { describe, expect, test } from "bun:test";
import { describeReport, runRangeParallel } from "./seed-runner.ts";
import { simulate } from "./simulator.ts";

const long = Boolean(process.env.DTX_LONG);
const from = Number(process.env.DTX_SIM_FROM ?? 1);
const only = process.env.DTX_SIM_SEED;
const seedsNormal = 2_000;
const seedsLong = 100_000;
/** The long run is split into test cases of this many seeds, so each reports and stays within a timeout. */
const chunk = 10_000;

async function expectNoViolation(start: number, count: number): Promise<void> {
  const began = performance.now();
  const report = await runRangeParallel(start, count);
  console.log(`sim seeds ${start}..${start + count - 1}: ${describeReport(report, performance.now() - began)}`);
  expect(report.seeds).toBe(count);
  expect(report.failures.map((f) => f.message)).toEqual([]);
}

describe("deterministic simulator", () => {
  if (only !== undefined) {
    test(`seed ${only} finds no violation`, () => {
      const r = simulate(Number(only), { trace: process.env.DTX_SIM_TRACE === "1" });
      console.log(JSON.stringify(r.stats));
      expect(r.violation?.message).toBeUndefined();
    });
    return;
  }
  if (!long) {
    test(`${seedsNormal} seeds with every fault on find no violation`, () => expectNoViolation(from, seedsNormal), 120_000);
    return;
  }
  for (let start = from; start < from + seedsLong; start += chunk) {
    test(`seeds ${start}..${start + chunk - 1} with every fault on find no violation`, () => expectNoViolation(start, chunk), 1_800_000);
  }
});
