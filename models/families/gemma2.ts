/**
 * Gemma 2 (`Gemma2ForCausalLM`): a Llama layout with GeGLU (tanh GELU) instead of SwiGLU,
 * (1 + w) RMSNorms, the embedding scaled by √hidden_size (the tied LM head is not), a norm after
 * each all-reduced attention and MLP output besides the one before it (`pre_feedforward_
 * layernorm` is the MLP's input norm), soft-capped attention scores and final logits, a
 * sliding window on the even layers, and attention scaled by query_pre_attn_scalar^-½.
 */
import type { FamilyFeatures, ModelFamily } from "./family.ts";
import { refuseAttentionBias } from "./family.ts";

/** A positive number, or null for none; `fallback` when absent (transformers' default). */
const optionalPositive = (
  json: Record<string, unknown>,
  field: string,
  fallback: number | null,
): number | null | string => {
  const value = json[field] === undefined ? fallback : json[field];
  if (value === null) return null;
  return typeof value === "number" && value > 0 && Number.isFinite(value)
    ? value
    : `${field} = ${JSON.stringify(value)} must be a positive number or null`;
};

const features = (
  json: Record<string, unknown>,
  { seqLen }: { readonly seqLen: number },
): FamilyFeatures | string => {
  const refused = refuseAttentionBias(json, "gemma2");
  if (refused) return refused;
  const activation = json.hidden_activation ?? json.hidden_act ?? "gelu_pytorch_tanh";
  if (activation !== "gelu_pytorch_tanh") {
    return `hidden_activation = ${JSON.stringify(activation)} is not supported for gemma2 ` +
      `(only gelu_pytorch_tanh)`;
  }
  const scalar = optionalPositive(json, "query_pre_attn_scalar", 256);
  const attentionCap = optionalPositive(json, "attn_logit_softcapping", 50);
  const finalCap = optionalPositive(json, "final_logit_softcapping", 30);
  for (const v of [scalar, attentionCap, finalCap]) if (typeof v === "string") return v;
  if (scalar === null) return "query_pre_attn_scalar = null must be a positive number";
  const window = json.sliding_window === undefined ? 4096 : json.sliding_window;
  if (!(window === null || (Number.isSafeInteger(window) && (window as number) > 0))) {
    return `sliding_window = ${JSON.stringify(window)} must be a positive integer or null`;
  }
  const layers = json.num_hidden_layers as number;
  if (json.layer_types !== undefined) {
    // Newer transformers write the alternation out; Tessera runs Gemma 2's own (even layers
    // slide), so any other list is refused rather than run differently.
    const even = Array.from(
      { length: layers },
      (_, l) => l % 2 === 0 ? "sliding_attention" : "full_attention",
    );
    if (JSON.stringify(json.layer_types) !== JSON.stringify(even)) {
      return `layer_types = ${JSON.stringify(json.layer_types)} is not supported for gemma2 ` +
        `(only sliding_attention on even layers, full_attention on odd ones)`;
    }
  }
  const tie = json.tie_word_embeddings ?? true;
  if (typeof tie !== "boolean") {
    return `tie_word_embeddings = ${JSON.stringify(tie)} must be a boolean`;
  }
  return {
    mlpActivation: "gelu_tanh",
    normWeightOffset: true,
    embeddingScale: Math.sqrt(json.hidden_size as number),
    sandwichNorms: true,
    attentionScale: 1 / Math.sqrt(scalar as number),
    ...(attentionCap === null ? {} : { attentionSoftcap: attentionCap as number }),
    ...(finalCap === null ? {} : { finalLogitSoftcap: finalCap as number }),
    ...(window !== null && (window as number) < seqLen
      ? { slidingWindow: window as number, slidingWindowLayers: "even" as const }
      : {}),
    sharedClassifier: tie,
  };
};

export const gemma2: ModelFamily = {
  modelType: "gemma2",
  architecture: "Gemma2ForCausalLM",
  features,
  // Gemma 2's post_attention_layernorm norms the attention output; the MLP's input norm is
  // pre_feedforward_layernorm.
  renamed: { ffn_norm: "pre_feedforward_layernorm" },
  layerTensors: (config, layer) =>
    [["post_attention_norm", "post_attention_layernorm"], [
      "post_ffn_norm",
      "post_feedforward_layernorm",
    ]].map(([name, hf]) => ({
      name: `layers.${layer}.${name}`,
      hfName: `model.layers.${layer}.${hf}.weight`,
      shape: [config.dim],
    })),
};
