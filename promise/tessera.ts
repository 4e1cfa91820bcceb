/**
 * The plain Promise API: a loaded model as an object whose methods return Promises and async
 * iterables, for code that does not use Effect. Each `Tessera` holds a `ManagedRuntime` (its
 * transport and logging) and a `Scope` (its ranks); every call runs with `runPromiseExit`, and a
 * failure is thrown as the typed error itself (`LoadError`, `PlanError`, `RankDied`, ...), so
 * `instanceof` works, not wrapped in Effect's `FiberFailure`.
 */
import {
  Cause,
  Effect,
  ExecutionStrategy,
  Exit,
  ManagedRuntime,
  Option,
  Scope,
  Stream,
} from "effect";
import type { Transport } from "../actors/transport.ts";
import type { LlamaConfig } from "../models/config.ts";
import { generate as generateStream, type GeneratedToken } from "../engine/generate.ts";
import { loadTokenizer, modelSourceOf } from "../models/files.ts";
import { LlamaModel } from "../models/llama.ts";
import type { TextTokenizer } from "../models/tokenizer.ts";
import { logAsRank } from "../observe/logging.ts";
import type { Telemetry } from "../observe/telemetry.ts";
import type { SecretError } from "../wire/errors.ts";
import { ModelClosed } from "./errors.ts";
import {
  checkOptions,
  runtimeLayer,
  type TesseraGenerateOptions,
  type TesseraOptions,
  type TransportName,
} from "./options.ts";
import { Turnstile } from "./turnstile.ts";

type Runtime = ManagedRuntime.ManagedRuntime<Transport | Telemetry, SecretError>;

/**
 * What a failed run throws: the typed failure itself (the first, when there are several), the
 * abort reason when `signal` interrupted it, else the defect.
 */
const thrown = (cause: Cause.Cause<unknown>, signal?: AbortSignal): unknown => {
  const failure = Cause.failureOption(cause);
  if (Option.isSome(failure)) return failure.value;
  if (Cause.isInterruptedOnly(cause) && signal?.aborted) return signal.reason;
  return Cause.squash(cause);
};

/** Runs `effect` on `runtime`; its failure is thrown as the typed error (see {@link thrown}). */
const runOrThrow = async <A, E>(
  runtime: Runtime,
  effect: Effect.Effect<A, E, Transport | Telemetry>,
  signal?: AbortSignal,
): Promise<A> => {
  const exit = await runtime.runPromiseExit(logAsRank("supervisor")(effect), { signal });
  if (Exit.isSuccess(exit)) return exit.value;
  throw thrown(exit.cause, signal);
};

/**
 * A Llama model loaded over `tp` ranks, driven with Promises.
 *
 * Generations are serialized: a model has one sequence, so a `generate` (or `complete`) called
 * while another is running waits until that one has ended (finished, broken out of, aborted or
 * failed), then runs. Close it with `close()` or `await using`: every rank is shut down (Workers
 * terminated, rank processes stopped).
 *
 * @example Stream a story, then complete a prompt
 * ```ts
 * import { Tessera } from "jsr:@tessera/tp";
 *
 * await using llm = await Tessera.load({
 *   model: "stories260K.bin",
 *   tokenizer: "tok512.bin",
 *   tp: 2,
 * });
 * for await (const piece of llm.generate("Once upon a time", { maxTokens: 64 })) {
 *   Deno.stdout.writeSync(new TextEncoder().encode(piece.text));
 * }
 * console.log(await llm.complete("Lily and Ben", { maxTokens: 32 }));
 * ```
 */
export class Tessera implements AsyncDisposable {
  /** The model's dimensions, as read from its file. */
  readonly config: LlamaConfig;
  /** Number of ranks the model is sharded over. */
  readonly tp: number;
  /** Where the ranks run. */
  readonly transport: TransportName;

  readonly #runtime: Runtime;
  /** Holds the ranks; each generation's stream lives in a child scope of it. */
  readonly #scope: Scope.CloseableScope;
  readonly #model: LlamaModel;
  readonly #tokenizer: TextTokenizer;
  readonly #turnstile: Turnstile = new Turnstile();
  /** The step running now, which `close()` lets finish so the ranks stop between steps. */
  #inFlight: Promise<unknown> | undefined;
  #closing: Promise<void> | undefined;

  private constructor(
    runtime: Runtime,
    scope: Scope.CloseableScope,
    model: LlamaModel,
    tokenizer: TextTokenizer,
    transport: TransportName,
  ) {
    this.#runtime = runtime;
    this.#scope = scope;
    this.#model = model;
    this.#tokenizer = tokenizer;
    this.config = model.config;
    this.tp = model.supervisor.tp;
    this.transport = transport;
  }

