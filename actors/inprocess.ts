/**
 * The in-process transport: every rank is a fiber of this isolate reading a typed mailbox, with
 * its own device. Collectives meet in an `InProcessGroup`.
 *
 * Backend: Dawn first, as for a single device. Several dawn.node devices in one isolate used to
 * crash within a few steps: the ranks, acquired concurrently, each created a `GPU`, and the one
 * not kept was collected under its device (see gpu/device.ts); one `GPU` per isolate fixed it.
 * Unlike Workers, in-process ranks share one lavapipe screen (one Dawn instance), whose thread
 * pool serves every device, so it keeps all the cores (no `withCpuRendererThreads`).
 */
import { Deferred, type Duration, Effect, Exit, Fiber, FiberId, Layer, Queue } from "effect";
import { RankDied } from "../collectives/errors.ts";
import { InProcessGroup } from "../collectives/inprocess.ts";
import type { RankPlacement } from "../gpu/adapters.ts";
import { acquireGpu, type BackendChoice, backendFromEnv } from "../gpu/device.ts";
import type { RankCommand, RankReply } from "./protocol.ts";
import { currentTelemetry } from "../observe/telemetry.ts";
import type { RankProgramSet } from "./rank_program.ts";
import { makeRankRuntime } from "./rank_runtime.ts";
import { checkPlacements, failedReply, Transport } from "./transport.ts";

/** Options of {@link InProcessTransport}. */
export interface InProcessOptions {
  /** Defaults to `TESSERA_GPU_BACKEND`, else Dawn with Deno's built-in WebGPU as fallback. */
  readonly backend?: BackendChoice;
  /** How long a collective waits for the slowest rank before failing. */
  readonly collectiveTimeout?: Duration.DurationInput;
  /**
   * Each rank's adapter (gpu/adapters.ts `placeRanks`); default: every rank on the first one.
   * A placement that needs a process of its own is refused at spawn.
   */
  readonly placements?: readonly RankPlacement[];
}

interface Envelope {
  readonly command: RankCommand;
  readonly reply: Deferred.Deferred<RankReply, RankDied>;
}

/** The backend for `tp` ranks in one isolate: an explicit choice wins, else the environment's. */
export const inProcessBackend = (requested?: BackendChoice): BackendChoice =>
  requested ?? backendFromEnv();

const spawnRank = (
  rank: number,
  tp: number,
  group: InProcessGroup,
  programs: RankProgramSet,
  options: InProcessOptions,
) =>
  Effect.gen(function* () {
    const backend = inProcessBackend(options.backend);
    const placement = options.placements?.[rank];
    const gpu = yield* acquireGpu({
      label: `rank ${rank}`,
      backend,
      adapterName: placement?.dawnName,
      placementNote: placement?.description,
    });
    const telemetry = yield* currentTelemetry;
    const runtime = makeRankRuntime(rank, tp, gpu, group, programs.factories, {
      tracing: telemetry.tracing,
      emit: telemetry.rankEvent,
    });
    yield* Effect.addFinalizer(() => Effect.sync(() => runtime.release()));
    const mailbox = yield* Queue.unbounded<Envelope>();
    // Replies not yet given: when the loop ends (killed, crashed), their waits fail at once.
    const unanswered = new Set<Deferred.Deferred<RankReply, RankDied>>();
    let stoppedError: RankDied | undefined;
    const loop = Queue.take(mailbox).pipe(
      Effect.flatMap((envelope) =>
        runtime.handle(envelope.command).pipe(
          Effect.flatMap((r) => Deferred.succeed(envelope.reply, r)),
        )
      ),
      Effect.forever,
      // However the loop ends, collectives and calls waiting on this rank must not wait forever.
      Effect.onExit((exit) =>
        Effect.sync(() => {
          const how = Exit.isInterrupted(exit) ? "" : " unexpectedly";
          stoppedError = new RankDied({ rank, message: `rank ${rank} has stopped${how}` });
          for (const waiter of unanswered) Deferred.unsafeDone(waiter, Exit.fail(stoppedError));
          group.rankDied(rank, `rank ${rank} stopped${how}`);
        })
      ),
    );
    const fiber = yield* Effect.forkScoped(loop);
    const send = (command: RankCommand) =>
      Effect.sync(() => {
        const reply = Deferred.unsafeMake<RankReply, RankDied>(FiberId.none);
        if (stoppedError) Deferred.unsafeDone(reply, Exit.fail(stoppedError));
        else {
          unanswered.add(reply);
          Queue.unsafeOffer(mailbox, { command, reply });
        }
        return Deferred.await(reply).pipe(
          Effect.ensuring(Effect.sync(() => unanswered.delete(reply))),
          Effect.flatMap(failedReply(rank)),
        );
      });
    return { rank, send, gpu, kill: Fiber.interrupt(fiber).pipe(Effect.asVoid) };
  });

/**
 * Runs all ranks as fibers of this isolate, one WebGPU device each.
 *
 * @example
 * ```ts
 * import { Effect } from "effect";
 * import { InProcessTransport, Supervisor } from "jsr:@tessera/tp";
 *
 * const program = Effect.gen(function* () {
 *   const supervisor = yield* Supervisor.make({ tp: 2 });
 *   console.log(yield* supervisor.ranks());
 * });
 * await Effect.runPromise(
 *   Effect.scoped(program).pipe(Effect.provide(InProcessTransport({ collectiveTimeout: "30 seconds" }))),
 * );
 * ```
 */
export const InProcessTransport = (
  programs: RankProgramSet,
  options: InProcessOptions = {},
): Layer.Layer<Transport> =>
  Layer.succeed(Transport, {
    name: "inprocess",
    spawn: (tp) =>
      Effect.gen(function* () {
        yield* checkPlacements(tp, options.placements, { name: "inprocess", oneProcess: true });
        const group = new InProcessGroup(tp, { timeout: options.collectiveTimeout });
        const ranks = yield* Effect.forEach(
          Array.from({ length: tp }, (_, r) => r),
          (r) => spawnRank(r, tp, group, programs, options),
          { concurrency: "unbounded" },
        );
        return {
          ranks,
          abortStep: (step, failure) => group.abortStep(step, failure),
          kill: (rank) => ranks[rank]?.kill ?? Effect.void,
          localGpu: (rank) => ranks[rank]?.gpu,
          collectiveStats: () => group.stats.snapshot(),
        };
      }),
  });
