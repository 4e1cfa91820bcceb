/**
 * What a rank tells the supervisor besides replies: loading progress and, when tracing, the
 * spans it recorded. Schema messages like every other rank message, so they travel over any
 * transport and are decoded, never evaluated.
 */
import { Schema } from "effect";

/** A span's kind, which is also its track within the rank's row of the trace. */
export const SpanCategory: Schema.Literal<
  ["step", "kernels", "transfer", "wait", "request"]
> = Schema.Literal("step", "kernels", "transfer", "wait", "request");
/** A decoded {@link SpanCategory}. */
export type SpanCategory = typeof SpanCategory.Type;

/** One finished span, timed with the wall clock (so spans of different isolates line up). */
export const TimelineSpan: Schema.Struct<{
  name: typeof Schema.String;
  category: typeof SpanCategory;
  startMillis: typeof Schema.Number;
  durationMillis: typeof Schema.NonNegative;
  args: Schema.optional<Schema.Record$<typeof Schema.String, typeof Schema.Number>>;
}> = Schema.Struct({
  name: Schema.String,
  category: SpanCategory,
  /** Milliseconds since the Unix epoch, with sub-millisecond precision. */
  startMillis: Schema.Number,
  durationMillis: Schema.NonNegative,
  /** Numbers shown beside the span (a step, a layer, bytes). */
  args: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.Number })),
});
/** A decoded {@link TimelineSpan}. */
export type TimelineSpan = typeof TimelineSpan.Type;

/**
 * A rank's progress through loading its shards: bytes read of the bytes its plan needs, and
 * how many ranks the group has (so a view knows when the whole group is done).
 */
export const LoadProgress: Schema.TaggedStruct<"LoadProgress", {
  rank: typeof Schema.NonNegativeInt;
  ranks: typeof Schema.NonNegativeInt;
  bytesRead: typeof Schema.NonNegativeInt;
  bytesPlanned: typeof Schema.NonNegativeInt;
}> = Schema.TaggedStruct("LoadProgress", {
  rank: Schema.NonNegativeInt,
  ranks: Schema.NonNegativeInt,
  bytesRead: Schema.NonNegativeInt,
  bytesPlanned: Schema.NonNegativeInt,
});
/** A decoded {@link LoadProgress}. */
export type LoadProgress = typeof LoadProgress.Type;

/** Spans a rank recorded since its last batch (sent before the reply of each command). */
export const RankSpans: Schema.TaggedStruct<"RankSpans", {
  rank: typeof Schema.NonNegativeInt;
  spans: Schema.Array$<typeof TimelineSpan>;
}> = Schema.TaggedStruct("RankSpans", {
  rank: Schema.NonNegativeInt,
  spans: Schema.Array(TimelineSpan),
});
/** A decoded {@link RankSpans}. */
export type RankSpans = typeof RankSpans.Type;

/** Anything a rank reports on its own. */
export const RankEvent: Schema.Union<[typeof LoadProgress, typeof RankSpans]> = Schema.Union(
  LoadProgress,
  RankSpans,
);
/** A decoded {@link RankEvent}. */
export type RankEvent = typeof RankEvent.Type;
