import { type Cause, Data } from "effect";
import type { ErrorFields, TaggedErrorClass } from "../util/tagged_error.ts";

/** A collective could not complete: mismatched shapes or dtypes, a timeout, or an aborted step. */
export interface CollectiveError extends Cause.YieldableError {
  /** Always `"CollectiveError"`. */
  readonly _tag: "CollectiveError";
  readonly op: string;
  readonly ranks: readonly number[];
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
  readonly rank: number;
  readonly message: string;
}

/** Makes a `RankDied` (a `Data.TaggedError`: yieldable, matched by `_tag`). */
export const RankDied: TaggedErrorClass<RankDied> = Data.TaggedError("RankDied")<
  ErrorFields<RankDied>
>;
