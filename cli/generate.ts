/**
 * `deno task generate`: text generation from a llama2.c checkpoint (a file) or a Hugging Face
 * directory, over `--tp` ranks.
 *
 *   deno task generate --model ../shared/models/stories260K.bin \
 *     --tokenizer ../shared/models/tok512.bin --tp 2 --prompt "Once upon a time"
 *
 * Without `--json` the prompt and then the generated text stream to stdout, followed by a
 * newline, and a one-line summary goes to stderr. With `--json` stdout gets exactly one JSON
 * object, `{"tokens": [generated ids, prompt excluded], "text": "generated text"}`.
 *
 * Failures print one line `error: ...` on stderr. Exit codes: 0 success, 1 a failure while
 * loading or generating (missing file, impossible plan, rank failure, ...), 2 a usage error (an
 * unknown flag or a flag value that is not allowed).
 */
import { parseArgs } from "node:util";
import { Cause, Data, Effect, Exit, Layer, Option, Stream } from "effect";
import { InProcessTransport } from "../actors/inprocess.ts";
import type { Transport } from "../actors/transport.ts";
import { TcpTransport } from "../actors/tcp.ts";
import { WorkersTransport } from "../actors/workers.ts";
import type { SecretError } from "../wire/errors.ts";
import { loadSecret } from "../wire/handshake.ts";
import { generate, loadTokenizer, modelSourceOf } from "../models/generate.ts";
import { LlamaModel } from "../models/llama.ts";

const USAGE = "usage: deno task generate --model PATH [--tokenizer PATH] [--tp N] " +
  "[--prompt TEXT] [--max-tokens K] [--temperature T] [--top-p P] [--seed S] " +
  "[--transport inprocess|workers|tcp] [--ranks HOST:PORT,...] [--secret-file F] " +
  "[--weights f32|f16] [--json]";

/** A flag the CLI cannot accept; exit code 2. */
class UsageError extends Data.TaggedError("UsageError")<{ readonly message: string }> {}

type TransportName = "inprocess" | "workers" | "tcp";

interface CliOptions {
  readonly model: string;
  readonly tokenizer?: string;
  readonly tp: number;
  readonly prompt: string;
  readonly maxTokens: number;
  readonly temperature: number;
  readonly topP: number;
  readonly seed: number | bigint;
  readonly transport: TransportName;
  /** Element type of the matmul weights on the devices. */
  readonly weights: "f32" | "f16";
  /** tcp: rank addresses (else local rank processes) and the shared secret's file. */
  readonly ranks?: readonly string[];
  readonly secretFile?: string;
  readonly json: boolean;
}

const usage = (message: string) => Effect.fail(new UsageError({ message }));

const weightsOf = (value: string) =>
  value === "f32" || value === "f16"
    ? Effect.succeed<"f32" | "f16">(value)
    : usage(`--weights must be f32 or f16, got ${JSON.stringify(value)}`);

const positiveInt = (flag: string, value: string) =>
  /^\d+$/.test(value) && Number(value) >= 1 && Number.isSafeInteger(Number(value))
    ? Effect.succeed(Number(value))
    : usage(`--${flag} must be a positive integer, got ${JSON.stringify(value)}`);

const numberIn = (flag: string, value: string, ok: (n: number) => boolean, what: string) => {
  const n = value.trim() === "" ? NaN : Number(value);
  return Number.isFinite(n) && ok(n)
    ? Effect.succeed(n)
    : usage(`--${flag} must be ${what}, got ${JSON.stringify(value)}`);
};

/** run.c's seed is an unsigned 64-bit integer; large seeds stay exact as bigint. */
const seedOf = (value: string) => {
  if (!/^\d+$/.test(value) || BigInt(value) >= 1n << 64n) {
    return usage(`--seed must be an integer in [1, 2^64), got ${JSON.stringify(value)}`);
  }
  const n = Number(value);
  return Effect.succeed(Number.isSafeInteger(n) ? n : BigInt(value));
};

