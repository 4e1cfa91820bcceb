/**
 * How a CLI program ends: run it, print one `error: ...` line on stderr for a failure, and exit
 * 0 on success, 2 on a usage error (a `UsageError`), 1 on any other failure.
 */
import { Cause, Effect, Exit, Option } from "effect";

/** Every typed failure a CLI reports has a tag (to spot usage errors) and a message. */
export type CliFailure = { readonly _tag: string; readonly message: string };

/** Messages may span lines; the CLI contract is one line per failure. */
export const oneLine = (message: string) => message.replace(/\s*\n\s*/g, " ");

/** One line for any failure: typed errors by their message, defects by theirs. */
export const describe = (cause: Cause.Cause<CliFailure>) => {
  const failure = Cause.failureOption(cause);
  if (Option.isSome(failure)) {
    const hint = failure.value._tag === "UsageError" ? " (see --help)" : "";
    return `error: ${oneLine(failure.value.message)}${hint}`;
  }
  if (Cause.isInterruptedOnly(cause)) return "error: interrupted";
  const defect = Cause.squash(cause);
  return `error: ${oneLine(defect instanceof Error ? defect.message : String(defect))}`;
};

const isUsageError = (cause: Cause.Cause<CliFailure>) =>
  Option.exists(Cause.failureOption(cause), (e) => e._tag === "UsageError");

/** Runs the whole program and exits the process with its code; never returns. */
export const runMain = async (program: Effect.Effect<void, CliFailure>): Promise<never> => {
  const exit = await Effect.runPromiseExit(program);
  if (Exit.isSuccess(exit)) Deno.exit(0);
  console.error(describe(exit.cause));
  Deno.exit(isUsageError(exit.cause) ? 2 : 1);
};
