// The field tables of docs/protocol.md, rendered from the zod schemas of src/protocol, so the document
// cannot drift from what the sidecar accepts and answers. Each table sits between
//   <!-- schema: <block> -->  and  <!-- /schema -->
// where <block> is `request <op>`, `reply <op>`, `shape <id>`, `envelope`, `types` or `codes`. Every column but the
// last comes from the schemas; the last (what the field means) is the writer's, kept by row.
//   npx bun scripts/protocol-doc.ts --write   re-render every table in place (a new row's meaning is TODO)
//   npx bun scripts/protocol-doc.ts           check only: print what differs, exit 1 if anything does
// test/unit/protocol-doc.test.ts runs the check.
import { readFileSync, writeFileSync } from "node:fs";
import { resolve } from "node:path";
import { z } from "zod";
import { ErrorCode, wireError, wireErrorSchema } from "../src/protocol/errors.ts";
import { branchId, clientRequest, key, requirementsSchema, sidecarId, sqlDbName, txnName, txnState } from "../src/protocol/messages.ts";
import { participantId, participantSpec, retryPolicy } from "../src/protocol/orchestration.ts";
import { callbackFrame, replies } from "../src/protocol/replies.ts";

export const docPath = resolve(import.meta.dir, "../docs/protocol.md");
export const todo = "TODO";

type Schema = z.ZodType;
type Io = "request" | "reply";

/** A type or shape with a name of its own: referenced by a link wherever it appears, described once at `home`. */
interface Named {
  id: string;
  schema: Schema;
  /** The block that describes it. */
  home: string;
  /** How a reference reads. */
  title: string;
  /** Which side sends it: requests are strict, replies may grow fields. */
  io: Io;
}

const statusParticipant = replies.status.shape.participants.element;
const named: Named[] = [
  ...(
    [
      ["txn-name", txnName],
      ["branch-id", branchId],
      ["sidecar-id", sidecarId],
      ["key", key],
      ["db-name", sqlDbName],
      ["participant-id", participantId],
      ["txn-state", txnState],
    ] as const
  ).map(([id, schema]): Named => ({ id, schema, home: "types", title: id, io: "request" })),
  shape("requirements", requirementsSchema, "requirements", "request"),
  shape("participant", participantSpec, "participant", "request"),
  shape("retry-policy", retryPolicy, "retry policy", "request"),
  shape("error", wireErrorSchema, "error", "reply"),
  shape("callback", callbackFrame, "callback frame", "reply"),
  shape("status", replies.status, "status", "reply"),
  shape("branch-row", statusParticipant.options[0], "2PC branch", "reply"),
  shape("orchestrated-row", statusParticipant.options[1], "orchestrated participant's status", "reply"),
  shape("execute-result", replies.o_execute, "execute result", "reply"),
  shape("orchestrated-participant", replies.o_execute.shape.participants.element, "orchestrated participant", "reply"),
  { id: "reply-commit", schema: replies.commit, home: "reply commit", title: "commit's reply", io: "reply" },
  { id: "reply-rollback", schema: replies.rollback, home: "reply rollback", title: "rollback's reply", io: "reply" },
];

function shape(id: string, schema: Schema, title: string, io: Io): Named {
  return { id: `shape-${id}`, schema, home: `shape ${id}`, title, io };
}

const requestByOp = new Map<string, z.ZodObject>(clientRequest.options.map((o) => [(o.shape.op as z.ZodLiteral<string>).value, o as unknown as z.ZodObject]));

/** Every block the document must have, and what each renders from. */
export function blocks(): Map<string, { schema?: Schema; io?: Io }> {
  const all = new Map<string, { schema?: Schema; io?: Io }>();
  for (const [op, schema] of requestByOp) all.set(`request ${op}`, { schema, io: "request" });
  for (const [op, schema] of Object.entries(replies)) all.set(`reply ${op}`, { schema, io: "reply" });
  for (const n of named) if (n.home.startsWith("shape ")) all.set(n.home, { schema: n.schema, io: n.io });
  all.set("envelope", {});
  all.set("types", {});
  all.set("codes", {});
  return all;
}

// ---- rendering ------------------------------------------------------------------

const json = (s: Schema, io: Io) => JSON.stringify(z.toJSONSchema(s, { unrepresentable: "any", io: io === "request" ? "input" : "output" }));
const cell = (s: string) => s.replaceAll("|", "\\|");
const code = (s: string) => `\`${s}\``;

function namedOf(s: Schema, io: Io): Named | undefined {
  return named.find((n) => n.schema === s) ?? (s instanceof z.ZodObject ? named.find((n) => n.schema instanceof z.ZodObject && json(n.schema, io) === json(s, io)) : undefined);
}

