/**
 * Every message between the supervisor and a rank, defined once and shared by all transports.
 * Tensors are binary payloads (see collectives/protocol.ts); nothing on the wire is evaluated.
 */
import { Schema } from "effect";
import { TensorPayload } from "../collectives/protocol.ts";

/** Schema of a non-empty name (a layer's, a path). */
export type Name = Schema.filter<typeof Schema.String>;
/** Schema of a positive integer size. */
export type Size = Schema.filter<typeof Schema.Int>;
/** Schema of a non-negative integer (a step, a rank, an offset). */
export type NonNegativeInt = typeof Schema.NonNegativeInt;
/** A non-empty name. */
const Name: Name = Schema.String.pipe(Schema.minLength(1));
/** A positive integer. */
const Size: Size = Schema.Int.pipe(Schema.positive());

/** Y = X·W with W [in, out] split by output columns; `gatherOutput` all-gathers Y. */
export const ColumnParallelSpec: Schema.TaggedStruct<"ColumnParallelLinear", {
  name: Name;
  inFeatures: Size;
  outFeatures: Size;
  gatherOutput: typeof Schema.Boolean;
}> = Schema.TaggedStruct("ColumnParallelLinear", {
  name: Name,
  inFeatures: Size,
  outFeatures: Size,
  gatherOutput: Schema.Boolean,
});

/** Y = X·W with W [in, out] split by input rows; partial sums are all-reduced. */
export const RowParallelSpec: Schema.TaggedStruct<"RowParallelLinear", {
  name: Name;
  inFeatures: Size;
  outFeatures: Size;
  inputIsParallel: typeof Schema.Boolean;
}> = Schema.TaggedStruct("RowParallelLinear", {
  name: Name,
  inFeatures: Size,
  outFeatures: Size,
  /** true: each rank receives its slice of X; false: each rank slices the full X itself. */
  inputIsParallel: Schema.Boolean,
});

/** Y = act(X·A)·B, A column-split and B row-split: one all-reduce, no all-gather. */
export const ParallelMlpSpec: Schema.TaggedStruct<"ParallelMlp", {
  name: Name;
  dim: Size;
  hidden: Size;
  activation: Schema.Literal<["gelu", "silu"]>;
}> = Schema.TaggedStruct("ParallelMlp", {
  name: Name,
  dim: Size,
  hidden: Size,
  activation: Schema.Literal("gelu", "silu"),
});

/** Any of the parallel layers a supervisor can load. */
export const LayerSpec: Schema.Union<
  [typeof ColumnParallelSpec, typeof RowParallelSpec, typeof ParallelMlpSpec]
> = Schema.Union(ColumnParallelSpec, RowParallelSpec, ParallelMlpSpec);
/** A decoded {@link LayerSpec}. */
export type LayerSpec = typeof LayerSpec.Type;

/** Where a rank finds the model weights; it reads only its own slices. */
export const ModelSource: Schema.Struct<{
  format: Schema.Literal<["llama2c", "huggingface", "gguf"]>;
  path: Name;
}> = Schema.Struct({
  format: Schema.Literal("llama2c", "huggingface", "gguf"),
  path: Name,
});
/** A decoded {@link ModelSource}. */
export type ModelSource = typeof ModelSource.Type;

