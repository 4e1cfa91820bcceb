/**
 * Mistral (`MistralForCausalLM`): a Llama whose attention sees the last `sliding_window`
 * positions (v0.1); v0.2 on sets it to null and is a Llama.
 */
import { type ModelFamily, slidingWindowFeature } from "./family.ts";

export const mistral: ModelFamily = {
  modelType: "mistral",
  architecture: "MistralForCausalLM",
  features: slidingWindowFeature,
};
