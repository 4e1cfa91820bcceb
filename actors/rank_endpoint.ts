/**
 * The rank side of a remote rank, whatever carries its messages (a Worker's port or a TCP
 * connection): on `Start` it acquires its own device, then executes commands one at a time and
 * takes part in collectives, through shared memory when the supervisor gave it a region and
 * through the supervisor's hub otherwise.
 */
import { Deferred, Effect, Exit, Fiber, FiberId, Queue } from "effect";
import type { CollectiveFailure, CollectiveGroup } from "../collectives/communicator.ts";
import { CollectiveError, RankDied } from "../collectives/errors.ts";
import type { Contribution, TensorPayload } from "../collectives/protocol.ts";
import { SharedMemoryGroup } from "../collectives/shared_memory.ts";
import { acquireGpu } from "../gpu/device.ts";
import { logAsRank, loggingLayer } from "../observe/logging.ts";
import type { RankCommand } from "./protocol.ts";
import type { RankProgramFactory } from "./rank_program.ts";
import { makeRankRuntime } from "./rank_runtime.ts";
import type { FromRank, ToRank } from "./remote_protocol.ts";

/** Collectives through the supervisor: contributions go up, results come back. */
class HubGroup implements CollectiveGroup {
  private readonly waiting = new Map<string, Deferred.Deferred<TensorPayload, CollectiveFailure>>();
  constructor(readonly worldSize: number, private readonly post: (m: FromRank) => void) {}

  exchange(c: Contribution) {
    return Effect.suspend(() => {
      const waiter = Deferred.unsafeMake<TensorPayload, CollectiveFailure>(FiberId.none);
      this.waiting.set(`${c.step}:${c.seq}`, waiter);
      this.post(c);
      return Deferred.await(waiter);
    });
  }

  settle(step: number, seq: number, exit: Exit.Exit<TensorPayload, CollectiveFailure>) {
    const key = `${step}:${seq}`;
    const waiter = this.waiting.get(key);
    this.waiting.delete(key);
    if (waiter) Deferred.unsafeDone(waiter, exit);
  }
}

export interface RankEndpoint {
  /** Handles one decoded message from the supervisor. */
  receive(message: ToRank): void;
  /** Frees the shards and destroys the device (on `Stop`, or when the connection is gone). */
  stop(): Promise<void>;
}

export const makeRankEndpoint = (
  post: (message: FromRank) => void,
  programs: readonly RankProgramFactory[],
): RankEndpoint => {
  const commands = Effect.runSync(Queue.unbounded<{ id: number; command: RankCommand }>());
  let hub: HubGroup | undefined;
  let serving: Fiber.RuntimeFiber<void> | undefined;

  const serve = (start: Extract<ToRank, { _tag: "Start" }>) =>
    Effect.scoped(Effect.gen(function* () {
      const { rank, tp } = start;
      const gpu = yield* acquireGpu({
        label: `rank ${rank}`,
        backend: start.backend,
        adapterName: start.adapter,
        placementNote: start.placementNote,
      });
      hub = new HubGroup(tp, post);
      const group = start.shared
        ? new SharedMemoryGroup(start.shared, tp, rank, hub, {
          timeoutMs: start.collectiveTimeoutMs,
        })
        : hub;
      const runtime = makeRankRuntime(rank, tp, gpu, group, programs, {
        tracing: start.tracing,
        emit: post,
      });
      yield* Effect.addFinalizer(() => Effect.sync(() => runtime.release()));
      yield* Effect.logDebug("device ready").pipe(
        Effect.annotateLogs({ backend: gpu.backend, adapter: gpu.adapterName }),
      );
      post({ _tag: "Ready", rank, backend: gpu.backend, adapter: gpu.adapterName });
      while (true) {
        const { id, command } = yield* Queue.take(commands);
        const reply = yield* runtime.handle(command);
        post({ _tag: "Reply", id, reply });
      }
    })).pipe(
      Effect.catchAll((error) =>
        Effect.sync(() =>
          post({
            _tag: "StartFailed",
            rank: start.rank,
            reason: error._tag,
            message: error.message,
          })
        )
      ),
      logAsRank(start.rank),
      Effect.provide(loggingLayer(start.logLevel)),
    );

  let stopped: Promise<void> | undefined;
  const stop = () => {
    // Interrupting closes the scope: shards freed, device destroyed.
    stopped ??= Effect.runPromise(serving ? Fiber.interrupt(serving) : Effect.void).then(() => {});
    return stopped;
  };

  return {
    stop,
    receive: (message) => {
      switch (message._tag) {
        case "Start":
          if (serving) return;
          serving = Effect.runFork(serve(message));
          return;
        case "Command":
          Queue.unsafeOffer(commands, message);
          return;
        case "CollectiveDone":
          hub?.settle(message.step, message.seq, Exit.succeed(message.tensor));
          return;
        case "CollectiveFailed": {
          const failure = message.reason === "RankDied"
            ? new RankDied({ rank: message.ranks[0] ?? 0, message: message.message })
            : new CollectiveError({
              op: "collective",
              ranks: message.ranks,
              message: message.message,
            });
          hub?.settle(message.step, message.seq, Exit.fail(failure));
          return;
        }
        case "Stop":
          void stop();
          return;
      }
    },
  };
};
