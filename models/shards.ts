/**
 * The weight loader beside the sharding rule: each rank reads only its own slice of every Llama
 * tensor (stored [out, in] as in llama2.c and Hugging Face) and keeps it as [in, out] for the
 * kernels. One line per tensor says which dimension is split.
 */
import { Effect } from "effect";
import type { LlamaConfig } from "./config.ts";
import type { LoadError } from "./errors.ts";
import type { RankPlan } from "./plan.ts";

/** Ranged reads of named [out, in] tensors, whatever the file format. */
export interface WeightSource {
  /** Rows [start, start + count) as [count, cols]. */
  rows(name: string, start: number, count: number): Effect.Effect<Float32Array, LoadError>;
  /** Columns [start, start + count) of every row as [rows, count]. */
  columns(name: string, start: number, count: number): Effect.Effect<Float32Array, LoadError>;
  /** A whole vector (norm weights). */
  vector(name: string, length: number): Effect.Effect<Float32Array, LoadError>;
}

export interface LayerShards {
  readonly attentionNorm: Float32Array; // [dim], replicated
  readonly wq: Float32Array; // [dim, heads·hd]
  readonly wk: Float32Array; // [dim, kvHeads·hd]
  readonly wv: Float32Array; // [dim, kvHeads·hd]
  readonly wo: Float32Array; // [heads·hd, dim]
  readonly ffnNorm: Float32Array; // [dim], replicated
  readonly w1: Float32Array; // gate [dim, hidden_r]
  readonly w3: Float32Array; // up [dim, hidden_r]
  readonly w2: Float32Array; // down [hidden_r, dim]
  /** q/k/v biases (Qwen2), split as their projections' outputs are. */
  readonly bq?: Float32Array; // [heads·hd]
  readonly bk?: Float32Array; // [kvHeads·hd]
  readonly bv?: Float32Array; // [kvHeads·hd]
  /** Per-head q/k norms (Qwen3), replicated: every head of every rank uses them. */
  readonly qNorm?: Float32Array; // [hd]
  readonly kNorm?: Float32Array; // [hd]
}

export interface RankShards {
  readonly embedding: Float32Array; // [vocab_r, dim]: rows of the table (gathered, not multiplied)
  readonly layers: readonly LayerShards[];
  readonly norm: Float32Array; // [dim]
  readonly output: Float32Array; // [dim, vocab_r]
}

/** [rows, cols] → [cols, rows]. */
export const transpose = (data: Float32Array, rows: number, cols: number): Float32Array => {
  const out = new Float32Array(data.length);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) out[c * rows + r] = data[r * cols + c];
  }
  return out;
};

/** [rows, a], [rows, b], … → [rows, a + b + …]: column blocks side by side (merged layers). */
export const concatColumns = (rows: number, parts: readonly Float32Array[]): Float32Array => {
  const widths = parts.map((p) => p.length / rows);
  const width = widths.reduce((a, b) => a + b, 0);
  const out = new Float32Array(rows * width);
  for (let r = 0; r < rows; r++) {
    let at = r * width;
    for (const [i, part] of parts.entries()) {
      out.set(part.subarray(r * widths[i], (r + 1) * widths[i]), at);
      at += widths[i];
    }
  }
  return out;
};

/** Bytes (as f32) of every shard rank `plan.rank` holds: what loading it reads. */
export const plannedShardBytes = (config: LlamaConfig, plan: RankPlan): number => {
  const { dim, headDim: hd } = config;
  const { heads, kvHeads, hidden, vocab } = plan;
  const biases = (config.attentionBias ? (heads.count + 2 * kvHeads.count) * hd : 0) +
    (config.qkNorm ? 2 * hd : 0);
  const perLayer = 2 * dim + dim * (heads.count + 2 * kvHeads.count) * hd +
    heads.count * hd * dim + 3 * dim * hidden.count + biases;
  return 4 * (config.nLayers * perLayer + 2 * vocab.count * dim + dim);
};

/**
 * Reads rank `plan.rank`'s shards of every tensor; `onRead` hears the bytes read so far after
 * each tensor (of {@link plannedShardBytes}).
 */
export const loadRankShards = (
  source: WeightSource,
  config: LlamaConfig,
  plan: RankPlan,
  onRead: (bytesRead: number) => void = () => {},
): Effect.Effect<RankShards, LoadError> =>
  Effect.gen(function* () {
    const { dim, headDim: hd } = config;
    const { heads, kvHeads, hidden, vocab } = plan;
    let bytesRead = 0;
    const counted = (read: Effect.Effect<Float32Array, LoadError>) =>
      Effect.tap(read, (data) => onRead(bytesRead += data.byteLength));
    // Column-parallel: rows of [out, in] are output features; read them, then transpose.
    const column = (name: string, start: number, count: number) =>
      Effect.map(counted(source.rows(name, start, count)), (d) => transpose(d, count, dim));
    // Row-parallel: columns of [out, in] are input features.
    const row = (name: string, start: number, count: number) =>
      Effect.map(counted(source.columns(name, start, count)), (d) => transpose(d, dim, count));
    const vector = (name: string, length: number) => counted(source.vector(name, length));
    // A slice of a vector (a bias, split as its projection's outputs).
    const slice = (name: string, start: number, count: number) =>
      counted(source.columns(name, start, count));

    const layers: LayerShards[] = [];
    for (let l = 0; l < config.nLayers; l++) {
      const p = `layers.${l}.`;
      layers.push({
        attentionNorm: yield* vector(`${p}attention_norm`, dim),
        wq: yield* column(`${p}wq`, heads.start * hd, heads.count * hd), // split by query heads
        wk: yield* column(`${p}wk`, kvHeads.start * hd, kvHeads.count * hd), // by kv heads
        wv: yield* column(`${p}wv`, kvHeads.start * hd, kvHeads.count * hd), // by kv heads
        wo: yield* row(`${p}wo`, heads.start * hd, heads.count * hd), // rows of the local heads
        ffnNorm: yield* vector(`${p}ffn_norm`, dim),
        w1: yield* column(`${p}w1`, hidden.start, hidden.count), // gate: split over hidden
        w3: yield* column(`${p}w3`, hidden.start, hidden.count), // up: split over hidden
        w2: yield* row(`${p}w2`, hidden.start, hidden.count), // down: rows over hidden
        ...(config.attentionBias
          ? {
            bq: yield* slice(`${p}bq`, heads.start * hd, heads.count * hd), // by query heads
            bk: yield* slice(`${p}bk`, kvHeads.start * hd, kvHeads.count * hd), // by kv heads
            bv: yield* slice(`${p}bv`, kvHeads.start * hd, kvHeads.count * hd), // by kv heads
          }
          : {}),
        ...(config.qkNorm
          ? {
            qNorm: yield* vector(`${p}q_norm`, hd), // replicated
            kNorm: yield* vector(`${p}k_norm`, hd), // replicated
          }
          : {}),
      });
    }
    return {
      embedding: yield* counted(source.rows("tok_embeddings", vocab.start, vocab.count)), // vocab-parallel
      layers,
      norm: yield* vector("norm", dim),
      output: yield* column("output", vocab.start, vocab.count), // LM head split over vocab
    };
  });
