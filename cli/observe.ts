/**
 * The observability flags every long-running command shares (`--trace FILE`, `--log-level`,
 * `--log-format`) and the layer they choose: structured logs, load progress on stderr (bars on
 * a terminal, one line per rank otherwise) and, with `--trace`, a Chrome trace written on exit.
 */
import process from "node:process";
import { Effect, Layer, type Scope } from "effect";
import type { Transport } from "../actors/transport.ts";
import { writeChromeTrace } from "../observe/chrome_trace.ts";
import {
  LOG_LEVELS,
  logAsRank,
  type LogFormat,
  loggingLayer,
  logLevelFromEnv,
  type LogLevelName,
  parseLogLevel,
} from "../observe/logging.ts";
import { barProgress, lineProgress } from "../observe/progress.ts";
import { type Telemetry, telemetryLayer } from "../observe/telemetry.ts";
import type { FlagTable } from "./flag_table.ts";
import { type ModelFlags, transportLayer, usage, type UsageError } from "./flags.ts";

/** The observability flags. */
export const observeFlagTable = {
  trace: { type: "string", value: "FILE", help: "write a Chrome trace (Perfetto) on exit" },
  "log-level": {
    type: "string",
    value: "LEVEL",
    help: `${LOG_LEVELS.join(", ")}; none leaves only the command's own output`,
    defaultNote: "env TESSERA_LOG_LEVEL, else info",
  },
  "log-format": {
    type: "string",
    value: "FORMAT",
    default: "logfmt",
    help: "log lines on stderr as logfmt or json",
  },
} as const satisfies FlagTable;

export interface ObserveFlags {
  /** Where to write a Chrome trace when the command ends. */
  readonly tracePath?: string;
  readonly logLevel: LogLevelName;
  readonly logFormat: LogFormat;
}

/** Checks the observability flags; the level defaults to `TESSERA_LOG_LEVEL`, else info. */
export const observeFlagsOf = (values: {
  readonly trace?: string;
  readonly "log-level"?: string;
  readonly "log-format": string;
}): Effect.Effect<ObserveFlags, UsageError> =>
  Effect.gen(function* () {
    const level = values["log-level"];
    const logLevel = level === undefined ? logLevelFromEnv() : parseLogLevel(level);
    if (logLevel === undefined) {
      return yield* usage(`--log-level must be one of ${LOG_LEVELS.join(", ")}, got ${level}`);
    }
    const format = values["log-format"];
    if (format !== "logfmt" && format !== "json") {
      return yield* usage(`--log-format must be logfmt or json, got ${format}`);
    }
    if (values.trace === "") return yield* usage("--trace needs a file path");
    return { tracePath: values.trace, logLevel, logFormat: format };
  });

/** Logs, progress and (with `--trace`) a trace for the command's lifetime. */
export const observeLayer = (flags: ObserveFlags): Layer.Layer<Telemetry> =>
  telemetryLayer({
    logLevel: flags.logLevel,
    progress: flags.logLevel === "none"
      ? undefined
      : process.stderr.isTTY
      ? barProgress(process.stderr)
      : lineProgress((line) => console.error(line)),
    trace: flags.tracePath === undefined
      ? undefined
      : { onTrace: writeChromeTrace(flags.tracePath) },
  }).pipe(Layer.provideMerge(loggingLayer(flags.logLevel, flags.logFormat)));

/**
 * Runs a command's program in its own scope, with the chosen transport and the observability
 * layer; lines it logs outside a rank name the supervisor.
 */
export const withRanksObserved =
  (options: ModelFlags & ObserveFlags) =>
  <A, E>(program: Effect.Effect<A, E, Scope.Scope | Transport>) =>
    program.pipe(
      Effect.scoped,
      Effect.provide(transportLayer(options)),
      logAsRank("supervisor"),
      Effect.provide(observeLayer(options)),
    );
