/**
 * The Workers transport: each rank runs in its own Deno Worker with its own WebGPU device (Dawn
 * gets one native event loop per isolate). Commands, replies and collective traffic are Schema
 * messages; contributions meet in an `InProcessGroup` in the supervisor's isolate, which sends
 * each rank its result.
 */
import { Deferred, type Duration, Effect, Exit, FiberId, Layer, Schema } from "effect";
import type { CollectiveFailure } from "../collectives/communicator.ts";
import { InProcessGroup } from "../collectives/inprocess.ts";
import type { BackendChoice } from "../gpu/device.ts";
import { GpuOperationError, NoAdapterError } from "../gpu/errors.ts";
import { RankFailed } from "./errors.ts";
import type { RankCommand, RankReply } from "./protocol.ts";
import { type RankHandle, type SpawnError, Transport } from "./transport.ts";
import { FromRank, ToRank } from "./worker_protocol.ts";

export interface WorkersOptions {
  readonly backend?: BackendChoice;
  /** How long a collective waits for the slowest rank before failing. */
  readonly collectiveTimeout?: Duration.DurationInput;
  /** How long a Worker may take to start and acquire its device. */
  readonly startTimeout?: Duration.DurationInput;
}

const encode = Schema.encodeSync(ToRank);

const decode = Schema.decodeUnknownEither(FromRank);

const spawnWorker = (rank: number, tp: number, group: InProcessGroup, options: WorkersOptions) =>
  Effect.gen(function* () {
    const worker = new Worker(new URL("./rank_worker.ts", import.meta.url), { type: "module" });
    const send = (message: ToRank) => worker.postMessage(encode(message));
    const ready = yield* Deferred.make<void, SpawnError>();
    const died = yield* Deferred.make<never, RankFailed>();
    const pending = new Map<number, Deferred.Deferred<RankReply>>();
    let nextId = 0;

    const dead = (message: string) => {
      const failure = new RankFailed({ rank, step: -1, reason: "RankDied", message });
      Deferred.unsafeDone(died, Exit.fail(failure));
      Deferred.unsafeDone(
        ready,
        Exit.fail(new GpuOperationError({ operation: "worker", message })),
      );
      group.rankDied(rank, message);
    };

    worker.onerror = (event) => {
      event.preventDefault();
      dead(`rank ${rank}'s Worker crashed: ${event.message}`);
    };
    worker.onmessage = (event: MessageEvent) => {
      const decoded = decode(event.data);
      if (decoded._tag === "Left") {
        return dead(`rank ${rank} sent a malformed message: ${decoded.left.message}`);
      }
      const message = decoded.right;
      switch (message._tag) {
        case "Ready":
          return Deferred.unsafeDone(ready, Exit.void);
        case "StartFailed":
          return Deferred.unsafeDone(
            ready,
            Exit.fail(
              message.reason === "NoAdapterError"
                ? new NoAdapterError({ message: message.message })
                : new GpuOperationError({ operation: "worker start", message: message.message }),
            ),
          );
        case "Reply": {
          const waiter = pending.get(message.id);
          pending.delete(message.id);
          if (waiter) Deferred.unsafeDone(waiter, Exit.succeed(message.reply));
          return;
        }
        case "Contribution":
          // The hub answers every contribution, with a result or a typed failure.
          return Effect.runFork(
            group.exchange(message).pipe(
              Effect.match({
                onSuccess: (tensor) =>
                  send({ _tag: "CollectiveDone", step: message.step, seq: message.seq, tensor }),
                onFailure: (failure: CollectiveFailure) =>
                  send({
                    _tag: "CollectiveFailed",
                    step: message.step,
                    seq: message.seq,
                    reason: failure._tag,
                    ranks: failure._tag === "RankDied" ? [failure.rank] : [...failure.ranks],
                    message: failure.message,
                  }),
              }),
            ),
          );
      }
    };

    yield* Effect.addFinalizer(() =>
      Effect.sync(() => send({ _tag: "Stop" })).pipe(
        // Give the rank a moment to destroy its device, then make sure the Worker is gone.
        Effect.zipRight(Effect.sleep("200 millis")),
        Effect.ensuring(Effect.sync(() => worker.terminate())),
      )
    );
    send({ _tag: "Start", rank, tp, backend: options.backend ?? "auto" });
    yield* Deferred.await(ready).pipe(
      Effect.timeoutFail({
        duration: options.startTimeout ?? "60 seconds",
        onTimeout: () =>
          new GpuOperationError({
            operation: "worker start",
            message: `rank ${rank} did not start`,
          }),
      }),
    );

    const call = (command: RankCommand) =>
      Effect.suspend(() => {
        const id = nextId++;
        const reply = Deferred.unsafeMake<RankReply>(FiberId.none);
        pending.set(id, reply);
        send({ _tag: "Command", id, command });
        return Effect.raceFirst(Deferred.await(reply), Deferred.await(died)).pipe(
          Effect.ensuring(Effect.sync(() => pending.delete(id))),
        );
      }).pipe(
        Effect.flatMap((result) =>
          result._tag === "Failed"
            ? Effect.fail(new RankFailed({ ...result, message: `rank ${rank}: ${result.message}` }))
            : Effect.succeed(result)
        ),
      );
    return { rank, call } satisfies RankHandle;
  });

/**
 * On a CPU renderer (lavapipe) every device starts one thread per core, so tp devices would
 * oversubscribe the cores tp-fold. While the ranks create their devices, ask Mesa for
 * cores / tp threads each (unless the user chose LP_NUM_THREADS), then restore the variable.
 */
const withCpuRendererThreads = (tp: number) => <A, E, R>(spawn: Effect.Effect<A, E, R>) =>
  Effect.acquireUseRelease(
    Effect.sync(() => {
      const previous = Deno.env.get("LP_NUM_THREADS");
      if (previous === undefined && tp > 1) {
        const threads = Math.max(1, Math.floor(navigator.hardwareConcurrency / tp));
        Deno.env.set("LP_NUM_THREADS", String(threads));
      }
      return previous;
    }),
    () => spawn,
    (previous) =>
      Effect.sync(() =>
        previous === undefined
          ? Deno.env.delete("LP_NUM_THREADS")
          : Deno.env.set("LP_NUM_THREADS", previous)
      ),
  );

/** Runs each rank in its own Worker with its own device. */
export const WorkersTransport = (options: WorkersOptions = {}): Layer.Layer<Transport> =>
  Layer.succeed(Transport, {
    name: "workers",
    spawn: (tp) =>
      Effect.gen(function* () {
        const group = new InProcessGroup(tp, { timeout: options.collectiveTimeout });
        const ranks = yield* Effect.forEach(
          Array.from({ length: tp }, (_, r) => r),
          (r) => spawnWorker(r, tp, group, options),
          { concurrency: "unbounded" },
        ).pipe(withCpuRendererThreads(tp));
        return {
          ranks,
          abortStep: (step, failure) => group.abortStep(step, failure),
          localGpu: () => undefined,
          collectiveStats: () => group.stats.snapshot(),
        };
      }),
  });
