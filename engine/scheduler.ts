/**
 * The engine behind the service: continuous batching over one rank group, and the supervision
 * that keeps that group alive.
 *
 * Batching (vLLM's scheduler, simplified). Requests wait in a bounded FIFO queue; each turn of
 * the loop admits waiting requests into free KV-cache slots, prefills each newly admitted prompt
 * in steps of its own, then runs ONE decode step with a row for every running sequence, each at
 * its own position in its own slot. A request that arrives joins at the next turn; one that
 * finishes (or whose client goes away) leaves at the next turn. Every kernel gives a row the
 * same bits whatever else is in its step (kernels/matmul.ts), so greedy output does not depend
 * on what else is running.
 *
 * Supervision. Any step failure (a rank died, failed or timed out) closes the group, restarts it
 * with exponential backoff and reloads the shards; the loop also pings an idle group so a death
 * is noticed without traffic. While restarting, new requests are refused as unavailable (503 +
 * Retry-After). Sequences in flight keep their slot and are resumed: prompt and tokens so far
 * are prefilled again, and since every kernel gives a row the same bits whatever step it is in
 * (prefill or decode, alone or batched), that rebuilds their KV cache bit for bit, so greedy
 * output stays identical. A sequence that
 * keeps failing ends with a retriable `GenerationFailed`; none is left hanging.
 */
import { Deferred, Duration, Effect, Exit, Option, Queue, Scope, Stream } from "effect";
import type { StepFailure } from "../actors/errors.ts";
import type { ModelSource, RankReply } from "../actors/protocol.ts";
import { Transport } from "../actors/transport.ts";
import type { WeightType } from "../kernels/matmul.ts";
import { CANDIDATES_PER_RANK, loadTokenizer, modelSourceOf } from "../models/generate.ts";
import { LlamaModel, type LoadLlamaError } from "../models/llama.ts";
import {
  type EngineHealth,
  type EngineState,
  EngineUnavailable,
  type GenerationRequest,
  type InferenceEngineShape,
  QueueFull,
  type RankHealth,
  RequestRejected,
  type RestartRecord,
} from "./engine.ts";
import { currentTelemetry } from "../observe/telemetry.ts";
import { wallClockMillis } from "../observe/timeline.ts";
import { TokenRate } from "./token_rate.ts";
import * as metrics from "./metrics.ts";
import { generationFailed, Sequence } from "./sequence.ts";

/** Options of {@link makeInferenceEngine}. */
export interface EngineOptions {
  /** A llama2.c `.bin` file or a Hugging Face model directory. */
  readonly modelPath: string;
  /** Tokenizer file; default: found next to the model (see `loadTokenizer`). */
  readonly tokenizerPath?: string;
  /** Number of ranks (tensor-parallel size). */
  readonly tp: number;
  /** Element type of the matmul weights on the devices (see LlamaModel.load). Default f32. */
  readonly weights?: WeightType;
  /** Sequences decoding together (KV-cache slots). Default 8. */
  readonly maxSequences?: number;
  /** Requests that may wait for a busy slot; beyond it submit fails with QueueFull. Default 64. */
  readonly maxQueue?: number;
  /** Name served in `/v1/models`; default the model file or directory name. */
  readonly modelId?: string;
  /** Most prompt tokens per prefill step. Default 64. */
  readonly maxBatchTokens?: number;
  /** First and largest wait before restarting a failed rank group. Default 250 ms and 10 s. */
  readonly restartBackoff?: { readonly initialMillis: number; readonly maxMillis: number };
  /** How often an idle group is pinged. Default 1 s. */
  readonly healthCheckMillis?: number;
  /** Restarts one sequence may live through before it fails. Default 3. */
  readonly maxResumes?: number;
}

/** A running rank group and the scope that owns it. */
interface Group {
  readonly model: LlamaModel;
  readonly scope: Scope.CloseableScope;
  readonly ranks: readonly RankHealth[];
}

const baseName = (path: string) => path.replace(/\/+$/, "").split("/").pop() ?? path;

/**
 * Starts the inference engine: loads the model over `tp` ranks, then batches every submitted
 * request into shared steps and restarts the rank group when it dies. Lives until the scope
 * closes.
 *
 * @example Generate from a tokenized prompt
 * ```ts
 * import { Effect, Stream } from "effect";
 * import { makeInferenceEngine, WorkersTransport } from "jsr:@tessera/tp";
 *
 * const program = Effect.gen(function* () {
 *   const engine = yield* makeInferenceEngine({
 *     modelPath: "stories260K.bin",
 *     tokenizerPath: "tok512.bin",
 *     tp: 2,
 *   });
 *   const promptTokens = engine.tokenizer.encode("Once upon a time", { bos: true, eos: false });
 *   const pieces = yield* engine.submit({
 *     promptTokens,
 *     maxTokens: 32,
 *     temperature: 0,
 *     topP: 0.9,
 *     stopAtEos: true,
 *   });
 *   yield* Stream.runForEach(pieces, (p) => Effect.sync(() => console.log(p.text)));
 * });
 * await Effect.runPromise(Effect.scoped(program).pipe(Effect.provide(WorkersTransport())));
 * ```
 */
