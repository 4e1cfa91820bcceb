/**
 * Messages between the supervisor's isolate and a rank's Worker, defined once in Schema and
 * decoded on arrival: a malformed message is a typed protocol error, never evaluated.
 */
import { Schema } from "effect";
import { Contribution, TensorPayload } from "../collectives/protocol.ts";
import { RankCommand, RankReply } from "./protocol.ts";

const Int = Schema.NonNegativeInt;

/** Supervisor → rank Worker. */
export const ToRank = Schema.Union(
  Schema.TaggedStruct("Start", {
    rank: Int,
    tp: Int,
    backend: Schema.Literal("auto", "dawn", "deno"),
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

/** Rank Worker → supervisor. */
export const FromRank = Schema.Union(
  Schema.TaggedStruct("Ready", { rank: Int, backend: Schema.String, adapter: Schema.String }),
  Schema.TaggedStruct("StartFailed", { rank: Int, reason: Schema.String, message: Schema.String }),
  Schema.TaggedStruct("Reply", { id: Int, reply: RankReply }),
  Contribution,
);
export type FromRank = typeof FromRank.Type;
