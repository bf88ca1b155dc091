// The dtx command line fails like a tool: one line saying what happened and what to do, an exit
// code a script can act on (0 ok, 1 the request failed, 2 usage/configuration, 3 sidecar unreachable),
// and no state left behind by a start that did not happen.
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync, rmSync, unlinkSync } from "node:fs";
import { join, resolve } from "node:path";
import { connect } from "../../client/index.ts";
import { PROTOCOL_VERSION } from "../../src/limits.ts";
import { HttpParticipant } from "../helpers/http-participant.ts";
import { SidecarProcess, tempDir } from "../helpers/sidecar-process.ts";

const root = resolve(import.meta.dir, "../..");
const started: SidecarProcess[] = [];
const dirs: string[] = [];
afterAll(async () => {
  for (const s of started) await s.cleanup();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
async function sidecar(id: string, dir?: string): Promise<SidecarProcess> {
  const s = await new SidecarProcess({ id, dir }).start();
  started.push(s);
  return s;
}

interface CliRun {
  exitCode: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Run `dtx …` from source, as a user would; a run that outlives timeoutMs is killed and reported as such. */
async function dtx(args: string[], opts: { env?: Record<string, string>; timeoutMs?: number } = {}): Promise<CliRun> {
  const t0 = performance.now();
  const proc = Bun.spawn([process.execPath, "sidecar/cli.ts", ...args], { cwd: root, stdin: "ignore", stdout: "pipe", stderr: "pipe", env: { ...process.env, ...opts.env } });
  const killer = setTimeout(() => proc.kill(9), opts.timeoutMs ?? 15_000);
  const [stdout, stderr] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text()]);
  await proc.exited;
  clearTimeout(killer);
  return { exitCode: proc.signalCode ? null : proc.exitCode, stdout, stderr, ms: performance.now() - t0 };
}

const lines = (text: string) => text.trim().split("\n");

describe("dtx sidecar refuses a bad start and leaves nothing behind", () => {
  test("a port in use: one line naming the port and --port/DTX_PORT, exit 2, pid file and socket as they were", async () => {
    const holder = await sidecar("port-holder");
    // A data directory a sidecar left by kill -9: a stale pid file and a stale socket file.
    const left = await sidecar("port-late");
    await left.kill9();
    const pidBefore = readFileSync(join(left.data, "sidecar.pid"), "utf8");
    expect(existsSync(left.socket)).toBe(true);

    const args = left.args();
    args[args.indexOf("--port") + 1] = String(holder.port);
    const run = await dtx(args);
    expect(run.exitCode).toBe(2);
    expect(lines(run.stderr)).toHaveLength(1);
    expect(run.stderr).toContain(String(holder.port));
    expect(run.stderr).toContain("--port");
    expect(run.stderr).toContain("DTX_PORT");
    expect(readFileSync(join(left.data, "sidecar.pid"), "utf8")).toBe(pidBefore);
    expect(existsSync(left.socket)).toBe(true);
    // And it starts on a free port as before.
    await left.start();
  });
});

describe("a data directory remembers the id it was created with", () => {
  test("starting it under another --id is refused naming both ids, exit 2, and nothing changes", async () => {
    const a = await sidecar("ident-a");
    const client = await connect({ socket: a.socket });
    await client.beginDistributed("ident-1", (tx) => tx.put("ident/1", 1));
    client.close();
    await a.kill9(); // leaves a stale pid file and socket file, which a refused start must not touch
    expect(readFileSync(join(a.data, "sidecar.id"), "utf8").trim()).toBe("ident-a");
    const pidBefore = readFileSync(join(a.data, "sidecar.pid"), "utf8");
    expect(existsSync(a.socket)).toBe(true);

    const other = new SidecarProcess({ id: "ident-b", dir: a.dir }).args();
    const run = await dtx(other);
    expect(run.exitCode).toBe(2);
    expect(lines(run.stderr)).toHaveLength(1);
    expect(run.stderr).toContain('"ident-a"');
    expect(run.stderr).toContain('"ident-b"');
    expect(readFileSync(join(a.data, "sidecar.id"), "utf8").trim()).toBe("ident-a");
    expect(readFileSync(join(a.data, "sidecar.pid"), "utf8")).toBe(pidBefore);
    expect(existsSync(a.socket)).toBe(true);

    // Under its own id it still holds the prepared transaction and commits it.
    await a.start();
    const again = await connect({ socket: a.socket });
    expect((await again.status("ident-1")).state).toBe("prepared");
    expect((await again.commitDistributed("ident-1")).outcome).toBe("committed");
    again.close();
  });

  test("a data directory from an older build, without an id file, adopts the id it is started with", async () => {
    const s = await sidecar("ident-old");
    await s.kill9();
    unlinkSync(join(s.data, "sidecar.id"));
    const adopted = new SidecarProcess({ id: "ident-new", dir: s.dir });
    started.push(adopted);
    await adopted.start();
    expect(readFileSync(join(s.data, "sidecar.id"), "utf8").trim()).toBe("ident-new");
  });
});

describe("usage errors exit 2 for every command", () => {
  test("an unknown flag is refused by sidecar, status, list, resolve, peers and bench, naming the flag", async () => {
    const sc = await sidecar("usage");
    const runs: [string, string[]][] = [
      ["status", ["status", "x", "--socket", sc.socket, "--bogus"]],
      ["list", ["list", "--socket", sc.socket, "--bogus"]],
      ["resolve", ["resolve", "x", "--commit", "--socket", sc.socket, "--bogus"]],
      ["peers", ["peers", "--socket", sc.socket, "--bogus"]],
      ["sidecar", ["sidecar", "--bogus"]],
      ["bench", ["bench", "--bogus"]], // last: before flags were checked this ran a whole bench
    ];
    for (const [command, args] of runs) {
      const run = await dtx(args);
      expect({ command, exitCode: run.exitCode }).toEqual({ command, exitCode: 2 });
      expect(lines(run.stderr)).toHaveLength(1);
      expect(run.stderr).toContain("--bogus");
    }
  });

  test("a flag followed by another flag, or by nothing, is missing its value", async () => {
    const sc = await sidecar("missing");
    const runs: [string, string[]][] = [
      ["--data", ["sidecar", "--data", "--port", "7"]],
      ["--socket", ["status", "x", "--socket", "--json"]],
      ["--state", ["list", "--socket", sc.socket, "--state"]],
      ["--timeout-ms", ["resolve", "x", "--commit", "--socket", sc.socket, "--timeout-ms"]],
    ];
    for (const [flag, args] of runs) {
      const run = await dtx(args);
      expect({ flag, exitCode: run.exitCode }).toEqual({ flag, exitCode: 2 });
      expect(run.stderr).toContain(`${flag} is missing its value`);
    }
  });

  test("dtx list --state with a state that does not exist is a usage error listing the states", async () => {
    const dir = tempDir("dtx-state-");
    dirs.push(dir);
    const run = await dtx(["list", "--state", "prepard", "--socket", join(dir, "s.sock")]);
    expect(run.exitCode).toBe(2);
    expect(run.stderr).toContain('"prepard"');
    expect(run.stderr).toContain("prepared");
  });

  test("dtx --version and dtx -v print package.json's version and exit 0", async () => {
    const { version } = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
    for (const flag of ["--version", "-v"]) {
      const run = await dtx([flag]);
      expect(run.exitCode).toBe(0);
      expect(run.stdout.trim()).toBe(`dtx ${version}`);
    }
  });

  test("dtx --help lists every flag of the README's usage block", async () => {
    const readme = readFileSync(join(root, "README.md"), "utf8");
    const block = /## Running a sidecar\s+```\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(block).toBeDefined();
    const flags = [...new Set(block!.match(/--[a-z][a-z0-9-]*/g))];
    expect(flags.length).toBeGreaterThan(20);
    const run = await dtx(["--help"]);
    expect(run.exitCode).toBe(0);
    const missing = flags.filter((f) => !new RegExp(`${f}(?![a-z0-9-])`).test(run.stdout));
    expect(missing).toEqual([]);
  });

  test("dtx --help names every flag of the sidecar's flags table with its environment variable", async () => {
    const { sidecarFlags } = await import("../../sidecar/config.ts");
    const run = await dtx(["--help"]);
    for (const [flag, f] of Object.entries(sidecarFlags)) {
      const line = lines(run.stdout).find((l) => new RegExp(`^\\s+${flag}\\b`).test(l));
      expect({ flag, line: line?.includes(f.env) }).toEqual({ flag, line: true });
    }
  });
});

describe("the CLI without a sidecar", () => {
  test("answers at once with exit 3 when the socket file does not exist, naming the path, --socket and DTX_SOCKET", async () => {
    const dir = tempDir("dtx-nosock-");
    dirs.push(dir);
    const socket = join(dir, "nobody.sock");
    for (const args of [["status", "x"], ["list"], ["resolve", "x", "--commit"], ["peers"]]) {
      const run = await dtx([...args, "--socket", socket]);
      expect({ args, exitCode: run.exitCode }).toEqual({ args, exitCode: 3 });
      expect(run.ms).toBeLessThan(3_000); // connect's retry loop waits 5 s for a sidecar that is starting
      expect(lines(run.stderr)).toHaveLength(1);
      expect(run.stderr).toContain(socket);
      expect(run.stderr).toContain("--socket");
      expect(run.stderr).toContain("DTX_SOCKET");
    }
    const fromEnv = await dtx(["list"], { env: { DTX_SOCKET: socket } });
    expect(fromEnv.exitCode).toBe(3);
    expect(fromEnv.stderr).toContain(socket);
  });
});

describe("dtx status", () => {
  test("prints a Saga's participants with id, endpoint, status and error, and its timestamps", async () => {
    const sc = await sidecar("status-saga");
    const pay = new HttpParticipant("pay");
    const ship = new HttpParticipant("ship", { failExecute: true });
    try {
      const client = await connect({ socket: sc.socket });
      const t = await client.createTransaction({ name: "status-saga-1", consistency: "eventual" });
      await t.addParticipant({ participantId: "pay", endpoint: pay.endpoint });
      await t.addParticipant({ participantId: "ship", endpoint: ship.endpoint });
      expect((await t.execute()).outcome).toBe("compensated");
      const status = (await client.status("status-saga-1")) as unknown as { participants: { participantId: string; status: string; error: string | null }[] };
      client.close();

      const run = await dtx(["status", "status-saga-1", "--socket", sc.socket]);
      expect(run.exitCode).toBe(0);
      expect(run.stdout).not.toContain("undefined");
      const out = lines(run.stdout);
      for (const [p, endpoint] of [[status.participants[0], pay.endpoint], [status.participants[1], ship.endpoint]] as const) {
        const line = out.find((l) => l.trim().startsWith(p.participantId));
        expect(line).toBeDefined();
        expect(line).toContain(endpoint);
        expect(line).toContain(p.status);
      }
      const failed = status.participants[1];
      expect(failed.error).toBeTruthy();
      expect(run.stdout).toContain(failed.error!);
      expect(run.stdout).toMatch(/begun\s+\d{4}-\d\d-\d\dT/);
      expect(run.stdout).toMatch(/finished\s+\d{4}-\d\d-\d\dT/);
    } finally {
      pay.stop();
      ship.stop();
    }
  });

  test("prints a 2PC transaction's branches with their sidecar, vote and ack, and its timestamps", async () => {
    const sc = await sidecar("status-2pc");
    const client = await connect({ socket: sc.socket });
    await client.beginDistributed("status-2pc-1", (tx) => tx.put("s2/1", 1));
    const status = (await client.status("status-2pc-1")) as unknown as { participants: { branch: string }[] };
    client.close();
    const run = await dtx(["status", "status-2pc-1", "--socket", sc.socket]);
    expect(run.exitCode).toBe(0);
    expect(run.stdout).not.toContain("undefined");
    const line = lines(run.stdout).find((l) => l.includes(status.participants[0].branch));
    expect(line).toContain("status-2pc");
    expect(line).toContain("vote yes");
    expect(run.stdout).toMatch(/prepared\s+\d{4}-\d\d-\d\dT/);
  });
});

describe("dtx resolve answers within a bound", () => {
  test("a sidecar that never answers: after --timeout-ms it exits 1 saying the outcome is unknown", async () => {
    // A stand-in for a sidecar that took the request and is stuck on it: it says hello, then nothing.
    const dir = tempDir("dtx-mute-");
    dirs.push(dir);
    const socket = join(dir, "mute.sock");
    const { encodeFrame, FrameDecoder } = await import("../../src/protocol/frame.ts");
    const heard: string[] = [];
    const mute = Bun.listen<{ decoder: InstanceType<typeof FrameDecoder> }>({
      unix: socket,
      socket: {
        open: (s) => void (s.data = { decoder: new FrameDecoder() }),
        data: (s, chunk) => {
          for (const ev of s.data.decoder.push(chunk)) {
            if (ev.kind !== "body") continue;
            const req = ev.body as { id: number; op: string };
            heard.push(req.op);
            if (req.op === "hello") s.write(encodeFrame({ id: req.id, ok: true, version: PROTOCOL_VERSION, sidecar: "mute", defaultTimeoutMs: 30_000 }));
          }
        },
      },
    });
    try {
      const run = await dtx(["resolve", "stuck-1", "--commit", "--socket", socket, "--timeout-ms", "300"]);
      expect(run.exitCode).toBe(1);
      expect(run.ms).toBeLessThan(5_000);
      expect(heard).toEqual(["hello", "resolve"]);
      expect(lines(run.stderr)).toHaveLength(1);
      expect(run.stderr).toContain("300 ms");
      expect(run.stderr).toContain("outcome of stuck-1 is unknown");
      expect(run.stderr).toContain("dtx status stuck-1");
    } finally {
      mute.stop(true);
    }
  });
});
