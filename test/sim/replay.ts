// Replay one simulator seed with a full event trace:
//   bun test/sim/replay.ts <seed> [--broken=<rule, see BrokenRule in simulator.ts>] [--quiet]
import { type BrokenRule, simulate } from "./simulator.ts";

const args = process.argv.slice(2);
const seed = Number(args.find((a) => !a.startsWith("--")));
if (!Number.isInteger(seed) || seed < 0) {
  console.error("usage: bun test/sim/replay.ts <seed> [--broken=<rule, see BrokenRule in simulator.ts>] [--quiet]");
  process.exit(2);
}
const broken = args.find((a) => a.startsWith("--broken="))?.slice("--broken=".length) as BrokenRule | undefined;
const result = simulate(seed, { brokenRule: broken, trace: !args.includes("--quiet") });
console.log(JSON.stringify(result.stats));
if (result.violation) {
  console.log(result.violation.message);
  process.exit(1);
}
console.log(`seed ${seed}: no violation`);
