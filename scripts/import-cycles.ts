// Import cycles among the project's own modules: `bun scripts/import-cycles.ts [dir…]` prints each one
// and exits 1 if there is any (test/unit/import-cycles.test.ts runs it on src, client and sidecar).
// Every import counts, type-only ones (`import type`) and dynamic `import("…")` included: a type-only
// cycle is still two modules that cannot be read, or moved, one without the other.
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";

// `import … from "x"`, `export … from "x"`, `import "x"` at the start of a line (so not in comments), and `import("x")`.
const importPattern = /^\s*(?:import|export)\s[^;"'`]*?\bfrom\s*["']([^"']+)["']|^\s*import\s*["']([^"']+)["']|\bimport\(\s*["']([^"']+)["']\s*\)/gm;

function tsFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return name === "node_modules" ? [] : tsFiles(path);
    return path.endsWith(".ts") && !path.endsWith(".d.ts") ? [path] : [];
  });
}

/** The project files `file` imports (relative specifiers only; packages and JSON are no part of a cycle here). */
export function importsOf(file: string): string[] {
  const out = new Set<string>();
  for (const m of readFileSync(file, "utf8").matchAll(importPattern)) {
    const spec = m[1] ?? m[2] ?? m[3];
    if (!spec.startsWith(".")) continue;
    const target = resolve(dirname(file), spec);
    if (target.endsWith(".ts") && existsSync(target)) out.add(target);
  }
  return [...out];
}

/** Every cycle a depth-first walk meets among the .ts files under `dirs`, each as paths relative to `root`, first file repeated last. */
export function importCycles(dirs: string[], root = process.cwd()): string[][] {
  const files = dirs.flatMap((d) => tsFiles(resolve(root, d)));
  const inScope = new Set(files);
  const state = new Map<string, "open" | "done">();
  const stack: string[] = [];
  const cycles: string[][] = [];
  const visit = (file: string) => {
    state.set(file, "open");
    stack.push(file);
    for (const next of importsOf(file)) {
      if (!inScope.has(next)) continue;
      if (state.get(next) === "open") cycles.push([...stack.slice(stack.indexOf(next)), next].map((f) => relative(root, f)));
      else if (!state.has(next)) visit(next);
    }
    stack.pop();
    state.set(file, "done");
  };
  for (const f of files.sort()) if (!state.has(f)) visit(f);
  return cycles;
}

if (import.meta.main) {
  const dirs = process.argv.slice(2);
  const cycles = importCycles(dirs.length ? dirs : ["src", "client", "sidecar"]);
  for (const c of cycles) console.log(c.join(" → "));
  if (cycles.length) process.exit(1);
  console.log("no import cycles");
}
