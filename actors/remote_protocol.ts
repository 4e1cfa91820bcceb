/**
 * Messages between the supervisor and a rank that lives elsewhere (a Worker, or a process on
 * this or another host), defined once in Schema and decoded on arrival: a malformed message is a
 * typed protocol error, never evaluated. Over TCP each message is one binary frame (wire/).
 */
import { Schema } from "effect";
import { Contribution, TensorPayload } from "../collectives/protocol.ts";
import { LOG_LEVELS } from "../observe/logging.ts";
import { LoadProgress, RankSpans } from "../observe/rank_events.ts";
import { RankCommand, RankReply } from "./protocol.ts";

const Int = Schema.NonNegativeInt;

/** Supervisor → rank. */
export const ToRank = Schema.Union(
  Schema.TaggedStruct("Start", {
    rank: Int,
    tp: Int,
    backend: Schema.Literal("auto", "dawn", "deno"),
    /** Dawn's adapter-name filter of the rank's placement (gpu/adapters.ts); absent: any. */
    adapter: Schema.optional(Schema.String),
    /** How the placement reached the adapter, shown beside its name. */
    placementNote: Schema.optional(Schema.String),
    collectiveTimeoutMs: Int,
    /** Workers only: the region their collectives meet in (collectives/shared_memory.ts). */
    shared: Schema.optional(Schema.instanceOf(SharedArrayBuffer)),
    /** Record spans and send them after each command (`--trace`). */
    tracing: Schema.optionalWith(Schema.Boolean, { default: () => false }),
    /** The rank's log level. */
    logLevel: Schema.optionalWith(Schema.Literal(...LOG_LEVELS), {
      default: () => "info" as const,
    }),
  }),
  Schema.TaggedStruct("Command", { id: Int, command: RankCommand }),
  Schema.TaggedStruct("CollectiveDone", { step: Int, seq: Int, tensor: TensorPayload }),
  Schema.TaggedStruct("CollectiveFailed", {
    step: Int,
    seq: Int,
    reason: Schema.Literal("CollectiveError", "RankDied"),
    /** The ranks involved (CollectiveError) or the dead rank (RankDied). */
    ranks: Schema.Array(Int),
    message: Schema.String,
  }),
  Schema.TaggedStruct("Stop", {}),
);
export type ToRank = typeof ToRank.Type;

/** Rank → supervisor. */
export const FromRank = Schema.Union(
  Schema.TaggedStruct("Ready", { rank: Int, backend: Schema.String, adapter: Schema.String }),
  Schema.TaggedStruct("StartFailed", { rank: Int, reason: Schema.String, message: Schema.String }),
  Schema.TaggedStruct("Reply", { id: Int, reply: RankReply }),
  /** Sent on an interval by rank processes, so a silent connection is noticed. */
  Schema.TaggedStruct("Heartbeat", { rank: Int }),
  Contribution,
  LoadProgress,
  RankSpans,
  /** A rank Worker's answer to `Stop`, to its host only: its device and Dawn are freed. */
  Schema.TaggedStruct("Stopped", {}),
);
export type FromRank = typeof FromRank.Type;
