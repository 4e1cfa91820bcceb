/**
 * Text generation as an Effect `Stream`, following llama2.c `run.c`'s `generate`: the prompt is
 * encoded with BOS (an empty prompt is BOS alone) and prefilled in one `forward`, then each step
 * samples the next token, emits it, and feeds it back at the next position.
 *
 * Sampling never changes with the number of ranks: greedy takes the merged top-1 candidate
 * (8 bytes per rank); with temperature > 0 each rank sends its top `CANDIDATES_PER_RANK` and the
 * log-sum-exp of its slice, and the draw is only taken from them when the sampler says it is
 * exactly the draw full logits would give; otherwise the full logits are fetched and the same
 * coin is used on them. So a seed gives the tokens of run.c's full-logit sampler at every tp.
 *
 * Stream elements: `{ token, text }` where `text` is what `token` completed (byte-fallback
 * tokens can split one character, so a token may carry "" and a later one the whole character).
 * The stream ends
 * - after `maxTokens` tokens,
 * - when the next token would have to be fed at position `seqLen` (the KV cache is full; as in
 *   run.c, up to `seqLen - promptLength + 1` tokens), or
 * - with `stopAtEos`, on EOS or BOS (llama2.c's sequence delimiter). That stop token is the last
 *   element, with no text of its own: control tokens print nothing.
 * Whatever the streaming decoder still holds at the end (only an unfinished UTF-8 character,
 * as U+FFFD) is appended to the last element's text, so no element with a fake token is needed.
 */
import { type Cause, Data, Effect, Option, Stream } from "effect";
import type { ErrorFields, TaggedErrorClass } from "../util/tagged_error.ts";
import { dirname, join } from "node:path";
import type { StepFailure } from "../actors/errors.ts";
import type { ModelSource } from "../actors/protocol.ts";
import { type ConfigError, type LoadError, loadError } from "./errors.ts";
import { loadHuggingFaceTokenizer } from "./huggingface.ts";
import { readLlama2cHeader } from "./llama2c.ts";
import type { LlamaModel } from "./llama.ts";
import { chooseToken, type NonFiniteLogits, Sampler } from "./sampler.ts";
import { generatedText, loadLlama2cTokenizer, type TextTokenizer } from "./tokenizer.ts";

/** Generation options that cannot work (checked before any rank is asked for anything). */
export interface GenerateInputError extends Cause.YieldableError {
  /** Always `"GenerateInputError"`. */
  readonly _tag: "GenerateInputError";
  /** Human-readable description. */
  readonly message: string;
}

/** Makes a `GenerateInputError` (a `Data.TaggedError`: yieldable, matched by `_tag`). */
export const GenerateInputError: TaggedErrorClass<GenerateInputError> = Data.TaggedError(
  "GenerateInputError",
)<
  ErrorFields<GenerateInputError>
>;

/** Why {@link generate} failed. */
export type GenerateError = StepFailure | ConfigError | GenerateInputError | NonFiniteLogits;

/** Options of {@link generate}. */
export interface GenerateOptions {
  /** Text to continue; encoded with BOS when `bos` says so. */
  readonly prompt: string;
  /**
   * Put BOS in front of the prompt. Default: the tokenizer's rule (`addsBos`); false for a chat
   * template that writes it.
   */
  readonly bos?: boolean;
  /** Most tokens to generate (the prompt not counted); at least 1. */
  readonly maxTokens: number;
  /** 0 (the default) is greedy. */
  readonly temperature?: number;
  /** Nucleus mass, run.c semantics: on inside (0, 1), off otherwise. Default 0.9. */
  readonly topP?: number;
  /** xorshift64* seed (not 0); default: the current time. Unused when greedy. */
  readonly seed?: number | bigint;
  /** End at EOS or BOS. Default true. */
  readonly stopAtEos?: boolean;
}

/** One token of {@link generate}'s stream. */
export interface GeneratedToken {
  /** The token id. */
  readonly token: number;
  /** Text this token completed, plus the decoder's remainder on the last element. */
  readonly text: string;
}

/** Candidates each rank sends when sampling; enough to hold the nucleus almost always. */
export const CANDIDATES_PER_RANK = 64;

