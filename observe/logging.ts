/**
 * Structured logs through Effect's Logger: logfmt (or JSON) lines on stderr, at a level chosen
 * by flag or by `TESSERA_LOG_LEVEL`. Every line carries a `rank` annotation: a rank's number
 * for what a rank logs, `supervisor` for the rest.
 */
import { Effect, Layer, Logger, LogLevel } from "effect";

/** Log levels a user can choose, least to most verbose. */
export const LOG_LEVELS = ["none", "error", "warning", "info", "debug"] as const;
/** One of {@link LOG_LEVELS}. */
export type LogLevelName = typeof LOG_LEVELS[number];
/** Line formats. */
export type LogFormat = "logfmt" | "json";

/** The level named, or undefined when the name is not one of {@link LOG_LEVELS}. */
export const parseLogLevel = (value: string): LogLevelName | undefined =>
  (LOG_LEVELS as readonly string[]).includes(value.toLowerCase())
    ? value.toLowerCase() as LogLevelName
    : undefined;

/** `TESSERA_LOG_LEVEL` when it names a level, else `info`. */
export const logLevelFromEnv = (): LogLevelName =>
  parseLogLevel(globalThis.Deno?.env.get("TESSERA_LOG_LEVEL") ?? "") ?? "info";

const effectLevel = (level: LogLevelName): LogLevel.LogLevel => {
  switch (level) {
    case "none":
      return LogLevel.None;
    case "error":
      return LogLevel.Error;
    case "warning":
      return LogLevel.Warning;
    case "info":
      return LogLevel.Info;
    case "debug":
      return LogLevel.Debug;
  }
};

/** Replaces Effect's default logger: structured lines on stderr at `level` and above. */
export const loggingLayer = (
  level: LogLevelName,
  format: LogFormat = "logfmt",
): Layer.Layer<never> =>
  Layer.merge(
    Logger.replace(
      Logger.defaultLogger,
      Logger.withConsoleError(format === "json" ? Logger.jsonLogger : Logger.logfmtLogger),
    ),
    Logger.minimumLogLevel(effectLevel(level)),
  );

/** Names the rank on every line `effect` logs (a number, or `supervisor`). */
export const logAsRank = (
  rank: number | "supervisor",
): <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R> =>
<A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.annotateLogs(effect, "rank", rank);
