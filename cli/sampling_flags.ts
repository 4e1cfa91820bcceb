/**
 * The sampling and length flags of the commands that generate on the terminal (`generate`,
 * `chat`), with llama-cli's short forms: `-n` tokens, `-c` context, `-s` seed.
 */
import { Effect } from "effect";
import type { FlagTable } from "./flag_table.ts";
import { positiveInt, usage, type UsageError } from "./flags.ts";

/** The flags, with `temperature` defaulting to `defaultTemperature` (0 is greedy). */
export const samplingFlagTable = (defaultTemperature: string) =>
  ({
    "max-tokens": {
      type: "string",
      short: "n",
      value: "N",
      default: "256",
      help: "tokens to generate at most (per reply in a chat)",
    },
    "ctx-size": {
      type: "string",
      short: "c",
      value: "N",
      help: "context length: prompt plus generated tokens at most",
      defaultNote: "the model's seq_len",
    },
    temperature: {
      type: "string",
      value: "T",
      default: defaultTemperature,
      help: "sampling temperature; 0 is greedy",
    },
    "top-p": {
      type: "string",
      value: "P",
      default: "0.9",
      help: "nucleus sampling mass, in [0, 1]",
    },
    seed: {
      type: "string",
      short: "s",
      value: "S",
      help: "sampling seed, an integer in [1, 2^64)",
      defaultNote: "the clock",
    },
  }) as const satisfies FlagTable;

/** The checked sampling flags. */
export interface SamplingFlags {
  readonly maxTokens: number;
  readonly ctxSize?: number;
  readonly temperature: number;
  readonly topP: number;
  readonly seed: number | bigint;
}

const numberIn = (flag: string, value: string, ok: (n: number) => boolean, what: string) => {
  const n = value.trim() === "" ? NaN : Number(value);
  return Number.isFinite(n) && ok(n)
    ? Effect.succeed(n)
    : usage(`--${flag} must be ${what}, got ${JSON.stringify(value)}`);
};

/** run.c's seed is a nonzero unsigned 64-bit integer; large seeds stay exact as bigint. */
const seedOf = (value: string) => {
  if (!/^\d+$/.test(value) || BigInt(value) === 0n || BigInt(value) >= 1n << 64n) {
    return usage(`--seed must be an integer in [1, 2^64), got ${JSON.stringify(value)}`);
  }
  const n = Number(value);
  return Effect.succeed(Number.isSafeInteger(n) ? n : BigInt(value));
};

/** Checks the values of {@link samplingFlagTable}. */
export const samplingFlagsOf = (values: {
  readonly "max-tokens": string;
  readonly "ctx-size"?: string;
  readonly temperature: string;
  readonly "top-p": string;
  readonly seed?: string;
}): Effect.Effect<SamplingFlags, UsageError> =>
  Effect.gen(function* () {
    const ctx = values["ctx-size"];
    return {
      maxTokens: yield* positiveInt("max-tokens", values["max-tokens"]),
      ctxSize: ctx === undefined ? undefined : yield* positiveInt("ctx-size", ctx),
      temperature: yield* numberIn(
        "temperature",
        values.temperature,
        (t) => t >= 0,
        "a number >= 0",
      ),
      topP: yield* numberIn("top-p", values["top-p"], (p) => p >= 0 && p <= 1, "in [0, 1]"),
      seed: values.seed === undefined ? Date.now() : yield* seedOf(values.seed),
    };
  });