export const makeInferenceEngine = (
  options: EngineOptions,
): Effect.Effect<InferenceEngineShape, LoadLlamaError, Transport | Scope.Scope> =>
  Effect.gen(function* () {
    const maxSequences = options.maxSequences ?? 8;
    const maxQueue = options.maxQueue ?? 64;
    const backoff = options.restartBackoff ?? { initialMillis: 250, maxMillis: 10_000 };
    const healthCheckMillis = options.healthCheckMillis ?? 1000;
    const maxResumes = options.maxResumes ?? 3;
    const source: ModelSource = yield* modelSourceOf(options.modelPath);
    const tokenizer = yield* loadTokenizer(options.modelPath, options.tokenizerPath);
    const transport = yield* Transport;
    const { timeline } = yield* currentTelemetry;

    const observeReply = (reply: RankReply, millis: number) =>
      Effect.gen(function* () {
        const rank = String(reply.rank);
        yield* metrics.rankStepLatency(Effect.succeed(millis / 1000)).pipe(
          Effect.tagMetrics("rank", rank),
        );
        if (reply._tag === "Done" && reply.collectiveMillis !== undefined) {
          yield* metrics.collectiveLatency(Effect.succeed(reply.collectiveMillis / 1000)).pipe(
            Effect.tagMetrics("rank", rank),
          );
        }
      });

    const loadGroup = Effect.gen(function* () {
      const scope = yield* Scope.make();
      return yield* Effect.gen(function* () {
        const model = yield* LlamaModel.load({
          source,
          tp: options.tp,
          maxSequences,
          maxBatchTokens: options.maxBatchTokens,
          weights: options.weights,
          onReply: observeReply,
        }).pipe(Scope.extend(scope), Effect.provideService(Transport, transport));
        const ranks = yield* model.supervisor.ranks();
        return {
          model,
          scope,
          ranks: ranks.map(({ rank, backend, adapter }) => ({
            rank,
            backend,
            adapter,
            alive: true,
            weightBytes: model.weightBytesPerRank[rank] ?? 0,
            kvCacheBytes: model.kvCacheBytesPerRank[rank] ?? 0,
          })),
        } satisfies Group;
      }).pipe(Effect.onError(() => Scope.close(scope, Exit.void)));
    });

    // The first load fails the engine with its typed error; later ones are retried.
    let group: Group = yield* loadGroup;
    const { seqLen: contextLength } = group.model.config;
    let restarting = false;
    let draining = false;
    let stopped = false;
    const state = (): EngineState =>
      stopped ? "stopped" : draining ? "draining" : restarting ? "restarting" : "ready";
    let restarts = 0;
    const recentRestarts: RestartRecord[] = [];
    const tokenRate = new TokenRate(60);
    let retryAfterSeconds = 1;
    let nextId = 0;
    const waiting: Sequence[] = [];
    const running: Sequence[] = [];
    const wake = yield* Queue.sliding<void>(1);
    const loopEnded = yield* Deferred.make<void>();

    const updateGauges = Effect.all([
      metrics.queueDepth(Effect.succeed(waiting.length)),
      metrics.runningRequests(Effect.succeed(running.length)),
    ]);

    const freeSlot = () => {
      const used = new Set(running.map((s) => s.slot));
      for (let slot = 0; slot < maxSequences; slot++) if (!used.has(slot)) return slot;
      return -1;
    };

    /** Drops ended sequences and fills free slots from the queue, oldest first. */
    const admit = Effect.gen(function* () {
      for (let i = running.length - 1; i >= 0; i--) if (running[i].done) running.splice(i, 1);
      for (let i = waiting.length - 1; i >= 0; i--) if (waiting[i].done) waiting.splice(i, 1);
      while (waiting.length > 0 && running.length < maxSequences) {
        const sequence = waiting.shift()!;
        sequence.slot = freeSlot();
        running.push(sequence);
      }
      yield* updateGauges;
    });

    /** Puts a sequence's tokens in its slot; a fresh one then samples its first token. */
    const prefill = (model: LlamaModel, sequence: Sequence) =>
      Effect.gen(function* () {
        const { promptTokens } = sequence.request;
        if (sequence.generated.length > 0) {
          // Resuming: prompt and tokens so far in one prefill (a row's bits do not depend on
          // the step it is in); the last generated token is fed by the next decode step.
          yield* model.forward(sequence.tokensSoFar, 0, sequence.slot);
          sequence.prefilled = true;
          return;
        }
        yield* model.forward(promptTokens, 0, sequence.slot);
        yield* metrics.promptTokens(Effect.succeed(promptTokens.length));
        const candidates = yield* model.candidates(
          sequence.temperature > 0 ? CANDIDATES_PER_RANK : 1,
          sequence.temperature,
        );
        sequence.prefilled = true;
        const token = yield* sequence.choose(candidates, model.logits());
        yield* metrics.timeToFirstToken(
          Effect.succeed((performance.now() - sequence.admittedAt) / 1000),
        );
        yield* accept(sequence, token);
      });

    const accept = (sequence: Sequence, token: number) =>
      Effect.gen(function* () {
        yield* metrics.generatedTokens(Effect.succeed(1));
        tokenRate.add(1);
        yield* sequence.accept(token);
      });

    /** One decode step: a row per running sequence, then each samples its next token. */
    const decode = (model: LlamaModel, batch: readonly Sequence[]) =>
      Effect.gen(function* () {
        yield* model.step(batch.map((s) => ({
          token: s.generated[s.generated.length - 1],
          sequence: s.slot,
          position: s.nextPosition,
        })));
        yield* metrics.batchSize(Effect.succeed(batch.length));
        // One LM head call per temperature: greedy rows need only the top candidate.
        const byTemperature = new Map<number, number[]>();
        batch.forEach((s, row) => {
          byTemperature.set(s.temperature, [...(byTemperature.get(s.temperature) ?? []), row]);
        });
        for (const [temperature, rows] of byTemperature) {
          const lists = yield* model.candidatesFor(
            rows,
            temperature > 0 ? CANDIDATES_PER_RANK : 1,
            temperature,
          );
          for (const [i, row] of rows.entries()) {
            const sequence = batch[row];
            const fullLogits = Effect.map(model.logitsFor([row]), (l) => l[0]);
            yield* accept(sequence, yield* sequence.choose(lists[i], fullLogits));
          }
        }
      });

    /** One turn: prefill the newcomers, then decode everything running. */
    const turn = Effect.gen(function* () {
      const model = group.model;
      for (const sequence of running.filter((s) => !s.prefilled && !s.done)) {
        yield* prefill(model, sequence);
      }
      const batch = running.filter((s) => s.prefilled && !s.done && s.generated.length > 0);
      if (batch.length > 0) yield* decode(model, batch);
    });

    const failSequence = (sequence: Sequence, message: string) =>
      sequence.end(Option.some(generationFailed(message)));

    /** Restarts the group with backoff; sequences in flight are marked for re-prefill. */
    const recover = (failure: StepFailure) =>
      Effect.gen(function* () {
        restarting = true;
        restarts++;
        recentRestarts.push({ at: Date.now(), rank: failure.rank, reason: failure.message });
        if (recentRestarts.length > 10) recentRestarts.shift();
        yield* metrics.rankRestarts(Effect.succeed(1));
        yield* Effect.logWarning(
          `rank ${failure.rank} ${failure._tag === "RankDied" ? "died" : "failed"}: ` +
            `${failure.message}; restarting the rank group`,
        );
        group = {
          ...group,
          ranks: group.ranks.map((r) => r.rank === failure.rank ? { ...r, alive: false } : r),
        };
        yield* Scope.close(group.scope, Exit.void);
        for (const sequence of running) {
          sequence.prefilled = false;
          sequence.resumes++;
          if (sequence.resumes > maxResumes) {
            yield* failSequence(
              sequence,
              `the rank group failed ${sequence.resumes} times during this request ` +
                `(last: ${failure.message}); retry it`,
            );
          }
        }
        let delay = backoff.initialMillis;
        while (true) {
          retryAfterSeconds = Math.max(1, Math.ceil(delay / 1000) + 1);
          yield* Effect.sleep(Duration.millis(delay));
          const loaded = yield* Effect.either(loadGroup);
          if (loaded._tag === "Right") {
            group = loaded.right;
            break;
          }
          yield* Effect.logWarning(`restarting the rank group failed: ${loaded.left.message}`);
          delay = Math.min(delay * 2, backoff.maxMillis);
        }
        restarting = false;
        yield* Effect.logInfo(`rank group restarted (restart ${restarts})`);
      });

    /** Waits for work; an idle group is pinged so a dead rank is found without traffic. */
    const idle = Effect.gen(function* () {
      const woke = yield* Queue.take(wake).pipe(
        Effect.timeout(Duration.millis(healthCheckMillis)),
        Effect.option,
      );
      if (Option.isNone(woke)) yield* group.model.supervisor.ranks();
    });

    const loop = Effect.gen(function* () {
      while (true) {
        yield* admit;
        if (draining && running.length === 0 && waiting.length === 0) break;
        const work = running.length > 0 ? turn : idle;
        const outcome = yield* Effect.either(work);
        if (outcome._tag === "Left") yield* recover(outcome.left);
      }
    }).pipe(
      Effect.ensuring(Effect.gen(function* () {
        stopped = true;
        for (const s of [...running, ...waiting]) {
          yield* failSequence(s, "the engine stopped before this request finished; retry it");
        }
        yield* Deferred.succeed(loopEnded, undefined);
      })),
    );
    yield* Effect.forkScoped(loop);
    yield* Effect.addFinalizer(() => Scope.close(group.scope, Exit.void));

    const submit = (request: GenerationRequest) =>
      Effect.gen(function* () {
        if (draining || stopped) {
          return yield* new EngineUnavailable({
            message: `the engine is ${state()} and takes no new requests`,
            retryAfterSeconds: 5,
          });
        }
        if (restarting) {
          return yield* new EngineUnavailable({
            message: "the rank group is restarting after a failure; retry shortly",
            retryAfterSeconds,
          });
        }
        const prompt = request.promptTokens;
        if (prompt.length === 0) {
          return yield* new RequestRejected({
            message: "the prompt has no tokens",
            param: "prompt",
          });
        }
        if (prompt.length > contextLength) {
          return yield* new RequestRejected({
            message: `the prompt is ${prompt.length} tokens, more than the model's context ` +
              `of ${contextLength}`,
            param: "prompt",
          });
        }
        if (prompt.some((t) => !(Number.isInteger(t) && t >= 0 && t < tokenizer.vocabSize))) {
          return yield* new RequestRejected({ message: "a prompt token is out of the vocabulary" });
        }
        // Requests that free slots will take at the next turn are not queued; maxQueue bounds
        // only those that must wait for a slot (so maxQueue 0 means "no waiting").
        const freeSlots = Math.max(0, maxSequences - running.length);
        if (waiting.length >= maxQueue + freeSlots) {
          return yield* new QueueFull({
            message: `${waiting.length - freeSlots} requests are already waiting for a ` +
              `sequence slot (the limit is ${maxQueue})`,
          });
        }
        const sequence = yield* Sequence.make(nextId++, request, contextLength, tokenizer).pipe(
          Effect.mapError((e) => new RequestRejected({ message: e.message })),
        );
        sequence.admittedAt = performance.now();
        const submittedAt = wallClockMillis();
        waiting.push(sequence);
        yield* updateGauges;
        yield* Queue.offer(wake, undefined);
        return Stream.flattenTake(Stream.fromQueue(sequence.output)).pipe(
          // The client went away (or read to the end): free the slot at the next turn.
          Stream.ensuring(Effect.suspend(() => {
            sequence.done = true;
            timeline.record(`request ${sequence.id}`, "request", submittedAt, {
              slot: sequence.slot,
              promptTokens: prompt.length,
              generatedTokens: sequence.generated.length,
            });
            return Queue.offer(wake, undefined);
          })),
        );
      });

    const health = Effect.sync((): EngineHealth => ({
      state: state(),
      ranks: group.ranks,
      restarts,
      waiting: waiting.length,
      running: running.length,
      recentRestarts: [...recentRestarts],
      tokensPerSecond: tokenRate.lastSeconds(),
    }));

    const drain = (timeoutMillis: number) =>
      Effect.gen(function* () {
        draining = true;
        yield* Queue.offer(wake, undefined);
        const finished = yield* Deferred.await(loopEnded).pipe(
          Effect.timeout(Duration.millis(timeoutMillis)),
          Effect.option,
        );
        if (Option.isNone(finished)) {
          for (const s of [...running, ...waiting]) {
            yield* failSequence(s, "the service is shutting down; retry this request elsewhere");
          }
        }
      });

    return {
      modelId: options.modelId ?? baseName(options.modelPath),
      tokenizer,
      contextLength,
      submit,
      health,
      drain,
      killRank: (rank: number) => Effect.suspend(() => group.model.supervisor.kill(rank)),
    } satisfies InferenceEngineShape;
  });
