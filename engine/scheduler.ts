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
 * output stays identical. Every group failure, and every failed attempt to reload it, costs each
 * running sequence one resume; one over its budget ends with a retriable `GenerationFailed`, and
 * so does everything in flight when the group is not back within the restart timeout: none is
 * left hanging.
 *
 * Stall watchdog. A rank can stop answering while it stays alive (a wedged driver): no error,
 * no death, just steps that never end. With requests in flight, the group must show progress
 * (every rank has answered since the last progress) at least once per stall bound; otherwise
 * the step is abandoned, the state is "stalled" and the group is restarted as if a rank had
 * died.
 */
import {
  Data,
  Deferred,
  Duration,
  Effect,
  Exit,
  Fiber,
  Option,
  Queue,
  Scope,
  Stream,
} from "effect";
import type { StepFailure } from "../actors/errors.ts";
import type { ModelSource, RankReply } from "../actors/protocol.ts";
import { Transport } from "../actors/transport.ts";
import type { WeightType } from "../kernels/matmul.ts";
import { loadTokenizer, modelSourceOf } from "../models/files.ts";
import { LlamaModel, type LoadLlamaError, type LoadLlamaOptions } from "../models/llama.ts";
import {
  type DrillError,
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
import { generationFailed, NO_TOKEN, Sequence } from "./sequence.ts";
import { decodeBatch, prefillSequence, type StepHooks } from "./steps.ts";

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
  /** The memory plan's inputs: context cap, KV type, memory per rank (see LlamaModel.load). */
  readonly memory?: Pick<
    LoadLlamaOptions,
    "maxModelLen" | "kvCacheDtype" | "gpuMemoryBytes" | "gpuMemoryUtilization"
  >;
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
  /**
   * Group failures (restarts, and failed attempts to reload) one sequence may live through
   * before it fails. Default 3.
   */
  readonly maxResumes?: number;
  /**
   * With requests in flight, how long the group may go without progress (every rank having
   * answered) before it counts as stalled and is restarted. Default 30 s.
   */
  readonly stallMillis?: number;
  /**
   * How long requests in flight wait for a restarting group before they fail with a retriable
   * `GenerationFailed` (the engine goes on restarting). Default 60 s.
   */
  readonly restartTimeoutMillis?: number;
}

/** Default {@link EngineOptions.stallMillis}. */
export const DEFAULT_STALL_MILLIS = 30_000;
/** Default {@link EngineOptions.restartTimeoutMillis}. */
export const DEFAULT_RESTART_TIMEOUT_MILLIS = 60_000;

