/**
 * One table per command: each flag's name, short form, value, default and one-line help. The
 * parser and `--help` are both made from it, so the help can never list a flag the parser does
 * not take, nor miss one, nor show a stale default.
 *
 * Parsing is node's strict `parseArgs`, with two habits of llama.cpp users added: a string
 * flag takes a value that starts with a dash (`--temperature -1` is then a range error from
 * the flag's own check, not a parser message), and `--help`/`-h` and `--version`/`-V` are on
 * every command.
 */
import { parseArgs } from "node:util";
import { Effect } from "effect";
import denoJson from "../deno.json" with { type: "json" };
import { UsageError } from "./flags.ts";

/** One flag of a command. */
export interface FlagSpec {
  readonly type: "string" | "boolean";
  /** One letter, e.g. `m` for `-m`. */
  readonly short?: string;
  /** What the value is, e.g. `PATH` or `N` (string flags). */
  readonly value?: string;
  /** The value when the flag is absent (string flags); shown in the help. */
  readonly default?: string;
  /** Shown instead of a default, e.g. "env TESSERA_API_KEY" or "now". */
  readonly defaultNote?: string;
  /** One line. */
  readonly help: string;
}

/** A command's flags by long name. */
export type FlagTable = Readonly<Record<string, FlagSpec>>;

/** The package version, from deno.json. */
export const VERSION: string = denoJson.version;

/** The flags every command has. */
export const commonFlags: FlagTable = {
  help: { type: "boolean", short: "h", help: "print this help and exit" },
  version: { type: "boolean", short: "V", help: "print the version and exit" },
};

/** What the parser gives for a table: strings (possibly absent) and booleans. */
export type FlagValues<T extends FlagTable> = {
  readonly [K in keyof T]: T[K]["type"] extends "boolean" ? boolean
    : T[K] extends { readonly default: string } ? string
    : string | undefined;
};

/** A command's parse: its values, or a request for help or the version. */
export type Parsed<T extends FlagTable> =
  | { readonly _tag: "Run"; readonly values: FlagValues<T> }
  | { readonly _tag: "Help" }
  | { readonly _tag: "Version" };

/**
 * Joins `--flag -1` into `--flag=-1` for string flags (and `-x -1` into `--long=-1`), so a
 * value may start with a dash; node's parser would otherwise call it ambiguous.
 */
const joinDashedValues = (args: readonly string[], table: FlagTable): string[] => {
  const byShort = new Map(
    Object.entries(table).flatMap(([name, spec]) => spec.short ? [[spec.short, name]] : []),
  );
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    const next = args[i + 1];
    const name = arg.startsWith("--")
      ? arg.slice(2)
      : /^-[^-]$/.test(arg)
      ? byShort.get(arg[1])
      : undefined;
    if (
      name !== undefined && !name.includes("=") && table[name]?.type === "string" &&
      next !== undefined && next.startsWith("-") && next !== "-" && !next.startsWith("--")
    ) {
      out.push(`--${name}=${next}`);
      i++;
    } else {
      out.push(arg);
    }
  }
  return out;
};

/** Strict parse of `args` by `table` (plus help and version): unknown flags are usage errors. */
export const parseFlagTable = <T extends FlagTable>(
  args: readonly string[],
  table: T,
): Effect.Effect<Parsed<T>, UsageError> =>
  Effect.try({
    try: () => {
      const options = Object.fromEntries(
        Object.entries<FlagSpec>({ ...table, ...commonFlags }).map(([name, spec]) => [
          name,
          {
            type: spec.type,
            ...(spec.short ? { short: spec.short } : {}),
            ...(spec.default !== undefined ? { default: spec.default } : {}),
          },
        ]),
      );
      const { values } = parseArgs({
        args: joinDashedValues(args, { ...table, ...commonFlags }),
        options,
        strict: true,
        allowPositionals: false,
      });
      if (values.help) return { _tag: "Help" } as const;
      if (values.version) return { _tag: "Version" } as const;
      for (const [name, spec] of Object.entries(table)) {
        if (spec.type === "boolean") values[name] ??= false;
      }
      return { _tag: "Run", values: values as unknown as FlagValues<T> } as const;
    },
    catch: (e) => new UsageError({ message: e instanceof Error ? e.message : String(e) }),
  });

/**
 * `usage: <command> [flags]`, what it does, then one line per flag:
 * `  -m, --model PATH       the checkpoint (default: ...)`.
 */
export const helpText = (command: string, summary: string, table: FlagTable): string => {
  const rows = Object.entries<FlagSpec>({ ...table, ...commonFlags }).map(([name, spec]) => {
    const left = `${spec.short ? `-${spec.short}, ` : "    "}--${name}${
      spec.type === "string" ? ` ${spec.value ?? "VALUE"}` : ""
    }`;
    const fallback = spec.defaultNote ??
      (spec.default === undefined || spec.default === "" ? undefined : spec.default);
    return { left, right: spec.help + (fallback === undefined ? "" : ` (default: ${fallback})`) };
  });
  const width = Math.max(...rows.map((r) => r.left.length)) + 2;
  return [
    `usage: ${command} [flags]`,
    summary,
    "",
    ...rows.map((r) => `  ${r.left.padEnd(width)}${r.right}`),
  ].join("\n") + "\n";
};

/** `tessera 0.1.0`, what `--version` prints. */
export const versionText = (): string => `tessera ${VERSION}\n`;
