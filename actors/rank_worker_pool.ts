/**
 * Rank Workers (a program set's Worker entry, ranks/rank_worker.ts) for the Workers transport and for a rank process, kept
 * from one session to the next. Ending a Worker leaks: Deno finalizes none of its native
 * objects (so Dawn's instance must be freed inside it first) and keeps an epoll and an eventfd
 * of every Worker that loaded a native addon. So a session's end does not end its Worker: the
 * rank frees its device and Dawn's instance on `Stop`, answers `Stopped`, and the Worker waits
 * idle for the next session. One that crashed, or did not stop in time, is terminated instead.
 */
import { Deferred, Duration, Effect, Exit, FiberId, Option, Schema, type Scope } from "effect";
import { FromRank, ToRank } from "./remote_protocol.ts";

const encode = Schema.encodeSync(ToRank);
const decode = Schema.decodeUnknownEither(FromRank);

/** How long a stopping rank may take to free everything before its Worker is terminated. */
export const RANK_STOP_DEADLINE: Duration.Duration = Duration.seconds(2);

/** Where a session's messages from its rank go. */
export interface RankWorkerHandlers {
  /** Every message from the rank but its `Stopped`. */
  readonly onMessage: (message: FromRank) => void;
  /** The Worker crashed or sent something that is not a message. */
  readonly onCrash: (why: string) => void;
}

/** One rank session on a pooled Worker. */
export interface RankWorkerSession {
  /** Sends one message to the rank. */
  post(message: ToRank): void;
  /**
   * Has the rank stop (device and Dawn's instance freed) and hands its Worker back, or
   * terminates it when the rank does not stop within the deadline. Idempotent; closing the
   * session's scope does the same.
   */
  readonly end: Effect.Effect<void>;
}

export interface RankWorkerPool {
  /** A Worker (idle or new) serving one rank session until the scope closes. */
  session(handlers: RankWorkerHandlers): Effect.Effect<RankWorkerSession, never, Scope.Scope>;
}

interface PooledWorker {
  readonly worker: Worker;
  handlers: RankWorkerHandlers | undefined;
  stopped: Deferred.Deferred<void> | undefined;
  crashed: boolean;
}

const startWorker = (entry: URL): PooledWorker => {
  const pooled: PooledWorker = {
    worker: new Worker(entry, { type: "module" }),
    handlers: undefined,
    stopped: undefined,
    crashed: false,
  };
  const crash = (why: string) => {
    pooled.crashed = true;
    pooled.handlers?.onCrash(why);
  };
  pooled.worker.onmessage = (event: MessageEvent) => {
    const decoded = decode(event.data);
    if (decoded._tag === "Left") {
      return crash(`it sent a malformed message: ${decoded.left.message}`);
    }
    if (decoded.right._tag !== "Stopped") return pooled.handlers?.onMessage(decoded.right);
    if (pooled.stopped) Deferred.unsafeDone(pooled.stopped, Exit.void);
  };
  pooled.worker.onerror = (event) => {
    event.preventDefault();
    crash(`its Worker crashed: ${event.message}`);
  };
  return pooled;
};

/** Options of {@link makeRankWorkerPool}. */
export interface RankWorkerPoolOptions {
  /** The Worker module a rank runs (a rank program set's `workerEntry`). */
  readonly entry: URL;
  /** How long a stopping rank may take before its Worker is terminated. */
  readonly stopDeadline?: Duration.DurationInput;
}

/** A pool whose Workers are terminated when the scope closes. */
export const makeRankWorkerPool = (
  { entry, stopDeadline = RANK_STOP_DEADLINE }: RankWorkerPoolOptions,
): Effect.Effect<RankWorkerPool, never, Scope.Scope> =>
  Effect.gen(function* () {
    const idle: PooledWorker[] = [];
    let closed = false;
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        closed = true;
        for (const pooled of idle.splice(0)) pooled.worker.terminate();
      })
    );

    const session = (handlers: RankWorkerHandlers) =>
      Effect.gen(function* () {
        const pooled = idle.pop() ?? startWorker(entry);
        const stopped = Deferred.unsafeMake<void>(FiberId.none);
        pooled.handlers = handlers;
        pooled.stopped = stopped;
        let stopRequested = false;
        let handedBack = false;
        // Once handed back the Worker may serve another session: late messages of this one
        // (a collective result for a killed rank) must not reach it.
        const post = (message: ToRank) => {
          if (!handedBack) pooled.worker.postMessage(encode(message));
        };
        const end = Effect.suspend(() => {
          if (!stopRequested) {
            stopRequested = true;
            post({ _tag: "Stop" });
          }
          // Interruptible, or the deadline could not cut it short where `end` runs as a
          // scope's finalizer (uninterruptible): a rank that never stops would hang the close.
          return Effect.interruptible(Deferred.await(stopped)).pipe(
            Effect.timeout(stopDeadline),
            Effect.option,
            Effect.map((outcome) => {
              if (handedBack) return;
              handedBack = true;
              Deferred.unsafeDone(stopped, Exit.void); // a later `end` returns at once
              pooled.handlers = undefined;
              pooled.stopped = undefined;
              if (Option.isSome(outcome) && !pooled.crashed && !closed) idle.push(pooled);
              else pooled.worker.terminate();
            }),
          );
        });
        yield* Effect.addFinalizer(() => end);
        return { post, end } satisfies RankWorkerSession;
      });

    return { session };
  });