const inputError = (message: string) => Effect.fail(new GenerateInputError({ message }));

/** The options with defaults applied, or the first one that cannot work. */
const checkOptions = (model: LlamaModel, promptLength: number, options: GenerateOptions) => {
  const { maxTokens, temperature = 0, topP = 0.9 } = options;
  const { seqLen } = model.config;
  if (!(Number.isSafeInteger(maxTokens) && maxTokens >= 1)) {
    return inputError(`maxTokens must be a positive integer, got ${maxTokens}`);
  }
  if (!(Number.isFinite(temperature) && temperature >= 0)) {
    return inputError(`temperature must be a finite number >= 0, got ${temperature}`);
  }
  if (!Number.isFinite(topP)) return inputError(`topP must be a finite number, got ${topP}`);
  if (promptLength === 0) {
    return inputError("the prompt is empty and bos is off: nothing to continue");
  }
  if (promptLength > seqLen) {
    return inputError(
      `the prompt is ${promptLength} tokens (with BOS), longer than the model's seq_len ${seqLen}`,
    );
  }
  return Effect.succeed({ maxTokens, temperature, topP });
};

/** The ids that end generation with `stopAtEos`: BOS, EOS, and any further EOS ids (HF). */
export const stopIds = (tokenizer: TextTokenizer): ReadonlySet<number> => {
  const extra = (tokenizer as { eosIds?: readonly number[] }).eosIds ?? [];
  return new Set([tokenizer.bosId, tokenizer.eosId, ...extra]);
};

/** Where the step loop stands. */
interface State {
  readonly generated: number;
  /** Position the token sampled at this step will be fed at (its logits come from pos - 1). */
  readonly pos: number;
  /**
   * What this step feeds, ending at pos - 1: the prompt first, then the previous step's token
   * (fed lazily so it is emitted before the model runs again).
   */
  readonly feed: readonly number[];
}

/**
 * Generates from `prompt` on a loaded model. Nothing runs until the stream is pulled; stopping
 * early (e.g. `Stream.take`) simply stops feeding the model.
 *
 * @example Stream a story to stdout
 * ```ts
 * import { Effect, Stream } from "effect";
 * import { generate, LlamaModel, loadTokenizer, WorkersTransport } from "jsr:@tessera/tp";
 *
 * const story = Effect.gen(function* () {
 *   const model = yield* LlamaModel.load({
 *     source: { format: "llama2c", path: "stories260K.bin" },
 *     tp: 2,
 *   });
 *   const tokenizer = yield* loadTokenizer("stories260K.bin", "tok512.bin");
 *   yield* Stream.runForEach(
 *     generate(model, tokenizer, { prompt: "Once upon a time", maxTokens: 64 }),
 *     (t) => Effect.sync(() => Deno.stdout.writeSync(new TextEncoder().encode(t.text))),
 *   );
 * });
 * await Effect.runPromise(Effect.scoped(story).pipe(Effect.provide(WorkersTransport())));
 * ```
 */
export const generate = (
  model: LlamaModel,
  tokenizer: TextTokenizer,
  options: GenerateOptions,
): Stream.Stream<GeneratedToken, GenerateError> =>
  Stream.unwrap(Effect.gen(function* () {
    const prompt = tokenizer.encode(options.prompt, {
      bos: options.bos ?? tokenizer.addsBos,
      eos: false,
    });
    const { maxTokens, temperature, topP } = yield* checkOptions(model, prompt.length, options);
    const { seqLen, vocabSize } = model.config;
    const sampler = temperature > 0
      ? yield* Sampler.make({
        vocabSize: Math.min(vocabSize, tokenizer.vocabSize),
        temperature,
        topp: topP,
        seed: options.seed ?? Date.now(),
      })
      : undefined;
    const stops = (options.stopAtEos ?? true) ? stopIds(tokenizer) : new Set<number>();
    const decoder = tokenizer.streamDecoder(prompt[prompt.length - 1]);

    const k = sampler === undefined ? 1 : CANDIDATES_PER_RANK;
    /** The next token after feeding `feed` from `pos` on, the LM head in the same pipeline. */
    const nextToken = (
      feed: readonly number[],
      pos: number,
    ): Effect.Effect<number, StepFailure | NonFiniteLogits> =>
      Effect.flatMap(
        model.forwardWithCandidates(feed, pos, 0, k, temperature),
        (candidates) =>
          chooseToken(
            sampler,
            candidates,
            Effect.suspend(() => model.logits()),
            tokenizer.vocabSize,
            vocabSize,
          ),
      );

    const step = (state: State) =>
      Effect.gen(function* () {
        const token = yield* nextToken(state.feed, state.pos - state.feed.length);
        const generated = state.generated + 1;
        const stop = stops.has(token);
        const last = stop || generated >= maxTokens || state.pos >= seqLen;
        const text = generatedText(decoder, token, { stop, last });
        const next: Option.Option<State> = last
          ? Option.none()
          : Option.some({ generated, pos: state.pos + 1, feed: [token] });
        return [{ token, text }, next] as const;
      });

    return Stream.paginateEffect<State, GeneratedToken, GenerateError, never>(
      { generated: 0, pos: prompt.length, feed: prompt },
      step,
    );
  }));

