/**
 * The supervisor's observability sink (a `Context.Tag`): where rank events (load progress, rank
 * spans) and the supervisor's own spans go, and whether ranks should record spans at all.
 * Transports, the supervisor and the engine look it up when they start; without it nothing is
 * recorded and nothing is printed.
 */
import { Context, Effect, Layer, Option, type Scope } from "effect";
import { ChromeTrace } from "./chrome_trace.ts";
import { logLevelFromEnv, type LogLevelName } from "./logging.ts";
import type { ProgressView } from "./progress.ts";
import type { RankEvent } from "./rank_events.ts";
import { noTimeline, type Timeline, wallClockMillis } from "./timeline.ts";

/** What {@link Telemetry} provides. */
export interface TelemetryShape {
  /** Whether ranks record spans (tracing costs one GPU wait per kernel segment). */
  readonly tracing: boolean;
  /** The level ranks in other isolates log at. */
  readonly logLevel: LogLevelName;
  /** Takes an event a rank reported. */
  rankEvent(event: RankEvent): void;
  /** The supervisor's own spans: steps and requests. */
  readonly timeline: Timeline;
}

/** The service key of {@link Telemetry}. */
export type Telemetry = Context.TagClassShape<"tessera/Telemetry", TelemetryShape>;

/** Where progress and trace spans go (a `Context.Tag`); see {@link telemetryLayer}. */
export const Telemetry: Context.TagClass<Telemetry, "tessera/Telemetry", TelemetryShape> = Context
  .Tag("tessera/Telemetry")<Telemetry, TelemetryShape>();

/** Records nothing and shows nothing; ranks log at `TESSERA_LOG_LEVEL`. */
export const quietTelemetry: TelemetryShape = {
  tracing: false,
  logLevel: logLevelFromEnv(),
  rankEvent: () => {},
  timeline: noTimeline,
};

/** The provided {@link Telemetry}, or {@link quietTelemetry}. */
export const currentTelemetry: Effect.Effect<TelemetryShape> = Effect.map(
  Effect.serviceOption(Telemetry),
  Option.getOrElse(() => quietTelemetry),
);

/** Options of {@link telemetryLayer}. */
export interface TelemetryOptions {
  /** Shows load progress (see observe/progress.ts). */
  readonly progress?: ProgressView;
  /** Collects a trace of every rank and the supervisor, handed to `onTrace` when the scope ends. */
  readonly trace?: { readonly onTrace: (trace: ChromeTrace) => Effect.Effect<void> };
  /** Level of ranks in other isolates; default `TESSERA_LOG_LEVEL` or info. */
  readonly logLevel?: LogLevelName;
}

/** A {@link Telemetry} that lives for the layer's scope (the trace is written when it closes). */
export const makeTelemetry = (
  options: TelemetryOptions,
): Effect.Effect<TelemetryShape, never, Scope.Scope> =>
  Effect.gen(function* () {
    const trace = options.trace ? new ChromeTrace() : undefined;
    const { progress } = options;
    if (progress) yield* Effect.addFinalizer(() => Effect.sync(() => progress.stop()));
    if (trace && options.trace) {
      const { onTrace } = options.trace;
      yield* Effect.addFinalizer(() => onTrace(trace));
    }
    const timeline: Timeline = trace
      ? {
        enabled: true,
        record: (name, category, startMillis, args) =>
          trace.add("supervisor", [{
            name,
            category,
            startMillis,
            durationMillis: Math.max(0, wallClockMillis() - startMillis),
            args,
          }]),
      }
      : noTimeline;
    return {
      tracing: trace !== undefined,
      logLevel: options.logLevel ?? logLevelFromEnv(),
      timeline,
      rankEvent: (event) => {
        if (event._tag === "LoadProgress") progress?.update(event);
        else trace?.add({ rank: event.rank }, event.spans);
      },
    };
  });

/** {@link makeTelemetry} as a layer. */
export const telemetryLayer = (options: TelemetryOptions): Layer.Layer<Telemetry> =>
  Layer.scoped(Telemetry, makeTelemetry(options));