  /**
   * Reads the model's config, starts `tp` ranks and has each load its own slices.
   *
   * Rejects with a `ConfigError` for options that cannot work (checked before anything is
   * opened), a `LoadError` for a model or tokenizer that is missing or malformed, a `PlanError`
   * for a tp that does not divide the model's heads, a `NoAdapterError` without WebGPU, a
   * `SecretError` or `TransportError` when tcp ranks cannot be reached, and with the signal's
   * reason when `signal` aborts it. Whatever was started is shut down before it rejects.
   */
  static async load(options: TesseraOptions): Promise<Tessera> {
    const checked = checkOptions(options);
    const signal = options?.signal;
    signal?.throwIfAborted();
    const runtime: Runtime = ManagedRuntime.make(runtimeLayer(checked));
    const scope = Effect.runSync(Scope.make());
    const loading = Effect.gen(function* () {
      const source = yield* modelSourceOf(checked.model);
      const tokenizer = yield* loadTokenizer(checked.model, checked.tokenizer);
      const model = yield* LlamaModel.load({ source, tp: checked.tp, weights: checked.weights });
      return { model, tokenizer };
    });
    try {
      const { model, tokenizer } = await runOrThrow(
        runtime,
        Scope.extend(loading, scope),
        signal,
      );
      return new Tessera(runtime, scope, model, tokenizer, checked.transport.kind);
    } catch (error) {
      await Effect.runPromise(Scope.close(scope, Exit.void));
      await runtime.dispose();
      throw error;
    }
  }

  /**
   * Generates from `prompt` (encoded with BOS; `""` starts from BOS alone), one
   * `{ token, text }` per token as it is sampled. Nothing runs until the first piece is asked
   * for; leaving the loop early (`break`, `return`, a throw) ends the generation at once, and
   * `signal` ends it after the step in flight, rejecting with the signal's reason. Failures
   * are thrown as their typed errors (`GenerateInputError` for options that cannot work,
   * `RankDied`, `RankFailed`, `NonFiniteLogits`, `ModelClosed`).
   */
  generate(
    prompt: string,
    options: TesseraGenerateOptions = {},
  ): AsyncGenerator<GeneratedToken, void, undefined> {
    return this.#pieces(prompt, options);
  }

  /** The whole text {@link Tessera.generate} would stream, once the generation has ended. */
  async complete(prompt: string, options: TesseraGenerateOptions = {}): Promise<string> {
    let text = "";
    for await (const piece of this.generate(prompt, options)) text += piece.text;
    return text;
  }

  /**
   * Shuts every rank down (after the step in flight, if any) and releases the runtime. A
   * generation still open then throws `ModelClosed`, as does any later call. Idempotent: every
   * call returns the same promise.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await this.#inFlight?.catch(() => {});
      await Effect.runPromise(Scope.close(this.#scope, Exit.void));
      await this.#runtime.dispose();
    })();
    return this.#closing;
  }

  /** `close()`, for `await using llm = await Tessera.load(...)`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #throwIfClosed(): void {
    if (this.#closing !== undefined) {
      throw new ModelClosed({ message: "this Tessera model has been closed" });
    }
  }

  /** Runs one step of a generation, remembered so `close()` can wait for it. */
  #step<A>(effect: Effect.Effect<A, never>): Promise<A> {
    const running = runOrThrow(this.#runtime, effect);
    this.#inFlight = running;
    return running;
  }

  async *#pieces(
    prompt: string,
    options: TesseraGenerateOptions,
  ): AsyncGenerator<GeneratedToken, void, undefined> {
    const { signal } = options;
    this.#throwIfClosed();
    signal?.throwIfAborted();
    const leave = await this.#turnstile.enter(signal);
    let scope: Scope.CloseableScope | undefined;
    try {
      this.#throwIfClosed();
      scope = Effect.runSync(Scope.fork(this.#scope, ExecutionStrategy.sequential));
      const stream = generateStream(this.#model, this.#tokenizer, {
        prompt,
        maxTokens: options.maxTokens ?? this.config.seqLen,
        temperature: options.temperature,
        topP: options.topP,
        seed: options.seed,
        stopAtEos: options.stopAtEos,
      });
      const pull = await this.#step(Scope.extend(Stream.toPull(stream), scope));
      while (true) {
        this.#throwIfClosed();
        signal?.throwIfAborted();
        // A pull is not interrupted midway: the ranks always finish the step they were sent.
        const exit = await this.#step(Effect.exit(pull));
        if (Exit.isSuccess(exit)) {
          yield* exit.value;
          continue;
        }
        const failure = Cause.failureOption(exit.cause);
        if (Option.isNone(failure)) throw Cause.squash(exit.cause);
        // A failure of None is the end of the stream.
        if (Option.isNone(failure.value)) return;
        throw failure.value.value;
      }
    } finally {
      if (scope !== undefined) await Effect.runPromise(Scope.close(scope, Exit.void));
      leave();
    }
  }
}
