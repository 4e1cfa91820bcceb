/**
 * Which slice of every decoder tensor rank `plan.rank` reads: the model's tensors (stored
 * [out, in], as in llama2.c and Hugging Face) mapped onto the layers/ blocks, whose `read`
 * holds the sharding rule. One line per tensor names the block, and so the split.
 */
import { Effect } from "effect";
import {
  ColumnParallelLinear,
  QKVParallelLinear,
  type QkvShard,
  RowParallelLinear,
} from "../layers/blocks/linear.ts";
import { RMSNorm } from "../layers/blocks/norm.ts";
import { ParallelLMHead, VocabParallelEmbedding } from "../layers/blocks/vocab.ts";
import type {
  MatrixShard,
  ShardReader,
  WeightSource as BlockWeightSource,
} from "../layers/blocks/weights.ts";
import type { LlamaConfig } from "./config.ts";
import type { LoadError } from "./errors.ts";
import type { RankPlan } from "./plan.ts";

export { concatColumns, transpose } from "../layers/blocks/weights.ts";

/** Ranged reads of named [out, in] tensors, whatever the file format. */
export type WeightSource = BlockWeightSource<LoadError>;

/**
 * One layer's shards: vectors as read, matrices as readers that the upload pulls a device block
 * at a time.
 */
export interface LayerShards {
  readonly inputNorm: Float32Array; // [dim], replicated
  readonly qkv: QkvShard<LoadError>; // [dim, (heads_r + 2·kvHeads_r)·hd]: q by heads, k/v by kv heads
  /** Per-head q/k norms (Qwen3), replicated: every head of every rank uses them. */
  readonly qNorm?: Float32Array; // [hd]
  readonly kNorm?: Float32Array; // [hd]
  readonly o: MatrixShard<LoadError>; // [heads_r·hd, dim]: rows of the local heads
  /** Gemma 2's norm of the attention output, after its all-reduce. */
  readonly postAttentionNorm?: Float32Array; // [dim]
  readonly ffnNorm: Float32Array; // [dim], replicated
  readonly gateUp: MatrixShard<LoadError>; // [dim, 2·hidden_r]: gate | up, split over hidden
  readonly down: MatrixShard<LoadError>; // [hidden_r, dim]: rows over hidden
  /** Gemma 2's norm of the MLP output, after its all-reduce. */
  readonly postFfnNorm?: Float32Array; // [dim]
}

/** Reads rank `plan.rank`'s shards of layer `l`. */
export const readLayerShards = (
  reader: ShardReader<LoadError>,
  config: LlamaConfig,
  plan: RankPlan,
  l: number,
): Effect.Effect<LayerShards, LoadError> =>
  Effect.gen(function* () {
    const { dim, headDim } = config;
    const { heads, kvHeads, hidden } = plan;
    const p = `layers.${l}.`;
    const offset = config.normWeightOffset ? 1 : 0;
    const norm = (name: string) => RMSNorm.read(reader, `${p}${name}`, dim, offset);
    const split = { heads, kvHeads, headDim };
    const qkvNames = {
      q: `${p}wq`,
      k: `${p}wk`,
      v: `${p}wv`,
      ...(config.attentionBias ? { bias: { q: `${p}bq`, k: `${p}bk`, v: `${p}bv` } } : {}),
    };
    const rowsOfHeads = { start: heads.start * headDim, count: heads.count * headDim };
    return {
      inputNorm: yield* norm("attention_norm"),
      qkv: yield* QKVParallelLinear.read(reader, qkvNames, split, dim),
      ...(config.qkNorm
        ? {
          qNorm: yield* RMSNorm.read(reader, `${p}q_norm`, headDim, offset),
          kNorm: yield* RMSNorm.read(reader, `${p}k_norm`, headDim, offset),
        }
        : {}),
      o: RowParallelLinear.read(reader, `${p}wo`, rowsOfHeads, dim),
      ...(config.sandwichNorms ? { postAttentionNorm: yield* norm("post_attention_norm") } : {}),
      ffnNorm: yield* norm("ffn_norm"),
      gateUp: ColumnParallelLinear.read(
        reader,
        [{ name: `${p}w1`, span: hidden }, { name: `${p}w3`, span: hidden }],
        dim,
      ),
      down: RowParallelLinear.read(reader, `${p}w2`, hidden, dim),
      ...(config.sandwichNorms ? { postFfnNorm: yield* norm("post_ffn_norm") } : {}),
    };
  });

/**
 * Rank `plan.rank`'s vocabulary rows of the embedding (VocabParallelEmbedding), as a [dim,
 * vocab_r] reader.
 */
export const readEmbeddingShard = (
  reader: ShardReader<LoadError>,
  config: LlamaConfig,
  plan: RankPlan,
) => VocabParallelEmbedding.read(reader, "tok_embeddings", plan.vocab, config.dim);

/**
 * Reads the final norm and rank `plan.rank`'s vocabulary columns of the LM head (a tied head
 * reads the embedding's rows).
 */
export const readHeadShards = (
  reader: ShardReader<LoadError>,
  config: LlamaConfig,
  plan: RankPlan,
) =>
  Effect.map(
    RMSNorm.read(reader, "norm", config.dim, config.normWeightOffset ? 1 : 0),
    (norm) => ({ norm, output: ParallelLMHead.read(reader, "output", plan.vocab, config.dim) }),
  );

/** Bytes (as f32) of every shard rank `plan.rank` holds: what loading it reads. */
export const plannedShardBytes = (config: LlamaConfig, plan: RankPlan): number => {
  const { dim, headDim: hd } = config;
  const { heads, kvHeads, hidden, vocab } = plan;
  const biases = (config.attentionBias ? (heads.count + 2 * kvHeads.count) * hd : 0) +
    (config.qkNorm ? 2 * hd : 0) + (config.sandwichNorms ? 2 * dim : 0);
  const perLayer = 2 * dim + dim * (heads.count + 2 * kvHeads.count) * hd +
    heads.count * hd * dim + 3 * dim * hidden.count + biases;
  // A tied head is the embedding's matrix: its rows are read once.
  const vocabTables = config.sharedClassifier ? 1 : 2;
  return 4 * (config.nLayers * perLayer + vocabTables * vocab.count * dim + dim);
};
