import { type Cause, Data } from "effect";
import type { ErrorFields, TaggedErrorClass } from "../util/tagged_error.ts";

/**
 * A connection to `peer` failed. `reason` says how, so callers can tell a dead peer ("Closed")
 * from a hostile or buggy one ("Malformed", "TooLarge", "AuthFailed") or a stuck one ("Timeout").
 */
export interface WireError extends Cause.YieldableError {
  /** Always `"WireError"`. */
  readonly _tag: "WireError";
  /** The peer's address. */
  readonly peer: string;
  /** How the connection failed. */
  readonly reason: "Closed" | "TooLarge" | "Malformed" | "Timeout" | "AuthFailed" | "Io";
  /** Human-readable description. */
  readonly message: string;
}

/** Makes a `WireError` (a `Data.TaggedError`: yieldable, matched by `_tag`). */
export const WireError: TaggedErrorClass<WireError> = Data.TaggedError("WireError")<
  ErrorFields<WireError>
>;

/** The shared secret could not be loaded: missing, unreadable or too short. */
export interface SecretError extends Cause.YieldableError {
  /** Always `"SecretError"`. */
  readonly _tag: "SecretError";
  /** Where the secret came from, e.g. the file path. */
  readonly source: string;
  /** Human-readable description. */
  readonly message: string;
}

/** Makes a `SecretError` (a `Data.TaggedError`: yieldable, matched by `_tag`). */
export const SecretError: TaggedErrorClass<SecretError> = Data.TaggedError("SecretError")<
  ErrorFields<SecretError>
>;
