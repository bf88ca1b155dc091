// docs/protocol.md's field tables are the zod schemas' (scripts/protocol-doc.ts renders them): a field
// added, removed, retyped or made optional in src/protocol fails here until the document says so.
import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { docPath, render, todo } from "../../scripts/protocol-doc.ts";

const doc = readFileSync(docPath, "utf8");
const { problems, stale } = render(doc);

test("docs/protocol.md describes every request, reply, shape and error code once", () => {
  expect(problems.filter((p) => !p.includes(todo))).toEqual([]);
});

test("docs/protocol.md's field tables say what the schemas say (npx bun scripts/protocol-doc.ts --write renders them)", () => {
  expect(stale).toEqual([]);
});

test("every field in docs/protocol.md's tables says what it means", () => {
  expect(problems.filter((p) => p.includes(todo))).toEqual([]);
});
