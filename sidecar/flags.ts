// Command-line flags: one table per command both parses its arguments and
// writes its help, so the two cannot drift apart.

/** A mistake in how a command was called: the CLI prints it on one line and exits 2. */
export class UsageError extends Error {}

export interface FlagSpec {
  /** A switch (`--json`) takes no value; every other flag takes one. */
  switch?: boolean;
  /** What the value is called in the help (`--port P`). */
  value?: string;
  /** May be given more than once. */
  many?: boolean;
  /** The environment variable that sets it too. */
  env?: string;
  about?: string;
  default?: unknown;
}

export interface ParsedArgs {
  /** Values per flag, in the order given; a switch has one empty string per use. */
  flags: Map<string, string[]>;
  positionals: string[];
}

const looksLikeFlag = (a: string) => /^--?[A-Za-z]/.test(a);

/**
 * `--flag value` and `--flag=value`; a value flag followed by another flag, or by nothing, is
 * missing its value. `names` is how many plain arguments the command takes (a transaction's name).
 */
export function parseFlags(command: string, argv: string[], table: Record<string, FlagSpec>, names = 0): ParsedArgs {
  const flags = new Map<string, string[]>();
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!looksLikeFlag(arg)) {
      positionals.push(arg);
      continue;
    }
    const [flag, inline] = arg.split(/=(.*)/s, 2) as [string, string | undefined];
    const spec = table[flag];
    if (!spec) throw new UsageError(`unknown flag ${flag}; dtx ${command} takes ${Object.keys(table).join(" ")} (see dtx --help)`);
    let value = "";
    if (spec.switch) {
      if (inline !== undefined) throw new UsageError(`${flag} takes no value (got ${arg})`);
    } else {
      const next = inline ?? argv[i + 1];
      if (next === undefined || (inline === undefined && looksLikeFlag(next))) {
        throw new UsageError(`${flag} is missing its value (${flag} ${spec.value ?? "VALUE"}; see dtx --help)`);
      }
      if (inline === undefined) i++;
      value = next;
    }
    flags.set(flag, [...(flags.get(flag) ?? []), value]);
  }
  if (positionals.length > names) throw new UsageError(`unexpected "${positionals[names]}": dtx ${command} takes ${names ? "one name and " : ""}flags only (see dtx --help)`);
  if (positionals.length < names) throw new UsageError(`dtx ${command} needs a transaction name (see dtx --help)`);
  return { flags, positionals };
}

/** The last value given for a flag (a later one overrides an earlier one). */
export function lastValue(parsed: ParsedArgs, flag: string): string | undefined {
  return parsed.flags.get(flag)?.at(-1);
}

/** One help line per flag: the flag and its value, its environment variable, what it does, its default. */
export function describeFlags(table: Record<string, FlagSpec>, indent = "  "): string[] {
  const heads = Object.entries(table).map(([flag, f]) => `${flag}${f.switch ? "" : ` ${f.value ?? "VALUE"}`}${f.many ? " ..." : ""}`);
  const envs = Object.values(table).map((f) => f.env ?? "");
  const headWidth = Math.max(...heads.map((h) => h.length)) + 2;
  const envWidth = Math.max(...envs.map((e) => e.length)) + 2;
  return Object.values(table).map((f, i) => {
    const about = [f.about, f.default !== undefined ? `(default ${f.default})` : ""].filter(Boolean).join(" ");
    return `${indent}${heads[i].padEnd(headWidth)}${envs[i].padEnd(envWidth)}${about}`.trimEnd();
  });
}
