/**
 * The entry point of a rank Worker: owns one device (Dawn, so each rank gets its own isolate and
 * native event loop), executes commands one at a time, and sends collective contributions to
 * the supervisor's isolate, which combines them.
 */
/// <reference lib="deno.worker" />
import { Deferred, Effect, Exit, Fiber, FiberId, Queue, Schema } from "effect";
import type { CollectiveFailure, CollectiveGroup } from "../collectives/communicator.ts";
import { CollectiveError, RankDied } from "../collectives/errors.ts";
import type { Contribution, TensorPayload } from "../collectives/protocol.ts";
import { acquireGpu } from "../gpu/device.ts";
import { makeRankRuntime } from "./rank_runtime.ts";
import type { RankCommand } from "./protocol.ts";
import { FromRank, ToRank } from "./worker_protocol.ts";

const post = (message: FromRank) => self.postMessage(Schema.encodeSync(FromRank)(message));
const decode = Schema.decodeUnknownEither(ToRank);

/** Collectives of this rank: contributions go to the supervisor, results come back. */
class WorkerGroup implements CollectiveGroup {
  private readonly waiting = new Map<string, Deferred.Deferred<TensorPayload, CollectiveFailure>>();
  constructor(readonly worldSize: number) {}

  exchange(c: Contribution) {
    return Effect.suspend(() => {
      const waiter = Deferred.unsafeMake<TensorPayload, CollectiveFailure>(FiberId.none);
      this.waiting.set(`${c.step}:${c.seq}`, waiter);
      post(c);
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

const commands = Effect.runSync(Queue.unbounded<{ id: number; command: RankCommand }>());
let group: WorkerGroup | undefined;
let serving: Fiber.RuntimeFiber<void> | undefined;

const serve = (rank: number, tp: number, backend: "auto" | "dawn" | "deno") =>
  Effect.scoped(Effect.gen(function* () {
    const gpu = yield* acquireGpu({ label: `rank ${rank}`, backend });
    group = new WorkerGroup(tp);
    const runtime = makeRankRuntime(rank, tp, gpu, group);
    yield* Effect.addFinalizer(() => Effect.sync(() => runtime.release()));
    post({ _tag: "Ready", rank, backend: gpu.backend, adapter: gpu.adapterName });
    while (true) {
      const { id, command } = yield* Queue.take(commands);
      const reply = yield* runtime.handle(command);
      post({ _tag: "Reply", id, reply });
    }
  })).pipe(
    Effect.catchAll((error) =>
      Effect.sync(() =>
        post({ _tag: "StartFailed", rank, reason: error._tag, message: error.message })
      )
    ),
  );

self.onmessage = (event: MessageEvent) => {
  const decoded = decode(event.data);
  if (decoded._tag === "Left") {
    console.error(`rank worker: dropped a malformed message: ${decoded.left.message}`);
    return;
  }
  const message = decoded.right;
  switch (message._tag) {
    case "Start":
      serving ??= Effect.runFork(serve(message.rank, message.tp, message.backend));
      return;
    case "Command":
      Queue.unsafeOffer(commands, message);
      return;
    case "CollectiveDone":
      group?.settle(message.step, message.seq, Exit.succeed(message.tensor));
      return;
    case "CollectiveFailed": {
      const failure = message.reason === "RankDied"
        ? new RankDied({ rank: message.ranks[0] ?? 0, message: message.message })
        : new CollectiveError({ op: "collective", ranks: message.ranks, message: message.message });
      group?.settle(message.step, message.seq, Exit.fail(failure));
      return;
    }
    case "Stop":
      // Closing the scope frees the shards and destroys the device before the Worker exits.
      Effect.runPromise(serving ? Fiber.interrupt(serving) : Effect.void).finally(() =>
        self.close()
      );
      return;
  }
};
