import type { RopeScaling } from "./rope_scaling.ts";

/**
 * How RoPE pairs the dimensions of a head: llama2.c/Meta rotate adjacent pairs (2i, 2i+1);
 * Hugging Face checkpoints (whose q/k rows are permuted on export) rotate (i, i + headDim/2).
 */
export type RopeLayout = "interleaved" | "half";

/** The shape of a Llama-family model, independent of the file format it came from. */
export interface LlamaConfig {
  /** Width of the residual stream. */
  readonly dim: number;
  /** Width of the SwiGLU feed-forward layer (w1/w3 outputs, w2 input). */
  readonly hiddenDim: number;
  /** Decoder layers. */
  readonly nLayers: number;
  /** Query heads. */
  readonly nHeads: number;
  /** Key/value heads (GQA when fewer than `nHeads`; must divide it). */
  readonly nKvHeads: number;
  /** Tokens in the vocabulary. */
  readonly vocabSize: number;
  /** Longest sequence the KV cache holds. */
  readonly seqLen: number;
  /** Width of one head; `dim / nHeads` for llama2.c. */
  readonly headDim: number;
  /** RMSNorm epsilon (1e-5 in llama2.c). */
  readonly normEps: number;
  /** RoPE base (10000 in llama2.c). */
  readonly ropeTheta: number;
  /** How RoPE pairs a head's dimensions. */
  readonly ropeLayout: RopeLayout;
  /** `rope_scaling` (Llama 3.1+ llama3, linear, dynamic NTK, yarn); absent: none. */
  readonly ropeScaling?: RopeScaling;
  /** The Hugging Face `model_type` it was read as (models/families/); absent: llama. */
  readonly family?: string;
  /** The q, k and v projections have biases (Qwen2); o has none. Absent: no biases. */
  readonly attentionBias?: boolean;
  /** Per-head RMSNorm of q and k before RoPE (Qwen3's q_norm / k_norm). Absent: none. */
  readonly qkNorm?: boolean;
  /** Sliding-window attention (Mistral): a query sees its last `slidingWindow` positions. */
  readonly slidingWindow?: number;
  /** Which layers the window applies to: all (Mistral, the default) or the even ones (Gemma 2). */
  readonly slidingWindowLayers?: "all" | "even";
  /** The MLP's gate activation: silu (SwiGLU, the default) or GELU's tanh form (Gemma's GeGLU). */
  readonly mlpActivation?: "silu" | "gelu_tanh";
  /** Norm weights are stored as offsets from one, scaling by (1 + w) (Gemma). Absent: w. */
  readonly normWeightOffset?: boolean;
  /** The token embedding is multiplied by this (Gemma: √dim); the tied LM head is not. */
  readonly embeddingScale?: number;
  /**
   * Gemma 2's sandwich norms: the attention and MLP outputs are each normed (post_attention_,
   * post_feedforward_layernorm) after their all-reduce, before the residual add.
   */
  readonly sandwichNorms?: boolean;
  /** Attention scores are scaled by this instead of 1/√headDim (query_pre_attn_scalar^-½). */
  readonly attentionScale?: number;
  /** Attention scores become cap·tanh(score / cap) (Gemma 2's attn_logit_softcapping). */
  readonly attentionSoftcap?: number;
  /** Final logits become cap·tanh(logit / cap) (Gemma 2's final_logit_softcapping). */
  readonly finalLogitSoftcap?: number;
  /** The classifier (LM head) is the token-embedding matrix. */
  readonly sharedClassifier: boolean;
}

/** Width of the key (and value) projection: all kv heads together. */
export const kvDim = (config: LlamaConfig): number => config.nKvHeads * config.headDim;

/** Width of the query projection: all query heads together (equals `dim` for llama2.c). */
export const qDim = (config: LlamaConfig): number => config.nHeads * config.headDim;

/** How many query heads share one kv head. */
export const kvGroupSize = (config: LlamaConfig): number => config.nHeads / config.nKvHeads;

/** The attention window of layer `l`: the config's window where it applies, else none. */
export const layerWindow = (config: LlamaConfig, l: number): number | undefined =>
  config.slidingWindow !== undefined &&
    (config.slidingWindowLayers !== "even" || l % 2 === 0)
    ? config.slidingWindow
    : undefined;