const link = (n: Named) => (n.home === "types" ? `[${n.title}](#types)` : `[${n.title}](#${n.id})`);

/** A scalar: what JSON Schema says of it, in a few words. */
function leafText(s: Schema, io: Io): string {
  const j = z.toJSONSchema(s, { unrepresentable: "any", io: io === "request" ? "input" : "output" }) as Record<string, any>;
  const custom = (s.def as { checks?: { _zod: { def: { check: string } } }[] }).checks?.some((c) => c._zod.def.check === "custom");
  const rule = custom ? ", and a rule its meaning states" : "";
  if ("const" in j) return code(JSON.stringify(j.const));
  if (j.enum) return j.enum.map((v: unknown) => code(JSON.stringify(v))).join(" or ");
  switch (j.type) {
    case undefined:
      if (Object.keys(j).filter((k) => k !== "$schema").length === 0) return "[any value](#values)";
      break;
    case "boolean":
      return "bool";
    case "string": {
      if (j.pattern) return `string ${code(j.pattern)}${rule}`;
      const len = j.minLength !== undefined && j.maxLength !== undefined ? `, ${j.minLength}–${j.maxLength} chars` : j.maxLength !== undefined ? `, ≤ ${j.maxLength} chars` : j.minLength !== undefined ? `, ≥ ${j.minLength} chars` : "";
      return `string${len}${rule}`;
    }
    case "integer":
    case "number": {
      const int = j.type === "integer";
      if (int && j.minimum === 0 && j.maximum === Number.MAX_SAFE_INTEGER) return "uint";
      if (j.minimum === -Number.MAX_SAFE_INTEGER) delete j.minimum;
      const lo = j.exclusiveMinimum !== undefined ? (int ? `${j.exclusiveMinimum + 1}` : `> ${j.exclusiveMinimum}`) : j.minimum !== undefined ? `${j.minimum}` : undefined;
      const hi = j.maximum !== undefined && j.maximum !== Number.MAX_SAFE_INTEGER ? `${j.maximum}` : undefined;
      const name = int ? "int" : "number";
      if (lo === undefined && hi === undefined) return name;
      if (lo !== undefined && hi !== undefined) return lo.startsWith(">") ? `${name} ${lo}, ≤ ${hi}` : `${name} ${lo}–${hi}`;
      return lo !== undefined ? `${name} ${lo.startsWith(">") ? lo : `≥ ${lo}`}` : `${name} ≤ ${hi}`;
    }
  }
  throw new Error(`protocol-doc: no words for ${JSON.stringify(j)}`);
}

interface Row {
  field: string;
  type: string;
  required: string;
}

/** The words for a field's type, and the rows of what is inside it (an object, an array of objects). */
function describe(s: Schema, io: Io, at: string): { type: string; inner: Row[] } {
  const n = namedOf(s, io);
  if (n) return { type: link(n), inner: [] };
  if (s instanceof z.ZodObject) {
    const base = closest(s, io);
    if (base) return { type: `${link(base.named)}, except as below`, inner: objectRows(s, io, `${at}.`, base.differ) };
    return { type: "object", inner: objectRows(s, io, `${at}.`) };
  }
  if (s instanceof z.ZodArray) {
    const e = describe(s.element as Schema, io, `${at}[]`);
    return { type: `array of ${e.type}`, inner: e.inner };
  }
  if (s instanceof z.ZodNullable) {
    const e = describe(s.unwrap() as Schema, io, at);
    return { type: `${e.type} or null`, inner: e.inner };
  }
  if (s instanceof z.ZodUnion) {
    const parts = (s.options as Schema[]).map((o) => describe(o, io, at));
    if (parts.some((p) => p.inner.length)) throw new Error(`protocol-doc: ${at}: a union of unnamed objects; name its members in scripts/protocol-doc.ts`);
    return { type: parts.map((p) => p.type).join(" or "), inner: [] };
  }
  if (s instanceof z.ZodTuple) {
    const items = (s.def.items as Schema[]).map((i) => describe(i, io, at));
    if (items.some((p) => p.inner.length)) throw new Error(`protocol-doc: ${at}: a tuple of objects`);
    return { type: `[${items.map((p) => p.type).join(", ")}]`, inner: [] };
  }
  if (s instanceof z.ZodRecord) {
    const v = describe(s.def.valueType as Schema, io, at);
    return { type: `map of string to ${v.type}`, inner: [] };
  }
  return { type: leafText(s, io), inner: [] };
}

