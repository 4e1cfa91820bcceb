import { Data } from "effect";

/**
 * A connection to `peer` failed. `reason` says how, so callers can tell a dead peer ("Closed")
 * from a hostile or buggy one ("Malformed", "TooLarge", "AuthFailed") or a stuck one ("Timeout").
 */
export class WireError extends Data.TaggedError("WireError")<{
  readonly peer: string;
  readonly reason: "Closed" | "TooLarge" | "Malformed" | "Timeout" | "AuthFailed" | "Io";
  readonly message: string;
}> {}

/** The shared secret could not be loaded: missing, unreadable or too short. */
export class SecretError extends Data.TaggedError("SecretError")<{
  /** Where the secret came from, e.g. the file path. */
  readonly source: string;
  readonly message: string;
}> {}
