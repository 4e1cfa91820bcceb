/**
 * One request inside the engine: its tokens so far, its sampler, its KV-cache slot and the
 * queue its client reads. The scheduler decides when it runs; this file decides what a sampled
 * token means for it (text, stop, length) and hands pieces to the client without ever waiting
 * on the client, so a slow reader cannot stall the batch.
 */
import { Effect, Option, Queue, Take } from "effect";
import type { StepFailure } from "../actors/errors.ts";
import type { CandidateList, NonFiniteLogits } from "../models/sampler.ts";
import { chooseToken, Sampler } from "../models/sampler.ts";
import {
  generatedText,
  stopIds,
  type StreamDecoder,
  type TextTokenizer,
} from "../models/tokenizer.ts";
import {
  type FinishReason,
  type GeneratedPiece,
  GenerationFailed,
  type GenerationRequest,
} from "./engine.ts";

/** What `choose` returns for a sequence it has just failed: not a token id. */
export const NO_TOKEN = -1;

export class Sequence {
  /** Tokens generated and emitted so far (the last one is fed at the next decode step). */
  readonly generated: number[] = [];
  /** KV-cache slot while admitted. */
  slot = -1;
  /** Set once the prompt (and, after a restart, the tokens so far) is in the slot's cache. */
  prefilled = false;
  /** The client stopped reading (or the engine ended it); its slot frees at the next step. */
  done = false;
  /** Times this sequence was re-prefilled after its rank group restarted. */
  resumes = 0;
  admittedAt = 0;
  private readonly decoder: StreamDecoder;

  private constructor(
    readonly id: number,
    readonly request: GenerationRequest,
    readonly contextLength: number,
    private readonly sampler: Sampler | undefined,
    private readonly stops: ReadonlySet<number>,
    private readonly tokenizer: TextTokenizer,
    /** Logits per row the model gives (may exceed the tokenizer's vocabulary: padding). */
    private readonly modelVocab: number,
    readonly output: Queue.Queue<Take.Take<GeneratedPiece, GenerationFailed>>,
  ) {
    const prompt = request.promptTokens;
    this.decoder = tokenizer.streamDecoder(prompt[prompt.length - 1]);
  }

  static make(
    id: number,
    request: GenerationRequest,
    contextLength: number,
    tokenizer: TextTokenizer,
    modelVocab: number = tokenizer.vocabSize,
  ) {
    return Effect.gen(function* () {
      const sampler = request.temperature > 0
        ? yield* Sampler.make({
          vocabSize: Math.min(tokenizer.vocabSize, modelVocab),
          temperature: request.temperature,
          topp: request.topP,
          seed: request.seed ?? (Date.now() % 0x7fffffff) + 1,
        })
        : undefined;
      const stops = request.stopAtEos ? stopIds(tokenizer) : new Set<number>();
      // Unbounded: the engine never waits on a client; a request holds at most maxTokens.
      const output = yield* Queue.unbounded<Take.Take<GeneratedPiece, GenerationFailed>>();
      return new Sequence(
        id,
        request,
        contextLength,
        sampler,
        stops,
        tokenizer,
        modelVocab,
        output,
      );
    });
  }

  get temperature(): number {
    return this.request.temperature;
  }

  /** The position the next fed token takes: prompt + generated - 1 (the last one not yet fed). */
  get nextPosition(): number {
    return this.request.promptTokens.length + this.generated.length - 1;
  }

  /** Every token whose K/V a resumed sequence must put back in its cache. */
  get tokensSoFar(): readonly number[] {
    return [...this.request.promptTokens, ...this.generated.slice(0, -1)];
  }

  /**
   * Picks the next token from this sequence's candidates (with temperature, falling back to
   * the full logits when the candidates cannot decide exactly).
   */
  choose(
    candidates: CandidateList,
    fullLogits: Effect.Effect<Float32Array, StepFailure>,
  ): Effect.Effect<number, StepFailure | NonFiniteLogits> {
    return chooseToken(
      this.sampler,
      candidates,
      fullLogits,
      this.tokenizer.vocabSize,
      this.modelVocab,
    );
  }

  /**
   * Records `token` and emits it. Returns true when the sequence has ended: a stop token, its
   * token budget, or a context with no room to feed the token back.
   */
  accept(token: number): Effect.Effect<boolean> {
    // Uninterruptible: the stall watchdog may abandon a step at any point, and a token must
    // not be recorded without reaching its client (or the other way round).
    return Effect.uninterruptible(Effect.gen(this, function* () {
      if (this.done) return true; // ended while choosing (non-finite logits)
      this.generated.push(token);
      const stop = this.stops.has(token);
      const finishReason: FinishReason | undefined = stop
        ? "stop"
        : this.generated.length >= this.request.maxTokens ||
            // Fed at position prompt + generated - 1, which must be < the context (run.c).
            this.request.promptTokens.length + this.generated.length > this.contextLength
        ? "length"
        : undefined;
      const text = generatedText(this.decoder, token, { stop, last: finishReason !== undefined });
      yield* Queue.offer(this.output, Take.of({ token, text, finishReason }));
      if (finishReason) yield* this.end(Option.none());
      return finishReason !== undefined;
    }));
  }

  /** Ends the client's stream: normally, or with `failure`. */
  end(failure: Option.Option<GenerationFailed>): Effect.Effect<void> {
    // Uninterruptible: once `done` is set, the end must reach the client's queue.
    return Effect.uninterruptible(Effect.suspend(() => {
      if (this.done) return Effect.void;
      this.done = true;
      return Queue.offer(
        this.output,
        Option.match(failure, { onNone: () => Take.end, onSome: (e) => Take.fail(e) }),
      );
    }));
  }
}

export const generationFailed = (
  message: string,
  retriable = true,
  retryAfterSeconds?: number,
) => new GenerationFailed({ message, retriable, retryAfterSeconds });
