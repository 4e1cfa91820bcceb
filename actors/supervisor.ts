/**
 * The supervisor: spawns the ranks through a transport, shards the weights with each layer's
 * own rule, and drives steps. A step fails with the first rank's typed error; the other ranks'
 * pending collectives of that step are aborted, so nothing waits forever.
 */
import { Duration, Effect, Either, type Scope } from "effect";
import { CollectiveError } from "../collectives/errors.ts";
import { fromPayload, toPayload } from "../collectives/protocol.ts";
import type { HostTensor } from "../collectives/tensor.ts";
import type { Gpu } from "../gpu/device.ts";
import { currentTelemetry } from "../observe/telemetry.ts";
import { noTimeline, type Timeline, wallClockMillis } from "../observe/timeline.ts";
import { type PlanError, RankFailed, type StepFailure } from "./errors.ts";
import type { LayerSpec, RankCommand, RankReply } from "./protocol.ts";
import { type RankGroup, type RankHandle, type SpawnError, Transport } from "./transport.ts";

/** Options of {@link Supervisor.make}. */
export interface SupervisorOptions {
  /** Number of ranks (tensor-parallel size). */
  readonly tp: number;
  /** Upper bound on any one step, so even a wedged rank cannot hang the caller. */
  readonly stepTimeout?: Duration.DurationInput;
  /** Called with each rank's reply and how long it took (metrics). */
  readonly onReply?: ReplyObserver;
}

/** Sees every reply with the milliseconds from sending the command to receiving it. */
export type ReplyObserver = (reply: RankReply, millis: number) => Effect.Effect<void>;

/** Narrows each reply to `tag`; any other reply is a protocol violation by that rank. */
export const expectReplies =
  <T extends RankReply["_tag"]>(tag: T) => (replies: readonly RankReply[]) =>
    Effect.forEach(
      replies,
      (reply) =>
        reply._tag === tag ? Effect.succeed(reply as Extract<RankReply, { _tag: T }>) : Effect.fail(
          new RankFailed({
            rank: reply.rank,
            step: -1,
            reason: "ProtocolError",
            message: `rank ${reply.rank} answered ${reply._tag} where ${tag} was expected`,
          }),
        ),
    );

/**
 * Drives a group of ranks: loads parallel layers (each rank gets its own shards) and runs steps
 * on them. Made with {@link Supervisor.make} inside a scope; needs a {@link Transport}.
 *
 * @example A two-rank MLP, in this isolate
 * ```ts
 * import { Effect } from "effect";
 * import { InProcessTransport, loadParallelLayer, Supervisor, tensor } from "jsr:@tessera/tp";
 *
 * const program = Effect.gen(function* () {
 *   const supervisor = yield* Supervisor.make({ tp: 2 });
 *   const spec = { _tag: "ParallelMlp", name: "mlp", dim: 4, hidden: 8, activation: "gelu" } as const;
 *   yield* loadParallelLayer(supervisor, spec, [
 *     tensor([4, 8], new Float32Array(32).fill(0.1)),
 *     tensor([8, 4], new Float32Array(32).fill(0.1)),
 *   ]);
 *   const [y] = yield* supervisor.forward("mlp", tensor([1, 4], new Float32Array([1, 2, 3, 4])));
 *   return y.data;
 * });
 * await Effect.runPromise(Effect.scoped(program).pipe(Effect.provide(InProcessTransport())));
 * ```
 */
export class Supervisor {
  private nextStep = 0;

  private constructor(
    readonly tp: number,
    readonly transport: string,
    private readonly group: RankGroup,
    private readonly stepTimeout: Duration.Duration,
    private readonly onReply: ReplyObserver | undefined,
    private readonly timeline: Timeline = noTimeline,
  ) {}

  /** Spawns `tp` ranks; they shut down (devices destroyed, fibers interrupted) with the scope. */
  static make(
    options: SupervisorOptions,
  ): Effect.Effect<Supervisor, SpawnError | PlanError, Scope.Scope | Transport> {
    return Effect.gen(function* () {
      const transport = yield* Transport;
      const { timeline } = yield* currentTelemetry;
      const group = yield* transport.spawn(options.tp);
      yield* Effect.logDebug("ranks started").pipe(
        Effect.annotateLogs({ tp: options.tp, transport: transport.name }),
      );
      return new Supervisor(
        options.tp,
        transport.name,
        group,
        Duration.decode(options.stepTimeout ?? "5 minutes"),
        options.onReply,
        timeline,
      );
    });
  }

