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

/** Where a rank finds the model weights; it reads only its own slices. */
export const ModelSource = Schema.Struct({
  format: Schema.Literal("llama2c", "huggingface"),
  path: Name,
});
export type ModelSource = typeof ModelSource.Type;

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
  /** Load this rank's shards of a Llama model and allocate its KV cache and buffers. */
  Schema.TaggedStruct("LoadModel", {
    step: Schema.NonNegativeInt,
    source: ModelSource,
    /** Most tokens one step may carry (a prefill chunk, or one row per batched sequence). */
    maxBatchTokens: Size,
    /** Sequences that may run at once, each with its own KV-cache slot. */
    maxSequences: Schema.optionalWith(Size, { default: () => 1 }),
    /** Element type of the matmul weights on the device (f16 needs shader-f16). */
    weights: Schema.optionalWith(Schema.Literal("f32", "f16"), { default: () => "f32" as const }),
  }),
  /**
   * Vocab-parallel embedding of `tokens`, then all-reduce. Token r goes to position
   * `positions[r]` of sequence `sequences[r]` (that sequence's KV-cache slot).
   */
  Schema.TaggedStruct("Embed", {
    step: Schema.NonNegativeInt,
    tokens: Schema.Array(Schema.NonNegativeInt).pipe(Schema.minItems(1)),
    positions: Schema.Array(Schema.NonNegativeInt),
    sequences: Schema.Array(Schema.NonNegativeInt),
  }).pipe(
    Schema.filter((e) =>
      e.positions.length === e.tokens.length && e.sequences.length === e.tokens.length ||
      "Embed needs one position and one sequence per token"
    ),
  ),
  /** One decoder layer on the current tokens: two all-reduces. */
  Schema.TaggedStruct("DecoderLayer", {
    step: Schema.NonNegativeInt,
    layer: Schema.NonNegativeInt,
  }),
  /** Final norm and the rank's vocabulary slice of the LM head for `rows` of the last Embed. */
  Schema.TaggedStruct("LmHead", {
    step: Schema.NonNegativeInt,
    rows: Schema.Array(Schema.NonNegativeInt).pipe(Schema.minItems(1)),
    /** Candidates to return; 0 returns the whole local logits slice (for checks). */
    topK: Schema.NonNegativeInt,
    temperature: Schema.NonNegative,
  }),
  /** Diagnostics: `iterations` back-to-back collectives of `bytes` each, timed on the rank. */
  Schema.TaggedStruct("TimeCollective", {
    step: Schema.NonNegativeInt,
    op: Schema.Literal("allReduce", "allGather"),
    bytes: Schema.NonNegativeInt.pipe(Schema.lessThanOrEqualTo(64 * 1024 * 1024)),
    iterations: Schema.Int.pipe(Schema.between(1, 1000)),
  }),
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
  Schema.TaggedStruct("ModelLoaded", {
    rank: Schema.NonNegativeInt,
    bytes: Schema.NonNegativeInt,
    kvCacheBytes: Schema.NonNegativeInt,
  }),
  Schema.TaggedStruct("Done", {
    rank: Schema.NonNegativeInt,
    /** Milliseconds this step spent in collectives on this rank (waiting included). */
    collectiveMillis: Schema.optional(Schema.NonNegative),
  }),
  /** Milliseconds per collective, as this rank saw them. */
  Schema.TaggedStruct("Timings", {
    rank: Schema.NonNegativeInt,
    millis: Schema.Array(Schema.Number),
  }),
  /**
   * The rank's top-k of its vocabulary slice for each requested row: f32 values and i32 global
   * ids as bytes, [rows, k].
   */
  Schema.TaggedStruct("Candidates", {
    rank: Schema.NonNegativeInt,
    rows: Schema.NonNegativeInt,
    values: Schema.Uint8ArrayFromSelf,
    indices: Schema.Uint8ArrayFromSelf,
    /** Per row, log Σ exp(logit / T) over the slice, so the sampler can normalise exactly. */
    logSumExp: Schema.optional(Schema.Array(Schema.Number)),
    /** First global token id of this rank's slice. */
    vocabStart: Schema.NonNegativeInt,
  }),
  Schema.TaggedStruct("Failed", {
    rank: Schema.NonNegativeInt,
    step: Schema.NonNegativeInt,
    reason: Schema.String,
    message: Schema.String,
  }),
);
export type RankReply = typeof RankReply.Type;
