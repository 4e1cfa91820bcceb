import { type Cause, Data } from "effect";
import type { ErrorFields, TaggedErrorClass } from "../util/tagged_error.ts";

/** A collective could not complete: mismatched shapes or dtypes, a timeout, or an aborted step. */
export interface CollectiveError extends Cause.YieldableError {
  /** Always `"CollectiveError"`. */
  readonly _tag: "CollectiveError";
  /** The collective operation, e.g. `allReduce`. */
  readonly op: string;
  /** The ranks at fault (those missing or disagreeing). */
  readonly ranks: readonly number[];
  /** Human-readable description. */
  readonly message: string;
}

/** Makes a `CollectiveError` (a `Data.TaggedError`: yieldable, matched by `_tag`). */
export const CollectiveError: TaggedErrorClass<CollectiveError> = Data.TaggedError(
  "CollectiveError",
)<
  ErrorFields<CollectiveError>
>;

/** A rank stopped (crashed, was killed, or its device was lost); everyone waiting on it fails. */
export interface RankDied extends Cause.YieldableError {
  /** Always `"RankDied"`. */
  readonly _tag: "RankDied";
  /** The rank that stopped. */
  readonly rank: number;
  /** Human-readable description. */
  readonly message: string;
}

/** Makes a `RankDied` (a `Data.TaggedError`: yieldable, matched by `_tag`). */
export const RankDied: TaggedErrorClass<RankDied> = Data.TaggedError("RankDied")<
  ErrorFields<RankDied>
>;
