/** Opens a model's weights by format; each rank then reads only its own slices. */
import type { Effect, Scope } from "effect";
import type { ModelSource } from "../actors/protocol.ts";
import type { WeightType } from "../kernels/matmul.ts";
import type { LlamaConfig } from "./config.ts";
import type { LoadError } from "./errors.ts";
import { openHuggingFace } from "./huggingface.ts";
import { openLlama2c } from "./llama2c.ts";
import { openGguf } from "./gguf/open.ts";
import type { WeightSource } from "./shards.ts";

/**
 * A model's config and weights; `defaultWeights` is the device weight type its file asks for
 * (a quantized GGUF stays quantized), where it asks for one.
 */
export const openModelSource = (
  source: ModelSource,
): Effect.Effect<
  { config: LlamaConfig; source: WeightSource; defaultWeights?: WeightType },
  LoadError,
  Scope.Scope
> => {
  switch (source.format) {
    case "llama2c":
      return openLlama2c(source.path);
    case "huggingface":
      return openHuggingFace(source.path);
    case "gguf":
      return openGguf(source.path);
  }
};