/** The watchdog's verdict: requests were in flight and the group made no progress. */
class GroupStalled extends Data.TaggedError("GroupStalled")<{
  /** The first rank that had not answered since the last progress. */
  readonly rank: number;
  readonly message: string;
}> {}

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
 *   const promptTokens = engine.tokenizer.encode("Once upon a time", { bos: engine.tokenizer.addsBos, eos: false });
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
    const stallMillis = options.stallMillis ?? DEFAULT_STALL_MILLIS;
    const restartTimeoutMillis = options.restartTimeoutMillis ?? DEFAULT_RESTART_TIMEOUT_MILLIS;
    const source: ModelSource = yield* modelSourceOf(options.modelPath);
    const tokenizer = yield* loadTokenizer(options.modelPath, options.tokenizerPath);
    const transport = yield* Transport;
    const { timeline } = yield* currentTelemetry;

    // The stall watchdog's clock: it restarts when every rank has answered since it last did
    // (the group as a whole moved on), and when work arrives at an engine that had none.
    let progressAt = performance.now();
    const answeredSinceProgress = new Set<number>();
    const noteProgress = () => {
      progressAt = performance.now();
      answeredSinceProgress.clear();
    };

    const observeReply = (reply: RankReply, millis: number) =>
      Effect.gen(function* () {
        answeredSinceProgress.add(reply.rank);
        if (answeredSinceProgress.size >= options.tp) noteProgress();
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
          ...options.memory,
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
            activationBytes: model.memoryPlan.ranks[rank]?.activations ?? 0,
            ...(model.memoryPlan.ranks[rank]?.budget === undefined
              ? {}
              : { memoryBudgetBytes: model.memoryPlan.ranks[rank].budget }),
            contextLength: model.memoryPlan.context,
            modelContextLength: model.memoryPlan.modelContext,
          })),
        } satisfies Group;
      }).pipe(Effect.onError(() => Scope.close(scope, Exit.void)));
    });

    // The first load fails the engine with its typed error; later ones are retried.
    let group: Group = yield* loadGroup;
    const { seqLen: contextLength } = group.model.config;
    /** Set while the group restarts, with what made it restart. */
    let restartingAfter: "failure" | "stall" | undefined;
    let draining = false;
    let stopped = false;
    const state = (): EngineState =>
      stopped
        ? "stopped"
        : draining
        ? "draining"
        : restartingAfter === "stall"
        ? "stalled"
        : restartingAfter === "failure"
        ? "restarting"
        : "ready";
    let restarts = 0;
    let stalls = 0;
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

    /** The engine's side of each step: metrics, and non-finite logits end one request. */
    const hooks: StepHooks<never> = {
      nonFinite: (sequence, error) =>
        Effect.as(
          sequence.end(Option.some(generationFailed(error.message, false))),
          NO_TOKEN,
        ),
      prefilled: (sequence) =>
        Effect.all([
          metrics.promptTokens(Effect.succeed(sequence.request.promptTokens.length)),
          metrics.timeToFirstToken(
            Effect.succeed((performance.now() - sequence.admittedAt) / 1000),
          ),
        ]),
      chosen: () => {
        tokenRate.add(1);
        return metrics.generatedTokens(Effect.succeed(1));
      },
      decoded: (rows) => metrics.batchSize(Effect.succeed(rows)),
    };

    /** One turn: prefill the newcomers, then decode everything running. */
    const turn = Effect.gen(function* () {
      const model = group.model;
      for (const sequence of running.filter((s) => !s.prefilled && !s.done)) {
        yield* prefillSequence(model, sequence, hooks);
      }
      const batch = running.filter((s) => s.prefilled && !s.done && s.generated.length > 0);
      if (batch.length > 0) yield* decodeBatch(model, batch, hooks);
    });

    const failSequence = (sequence: Sequence, message: string) =>
      sequence.end(Option.some(generationFailed(message)));

    const inFlight = () => [...running, ...waiting].filter((s) => !s.done);

    /**
     * Never succeeds: fails with GroupStalled once requests are in flight and the group has
     * made no progress for `stallMillis`. Raced against each turn of the loop.
     */
    const stallWatch = Effect.gen(function* () {
      while (true) {
        const quietMillis = performance.now() - progressAt;
        const requests = inFlight().length;
        if (requests > 0 && quietMillis >= stallMillis) {
          const silent = group.ranks.map((r) => r.rank).filter((r) =>
            !answeredSinceProgress.has(r)
          );
          return yield* new GroupStalled({
            rank: silent[0] ?? 0,
            message: `no step completed for ${(quietMillis / 1000).toFixed(1)} s with ` +
              `${requests} requests in flight (rank${silent.length > 1 ? "s" : ""} ` +
              `${silent.join(", ")} did not answer)`,
          });
        }
        yield* Effect.sleep(
          Duration.millis(requests > 0 ? stallMillis - quietMillis : stallMillis),
        );
      }
    });

    /** A group failure costs each running sequence a resume; one over its budget fails. */
    const chargeResume = (last: string) =>
      Effect.forEach(running.filter((s) => !s.done), (sequence) => {
        sequence.resumes++;
        return sequence.resumes > maxResumes
          ? failSequence(
            sequence,
            `the rank group failed ${sequence.resumes} times during this request ` +
              `(failed reloads included; last: ${last})`,
          )
          : Effect.void;
      }, { discard: true });

    /** Fails what is in flight (retriable) when the group is not back in time. */
    const failAfterRestartTimeout = (since: string) =>
      Effect.gen(function* () {
        yield* Effect.sleep(Duration.millis(restartTimeoutMillis));
        const stranded = inFlight();
        const seconds = restartTimeoutMillis / 1000;
        yield* Effect.logWarning(
          `the rank group is not back ${seconds} s after ${since}; failing the ` +
            `${stranded.length} requests in flight as retriable`,
        );
        yield* metrics.restartTimeouts(Effect.succeed(stranded.length));
        for (const sequence of stranded) {
          yield* sequence.end(Option.some(generationFailed(
            `the rank group could not be restarted within ${seconds} s (after ${since})`,
            true,
            retryAfterSeconds,
          )));
        }
      });

    /** Restarts the group with backoff; sequences in flight are marked for re-prefill. */
    const recover = Effect.fn("Engine.recover")(function* (failure: StepFailure | GroupStalled) {
      const stalled = failure._tag === "GroupStalled";
      restartingAfter = stalled ? "stall" : "failure";
      restarts++;
      const reason = stalled ? `stalled: ${failure.message}` : failure.message;
      recentRestarts.push({ at: Date.now(), rank: failure.rank, reason });
      if (recentRestarts.length > 10) recentRestarts.shift();
      yield* metrics.rankRestarts(Effect.succeed(1));
      if (stalled) {
        stalls++;
        yield* metrics.engineStalls(Effect.succeed(1));
        yield* Effect.logWarning(`the rank group stalled: ${failure.message}; restarting it`);
      } else {
        yield* Effect.logWarning(
          `rank ${failure.rank} ${failure._tag === "RankDied" ? "died" : "failed"}: ` +
            `${failure.message}; restarting the rank group`,
        );
        group = {
          ...group,
          ranks: group.ranks.map((r) => r.rank === failure.rank ? { ...r, alive: false } : r),
        };
      }
      yield* Scope.close(group.scope, Exit.void);
      for (const sequence of running) sequence.prefilled = false;
      yield* chargeResume(reason);
      const timeout = yield* Effect.fork(failAfterRestartTimeout(reason));
      let delay = backoff.initialMillis;
      while (true) {
        retryAfterSeconds = Math.max(1, Math.ceil(delay / 1000) + 1);
        yield* Effect.sleep(Duration.millis(delay));
        const loaded = yield* Effect.either(loadGroup);
        if (loaded._tag === "Right") {
          group = loaded.right;
          break;
        }
        yield* metrics.failedReloads(Effect.succeed(1));
        yield* Effect.logWarning(`restarting the rank group failed: ${loaded.left.message}`);
        yield* chargeResume(`reloading failed: ${loaded.left.message}`);
        delay = Math.min(delay * 2, backoff.maxMillis);
      }
      yield* Fiber.interrupt(timeout);
      restartingAfter = undefined;
      noteProgress();
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
        const outcome = yield* Effect.either(Effect.raceFirst(work, stallWatch));
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
        if (restartingAfter !== undefined) {
          return yield* new EngineUnavailable({
            message: restartingAfter === "stall"
              ? "the rank group stalled and is restarting; retry shortly"
              : "the rank group is restarting after a failure; retry shortly",
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
        const sequence = yield* Sequence.make(
          nextId++,
          request,
          contextLength,
          tokenizer,
          group.model.config.vocabSize,
        ).pipe(
          Effect.mapError((e) => new RequestRejected({ message: e.message })),
        );
        sequence.admittedAt = performance.now();
        const submittedAt = wallClockMillis();
        // An engine with nothing to do owed no progress until now.
        if (inFlight().length === 0) noteProgress();
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
      stalls,
      // Ended sequences leave the lists at the next turn, which a restart may hold off.
      waiting: waiting.filter((s) => !s.done).length,
      running: running.filter((s) => !s.done).length,
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

    /** A drill needs a rank of the group, and a group that is up. */
    const checkDrill = (rank: number) =>
      Effect.gen(function* () {
        if (!(Number.isInteger(rank) && rank >= 0 && rank < options.tp)) {
          return yield* new RequestRejected({
            message: `there is no rank ${rank}; the ranks are 0 to ${options.tp - 1}`,
            param: "rank",
          });
        }
        if (stopped || restartingAfter !== undefined) {
          return yield* new EngineUnavailable({
            message: `the engine is ${state()}; there is no rank group to drill now`,
            retryAfterSeconds,
          });
        }
      });

    const killRank = Effect.fn("Engine.killRank")(function* (rank: number) {
      yield* checkDrill(rank);
      yield* Effect.logWarning(`drill: killing rank ${rank}`);
      yield* group.model.supervisor.kill(rank);
    });

    const pauseRank = Effect.fn("Engine.pauseRank")(function* (rank: number, millis: number) {
      yield* checkDrill(rank);
      if (!(Number.isInteger(millis) && millis >= 1 && millis <= 600_000)) {
        return yield* new RequestRejected({
          message: `a pause is 1 to 600000 ms, not ${millis}`,
          param: "millis",
        });
      }
      yield* Effect.logWarning(`drill: pausing rank ${rank} for ${millis} ms`);
      yield* group.model.supervisor.pause(rank, millis);
    });

    return {
      modelId: options.modelId ?? baseName(options.modelPath),
      tokenizer,
      contextLength,
      submit,
      health,
      drain,
      killRank: (rank: number): Effect.Effect<void, DrillError> => killRank(rank),
      pauseRank: (rank: number, millis: number): Effect.Effect<void, DrillError> =>
        pauseRank(rank, millis),
    } satisfies InferenceEngineShape;
  });
