import { Data } from "effect";

/** A collective could not complete: mismatched shapes or dtypes, a timeout, or an aborted step. */
export class CollectiveError extends Data.TaggedError("CollectiveError")<{
  readonly op: string;
  readonly ranks: readonly number[];
  readonly message: string;
}> {}

/** A rank stopped (crashed, was killed, or its device was lost); everyone waiting on it fails. */
export class RankDied extends Data.TaggedError("RankDied")<{
  readonly rank: number;
  readonly message: string;
}> {}
