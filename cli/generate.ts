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
import { generate } from "../engine/generate.ts";
import { loadTokenizer, modelSourceOf } from "../models/files.ts";
import { LlamaModel } from "../models/llama.ts";
import { helpText, parseFlagTable, versionText } from "./flag_table.ts";
import {
  loadOptionsOf,
  type ModelFlags,
  modelFlagsOf,
  modelFlagTable,
  positiveInt,
  tokensWithinContext,
  type UsageError,
} from "./flags.ts";
import { runMain } from "./main.ts";
import { type SamplingFlags, samplingFlagsOf, samplingFlagTable } from "./sampling_flags.ts";
import {
  type ObserveFlags,
  observeFlagsOf,
  observeFlagTable,
  withRanksObserved,
} from "./observe.ts";

const FLAGS = {
  ...modelFlagTable,
  prompt: { type: "string", short: "p", value: "TEXT", default: "", help: "text to continue" },
  ...samplingFlagTable("0"),
  json: {
    type: "boolean",
    help: 'print one JSON object {"tokens": [...], "text": "..."} instead of streaming',
  },
  ...observeFlagTable,
} as const;

const HELP = helpText(
  "deno task generate",
  "Generates text from a llama2.c checkpoint or a Hugging Face directory over --tp ranks.",
  FLAGS,
);

interface CliOptions extends ModelFlags, ObserveFlags, SamplingFlags {
  readonly prompt: string;
  readonly json: boolean;
}

/** Parses and checks the flags (strict: an unknown flag or a stray argument is an error). */
const parseCli = (args: string[]): Effect.Effect<CliOptions | "help" | "version", UsageError> =>
  Effect.gen(function* () {
    const parsed = yield* parseFlagTable(args, FLAGS);
    if (parsed._tag === "Help") return "help" as const;
    if (parsed._tag === "Version") return "version" as const;
    const { values } = parsed;
    return {
      ...yield* modelFlagsOf(values, (tp) => positiveInt("tp", tp)),
      ...yield* observeFlagsOf(values),
      prompt: values.prompt,
      ...yield* samplingFlagsOf(values),
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
    const model = yield* LlamaModel.load(loadOptionsOf(options, source, options.ctxSize));
    const maxTokens = yield* tokensWithinContext(
      tokenizer.encode(options.prompt, { bos: tokenizer.addsBos, eos: false }).length,
      options.maxTokens,
      options.ctxSize,
      model.config.seqLen,
    );
    const tokens: number[] = [];
    let text = "";
    if (!options.json) yield* writeOut(options.prompt);
    const started = performance.now();
    yield* generate(model, tokenizer, {
      prompt: options.prompt,
      maxTokens,
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
    // The summary is informational: --log-level none (or error, warning) leaves it out.
    if (options.logLevel !== "info" && options.logLevel !== "debug") return;
    console.error(
      `${tokens.length} tokens in ${seconds.toFixed(2)} s (${
        (tokens.length / seconds).toFixed(1)
      } tok/s), tp ${options.tp}, ${options.transport} transport`,
    );
  }).pipe(withRanksObserved(options));

await runMain(
  parseCli(Deno.args).pipe(
    Effect.flatMap((options) =>
      options === "help"
        ? writeOut(HELP)
        : options === "version"
        ? writeOut(versionText())
        : run(options)
    ),
  ),
);
