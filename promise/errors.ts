/** The one failure of its own the plain Promise API adds: using a model after `close()`. */
import { type Cause, Data } from "effect";
import type { ErrorFields, TaggedErrorClass } from "../util/tagged_error.ts";

/** A `Tessera` model was used after `close()` (or closed while a generation was running). */
export interface ModelClosed extends Cause.YieldableError {
  /** Always `"ModelClosed"`. */
  readonly _tag: "ModelClosed";
  /** Human-readable description. */
  readonly message: string;
}

/** Makes a `ModelClosed` (a `Data.TaggedError`: yieldable, matched by `_tag`, `instanceof`). */
export const ModelClosed: TaggedErrorClass<ModelClosed> = Data.TaggedError("ModelClosed")<
  ErrorFields<ModelClosed>
>;
