// One live sidecar per data directory and per socket path, and one id per data directory.
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from "node:fs";
import { dirname, join } from "node:path";
import { syncDir } from "../src/wal/journal.ts";
import { ConfigError } from "./config.ts";

export class AlreadyRunningError extends Error {}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Take the data directory's pid lock, replacing one left by a dead process. */
export function lockDataDir(dir: string): () => void {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, "sidecar.pid");
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(path, "wx", 0o600);
      writeSync(fd, String(process.pid));
      closeSync(fd);
      return () => {
        try {
          if (readFileSync(path, "utf8") === String(process.pid)) unlinkSync(path);
        } catch {}
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      const pid = Number(readFileSync(path, "utf8").trim());
      if (pid && pid !== process.pid && alive(pid)) {
        throw new AlreadyRunningError(`data directory ${dir} is held by a running sidecar (pid ${pid}); stop it or use another --data`);
      }
      unlinkSync(path); // stale: its process is gone (kill -9)
    }
  }
  throw new AlreadyRunningError(`could not lock data directory ${dir}`);
}

/** Refuse a socket path a live sidecar listens on; remove a stale socket file. */
export async function claimSocketPath(path: string): Promise<void> {
  mkdirSync(dirname(path), { recursive: true });
  if (!existsSync(path)) return;
  const live = await new Promise<boolean>((resolve) => {
    Bun.connect({
      unix: path,
      socket: {
        open: (s) => {
          s.end();
          resolve(true);
        },
        data: () => {},
        error: () => resolve(false),
        connectError: () => resolve(false),
      },
    }).catch(() => resolve(false));
  });
  if (live) throw new AlreadyRunningError(`socket ${path} is in use by a running sidecar; stop it or use another --socket`);
  unlinkSync(path);
}

/**
 * A data directory keeps the id it was created with (sidecar.id): its log is that sidecar's, and
 * peers know its transactions by that id, so a start under another id is refused. Read-only, so it
 * can run before the lock and a refused start changes nothing.
 */
export function checkDataDirId(dir: string, id: string): "recorded" | "absent" {
  let held = "";
  try {
    held = readFileSync(join(dir, "sidecar.id"), "utf8").trim();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
  if (!held) return "absent";
  if (held !== id) {
    throw new ConfigError(`data directory ${dir} belongs to sidecar "${held}", not "${id}": start it with --id ${held}, or give "${id}" its own --data`);
  }
  return "recorded";
}

/** Under the data directory's lock: check the id, and record it on first start. A directory made by an older build (no file) adopts the id it is started with. */
export function claimDataDirId(dir: string, id: string): void {
  if (checkDataDirId(dir, id) === "recorded") return;
  // Written whole or not at all: a file, synced, renamed into place, and the rename synced.
  const path = join(dir, "sidecar.id");
  const tmp = `${path}.${process.pid}.tmp`;
  const fd = openSync(tmp, "w", 0o644);
  try {
    writeSync(fd, `${id}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  syncDir(dir);
}
