/**
 * Every message between the supervisor and a rank, defined once and shared by all transports.
 * Tensors are binary payloads (see collectives/protocol.ts); nothing on the wire is evaluated.
 */
import { Schema } from "effect";
import { TensorPayload } from "../collectives/protocol.ts";

const Name = Schema.String.pipe(Schema.minLength(1));
const Size = Schema.Int.pipe(Schema.positive());

/** Y = X·W with W [in, out] split by output columns; `gatherOutput` all-gathers Y. */
export const ColumnParallelSpec = Schema.TaggedStruct("ColumnParallelLinear", {
  name: Name,
  inFeatures: Size,
  outFeatures: Size,
  gatherOutput: Schema.Boolean,
});

/** Y = X·W with W [in, out] split by input rows; partial sums are all-reduced. */
export const RowParallelSpec = Schema.TaggedStruct("RowParallelLinear", {
  name: Name,
  inFeatures: Size,
  outFeatures: Size,
  /** true: each rank receives its slice of X; false: each rank slices the full X itself. */
  inputIsParallel: Schema.Boolean,
});

/** Y = act(X·A)·B, A column-split and B row-split: one all-reduce, no all-gather. */
export const ParallelMlpSpec = Schema.TaggedStruct("ParallelMlp", {
  name: Name,
  dim: Size,
  hidden: Size,
  activation: Schema.Literal("gelu", "silu"),
});

export const LayerSpec = Schema.Union(ColumnParallelSpec, RowParallelSpec, ParallelMlpSpec);
export type LayerSpec = typeof LayerSpec.Type;

/** Supervisor → rank. */
export const RankCommand = Schema.Union(
  Schema.TaggedStruct("LoadLayer", {
    step: Schema.NonNegativeInt,
    spec: LayerSpec,
    /** This rank's shards, in the order the layer's weight loader defines. */
    shards: Schema.Array(TensorPayload),
  }),
  Schema.TaggedStruct("Forward", {
    step: Schema.NonNegativeInt,
    layer: Name,
    input: TensorPayload,
  }),
  Schema.TaggedStruct("Ping", { step: Schema.NonNegativeInt }),
);
export type RankCommand = typeof RankCommand.Type;

/** Rank → supervisor. */
export const RankReply = Schema.Union(
  Schema.TaggedStruct("Loaded", {
    rank: Schema.NonNegativeInt,
    bytes: Schema.NonNegativeInt,
    shardShapes: Schema.Array(Schema.Array(Schema.NonNegativeInt)),
  }),
  Schema.TaggedStruct("Output", { rank: Schema.NonNegativeInt, output: TensorPayload }),
  Schema.TaggedStruct("Pong", {
    rank: Schema.NonNegativeInt,
    backend: Schema.String,
    adapter: Schema.String,
  }),
  Schema.TaggedStruct("Failed", {
    rank: Schema.NonNegativeInt,
    step: Schema.NonNegativeInt,
    reason: Schema.String,
    message: Schema.String,
  }),
);
export type RankReply = typeof RankReply.Type;
