/**
 * Llama 1/2/3/3.1+ and SmolLM (`LlamaForCausalLM`): the shared decoder itself. Its
 * `rope_scaling` (llama3, linear, dynamic, yarn) is read with the shared fields.
 */
import { type ModelFamily, refuseAttentionBias } from "./family.ts";

export const llama: ModelFamily = {
  modelType: "llama",
  architecture: "LlamaForCausalLM",
  features: (json) => refuseAttentionBias(json, "llama") ?? {},
};
