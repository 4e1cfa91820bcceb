/**
 * Qwen3 (`Qwen3ForCausalLM`): a Llama with per-head RMSNorms of q and k (`q_norm`, `k_norm`,
 * replicated on every rank) before RoPE, and no projection biases.
 */
import { type ModelFamily, refuseAttentionBias } from "./family.ts";
import { refuseQwenWindow } from "./qwen2.ts";

export const qwen3: ModelFamily = {
  modelType: "qwen3",
  architecture: "Qwen3ForCausalLM",
  features: (json) =>
    refuseAttentionBias(json, "qwen3") ?? refuseQwenWindow(json, "qwen3") ?? { qkNorm: true },
  layerTensors: (config, layer) =>
    ["q_norm", "k_norm"].map((name) => ({
      name: `layers.${layer}.${name}`,
      hfName: `model.layers.${layer}.self_attn.${name}.weight`,
      shape: [config.headDim],
    })),
};
