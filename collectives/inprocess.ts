/**
 * The in-process collective group: all ranks are fibers of one isolate and meet at a
 * rendezvous keyed by (step, seq). The last rank to arrive combines and wakes the others.
 */
import { Deferred, Duration, Effect, Either, Exit, FiberId } from "effect";
import { bytesMoved, combine } from "./combine.ts";
import type { CollectiveFailure, CollectiveGroup } from "./communicator.ts";
import { CollectiveError, RankDied } from "./errors.ts";
import type { Contribution, TensorPayload } from "./protocol.ts";
import { f32FromBytes, type HostTensor, tensor, toBytes } from "./tensor.ts";
import { CollectiveStats } from "./stats.ts";

interface Rendezvous {
  readonly op: Contribution["op"];
  readonly arg: number;
  readonly arrived: (HostTensor | undefined)[];
  readonly waiters: Deferred.Deferred<TensorPayload, CollectiveFailure>[];
  readonly timer: ReturnType<typeof setTimeout>;
}

/** Options of {@link InProcessGroup}. */
export interface InProcessGroupOptions {
  /** How long a rank waits for the others before the collective fails. */
  readonly timeout?: Duration.DurationInput;
}

/** A collective group whose ranks are fibers of this isolate, meeting at a rendezvous per collective. */
export class InProcessGroup implements CollectiveGroup {
  /** Calls and bytes moved per collective operation. */
  readonly stats: CollectiveStats = new CollectiveStats();
  private readonly pending = new Map<string, Rendezvous>();
  private readonly abortedSteps = new Map<number, CollectiveFailure>();
  private dead: RankDied | undefined;
  private readonly timeout: Duration.Duration;

  /** A group of `worldSize` ranks; collectives fail after `options.timeout` (default 5 minutes). */
  constructor(readonly worldSize: number, options: InProcessGroupOptions = {}) {
    this.timeout = Duration.decode(options.timeout ?? "5 minutes");
  }

  /** Waits for every rank's contribution to the same collective, then returns this rank's result. */
  exchange(c: Contribution): Effect.Effect<TensorPayload, CollectiveFailure> {
    return Effect.suspend(() => {
      const failure = this.dead ?? this.abortedSteps.get(c.step);
      if (failure) return Effect.fail(failure);
      if (c.rank >= this.worldSize) {
        return Effect.fail(
          new CollectiveError({
            op: c.op,
            ranks: [c.rank],
            message: `rank ${c.rank} is outside a group of ${this.worldSize}`,
          }),
        );
      }
      const key = `${c.step}:${c.seq}`;
      let rv = this.pending.get(key);
      if (!rv) {
        const created: Rendezvous = {
          op: c.op,
          arg: c.arg,
          arrived: new Array(this.worldSize).fill(undefined),
          waiters: [],
          // One timer per collective (not per rank): cheap enough for every decode step.
          timer: setTimeout(
            () => this.finish(key, created, Either.left(this.timeoutError(c, created))),
            Duration.toMillis(this.timeout),
          ),
        };
        rv = created;
        this.pending.set(key, rv);
      }
      const waiter = Deferred.unsafeMake<TensorPayload, CollectiveFailure>(FiberId.none);
      if (rv.arrived[c.rank] !== undefined) {
        return Effect.fail(
          new CollectiveError({
            op: c.op,
            ranks: [c.rank],
            message: `rank ${c.rank} joined collective ${c.seq} of step ${c.step} twice`,
          }),
        );
      }
      rv.arrived[c.rank] = tensor(c.tensor.shape, f32FromBytes(c.tensor.data));
      rv.waiters[c.rank] = waiter;
      if (rv.op !== c.op || rv.arg !== c.arg) {
        this.finish(key, rv, Either.left(this.orderError(c, rv)));
      } else if (rv.arrived.every((t) => t !== undefined)) {
        this.finish(
          key,
          rv,
          combine({ op: c.op, arg: c.arg, tensors: rv.arrived as HostTensor[] }),
        );
      }
      return Deferred.await(waiter);
    });
  }

  /** Fails every collective of `step`, now and later (a rank of that step failed). */
  abortStep(step: number, failure: CollectiveFailure): void {
    this.abortedSteps.set(step, failure);
    for (const [key, rv] of this.pending) {
      if (key.startsWith(`${step}:`)) this.finish(key, rv, Either.left(failure));
    }
  }

  /** Marks `rank` dead: every pending and future collective fails with `RankDied`. */
  rankDied(rank: number, message: string): void {
    this.dead ??= new RankDied({ rank, message });
    for (const [key, rv] of this.pending) this.finish(key, rv, Either.left(this.dead));
  }

  /**
   * Ends a rendezvous: fails or completes every waiter.
   *
   * @ignore
   */
  private finish(
    key: string,
    rv: Rendezvous,
    result: Either.Either<readonly HostTensor[], CollectiveFailure>,
  ) {
    this.pending.delete(key);
    clearTimeout(rv.timer);
    Either.match(result, {
      onLeft: (error) => {
        for (const w of rv.waiters) if (w) Deferred.unsafeDone(w, Exit.fail(error));
      },
      onRight: (outputs) => {
        this.stats.record(rv.op, bytesMoved(rv.arrived as HostTensor[], outputs));
        rv.waiters.forEach((w, r) =>
          Deferred.unsafeDone(
            w,
            Exit.succeed({ dtype: "f32", shape: [...outputs[r].shape], data: toBytes(outputs[r]) }),
          )
        );
      },
    });
  }

  /**
   * The error for ranks that called different collectives at the same point.
   *
   * @ignore
   */
  private orderError(c: Contribution, rv: Rendezvous) {
    const ranks = rv.arrived.flatMap((t, r) => (t ? [r] : []));
    return new CollectiveError({
      op: c.op,
      ranks,
      message: `collective ${c.seq} of step ${c.step}: rank ${c.rank} called ${c.op}(${c.arg}) ` +
        `but other ranks called ${rv.op}(${rv.arg}); ranks ${ranks.join(", ")} disagree on order`,
    });
  }

  /**
   * The error for ranks that did not arrive in time.
   *
   * @ignore
   */
  private timeoutError(c: Contribution, rv: Rendezvous) {
    const missing = [...rv.arrived.keys()].filter((r) => rv.arrived[r] === undefined);
    return new CollectiveError({
      op: c.op,
      ranks: missing,
      message: `${c.op} #${c.seq} of step ${c.step} timed out after ` +
        `${Duration.format(this.timeout)} waiting for ranks ${missing.join(", ")}`,
    });
  }
}
