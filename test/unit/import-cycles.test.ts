// No module of src, client or sidecar imports itself through others, type-only imports included.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { importCycles } from "../../scripts/import-cycles.ts";

const root = resolve(import.meta.dir, "../..");

describe("import cycles", () => {
  const dir = mkdtempSync(join(tmpdir(), "dtx-cycles-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test("a cycle closed by a type-only import is found", () => {
    writeFileSync(join(dir, "a.ts"), 'import type { B } from "./b.ts";\nexport const a = 1;\nexport type A = B;\n');
    writeFileSync(join(dir, "b.ts"), '// import { nothing } from "./c.ts";\nimport {\n  a,\n} from "./a.ts";\nexport type B = typeof a;\n');
    writeFileSync(join(dir, "c.ts"), 'export const url = "ws://x"; // not an import from "./a.ts"\n');
    expect(importCycles(["."], dir)).toEqual([["a.ts", "b.ts", "a.ts"]]);
  });

  test("src, client and sidecar have none", () => {
    expect(importCycles(["src", "client", "sidecar"], root)).toEqual([]);
  });
});
