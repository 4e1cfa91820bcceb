import { type Cause, Data } from "effect";
import type { ErrorFields, TaggedErrorClass } from "../util/tagged_error.ts";
import type { RankDied } from "../collectives/errors.ts";

/** A step (or load) failed on `rank`; `reason` is the tag of the underlying error. */
export interface RankFailed extends Cause.YieldableError {
  /** Always `"RankFailed"`. */
  readonly _tag: "RankFailed";
  /** The rank that failed. */
  readonly rank: number;
  /** The step it failed in (-1 when not tied to a step). */
  readonly step: number;
  /** The `_tag` of the rank's underlying error. */
  readonly reason: string;
  /** Human-readable description. */
  readonly message: string;
}

/** Makes a `RankFailed` (a `Data.TaggedError`: yieldable, matched by `_tag`). */
export const RankFailed: TaggedErrorClass<RankFailed> = Data.TaggedError("RankFailed")<
  ErrorFields<RankFailed>
>;

/** A message a rank cannot act on: an unknown layer, or tensors of the wrong shape. */
export interface InvalidInput extends Cause.YieldableError {
  /** Always `"InvalidInput"`. */
  readonly _tag: "InvalidInput";
  /** Human-readable description. */
  readonly message: string;
}

/** Makes a `InvalidInput` (a `Data.TaggedError`: yieldable, matched by `_tag`). */
export const InvalidInput: TaggedErrorClass<InvalidInput> = Data.TaggedError("InvalidInput")<
  ErrorFields<InvalidInput>
>;

/** A parallel plan that cannot work (for example a tp size that does not divide the heads). */
export interface PlanError extends Cause.YieldableError {
  /** Always `"PlanError"`. */
  readonly _tag: "PlanError";
  /** What does not divide or fit, with its numbers. */
  readonly message: string;
}

/** Makes a `PlanError` (a `Data.TaggedError`: yieldable, matched by `_tag`). */
export const PlanError: TaggedErrorClass<PlanError> = Data.TaggedError("PlanError")<
  ErrorFields<PlanError>
>;

/** Why a step failed: a rank reported an error, or a rank died. */
export type StepFailure = RankFailed | RankDied;

/** Ranks could not be reached or started: a bad address, a refused connection, a wrong secret. */
export interface TransportError extends Cause.YieldableError {
  /** Always `"TransportError"`. */
  readonly _tag: "TransportError";
  /** Human-readable description. */
  readonly message: string;
}

/** Makes a `TransportError` (a `Data.TaggedError`: yieldable, matched by `_tag`). */
export const TransportError: TaggedErrorClass<TransportError> = Data.TaggedError("TransportError")<
  ErrorFields<TransportError>
>;
