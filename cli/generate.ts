/**
 * `deno task generate`: text generation from a llama2.c checkpoint (a file) or a Hugging Face
 * directory, over `--tp` ranks.
 *
 *   deno task generate --model assets/stories260K.bin \
 *     --tokenizer assets/tok512.bin --tp 2 --prompt "Once upon a time"
 *
 * Without `--json` the prompt and then the generated text stream to stdout, followed by a
 * newline, and a one-line summary goes to stderr. With `--json` stdout gets exactly one JSON
 * object, `{"tokens": [generated ids, prompt excluded], "text": "generated text"}`.
 *
 * Failures print one line `error: ...` on stderr. Exit codes: 0 success, 1 a failure while
 * loading or generating (missing file, impossible plan, rank failure, ...), 2 a usage error (an
 * unknown flag or a flag value that is not allowed).
 */
import { Effect, Stream } from "effect";
import { generate, loadTokenizer, modelSourceOf } from "../models/generate.ts";
import { LlamaModel } from "../models/llama.ts";
import {
  helpFlagOption,
  modelFlagOptions,
  type ModelFlags,
  modelFlagsOf,
  parseFlags,
  positiveInt,
  usage,
  type UsageError,
} from "./flags.ts";
import { runMain } from "./main.ts";
import {
  OBSERVE_USAGE,
  observeFlagOptions,
  type ObserveFlags,
  observeFlagsOf,
  withRanksObserved,
} from "./observe.ts";

const USAGE = "usage: deno task generate --model PATH [--tokenizer PATH] [--tp N] " +
  "[--prompt TEXT] [--max-tokens K] [--temperature T] [--top-p P] [--seed S] " +
  "[--transport inprocess|workers|tcp] [--ranks HOST:PORT,...] [--secret-file F] " +
  `[--weights f32|f16] [--json] ${OBSERVE_USAGE}`;

interface CliOptions extends ModelFlags, ObserveFlags {
  readonly prompt: string;
  readonly maxTokens: number;
  readonly temperature: number;
  readonly topP: number;
  readonly seed: number | bigint;
  readonly json: boolean;
}

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
    const { values } = yield* parseFlags(args, {
      ...modelFlagOptions,
      prompt: { type: "string", default: "" },
      "max-tokens": { type: "string", default: "256" },
      temperature: { type: "string", default: "0" },
      "top-p": { type: "string", default: "0.9" },
      seed: { type: "string" },
      json: { type: "boolean", default: false },
      ...observeFlagOptions,
      ...helpFlagOption,
    });
    if (values.help) return "help" as const;
    return {
      ...yield* modelFlagsOf(values, (tp) => positiveInt("tp", tp)),
      ...yield* observeFlagsOf(values),
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
      json: values.json,
    };
  });

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
  }).pipe(withRanksObserved(options));

await runMain(
  parseCli(Deno.args).pipe(
    Effect.flatMap((options) => options === "help" ? writeOut(USAGE + "\n") : run(options)),
  ),
);
