/**
 * The supervisor's side of a remote rank, whatever carries its messages: matches replies to
 * calls, answers collective contributions from the hub group, and turns the rank's death (a
 * crashed Worker, a closed socket, silence) into `RankDied` for its pending call and for every
 * collective waiting on it.
 */
import { Deferred, Effect, Exit, FiberId } from "effect";
import type { CollectiveFailure } from "../collectives/communicator.ts";
import { RankDied } from "../collectives/errors.ts";
import type { InProcessGroup } from "../collectives/inprocess.ts";
import { GpuOperationError, NoAdapterError } from "../gpu/errors.ts";
import type { RankEvent } from "../observe/rank_events.ts";
import type { RankCommand, RankReply } from "./protocol.ts";
import type { FromRank, ToRank } from "./remote_protocol.ts";
import { failedReply, type RankHandle, type SpawnError } from "./transport.ts";

export interface RankLink {
  readonly handle: RankHandle;
  /** Handles one decoded message from the rank. */
  receive(message: FromRank): void;
  /** The rank is gone: its pending call and every collective waiting on it fail. */
  died(message: string): void;
  /** Completes when the rank has its device (or fails with why it could not start). */
  readonly ready: Effect.Effect<void, SpawnError>;
  /** `performance.now()` when the rank was last heard from. */
  readonly lastHeard: () => number;
  readonly isDead: () => boolean;
}

export const linkRank = (
  rank: number,
  sendMessage: (message: ToRank) => void,
  hub: InProcessGroup,
  onDeath: (error: RankDied) => void = () => {},
  onEvent: (event: RankEvent) => void = () => {},
): RankLink => {
  const ready = Deferred.unsafeMake<void, SpawnError>(FiberId.none);
  const pending = new Map<number, Deferred.Deferred<RankReply, RankDied>>();
  let deathError: RankDied | undefined;
  let nextId = 0;
  let heard = performance.now();

  const died = (message: string) => {
    if (deathError) return;
    const error = new RankDied({ rank, message });
    deathError = error;
    for (const waiter of pending.values()) Deferred.unsafeDone(waiter, Exit.fail(error));
    Deferred.unsafeDone(ready, Exit.fail(new GpuOperationError({ operation: "rank", message })));
    hub.rankDied(rank, message);
    onDeath(error);
  };

  const answer = (c: Extract<FromRank, { _tag: "Contribution" }>) =>
    Effect.runFork(
      hub.exchange(c).pipe(
        Effect.match({
          onSuccess: (tensor) =>
            sendMessage({ _tag: "CollectiveDone", step: c.step, seq: c.seq, tensor }),
          onFailure: (failure: CollectiveFailure) =>
            sendMessage({
              _tag: "CollectiveFailed",
              step: c.step,
              seq: c.seq,
              reason: failure._tag,
              ranks: failure._tag === "RankDied" ? [failure.rank] : [...failure.ranks],
              message: failure.message,
            }),
        }),
      ),
    );

  const receive = (message: FromRank) => {
    heard = performance.now();
    switch (message._tag) {
      case "Ready":
        return Deferred.unsafeDone(ready, Exit.void);
      case "StartFailed":
        return Deferred.unsafeDone(
          ready,
          Exit.fail(
            message.reason === "NoAdapterError"
              ? new NoAdapterError({ message: message.message })
              : new GpuOperationError({ operation: "rank start", message: message.message }),
          ),
        );
      case "Reply": {
        const waiter = pending.get(message.id);
        pending.delete(message.id);
        if (waiter) Deferred.unsafeDone(waiter, Exit.succeed(message.reply));
        return;
      }
      case "Heartbeat":
      case "Stopped":
        return;
      case "Contribution":
        // The hub answers every contribution, with a result or a typed failure.
        answer(message);
        return;
      case "LoadProgress":
      case "RankSpans":
        return onEvent(message);
    }
  };

  const send = (command: RankCommand) =>
    Effect.sync(() => {
      const id = nextId++;
      const reply = Deferred.unsafeMake<RankReply, RankDied>(FiberId.none);
      pending.set(id, reply);
      if (deathError) Deferred.unsafeDone(reply, Exit.fail(deathError));
      else sendMessage({ _tag: "Command", id, command });
      return Deferred.await(reply).pipe(
        Effect.ensuring(Effect.sync(() => pending.delete(id))),
        Effect.flatMap(failedReply(rank)),
      );
    });

  return {
    handle: { rank, send },
    receive,
    died,
    ready: Deferred.await(ready),
    lastHeard: () => heard,
    isDead: () => deathError !== undefined,
  };
};
