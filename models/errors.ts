/** Typed failures of the model layer: reading files (load) and describing models (config). */
import { type Cause, Data } from "effect";
import type { ErrorFields, TaggedErrorClass } from "../util/tagged_error.ts";

/** A model or tokenizer file could not be read or does not have the shape its header promises. */
export interface LoadError extends Cause.YieldableError {
  /** Always `"LoadError"`. */
  readonly _tag: "LoadError";
  /** The file being read. */
  readonly file: string;
  /** The tensor being read, when the failure is in one. */
  readonly tensor?: string;
  /** What is wrong with it. */
  readonly reason: string;
  /** Human-readable description. */
  readonly message: string;
}

/** Makes a `LoadError` (a `Data.TaggedError`: yieldable, matched by `_tag`). */
export const LoadError: TaggedErrorClass<LoadError> = Data.TaggedError("LoadError")<
  ErrorFields<LoadError>
>;

/** A model configuration or a sampler setting that cannot work, named with its numbers. */
export interface ConfigError extends Cause.YieldableError {
  /** Always `"ConfigError"`. */
  readonly _tag: "ConfigError";
  /** Human-readable description. */
  readonly message: string;
}

/** Makes a `ConfigError` (a `Data.TaggedError`: yieldable, matched by `_tag`). */
export const ConfigError: TaggedErrorClass<ConfigError> = Data.TaggedError("ConfigError")<
  ErrorFields<ConfigError>
>;

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