  /** Each rank's backend, adapter, whether it is a CPU renderer, and its binding limit. */
  ranks(): Effect.Effect<
    ReadonlyArray<
      {
        rank: number;
        backend: string;
        adapter: string;
        cpuRenderer: boolean;
        shaderF16: boolean;
        maxBindingBytes: number;
      }
    >,
    StepFailure
  > {
    return this.step((_, step) => ({ _tag: "Ping", step })).pipe(
      Effect.flatMap(expectReplies("Pong")),
    );
  }

  /**
   * Loads a stand-alone layer: rank r receives `shards[r]`, cut by the layer's own sharding
   * rule (layers/load.ts's `loadParallelLayer` plans and cuts them). Returns, per rank, the
   * shapes of the shards it holds and their bytes.
   */
  loadShards(
    spec: LayerSpec,
    shards: readonly (readonly HostTensor[])[],
  ): Effect.Effect<
    ReadonlyArray<{ rank: number; bytes: number; shardShapes: readonly (readonly number[])[] }>,
    StepFailure
  > {
    return this.step((rank, step) => ({
      _tag: "LoadLayer",
      step,
      spec,
      shards: (shards[rank] ?? []).map(toPayload),
    })).pipe(Effect.flatMap(expectReplies("Loaded")));
  }

  /**
   * Runs a layer on every rank. `input` is either one tensor for all ranks or one per rank (a
   * parallel input). Returns each rank's output.
   */
  forward(
    layer: string,
    input: HostTensor | readonly HostTensor[],
  ): Effect.Effect<HostTensor[], StepFailure> {
    const inputFor = (
      rank: number,
    ) => ("data" in input ? input : (input as readonly HostTensor[])[rank]);
    return this.step((rank, step) => ({
      _tag: "Forward",
      step,
      layer,
      input: toPayload(inputFor(rank)),
    })).pipe(
      Effect.flatMap(expectReplies("Output")),
      Effect.map((replies) => replies.map((r) => fromPayload(r.output))),
    );
  }

  /** A rank's device when it runs in this isolate (diagnostics and tests). */
  localGpu(rank: number): Gpu | undefined {
    return this.group.localGpu(rank);
  }

  /**
   * Fault drill: stops `rank` abruptly, as a crash would (Worker cut off, process killed
   * with SIGKILL, or connection dropped). The next step fails with `RankDied` naming it.
   */
  kill(rank: number): Effect.Effect<void> {
    return this.group.kill(rank);
  }

  /**
   * Fault drill: `rank` sits idle for `millis` before its next command, alive and answering
   * heartbeats, so the steps sent after it wait for it (a stall, not a death). Its reply is
   * not awaited.
   */
  pause(rank: number, millis: number): Effect.Effect<void> {
    return Effect.suspend(() => {
      const handle = this.group.ranks.find((h) => h.rank === rank);
      if (!handle) return Effect.void;
      return handle.send({ _tag: "Pause", step: this.nextStep++, millis }).pipe(
        Effect.flatMap((reply) => Effect.forkDaemon(Effect.ignore(reply))),
        Effect.asVoid,
      );
    });
  }

  /** Calls and bytes per collective since the ranks started. */
  collectiveStats(): ReadonlyArray<{ op: string; calls: number; bytes: number }> {
    return this.group.collectiveStats();
  }

  /**
   * Sends one command per rank (built from the rank and a fresh step number) and waits for all
   * replies. The building block model drivers use to run a model layer by layer.
   */
  step(
    command: (rank: number, step: number) => RankCommand,
  ): Effect.Effect<RankReply[], StepFailure> {
    return this.pipeline([command]).pipe(Effect.map((replies) => replies[0]));
  }