/** A named object that `s` extends (a few fields added or changed, the rest the same): then only those are described. */
function closest(s: z.ZodObject, io: Io): { named: Named; differ: Set<string> } | undefined {
  let best: { named: Named; differ: Set<string> } | undefined;
  for (const n of named) {
    if (!(n.schema instanceof z.ZodObject) || n.schema === s) continue;
    const base = n.schema.shape as Record<string, Schema>;
    const own = s.shape as Record<string, Schema>;
    if (!Object.keys(base).every((k) => k in own)) continue;
    const differ = new Set(Object.keys(own).filter((k) => !(k in base) || json(own[k], io) !== json(base[k], io)));
    if (differ.size * 2 < Object.keys(own).length && (!best || differ.size < best.differ.size)) best = { named: n, differ };
  }
  return best;
}

function objectRows(s: z.ZodObject, io: Io, prefix: string, only?: Set<string>): Row[] {
  const strict = s.def.catchall instanceof z.ZodNever;
  if (io === "request" && !strict) throw new Error(`protocol-doc: request object ${prefix || "(top)"} is not strict; the document says every request refuses unknown fields`);
  if (io === "reply" && strict) throw new Error(`protocol-doc: reply object ${prefix || "(top)"} is strict; the document says replies may grow fields`);
  const rows: Row[] = [];
  for (const [k, raw] of Object.entries(s.shape as Record<string, Schema>)) {
    if (only && !only.has(k)) continue;
    if (prefix === "" && io === "request" && (k === "id" || k === "op")) continue; // the envelope's
    let f: Schema = raw;
    let required = io === "request" ? "yes" : "always";
    if (f instanceof z.ZodOptional) {
      f = f.unwrap() as Schema;
      required = io === "request" ? "no" : "optional";
    }
    if (f instanceof z.ZodDefault) {
      required = `no, default ${code(JSON.stringify(f.def.defaultValue))}`;
      f = f.unwrap() as Schema;
    }
    const d = describe(f, io, `${prefix}${k}`);
    rows.push({ field: `${prefix}${k}`, type: d.type, required }, ...d.inner);
  }
  return rows;
}

/** Objects checked by more than their fields (a superRefine): the document says so under the table. */
function hasObjectRule(s: Schema): boolean {
  return ((s.def as { checks?: unknown[] }).checks?.length ?? 0) > 0;
}

interface Table {
  header: string[];
  rows: { key: string; cells: string[] }[];
  after?: string;
}

function tableOf(block: string): Table | string {
  const spec = blocks().get(block);
  if (!spec) throw new Error(`protocol-doc: unknown block ${block}`);
  if (block === "types") {
    return { header: ["type", "definition", "meaning"], rows: named.filter((n) => n.home === "types").map((n) => ({ key: code(n.id), cells: [code(n.id), leafText(n.schema, "request")] })) };
  }
  if (block === "envelope") {
    const ids = new Set([...requestByOp.values()].map((o) => leafText(o.shape.id as Schema, "request")));
    if (ids.size !== 1) throw new Error(`protocol-doc: the requests' ids differ: ${[...ids].join(", ")}`);
    const rows: [string, string][] = [
      ["id", [...ids][0]],
      ["op", "string"],
      ["ok", "bool"],
      ["error", link(named.find((n) => n.schema === wireErrorSchema)!)],
    ];
    return { header: ["field", "type", "meaning"], rows: rows.map(([f, t]) => ({ key: code(f), cells: [code(f), t] })) };
  }
  if (block === "codes") {
    return { header: ["code", "retryable", "when, and what a client does"], rows: Object.values(ErrorCode).map((c) => ({ key: code(c), cells: [code(c), wireError(c, "").retryable ? "yes" : "no"] })) };
  }
  const { schema, io } = spec as { schema: Schema; io: Io };
  const n = namedOf(schema, io);
  if (n && n.home !== block) return `The reply is the ${link(n)}.`;
  if (!(schema instanceof z.ZodObject)) {
    const d = describe(schema, io, "");
    return `The reply is one of: ${d.type.split(" or ").join(", ")}.`;
  }
  const base = closest(schema, io);
  const rows = objectRows(schema, io, "", base?.differ);
  const lead = base ? `Every field of the ${link(base.named)}, and:\n\n` : "";
  if (rows.length === 0) return `${lead}No fields${io === "request" ? " besides `id` and `op`" : " besides `id` and `ok`"}.`;
  const t: Table = {
    header: ["field", "type", io === "request" ? "required" : "present", "meaning"],
    rows: rows.map((r) => ({ key: code(r.field), cells: [code(r.field), r.type, r.required] })),
  };
  if (lead) t.after = lead; // placed before the table
  return t;
}

const splitCells = (line: string) =>
  line
    .trim()
    .replace(/^\||\|$/g, "")
    .split(/(?<!\\)\|/)
    .map((c) => c.trim());

