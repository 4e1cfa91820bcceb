/**
 * Span recording for traces. A timeline is either off (every call is free) or records finished
 * spans into a buffer that its owner drains: a rank sends them to the supervisor after each
 * command, the supervisor writes them to the trace file.
 */
import { Effect } from "effect";
import type { SpanCategory, TimelineSpan } from "./rank_events.ts";

/** Wall-clock milliseconds with sub-millisecond precision, comparable across isolates. */
export const wallClockMillis = (): number => performance.timeOrigin + performance.now();

/** Where spans go. */
export interface Timeline {
  /** False when nothing is recorded; callers skip work that only tracing needs. */
  readonly enabled: boolean;
  /** Records a span that began at `startMillis` (from {@link wallClockMillis}) and ends now. */
  record(
    name: string,
    category: SpanCategory,
    startMillis: number,
    args?: Record<string, number>,
  ): void;
}

/** Records nothing. */
export const noTimeline: Timeline = { enabled: false, record: () => {} };

/** A timeline that keeps spans until {@link RecordingTimeline.drain} takes them. */
export interface RecordingTimeline extends Timeline {
  /** The spans recorded since the last drain, oldest first. */
  drain(): TimelineSpan[];
}

/**
 * A recording timeline. A rank drains it after every command, so it holds one command's spans;
 * the bound on a whole trace is the supervisor's (observe/chrome_trace.ts).
 */
export const recordingTimeline = (): RecordingTimeline => {
  let spans: TimelineSpan[] = [];
  return {
    enabled: true,
    record: (name, category, startMillis, args) => {
      spans.push({
        name,
        category,
        startMillis,
        durationMillis: Math.max(0, wallClockMillis() - startMillis),
        args,
      });
    },
    drain: () => {
      const taken = spans;
      spans = [];
      return taken;
    },
  };
};
/** Runs `effect` and records it as a span when the timeline is on. */
export const withSpan = <A, E, R>(
  timeline: Timeline,
  name: string,
  category: SpanCategory,
  effect: Effect.Effect<A, E, R>,
  args?: Record<string, number>,
): Effect.Effect<A, E, R> =>
  timeline.enabled
    ? Effect.suspend(() => {
      const started = wallClockMillis();
      return Effect.ensuring(
        effect,
        Effect.sync(() => timeline.record(name, category, started, args)),
      );
    })
    : effect;
