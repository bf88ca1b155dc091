// Runs a service's script (test/consumer/*.mjs) the way a user runs it: under `node` on the built
// dtx/client (package.json's exports: default → dist/lib) and under Bun on its TypeScript sources
// (exports: bun). The script imports "dtx/client" and "dtx/kysely" by the package's own name.
import { resolve } from "node:path";
import { ensureClientBuild } from "../../scripts/build-client.ts";

const root = resolve(import.meta.dir, "../..");

export interface Runtime {
  name: "node" | "bun";
  bin: string;
}

/** Node.js from PATH (the machine's, ≥ 20) and the Bun running the tests. */
export const runtimes: Runtime[] = [
  { name: "node", bin: "node" },
  { name: "bun", bin: process.execPath },
];

export interface ScriptRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run the script at `path` with `args` and `env`, killed if it takes longer than timeoutMs. */
export async function runScript(rt: Runtime, path: string, args: string[], env: Record<string, string>, timeoutMs = 20_000): Promise<ScriptRun> {
  if (rt.name === "node") ensureClientBuild();
  const proc = Bun.spawn([rt.bin, path, ...args], {
    cwd: root,
    env: { ...process.env, ...env },
    stdout: "pipe",
    stderr: "pipe",
    timeout: timeoutMs,
    killSignal: "SIGKILL",
  });
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  return { code, stdout, stderr };
}

/**
 * Run test/consumer/<script>, which ends by printing what it saw as one JSON line: that line, parsed.
 * A script that fails or prints no such line throws with everything it printed.
 */
export async function runConsumer(rt: Runtime, script: string, args: string[], env: Record<string, string>): Promise<any> {
  const run = await runScript(rt, resolve(root, "test/consumer", script), args, env);
  try {
    if (run.code === 0) return JSON.parse(run.stdout.trim().split("\n").at(-1) ?? "");
  } catch {}
  throw new Error(`${rt.name} ${script} ${args.join(" ")} exited with ${run.code}:\n${run.stdout}\n${run.stderr}`);
}