/** The meanings the committed block gives, by row key (its first cell). */
function meaningsIn(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split("\n")) {
    if (!line.startsWith("|") || /^\|\s*-/.test(line)) continue;
    const cells = splitCells(line);
    out.set(cells[0], cells[cells.length - 1]);
  }
  return out;
}

/** The block's text: an anchor, the table (meanings kept from `old`), a note for object rules. */
export function renderBlock(block: string, old: string): string {
  const t = tableOf(block);
  const spec = blocks().get(block)!;
  const anchor = named.find((n) => n.home === block && n.home !== "types");
  const lines: string[] = [];
  if (anchor) lines.push(`<a id="${anchor.id}"></a>`, "");
  if (typeof t === "string") {
    lines.push(t);
  } else {
    const meanings = meaningsIn(old);
    if (t.after) lines.push(t.after.trimEnd(), "");
    lines.push(`| ${t.header.join(" | ")} |`, `| ${t.header.map(() => "---").join(" | ")} |`);
    for (const r of t.rows) lines.push(`| ${[...r.cells.map(cell), meanings.get(r.key) || todo].join(" | ")} |`);
  }
  if (spec.schema && hasObjectRule(spec.schema)) lines.push("", "Also checked across fields: see the rule below the table.");
  return `${lines.join("\n")}\n`;
}

const blockRe = /<!-- schema: ([^>]+?) -->\n([\s\S]*?)<!-- \/schema -->/g;

/**
 * The document with every block rendered again; what is wrong with it (missing, unknown or doubled blocks,
 * TODOs); and, per block whose committed text differs from its rendering, the lines that differ.
 */
export function render(doc: string): { text: string; problems: string[]; stale: string[] } {
  const problems: string[] = [];
  const stale: string[] = [];
  const wanted = blocks();
  const seen = new Map<string, number>();
  const text = doc.replace(blockRe, (_m, block: string, old: string) => {
    seen.set(block, (seen.get(block) ?? 0) + 1);
    if (!wanted.has(block)) {
      problems.push(`unknown block "${block}": nothing in src/protocol renders it`);
      return `<!-- schema: ${block} -->\n${old}<!-- /schema -->`;
    }
    const fresh = renderBlock(block, old);
    if (fresh !== old) stale.push(`block "${block}":\n${lineDiff(old, fresh).join("\n")}`);
    return `<!-- schema: ${block} -->\n${fresh}<!-- /schema -->`;
  });
  for (const b of wanted.keys()) {
    const n = seen.get(b) ?? 0;
    if (n === 0) problems.push(`missing block "${b}": add <!-- schema: ${b} --><!-- /schema --> where it belongs and run --write`);
    if (n > 1) problems.push(`block "${b}" appears ${n} times; describe it once`);
  }
  for (const [i, line] of text.split("\n").entries()) if (line.startsWith("|") && line.endsWith(`| ${todo} |`)) problems.push(`line ${i + 1}: ${splitCells(line)[0]} has no meaning yet (${todo})`);
  return { text, problems, stale };
}

/** `- ` the committed lines the rendering drops, `+ ` the ones it adds (a longest-common-subsequence diff; blocks are short). */
function lineDiff(before: string, after: string): string[] {
  const a = before.split("\n");
  const b = after.split("\n");
  const lcs = a.map(() => new Array<number>(b.length + 1).fill(0));
  lcs.push(new Array<number>(b.length + 1).fill(0));
  for (let i = a.length - 1; i >= 0; i--) for (let j = b.length - 1; j >= 0; j--) lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
  const out: string[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    if (i < a.length && j < b.length && a[i] === b[j]) {
      i++;
      j++;
    } else if (j < b.length && (i === a.length || lcs[i][j + 1] >= lcs[i + 1][j])) out.push(`+ ${b[j++]}`);
    else out.push(`- ${a[i++]}`);
  }
  return out;
}

if (import.meta.main) {
  const doc = readFileSync(docPath, "utf8");
  const write = process.argv.includes("--write");
  const { text, problems, stale } = render(doc);
  if (write) {
    if (text !== doc) writeFileSync(docPath, text);
    console.log(text === doc ? "docs/protocol.md: tables already match the schemas" : "docs/protocol.md: tables rendered from the schemas");
  } else if (stale.length) {
    console.error(`docs/protocol.md differs from what the schemas say (npx bun scripts/protocol-doc.ts --write renders it):\n${stale.join("\n")}`);
  }
  for (const p of problems) console.error(`docs/protocol.md: ${p}`);
  process.exit(problems.length || (!write && stale.length) ? 1 : 0);
}
