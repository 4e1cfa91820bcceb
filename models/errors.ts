/** Typed failures of the model layer: reading files (load) and describing models (config). */
import { Data } from "effect";

/** A model or tokenizer file could not be read or does not have the shape its header promises. */
export class LoadError extends Data.TaggedError("LoadError")<{
  readonly file: string;
  readonly tensor?: string;
  readonly reason: string;
  readonly message: string;
}> {}

/** A model configuration or a sampler setting that cannot work, named with its numbers. */
export class ConfigError extends Data.TaggedError("ConfigError")<{
  readonly message: string;
}> {}

/** Builds a `LoadError` whose message is one line naming the file, the tensor and the reason. */
export const loadError = (file: string, reason: string, tensor?: string): LoadError =>
  new LoadError({
    file,
    tensor,
    reason,
    message: tensor === undefined
      ? `cannot load ${file}: ${reason}`
      : `cannot load ${file} (tensor ${tensor}): ${reason}`,
  });
