/**
 * Tagged errors with their types written out, as JSR's fast check needs: each error is an
 * interface (its fields, documented) plus a constructor of the same name made by
 * `Data.TaggedError`, so `_tag`, `yield*`, `Effect.catchTag` and `instanceof` work as with a
 * `class X extends Data.TaggedError("X")<{...}> {}`.
 *
 * @module
 */
import type { Cause } from "effect";

/** What a tagged error `E` is built from: its own fields and `message`, without `_tag`. */
export type ErrorFields<E> =
  & Omit<E, "_tag" | keyof Cause.YieldableError>
  & { readonly message: string };

/** The constructor of a tagged error `E` (what `Data.TaggedError(tag)` returns for it). */
export type TaggedErrorClass<E> = new (args: ErrorFields<E>) => E;