/** Supervisor → rank. */
export const RankCommand: Schema.Union<[
  Schema.TaggedStruct<"LoadLayer", {
    step: NonNegativeInt;
    spec: typeof LayerSpec;
    shards: Schema.Array$<typeof TensorPayload>;
  }>,
  Schema.TaggedStruct<"Forward", {
    step: NonNegativeInt;
    layer: Name;
    input: typeof TensorPayload;
  }>,
  Schema.TaggedStruct<"Ping", { step: NonNegativeInt }>,
  Schema.TaggedStruct<"LoadModel", {
    step: NonNegativeInt;
    source: typeof ModelSource;
    maxBatchTokens: Size;
    maxSequences: Schema.optionalWith<Size, { default: () => number }>;
    weights: Schema.optionalWith<
      Schema.Literal<["f32", "f16", "q8_0", "q4_0"]>,
      { default: () => "f32" }
    >;
    contextLength: Schema.optional<Size>;
    kvCacheDtype: Schema.optionalWith<Schema.Literal<["f32", "f16"]>, { default: () => "f32" }>;
  }>,
  Schema.filter<
    Schema.TaggedStruct<"Embed", {
      step: NonNegativeInt;
      tokens: Schema.filter<Schema.Array$<NonNegativeInt>>;
      positions: Schema.Array$<NonNegativeInt>;
      sequences: Schema.Array$<NonNegativeInt>;
    }>
  >,
  Schema.TaggedStruct<"DecoderLayer", { step: NonNegativeInt; layer: NonNegativeInt }>,
  Schema.TaggedStruct<"LmHead", {
    step: NonNegativeInt;
    rows: Schema.filter<Schema.Array$<NonNegativeInt>>;
    topK: NonNegativeInt;
    temperature: typeof Schema.NonNegative;
  }>,
  Schema.TaggedStruct<"TimeCollective", {
    step: NonNegativeInt;
    op: Schema.Literal<["allReduce", "allGather"]>;
    bytes: Schema.filter<NonNegativeInt>;
    iterations: Schema.filter<typeof Schema.Int>;
  }>,
  Schema.TaggedStruct<"Pause", { step: NonNegativeInt; millis: Schema.filter<typeof Schema.Int> }>,
]> = Schema.Union(
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
    weights: Schema.optionalWith(Schema.Literal("f32", "f16", "q8_0", "q4_0"), {
      default: () => "f32" as const,
    }),
    /** Positions each sequence may reach (the memory plan's context); default the model's. */
    contextLength: Schema.optional(Size),
    /** Element type of the KV cache (f16 needs shader-f16). */
    kvCacheDtype: Schema.optionalWith(Schema.Literal("f32", "f16"), {
      default: () => "f32" as const,
    }),
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
  /**
   * Fault drill: the rank sits idle for `millis` before its next command, alive and answering
   * heartbeats, as a rank stuck in a driver would (the engine's stall watchdog must notice).
   */
  Schema.TaggedStruct("Pause", {
    step: Schema.NonNegativeInt,
    millis: Schema.Int.pipe(Schema.between(1, 600_000)),
  }),
);
/** A decoded {@link RankCommand}. */
export type RankCommand = typeof RankCommand.Type;

/** Rank → supervisor. */
export const RankReply: Schema.Union<[
  Schema.TaggedStruct<"Loaded", {
    rank: NonNegativeInt;
    bytes: NonNegativeInt;
    shardShapes: Schema.Array$<Schema.Array$<NonNegativeInt>>;
  }>,
  Schema.TaggedStruct<"Output", { rank: NonNegativeInt; output: typeof TensorPayload }>,
  Schema.TaggedStruct<"Pong", {
    rank: NonNegativeInt;
    backend: typeof Schema.String;
    adapter: typeof Schema.String;
    cpuRenderer: typeof Schema.Boolean;
    shaderF16: typeof Schema.Boolean;
    maxBindingBytes: NonNegativeInt;
  }>,
  Schema.TaggedStruct<"ModelLoaded", {
    rank: NonNegativeInt;
    bytes: NonNegativeInt;
    kvCacheBytes: NonNegativeInt;
    device: typeof Schema.String;
  }>,
  Schema.TaggedStruct<"Done", {
    rank: NonNegativeInt;
    collectiveMillis: Schema.optional<typeof Schema.NonNegative>;
  }>,
  Schema.TaggedStruct<
    "Timings",
    { rank: NonNegativeInt; millis: Schema.Array$<typeof Schema.Number> }
  >,
  Schema.TaggedStruct<"Candidates", {
    rank: NonNegativeInt;
    rows: NonNegativeInt;
    values: typeof Schema.Uint8ArrayFromSelf;
    indices: typeof Schema.Uint8ArrayFromSelf;
    logSumExp: Schema.optional<Schema.Array$<typeof Schema.Number>>;
    vocabStart: NonNegativeInt;
  }>,
  Schema.TaggedStruct<"Failed", {
    rank: NonNegativeInt;
    step: NonNegativeInt;
    reason: typeof Schema.String;
    message: typeof Schema.String;
  }>,
]> = Schema.Union(
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
    /** A CPU renderer, whose memory is the host's (gpu/device.ts). */
    cpuRenderer: Schema.Boolean,
    /** The device has shader-f16 (an f16 KV cache needs it). */
    shaderF16: Schema.Boolean,
    /** The device's maxStorageBufferBindingSize (the memory plan's binding limit). */
    maxBindingBytes: Schema.NonNegativeInt,
  }),
  Schema.TaggedStruct("ModelLoaded", {
    rank: Schema.NonNegativeInt,
    bytes: Schema.NonNegativeInt,
    kvCacheBytes: Schema.NonNegativeInt,
    /** The rank's adapter, its optional features and the kernel forms they chose. */
    device: Schema.String,
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
/** A decoded {@link RankReply}. */
export type RankReply = typeof RankReply.Type;
