import { Data } from "effect";
import type { RankDied } from "../collectives/errors.ts";

/** A step (or load) failed on `rank`; `reason` is the tag of the underlying error. */
export class RankFailed extends Data.TaggedError("RankFailed")<{
  readonly rank: number;
  readonly step: number;
  readonly reason: string;
  readonly message: string;
}> {}

/** A message a rank cannot act on: an unknown layer, or tensors of the wrong shape. */
export class InvalidInput extends Data.TaggedError("InvalidInput")<{
  readonly message: string;
}> {}

/** A parallel plan that cannot work (for example a tp size that does not divide the heads). */
export class PlanError extends Data.TaggedError("PlanError")<{
  readonly message: string;
}> {}

/** Why a step failed: a rank reported an error, or a rank died. */
export type StepFailure = RankFailed | RankDied;

/** Ranks could not be reached or started: a bad address, a refused connection, a wrong secret. */
export class TransportError extends Data.TaggedError("TransportError")<{
  readonly message: string;
}> {}
