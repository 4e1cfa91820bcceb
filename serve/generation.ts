/**
 * One OpenAI request through the engine: the prompt's tokens and the token budget checked
 * against the context and the server's limit, `engine.submit`, and the engine's pieces turned
 * into text deltas cut at the request's stop strings. Both endpoints and both response modes
 * (JSON and SSE) consume the same `GenerationEvent` stream.
 */
import { Effect, Either, Stream } from "effect";
import {
  type FinishReason,
  type GenerationFailed,
  type GenerationRequest,
  InferenceEngine,
} from "../engine/engine.ts";
import { type ApiError, invalidRequest, submitErrorToApi } from "./api_error.ts";
import type { GenerationParams } from "./openai_schema.ts";
import { StopScanner } from "./stop_strings.ts";

export type GenerationEvent =
  | { readonly _tag: "Text"; readonly text: string }
  | {
    readonly _tag: "Finished";
    readonly finishReason: FinishReason;
    readonly promptTokens: number;
    readonly completionTokens: number;
  };

/**
 * Most UTF-8 bytes a prompt may have per token of context. Checked before the prompt is
 * tokenized, so a huge prompt costs no tokenizer time: a prompt this long could only fit if its
 * tokens averaged more than 8 bytes, where real text averages 2 to 5.
 */
export const PROMPT_BYTES_PER_CONTEXT_TOKEN = 8;

/** UTF-8 length of `text` without encoding it (a lone surrogate counts 3, as U+FFFD). */
const utf8Length = (text: string): number => {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit < 0x80) bytes += 1;
    else if (unit < 0x800) bytes += 2;
    else if (unit >= 0xd800 && unit < 0xdc00 && i + 1 < text.length) {
      const low = text.charCodeAt(i + 1);
      if (low >= 0xdc00 && low < 0xe000) {
        bytes += 4;
        i++;
      } else bytes += 3;
    } else bytes += 3;
  }
  return bytes;
};

/** Refuses a prompt longer than {@link PROMPT_BYTES_PER_CONTEXT_TOKEN} bytes per context token. */
export const checkPromptBytes = (
  text: string,
  contextLength: number,
  promptParam: "prompt" | "messages",
): Either.Either<string, ApiError> => {
  const limit = contextLength * PROMPT_BYTES_PER_CONTEXT_TOKEN;
  const bytes = utf8Length(text);
  return bytes <= limit ? Either.right(text) : Either.left(invalidRequest(
    `This model's maximum context length is ${contextLength} tokens. However, your ` +
      `${promptParam} is ${bytes} bytes, more than this server's limit of ${limit} bytes ` +
      `(${PROMPT_BYTES_PER_CONTEXT_TOKEN} per token of context). Please reduce its length.`,
    promptParam,
    "context_length_exceeded",
  ));
};

/**
 * The engine request for `promptTokens`: `max_tokens` at most `maxTokensLimit`, and prompt plus
 * completion within the context (as OpenAI refuses a request that cannot fit); without
 * `max_tokens`, the rest of the context up to the limit.
 */
export const planRequest = (
  params: GenerationParams,
  promptTokens: readonly number[],
  limits: { readonly contextLength: number; readonly maxTokensLimit: number },
  promptParam: "prompt" | "messages",
): Either.Either<GenerationRequest, ApiError> => {
  const { contextLength, maxTokensLimit } = limits;
  const room = contextLength - promptTokens.length;
  if (room < 1) {
    return Either.left(invalidRequest(
      `This model's maximum context length is ${contextLength} tokens. However, your ` +
        `${promptParam} is ${promptTokens.length} tokens, leaving no room for a completion.`,
      promptParam,
      "context_length_exceeded",
    ));
  }
  if (params.maxTokens !== undefined && params.maxTokens > maxTokensLimit) {
    return Either.left(invalidRequest(
      `Invalid value for '${params.maxTokensParam}': ${params.maxTokens} is more than this ` +
        `server's limit of ${maxTokensLimit} tokens.`,
      params.maxTokensParam,
    ));
  }
  if (params.maxTokens !== undefined && params.maxTokens > room) {
    return Either.left(invalidRequest(
      `This model's maximum context length is ${contextLength} tokens. However, you requested ` +
        `${promptTokens.length + params.maxTokens} tokens (${promptTokens.length} in the ` +
        `${promptParam}, ${params.maxTokens} in the completion). Please reduce the length of ` +
        `the ${promptParam} or the completion.`,
      params.maxTokensParam,
      "context_length_exceeded",
    ));
  }
  return Either.right({
    promptTokens,
    maxTokens: params.maxTokens ?? Math.min(room, maxTokensLimit),
    temperature: params.temperature,
    topP: params.topP,
    seed: params.seed,
    stopAtEos: true,
  });
};

/**
 * Submits `request` and gives its text: `Text` deltas (never empty), then one `Finished`.
 * A stop string ends the stream with finish_reason "stop"; ending the stream early closes the
 * engine stream's scope, which interrupts it and frees the request's slot.
 */
export const runGeneration = (
  request: GenerationRequest,
  stops: readonly string[],
): Effect.Effect<Stream.Stream<GenerationEvent, GenerationFailed>, ApiError, InferenceEngine> =>
  Effect.gen(function* () {
    const engine = yield* InferenceEngine;
    const pieces = yield* engine.submit(request).pipe(Effect.mapError(submitErrorToApi));
    return Stream.suspend(() => {
      const scanner = new StopScanner(stops);
      let completionTokens = 0;
      const finished = (finishReason: FinishReason): GenerationEvent => ({
        _tag: "Finished",
        finishReason,
        promptTokens: request.promptTokens.length,
        completionTokens,
      });
      const text = (t: string): GenerationEvent[] => t === "" ? [] : [{ _tag: "Text", text: t }];
      const events = pieces.pipe(
        Stream.mapConcat((piece): GenerationEvent[] => {
          completionTokens++;
          const out = scanner.push(piece.text);
          if (out.stopped) return [...text(out.text), finished("stop")];
          if (piece.finishReason === undefined) return text(out.text);
          return [...text(out.text + scanner.flush()), finished(piece.finishReason)];
        }),
        Stream.takeUntil((event) => event._tag === "Finished"),
      );
      // An engine stream that ends without marking its last piece still ends the response.
      let done = false;
      return Stream.concat(
        Stream.tap(events, (e) => Effect.sync(() => void (done ||= e._tag === "Finished"))),
        Stream.suspend(() =>
          done ? Stream.empty : Stream.fromIterable([...text(scanner.flush()), finished("length")])
        ),
      );
    });
  }).pipe(Effect.withSpan("serve.runGeneration"));