  /**
   * Several steps in flight at once: every rank is sent all of the commands, in order, before
   * any reply is awaited, so a rank starts each command as soon as it has finished the one
   * before, with no round trip to the supervisor in between (a decode token's embedding and
   * layers go as one pipeline). Each command still is its own step, with its own step number,
   * collectives and reply. Returns the replies step by step. When a step fails, it and every
   * later step of the pipeline are aborted (their collectives fail at once), the ranks answer
   * the rest quickly, and the pipeline fails with the first failure. The step timeout bounds
   * the whole pipeline.
   */
  pipeline(
    commands: ReadonlyArray<(rank: number, step: number) => RankCommand>,
  ): Effect.Effect<RankReply[][], StepFailure> {
    return Effect.suspend(() => {
      const first = this.nextStep;
      this.nextStep += commands.length;
      const steps = commands.map((_, i) => first + i);
      let failure: { error: StepFailure; index: number } | undefined;
      const onFailure = (index: number) => (error: StepFailure) =>
        Effect.sync(() => {
          if (failure && failure.index <= index) return;
          failure = { error, index };
          const aborted = new CollectiveError({
            op: "step",
            ranks: [error.rank],
            message: `step ${steps[index]} aborted because rank ${error.rank} ${
              error._tag === "RankDied" ? "died" : "failed"
            }: ${error.message}`,
          });
          for (const step of steps.slice(index)) this.group.abortStep(step, aborted);
        });
      const names = commands.map(() => "step");
      const started = wallClockMillis();
      // Per rank, when it last answered: a reply's latency is counted from then (or the send).
      const answered = this.group.ranks.map(() => performance.now());
      const finished = commands.map(() => new Set<number>());
      const settled = commands.map(() => 0);
      let recorded = 0;
      let lastEnd = started;
      // A step's span runs from the end of the one before it until its last rank has answered.
      const recordSettled = () => {
        while (recorded < steps.length && settled[recorded] === this.group.ranks.length) {
          this.timeline.record(names[recorded], "step", lastEnd, { step: steps[recorded] });
          lastEnd = wallClockMillis();
          recorded++;
        }
      };
      const send = (handle: RankHandle) =>
        Effect.forEach(commands, (command, i) =>
          Effect.suspend(() => {
            const built = command(handle.rank, steps[i]);
            names[i] = built._tag === "DecoderLayer" ? `layer ${built.layer}` : built._tag;
            return handle.send(built);
          }));
      const awaitReplies = (
        handle: RankHandle,
        waits: ReadonlyArray<Effect.Effect<RankReply, StepFailure>>,
      ) =>
        Effect.forEach(waits, (wait, i) =>
          wait.pipe(
            Effect.tap((reply) => {
              const now = performance.now();
              const millis = now - answered[handle.rank];
              answered[handle.rank] = now;
              finished[i].add(handle.rank);
              return this.onReply ? this.onReply(reply, millis) : Effect.void;
            }),
            Effect.tapError(onFailure(i)),
            Effect.either,
            Effect.tap(() =>
              Effect.sync(() => {
                settled[i]++;
                recordSettled();
              })
            ),
          ));
      return Effect.forEach(this.group.ranks, send).pipe(
        Effect.flatMap((waits) =>
          Effect.forEach(
            this.group.ranks,
            (handle, r) => awaitReplies(handle, waits[r]),
            { concurrency: "unbounded" },
          )
        ),
        // One timer per pipeline (not per rank); on expiry it blames the ranks still working.
        Effect.timeoutFail({
          duration: this.stepTimeout,
          onTimeout: () => {
            const index = Math.max(0, finished.findIndex((f) => f.size < this.group.ranks.length));
            const slow = this.group.ranks.map((h) => h.rank).filter((r) => !finished[index].has(r));
            const error = new RankFailed({
              rank: slow[0] ?? 0,
              step: steps[index],
              reason: "Timeout",
              message: `ranks ${slow.join(", ")} did not finish step ${steps[index]} within ${
                Duration.format(this.stepTimeout)
              }`,
            });
            Effect.runSync(onFailure(index)(error));
            return error;
          },
        }),
        Effect.flatMap((outcomes) => {
          // A death explains the survivors' failed collectives, so it is the pipeline's error.
          const all = outcomes.flat();
          const death = all.find((o) => o._tag === "Left" && o.left._tag === "RankDied");
          if (death?._tag === "Left") return Effect.fail(death.left);
          if (failure) return Effect.fail(failure.error);
          // No failure: every outcome is a reply.
          return Effect.succeed(
            steps.map((_, i) => outcomes.map((perRank) => Either.getOrThrow(perRank[i]))),
          );
        }),
        Effect.ensuring(Effect.sync(() => {
          // Steps cut short (a timeout) still show, ending now.
          for (; recorded < steps.length; recorded++) {
            this.timeline.record(names[recorded], "step", lastEnd, { step: steps[recorded] });
          }
        })),
      );
    });
  }
}
