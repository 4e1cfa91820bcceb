/**
 * The Workers transport: each rank runs in its own Deno Worker with its own WebGPU device (Dawn
 * gets one native event loop per isolate). Commands and replies are Schema messages over the
 * Worker's port; collective data meets in one SharedArrayBuffer (collectives/shared_memory.ts),
 * and only contributions too large for its slots go through the hub in this isolate.
 */
import { Duration, Effect, Layer, Schema } from "effect";
import { InProcessGroup } from "../collectives/inprocess.ts";
import {
  abortSharedStep,
  createSharedRegion,
  markRankDead,
  type SharedRegionOptions,
  sharedStats,
} from "../collectives/shared_memory.ts";
import { type BackendChoice, withCpuRendererThreads } from "../gpu/device.ts";
import { GpuOperationError } from "../gpu/errors.ts";
import { currentTelemetry } from "../observe/telemetry.ts";
import { linkRank } from "./rank_link.ts";
import { FromRank, ToRank } from "./remote_protocol.ts";
import { Transport } from "./transport.ts";

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
}

const encode = Schema.encodeSync(ToRank);
const decode = Schema.decodeUnknownEither(FromRank);

const spawnWorker = (
  rank: number,
  tp: number,
  hub: InProcessGroup,
  shared: SharedArrayBuffer,
  options: WorkersOptions,
) =>
  Effect.gen(function* () {
    const telemetry = yield* currentTelemetry;
    const worker = new Worker(new URL("./rank_worker.ts", import.meta.url), { type: "module" });
    const link = linkRank(
      rank,
      (message) => worker.postMessage(encode(message)),
      hub,
      () => markRankDead(shared, tp, rank),
      telemetry.rankEvent,
    );
    worker.onerror = (event) => {
      event.preventDefault();
      link.died(`rank ${rank}'s Worker crashed: ${event.message}`);
    };
    worker.onmessage = (event: MessageEvent) => {
      const decoded = decode(event.data);
      if (decoded._tag === "Left") {
        worker.terminate();
        return link.died(`rank ${rank} sent a malformed message: ${decoded.left.message}`);
      }
      link.receive(decoded.right);
    };
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => worker.postMessage(encode({ _tag: "Stop" }))).pipe(
        // Give the rank a moment to destroy its device, then make sure the Worker is gone.
        Effect.zipRight(Effect.sleep(link.isDead() ? "0 millis" : "200 millis")),
        Effect.ensuring(Effect.sync(() => worker.terminate())),
      )
    );
    worker.postMessage(encode({
      _tag: "Start",
      rank,
      tp,
      backend: options.backend ?? "auto",
      collectiveTimeoutMs: Duration.toMillis(options.collectiveTimeout ?? "5 minutes"),
      shared,
      tracing: telemetry.tracing,
      logLevel: telemetry.logLevel,
    }));
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
    const kill = Effect.sync(() => {
      worker.terminate();
      link.died(`rank ${rank}'s Worker was terminated`);
    });
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
export const WorkersTransport = (options: WorkersOptions = {}): Layer.Layer<Transport> =>
  Layer.succeed(Transport, {
    name: "workers",
    spawn: (tp) =>
      Effect.gen(function* () {
        const hub = new InProcessGroup(tp, { timeout: options.collectiveTimeout });
        const shared = createSharedRegion(tp, options.sharedMemory);
        const workers = yield* Effect.forEach(
          Array.from({ length: tp }, (_, r) => r),
          (r) => spawnWorker(r, tp, hub, shared, options),
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
        };
      }),
  });

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