// ---------------------------------------------------------------------------------------------
// Loading by path

const NOT_A_REGULAR_FILE = "not a regular file or a directory (a named pipe or a device?)";

/** What a path holds: a directory, a file, or nothing. */
const statPath = (path: string) =>
  Effect.tryPromise({
    try: () => Deno.stat(path),
    catch: (e) =>
      loadError(
        path,
        e instanceof Deno.errors.NotFound
          ? "no such file or directory"
          : `cannot read it (${e instanceof Error ? e.message : e})`,
      ),
  });

/**
 * A model path as a source: a directory is Hugging Face, a regular file is a llama2.c
 * checkpoint. Anything else (a named pipe, a device, a socket) is refused before it is opened:
 * opening a FIFO would wait for a writer for ever.
 */
export const modelSourceOf = (path: string): Effect.Effect<ModelSource, LoadError> =>
  Effect.flatMap(
    statPath(path),
    (info) =>
      info.isDirectory
        ? Effect.succeed<ModelSource>({ format: "huggingface", path })
        : info.isFile
        ? Effect.succeed<ModelSource>({ format: "llama2c", path })
        : Effect.fail(loadError(path, NOT_A_REGULAR_FILE)),
  );

/**
 * The tokenizer for the model at `modelPath`. A Hugging Face directory uses its own
 * `tokenizer.json` (or `tokenizerPath`, a directory or its `tokenizer.json`); a llama2.c
 * checkpoint needs a llama2.c `tokenizer.bin`: `tokenizerPath`, else `tokenizer.bin` beside the
 * model (llama2.c's convention). The vocabulary size comes from the checkpoint's header.
 */
export const loadTokenizer = (
  modelPath: string,
  tokenizerPath?: string,
): Effect.Effect<TextTokenizer, LoadError> =>
  Effect.gen(function* () {
    const source = yield* modelSourceOf(modelPath);
    if (source.format === "huggingface") {
      const dir = tokenizerPath === undefined
        ? modelPath
        : (yield* statPath(tokenizerPath)).isDirectory
        ? tokenizerPath
        : dirname(tokenizerPath);
      return yield* loadHuggingFaceTokenizer(dir).pipe(
        Effect.mapError((e) =>
          e.reason === "file not found" && e.file === join(dir, "tokenizer.json")
            ? loadError(e.file, "file not found; pass the tokenizer's path with --tokenizer")
            : e
        ),
      );
    }
    const { config } = yield* readLlama2cHeader(modelPath);
    const file = tokenizerPath ?? join(dirname(modelPath), "tokenizer.bin");
    const info = yield* statPath(file).pipe(
      Effect.mapError((e) =>
        tokenizerPath === undefined
          ? loadError(
            file,
            `a llama2.c model needs its tokenizer.bin: none beside ${modelPath}; pass its path with --tokenizer`,
          )
          : e
      ),
    );
    if (info.isDirectory) {
      return yield* Effect.fail(loadError(file, "a llama2.c model needs a tokenizer.bin file"));
    }
    if (!info.isFile) return yield* Effect.fail(loadError(file, NOT_A_REGULAR_FILE));
    return yield* loadLlama2cTokenizer(file, config.vocabSize);
  });
