// Bundles the sidecar into dist/dtx.js: one file to load instead of some
// eighty modules and their dependencies' module graphs, which roughly halves
// start-to-ready (see docs/decisions.md, "Start-up"). The bundle is generated
// on the machine that runs it (it names where lmdb's native addon lives) and
// is never committed. `npm start`, the tests' and the bench's sidecars and the
// Docker image run it; `ensureBundle()` rebuilds it whenever a source file is
// newer, so a stale bundle never runs.
//
//   bun scripts/build.ts             build (or rebuild) dist/dtx.js
//   bun scripts/build.ts --if-stale  only if a source is newer (npm start)
import { mkdirSync, readdirSync, renameSync, statSync } from "node:fs";
import { dirname, join } from "node:path";

const root = join(import.meta.dir, "..");
export const bundlePath = join(root, "dist", "dtx.js");
// What the bundle is made of: our sources, this script, and the installed dependencies (npm rewrites its lock there on every install).
const sources = ["src", "sidecar", "package.json", "scripts/build.ts", "node_modules/.package-lock.json"];

export function newestSource(path: string): number {
  const st = statSync(path, { throwIfNoEntry: false });
  if (!st) return 0;
  if (!st.isDirectory()) return st.mtimeMs;
  let newest = st.mtimeMs;
  for (const entry of readdirSync(path)) newest = Math.max(newest, newestSource(join(path, entry)));
  return newest;
}

export function bundleIsFresh(): boolean {
  let built: number;
  try {
    built = statSync(bundlePath).mtimeMs;
  } catch {
    return false;
  }
  return sources.every((s) => newestSource(join(root, s)) <= built);
}

export async function buildBundle(): Promise<string> {
  // lmdb finds its native addon next to its own files; inside a bundle its
  // import.meta.url is the bundle's, so point it at the package instead.
  const lmdbDir = dirname(Bun.resolveSync("lmdb", root));
  const result = await Bun.build({
    entrypoints: [join(root, "sidecar", "cli.ts")],
    target: "bun",
    // Precompiled bytecode (dtx.js.jsc beside dtx.js) skips parsing the ~0.9 MB bundle at every start:
    // about 20 ms of a ~130 ms load here. Bun builds bytecode for CommonJS output only (outside --compile).
    format: "cjs",
    bytecode: true,
    // The client's SQL drivers (tx.sql, loaded on first use): the sidecar's CLI imports the client but
    // never runs tx.sql, so they stay out of the bundle and are required from node_modules if ever used.
    external: ["postgres", "mysql2", "mysql2/promise"],
    plugins: [
      {
        // `dtx bench` runs from source (npm run bench) and needs the test helpers; the sidecar's bundle
        // (and the image, which has neither) leaves it out.
        name: "bench-from-source",
        setup(build) {
          build.onResolve({ filter: /[\\/]bench[\\/]bench\.ts$/ }, (args) => ({ path: args.path, external: true }));
        },
      },
      {
        name: "lmdb-native-dir",
        setup(build) {
          build.onLoad({ filter: /[\\/]lmdb[\\/]native\.js$/ }, async (args) => {
            const text = await Bun.file(args.path).text();
            const patched = text.replace("dirname(fileURLToPath(import.meta.url))", JSON.stringify(lmdbDir));
            if (patched === text) throw new Error(`lmdb's native.js changed shape; scripts/build.ts needs updating (${args.path})`);
            return { contents: patched, loader: "js" };
          });
        },
      },
    ],
  });
  if (!result.success) throw new Error(`bundling the sidecar failed:\n${result.logs.map(String).join("\n")}`);
  mkdirSync(dirname(bundlePath), { recursive: true });
  // Write then rename: a sidecar starting meanwhile sees the old bundle or the new one, never half of one.
  // The bytecode goes first; Bun checks it against the source it sits beside and ignores a stale one.
  const code = result.outputs.find((o) => o.path.endsWith(".js"));
  const bytecode = result.outputs.find((o) => o.path.endsWith(".jsc"));
  if (!code || !bytecode) throw new Error(`bundling the sidecar made ${result.outputs.map((o) => o.path).join(", ")}, not a .js and its .jsc`);
  for (const [output, path] of [[bytecode, `${bundlePath}.jsc`], [code, bundlePath]] as const) {
    const tmp = `${path}.${process.pid}.tmp`;
    await Bun.write(tmp, output);
    renameSync(tmp, path);
  }
  return bundlePath;
}

let ensured: Promise<string> | undefined;
/** The bundle, rebuilt first if any source is newer. */
export function ensureBundle(): Promise<string> {
  ensured ??= bundleIsFresh() ? Promise.resolve(bundlePath) : buildBundle();
  return ensured;
}

if (import.meta.main) {
  if (process.argv.includes("--if-stale")) await ensureBundle();
  else console.log(await buildBundle());
}