/** Parses and checks the flags (strict: an unknown flag or a stray argument is an error). */
const parseCli = (args: string[]): Effect.Effect<CliOptions | "help", UsageError> =>
  Effect.gen(function* () {
    const { values } = yield* Effect.try({
      try: () =>
        parseArgs({
          args,
          strict: true,
          allowPositionals: false,
          options: {
            model: { type: "string" },
            tokenizer: { type: "string" },
            tp: { type: "string", default: "1" },
            prompt: { type: "string", default: "" },
            "max-tokens": { type: "string", default: "256" },
            temperature: { type: "string", default: "0" },
            "top-p": { type: "string", default: "0.9" },
            seed: { type: "string" },
            transport: { type: "string" },
            weights: { type: "string", default: "f32" },
            ranks: { type: "string" },
            "secret-file": { type: "string" },
            json: { type: "boolean", default: false },
            help: { type: "boolean", short: "h", default: false },
          },
        }),
      catch: (e) => new UsageError({ message: e instanceof Error ? e.message : String(e) }),
    });
    if (values.help) return "help" as const;
    if (values.model === undefined) return yield* usage("--model PATH is required");
    const tp = yield* positiveInt("tp", values.tp);
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
      prompt: values.prompt,
      maxTokens: yield* positiveInt("max-tokens", values["max-tokens"]),
      temperature: yield* numberIn(
        "temperature",
        values.temperature,
        (t) => t >= 0,
        "a number >= 0",
      ),
      topP: yield* numberIn("top-p", values["top-p"], (p) => p >= 0 && p <= 1, "in [0, 1]"),
      seed: values.seed === undefined ? Date.now() : yield* seedOf(values.seed),
      transport,
      weights: yield* weightsOf(values.weights),
      ranks,
      secretFile: values["secret-file"],
      json: values.json,
    };
  });

/**
 * Workers give each rank its own isolate and Dawn device (fast). In-process ranks share this
 * isolate, so with tp > 1 `InProcessTransport` picks Deno's built-in WebGPU (several Dawn devices
 * in one isolate crash under load): correct but slow, for comparison and debugging.
 */
const transportLayer = (options: CliOptions): Layer.Layer<Transport, SecretError> => {
  switch (options.transport) {
    case "workers":
      return WorkersTransport();
    case "tcp":
      // Given addresses: ranks someone started with `deno task rank`; else local rank processes.
      return options.secretFile === undefined ? TcpTransport() : Layer.unwrapEffect(
        Effect.map(
          loadSecret(options.secretFile),
          (key) => TcpTransport({ ranks: options.ranks, key }),
        ),
      );
    case "inprocess":
      return InProcessTransport();
  }
};

const encoder = new TextEncoder();

/** Synchronous, complete write: a streamed piece must be on the terminal before the next step. */
const writeOut = (text: string) =>
  Effect.sync(() => {
    const bytes = encoder.encode(text);
    for (let at = 0; at < bytes.length;) at += Deno.stdout.writeSync(bytes.subarray(at));
  });

const run = (options: CliOptions) =>
  Effect.gen(function* () {
    const source = yield* modelSourceOf(options.model);
    const tokenizer = yield* loadTokenizer(options.model, options.tokenizer);
    const model = yield* LlamaModel.load({ source, tp: options.tp, weights: options.weights });
    const tokens: number[] = [];
    let text = "";
    if (!options.json) yield* writeOut(options.prompt);
    const started = performance.now();
    yield* generate(model, tokenizer, {
      prompt: options.prompt,
      maxTokens: options.maxTokens,
      temperature: options.temperature,
      topP: options.topP,
      seed: options.seed,
    }).pipe(
      Stream.runForEach((piece) => {
        tokens.push(piece.token);
        text += piece.text;
        return options.json ? Effect.void : writeOut(piece.text);
      }),
    );
    const seconds = (performance.now() - started) / 1000;
    yield* writeOut(options.json ? JSON.stringify({ tokens, text }) + "\n" : "\n");
    console.error(
      `${tokens.length} tokens in ${seconds.toFixed(2)} s (${
        (tokens.length / seconds).toFixed(1)
      } tok/s), tp ${options.tp}, ${options.transport} transport`,
    );
  }).pipe(Effect.scoped, Effect.provide(transportLayer(options)));

/** One line for any failure: typed errors by their message, defects by theirs. */
const describe = (cause: Cause.Cause<{ readonly _tag: string; readonly message: string }>) => {
  const failure = Cause.failureOption(cause);
  if (Option.isSome(failure)) {
    const hint = failure.value._tag === "UsageError" ? " (see --help)" : "";
    return `error: ${oneLine(failure.value.message)}${hint}`;
  }
  if (Cause.isInterruptedOnly(cause)) return "error: interrupted";
  const defect = Cause.squash(cause);
  return `error: ${oneLine(defect instanceof Error ? defect.message : String(defect))}`;
};

const oneLine = (message: string) => message.replace(/\s*\n\s*/g, " ");

const exit = await Effect.runPromiseExit(
  parseCli(Deno.args).pipe(
    Effect.flatMap((options) => options === "help" ? writeOut(USAGE + "\n") : run(options)),
  ),
);
if (Exit.isSuccess(exit)) Deno.exit(0);
console.error(describe(exit.cause));
const isUsage = Option.exists(Cause.failureOption(exit.cause), (e) => e._tag === "UsageError");
Deno.exit(isUsage ? 2 : 1);
