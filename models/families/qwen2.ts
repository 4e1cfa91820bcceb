/**
 * Qwen2 / Qwen2.5 (`Qwen2ForCausalLM`): a Llama with biases on q, k and v (not o), column-split
 * with their projections. It slides its window only when `use_sliding_window` asks, which
 * Tessera refuses rather than ignores.
 */
import { kvDim, type LlamaConfig, qDim } from "../config.ts";
import type { HuggingFaceTensor, ModelFamily } from "./family.ts";

const BIASES = [
  ["bq", "q_proj", qDim],
  ["bk", "k_proj", kvDim],
  ["bv", "v_proj", kvDim],
] as const;

/** q/k/v biases of layer `layer`, as Qwen2 and its kin name them. */
export const projectionBiases = (config: LlamaConfig, layer: number): HuggingFaceTensor[] =>
  BIASES.map(([name, hf, width]) => ({
    name: `layers.${layer}.${name}`,
    hfName: `model.layers.${layer}.self_attn.${hf}.bias`,
    shape: [width(config)],
  }));

/** Refuses `use_sliding_window = true` (Qwen's windows are off unless asked for). */
export const refuseQwenWindow = (json: Record<string, unknown>, family: string) =>
  json.use_sliding_window === true
    ? `use_sliding_window = true is not supported (${family})`
    : undefined;

export const qwen2: ModelFamily = {
  modelType: "qwen2",
  architecture: "Qwen2ForCausalLM",
  features: (json) => refuseQwenWindow(json, "qwen2") ?? { attentionBias: true },
  layerTensors: projectionBiases,
};
