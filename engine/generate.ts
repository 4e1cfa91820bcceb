/**
 * Text generation as an Effect `Stream`, following llama2.c `run.c`'s `generate`: the prompt is
 * encoded with BOS (where the tokenizer adds it) and prefilled in one `forward`, then each step
 * samples the next token, emits it, and feeds it back at the next position. The steps are the
 * engine's own (engine/steps.ts) on a sequence of the engine's (engine/sequence.ts) in KV slot 0:
 * one decode loop, so `generate()` and the service cannot disagree about a token.
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
import { type Cause, Data, Effect, Option, Queue, Stream } from "effect";
import type { ErrorFields, TaggedErrorClass } from "../util/tagged_error.ts";
import type { StepFailure } from "../actors/errors.ts";
import type { ConfigError } from "../models/errors.ts";
import type { LlamaModel } from "../models/llama.ts";
import type { NonFiniteLogits } from "../models/sampler.ts";
import type { TextTokenizer } from "../models/tokenizer.ts";
import { Sequence } from "./sequence.ts";
import { decodeBatch, prefillSequence, type StepHooks } from "./steps.ts";

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
    const promptTokens = tokenizer.encode(options.prompt, {
      bos: options.bos ?? tokenizer.addsBos,
      eos: false,
    });
    const { maxTokens, temperature, topP } = yield* checkOptions(
      model,
      promptTokens.length,
      options,
    );
    const { seqLen, vocabSize } = model.config;
    const sequence = yield* Sequence.make(
      0,
      {
        promptTokens,
        maxTokens,
        temperature,
        topP,
        seed: options.seed ?? Date.now(),
        stopAtEos: options.stopAtEos ?? true,
      },
      seqLen,
      tokenizer,
      vocabSize,
    );
    sequence.slot = 0;
    // Non-finite logits fail the stream (the engine would fail only that request).
    const hooks: StepHooks<NonFiniteLogits> = { nonFinite: (_, error) => Effect.fail(error) };
    /** The next piece, running a step only when none is waiting: nothing runs until pulled. */
    const nextPiece = Effect.gen(function* () {
      while (true) {
        const waiting = yield* Queue.poll(sequence.output);
        if (Option.isSome(waiting)) return waiting.value;
        yield* sequence.prefilled
          ? decodeBatch(model, [sequence], hooks)
          : prefillSequence(model, sequence, hooks);
      }
    });
    return Stream.repeatEffect(nextPiece).pipe(
      Stream.flattenTake,
      // Only the engine ends a sequence with GenerationFailed; here it cannot happen.
      Stream.catchTag("GenerationFailed", (e) => Stream.die(e)),
      Stream.map(({ token, text }): GeneratedToken => ({ token, text })),
    );
  }));
