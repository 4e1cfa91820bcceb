/**
 * The Workers transport: each rank runs in its own Deno Worker with its own WebGPU device (Dawn
 * gets one native event loop per isolate). Commands and replies are Schema messages over the
 * Worker's port; collective data meets in one SharedArrayBuffer (collectives/shared_memory.ts),
 * and only contributions too large for its slots go through the hub in this isolate. Workers
 * outlive their group: a restarted group gets the Workers its predecessor stopped
 * (actors/rank_worker_pool.ts), and the layer's scope terminates them.
 */
import { Duration, Effect, Layer } from "effect";
import { InProcessGroup } from "../collectives/inprocess.ts";
import {
  abortSharedStep,
  createSharedRegion,
  markRankDead,
  type SharedRegionOptions,
  sharedStats,
} from "../collectives/shared_memory.ts";
import type { RankPlacement } from "../gpu/adapters.ts";
import { type BackendChoice, withCpuRendererThreads } from "../gpu/device.ts";
import { GpuOperationError } from "../gpu/errors.ts";
import { currentTelemetry } from "../observe/telemetry.ts";
import { linkRank } from "./rank_link.ts";
import { makeRankWorkerPool, type RankWorkerPool } from "./rank_worker_pool.ts";
import type { RankProgramSet } from "./rank_program.ts";
import { checkPlacements, type RankGroup, Transport } from "./transport.ts";

/** Options of {@link WorkersTransport}. */
export interface WorkersOptions {
  /** WebGPU backend of every rank; default from the environment (`auto`: Dawn, else Deno's). */
  readonly backend?: BackendChoice;
  /** How long a collective waits for the slowest rank before failing. */
  readonly collectiveTimeout?: Duration.DurationInput;
  /** How long a Worker may take to start and acquire its device. */
  readonly startTimeout?: Duration.DurationInput;
  /** Shared-memory slot size and one-shot threshold (see collectives/shared_memory.ts). */
  readonly sharedMemory?: SharedRegionOptions;
  /**
   * Each rank's adapter (gpu/adapters.ts `placeRanks`); default: every rank on the first one.
   * Workers share this process, so a placement that needs a process of its own is refused.
   */
  readonly placements?: readonly RankPlacement[];
}

const spawnWorker = (
  rank: number,
  tp: number,
  hub: InProcessGroup,
  shared: SharedArrayBuffer,
  pool: RankWorkerPool,
  options: WorkersOptions,
) =>
  Effect.gen(function* () {
    const telemetry = yield* currentTelemetry;
    const worker = yield* pool.session({
      // A dead rank's stragglers (a killed rank finishing its command) are not news. `link`
      // exists by then: the Worker's messages arrive as later tasks.
      onMessage: (message) => link.isDead() ? undefined : link.receive(message),
      onCrash: (why) => link.died(`rank ${rank}: ${why}`),
    });
    const link = linkRank(
      rank,
      worker.post,
      hub,
      () => markRankDead(shared, tp, rank),
      telemetry.rankEvent,
    );
    worker.post({
      _tag: "Start",
      rank,
      tp,
      backend: options.backend ?? "auto",
      adapter: options.placements?.[rank]?.dawnName,
      placementNote: options.placements?.[rank]?.description,
      collectiveTimeoutMs: Duration.toMillis(options.collectiveTimeout ?? "5 minutes"),
      shared,
      tracing: telemetry.tracing,
      logLevel: telemetry.logLevel,
    });
    yield* link.ready.pipe(
      Effect.timeoutFail({
        duration: options.startTimeout ?? "60 seconds",
        onTimeout: () =>
          new GpuOperationError({
            operation: "worker start",
            message: `rank ${rank} did not start`,
          }),
      }),
    );
    // Dead at once for the supervisor, as after a crash. The rank is cut off and stopped in
    // the background (the group's close waits for it): it frees its GPU and its Worker is
    // kept for the next group, or terminated if it does not stop in time.
    const kill = Effect.sync(() => link.died(`rank ${rank}'s Worker was killed`)).pipe(
      Effect.zipRight(Effect.forkDaemon(worker.end)),
      Effect.asVoid,
    );
    return { handle: link.handle, kill };
  });

/**
 * Runs each rank in its own Worker with its own device.
 *
 * @example
 * ```ts
 * import { Effect } from "effect";
 * import { Supervisor, WorkersTransport } from "jsr:@tessera/tp";
 *
 * const program = Effect.gen(function* () {
 *   const supervisor = yield* Supervisor.make({ tp: 4 });
 *   console.log(yield* supervisor.ranks());
 * });
 * await Effect.runPromise(
 *   Effect.scoped(program).pipe(Effect.provide(WorkersTransport({ startTimeout: "2 minutes" }))),
 * );
 * ```
 */
export const WorkersTransport = (
  programs: RankProgramSet,
  options: WorkersOptions = {},
): Layer.Layer<Transport> =>
  Layer.scoped(
    Transport,
    Effect.map(makeRankWorkerPool({ entry: programs.workerEntry }), (pool) => ({
      name: "workers",
      spawn: (tp: number) =>
        Effect.gen(function* () {
          yield* checkPlacements(tp, options.placements, { name: "workers", oneProcess: true });
          const hub = new InProcessGroup(tp, { timeout: options.collectiveTimeout });
          const shared = createSharedRegion(tp, options.sharedMemory);
          const workers = yield* Effect.forEach(
            Array.from({ length: tp }, (_, r) => r),
            (r) => spawnWorker(r, tp, hub, shared, pool, options),
            { concurrency: "unbounded" },
          ).pipe(withCpuRendererThreads(tp));
          return {
            ranks: workers.map((w) => w.handle),
            abortStep: (step, failure) => {
              hub.abortStep(step, failure);
              abortSharedStep(shared, tp, step);
            },
            kill: (rank) => workers[rank]?.kill ?? Effect.void,
            localGpu: () => undefined,
            collectiveStats: () => mergeStats(sharedStats(shared, tp), hub.stats.snapshot()),
          } satisfies RankGroup;
        }),
    })),
  );

const mergeStats = (
  ...sources: ReadonlyArray<ReadonlyArray<{ op: string; calls: number; bytes: number }>>
) => {
  const byOp = new Map<string, { op: string; calls: number; bytes: number }>();
  for (const { op, calls, bytes } of sources.flat()) {
    const entry = byOp.get(op) ?? { op, calls: 0, bytes: 0 };
    byOp.set(op, { op, calls: entry.calls + calls, bytes: entry.bytes + bytes });
  }
  return [...byOp.values()];
};
