/** The families Tessera reads from Hugging Face directories, and how a config.json picks one. */
import type { ModelFamily } from "./family.ts";
import { gemma2 } from "./gemma2.ts";
import { llama } from "./llama.ts";
import { mistral } from "./mistral.ts";
import { phi3 } from "./phi3.ts";
import { qwen2 } from "./qwen2.ts";
import { qwen3 } from "./qwen3.ts";

/** Every supported family, by `model_type`. */
export const MODEL_FAMILIES: readonly ModelFamily[] = [
  llama,
  mistral,
  phi3,
  qwen2,
  qwen3,
  gemma2,
];

/** The family a `LlamaConfig` was read as (`config.family`); absent, or a llama2.c file: llama. */
export const familyNamed = (modelType: string | undefined): ModelFamily =>
  MODEL_FAMILIES.find((f) => f.modelType === modelType) ?? llama;

/**
 * The family of a config.json: its `model_type`, else the first of its `architectures` that a
 * family names; undefined when none is supported.
 */
export const familyOf = (json: Record<string, unknown>): ModelFamily | undefined => {
  const byType = MODEL_FAMILIES.find((f) => f.modelType === json.model_type);
  if (byType) return byType;
  const archs = Array.isArray(json.architectures) ? json.architectures : [];
  return MODEL_FAMILIES.find((f) => archs.includes(f.architecture));
};
