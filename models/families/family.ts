/**
 * A model family: what one Hugging Face `model_type` adds to the shared decoder (Llama's
 * layout, read by models/huggingface.ts): its own config.json fields, read into decoder
 * features or refused by name, and its own tensors. Adding a family is one file beside this
 * one, listed in families/registry.ts; the rank program, the planner and the CPU reference act
 * on the features, never on the family's name.
 */
import type { LlamaConfig } from "../config.ts";

/** The decoder features a family can switch on (see `LlamaConfig` for each one's meaning). */
export type FamilyFeatures = Partial<
  Pick<
    LlamaConfig,
    | "attentionBias"
    | "qkNorm"
    | "slidingWindow"
    | "slidingWindowLayers"
    | "mlpActivation"
    | "normWeightOffset"
    | "embeddingScale"
    | "sandwichNorms"
    | "attentionScale"
    | "attentionSoftcap"
    | "finalLogitSoftcap"
    | "sharedClassifier"
  >
>;

/** One tensor the model needs: its models/shards.ts name, its HF name and its [out, in] shape. */
export interface HuggingFaceTensor {
  readonly name: string;
  readonly hfName: string;
  readonly shape: readonly number[];
  /** Where a fused checkpoint (Phi-3's qkv_proj, gate_up_proj) holds this tensor's rows. */
  readonly rowOffset?: number;
}

/** Where a fused checkpoint keeps one projection: the HF tensor, its rows, this block's offset. */
export interface FusedRows {
  readonly hf: string;
  readonly rows: (q: number, kv: number, hidden: number) => number;
  readonly offset: (q: number, kv: number, hidden: number) => number;
}

/** What config.json says beyond the shared fields, as the family reads it. */
export interface FamilyConfigContext {
  /** max_position_embeddings, already checked. */
  readonly seqLen: number;
}

export interface ModelFamily {
  /** config.json's `model_type`. */
  readonly modelType: string;
  /** The transformers class its checkpoints name in `architectures`. */
  readonly architecture: string;
  /** The family's own config.json fields as decoder features, or the reason they are refused. */
  features(json: Record<string, unknown>, context: FamilyConfigContext): FamilyFeatures | string;
  /** Shared layer tensors the family's checkpoints name otherwise: name → HF suffix. */
  readonly renamed?: Readonly<Record<string, string>>;
  /** Projections that the family's checkpoints fuse, by models/shards.ts name (wq, w1, ...). */
  readonly fused?: Readonly<Record<string, FusedRows>>;
  /** The family's own tensors of layer `layer` beyond the shared ones (biases, norms). */
  layerTensors?(config: LlamaConfig, layer: number): readonly HuggingFaceTensor[];
}

/** `sliding_window` as a feature: a positive integer below the context, null or absent for none. */
export const slidingWindowFeature = (
  json: Record<string, unknown>,
  { seqLen }: FamilyConfigContext,
): FamilyFeatures | string => {
  const window = json.sliding_window ?? null;
  if (!(window === null || (Number.isSafeInteger(window) && (window as number) > 0))) {
    return `sliding_window = ${JSON.stringify(window)} must be a positive integer or null`;
  }
  return window !== null && (window as number) < seqLen ? { slidingWindow: window as number } : {};
};

/** Refuses `attention_bias = true` where the family's o_proj bias has no kernel. */
export const refuseAttentionBias = (json: Record<string, unknown>, family: string) =>
  json.attention_bias === true
    ? `attention_bias is not supported for ${family} (its o_proj bias has no kernel)`
    : undefined;
