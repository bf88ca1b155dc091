// Builds dtx/client and dtx/kysely for Node.js: JavaScript with .d.ts types in dist/lib, from the same
// TypeScript sources Bun loads directly (package.json's exports: `bun` gets the source, everyone else
// the build). `npm install` runs it (`prepare`), so a fresh clone is set up by the README's two
// commands; the output is never committed. Tests that run the client on Node.js call
// ensureClientBuild(), which rebuilds whenever a source is newer, so a stale build never runs.
//
//   bun scripts/build-client.ts             build (or rebuild) dist/lib
//   bun scripts/build-client.ts --if-stale  only if a source is newer
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, statSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { newestSource } from "./build.ts";

const root = join(import.meta.dir, "..");
export const clientBuildDir = join(root, "dist", "lib");
// Written last, so a build that failed half-way is never taken for a fresh one.
const stamp = join(clientBuildDir, ".built");
const sources = ["client", "src/protocol", "src/limits.ts", "tsconfig.build.json", "package.json", "scripts/build-client.ts"];

export function clientBuildIsFresh(): boolean {
  const built = statSync(stamp, { throwIfNoEntry: false })?.mtimeMs ?? 0;
  return built > 0 && sources.every((s) => newestSource(join(root, s)) <= built);
}

function typescriptCompiler(): string | undefined {
  try {
    return join(dirname(createRequire(join(root, "package.json")).resolve("typescript/package.json")), "bin", "tsc");
  } catch {
    return undefined; // a production install (no devDependencies): nothing to build with
  }
}

export function buildClient(): string {
  const tsc = typescriptCompiler();
  if (!tsc) throw new Error("building dtx/client for Node.js needs typescript (a devDependency): run npm install");
  const run = spawnSync(process.execPath, [tsc, "-p", join(root, "tsconfig.build.json")], { cwd: root, encoding: "utf8" });
  if (run.status !== 0) throw new Error(`building dtx/client for Node.js failed:\n${run.stdout}${run.stderr}`);
  mkdirSync(clientBuildDir, { recursive: true });
  writeFileSync(stamp, `${new Date().toISOString()}\n`);
  return clientBuildDir;
}

let ensured: string | undefined;
/** dist/lib, rebuilt first if any source is newer. */
export function ensureClientBuild(): string {
  ensured ??= clientBuildIsFresh() ? clientBuildDir : buildClient();
  return ensured;
}

if (import.meta.main) {
  if (!typescriptCompiler() && !existsSync(stamp)) {
    console.log("dtx: typescript is not installed (a production install), so dtx/client is not built for Node.js; Bun loads its sources");
  } else if (process.argv.includes("--if-stale")) ensureClientBuild();
  else console.log(buildClient());
}
