/**
 * Flag parsing shared by `deno task generate` and `deno task serve`: strict `parseArgs` with
 * usage errors as a typed failure (exit code 2), integer checks, and the model/transport flags
 * (`--model --tokenizer --tp --transport --ranks --secret-file --weights`) with their
 * cross-checks and the transport layer they choose.
 */
import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
import { Data, Effect, Layer } from "effect";
import { InProcessTransport } from "../actors/inprocess.ts";
import { TcpTransport } from "../actors/tcp.ts";
import type { Transport } from "../actors/transport.ts";
import { WorkersTransport } from "../actors/workers.ts";
import type { SecretError } from "../wire/errors.ts";
import { loadSecret } from "../wire/handshake.ts";

/** A flag the CLI cannot accept; exit code 2. */
export class UsageError extends Data.TaggedError("UsageError")<{ readonly message: string }> {}

export const usage = (message: string) => Effect.fail(new UsageError({ message }));

/** Strict: an unknown flag or a stray argument is a usage error, not an exception. */
export const parseFlags = <const Options extends ParseArgsOptionsConfig>(
  args: string[],
  options: Options,
) =>
  Effect.try({
    try: () => parseArgs({ args, strict: true, allowPositionals: false, options }),
    catch: (e) => new UsageError({ message: e instanceof Error ? e.message : String(e) }),
  });

export const positiveInt = (flag: string, value: string) =>
  /^\d+$/.test(value) && Number(value) >= 1 && Number.isSafeInteger(Number(value))
    ? Effect.succeed(Number(value))
    : usage(`--${flag} must be a positive integer, got ${JSON.stringify(value)}`);

/** An integer flag within [min, max]. */
export const intIn = (flag: string, value: string, min: number, max = Number.MAX_SAFE_INTEGER) =>
  /^\d+$/.test(value) && Number(value) >= min && Number(value) <= max
    ? Effect.succeed(Number(value))
    : usage(
      `--${flag} must be an integer ${
        max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `in [${min}, ${max}]`
      }, got ${JSON.stringify(value)}`,
    );

export const weightsOf = (value: string) =>
  value === "f32" || value === "f16"
    ? Effect.succeed<"f32" | "f16">(value)
    : usage(`--weights must be f32 or f16, got ${JSON.stringify(value)}`);

/** The `parseArgs` options for the model and transport flags, with their defaults. */
export const modelFlagOptions = {
  model: { type: "string" },
  tokenizer: { type: "string" },
  tp: { type: "string", default: "1" },
  transport: { type: "string" },
  weights: { type: "string", default: "f32" },
  ranks: { type: "string" },
  "secret-file": { type: "string" },
} as const;

/** `--help` / `-h`: print the usage line and exit 0. */
export const helpFlagOption = {
  help: { type: "boolean", short: "h", default: false },
} as const;

export type TransportName = "inprocess" | "workers" | "tcp";

export interface ModelFlags {
  readonly model: string;
  readonly tokenizer?: string;
  readonly tp: number;
  readonly transport: TransportName;
  /** Element type of the matmul weights on the devices. */
  readonly weights: "f32" | "f16";
  /** tcp: rank addresses (else local rank processes) and the shared secret's file. */
  readonly ranks?: readonly string[];
  readonly secretFile?: string;
}

/** What `parseArgs` gives for `modelFlagOptions`. */
interface ModelFlagValues {
  readonly model?: string;
  readonly tokenizer?: string;
  readonly tp: string;
  readonly transport?: string;
  readonly weights: string;
  readonly ranks?: string;
  readonly "secret-file"?: string;
}

/**
 * Checks the model and transport flags together. `tpOf` checks `--tp` itself: each command
 * keeps the wording of its own integer messages.
 */
export const modelFlagsOf = (
  values: ModelFlagValues,
  tpOf: (value: string) => Effect.Effect<number, UsageError>,
): Effect.Effect<ModelFlags, UsageError> =>
  Effect.gen(function* () {
    if (values.model === undefined) return yield* usage("--model PATH is required");
    const tp = yield* tpOf(values.tp);
    // Workers by default when there is more than one rank: each gets its own isolate and device.
    const transport = values.transport ?? (tp > 1 ? "workers" : "inprocess");
    if (transport !== "inprocess" && transport !== "workers" && transport !== "tcp") {
      return yield* usage(`--transport must be inprocess, workers or tcp, got ${transport}`);
    }
    const ranks = values.ranks?.split(",").map((a) => a.trim());
    if ((ranks || values["secret-file"]) && transport !== "tcp") {
      return yield* usage("--ranks and --secret-file go with --transport tcp");
    }
    if (ranks && !values["secret-file"]) return yield* usage("--ranks needs --secret-file");
    if (ranks && ranks.length !== tp) {
      return yield* usage(`--tp is ${tp} but --ranks lists ${ranks.length} addresses`);
    }
    return {
      model: values.model,
      tokenizer: values.tokenizer,
      tp,
      transport,
      weights: yield* weightsOf(values.weights),
      ranks,
      secretFile: values["secret-file"],
    };
  });

/**
 * Workers give each rank its own isolate and Dawn device; in-process ranks share this isolate
 * (and its one Dawn instance), each with its own device; tcp ranks are processes.
 */
export const transportLayer = (flags: ModelFlags): Layer.Layer<Transport, SecretError> => {
  switch (flags.transport) {
    case "workers":
      return WorkersTransport();
    case "tcp":
      // Given addresses: ranks someone started with `deno task rank`; else local rank processes.
      return flags.secretFile === undefined ? TcpTransport() : Layer.unwrapEffect(
        Effect.map(
          loadSecret(flags.secretFile),
          (key) => TcpTransport({ ranks: flags.ranks, key }),
        ),
      );
    case "inprocess":
      return InProcessTransport();
  }
};
