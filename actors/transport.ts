/**
 * How the supervisor reaches its ranks. Every transport carries the same protocol
 * (actors/protocol.ts, collectives/protocol.ts) and must give the same results.
 */
import { Context, Effect, type Scope } from "effect";
import type { CollectiveFailure } from "../collectives/communicator.ts";
import type { Gpu } from "../gpu/device.ts";
import type { GpuOperationError, NoAdapterError } from "../gpu/errors.ts";
import { type RankPlacement, requireOneProcess } from "../gpu/adapters.ts";
import { RankFailed, type StepFailure, TransportError } from "./errors.ts";
import type { RankCommand, RankReply } from "./protocol.ts";

/**
 * Checks a transport's placements before it spawns `tp` ranks: one per rank, and (for transports
 * whose ranks share this process) none that needs a process of its own.
 */
export const checkPlacements = (
  tp: number,
  placements: readonly RankPlacement[] | undefined,
  transport: { readonly name: string; readonly oneProcess: boolean },
): Effect.Effect<void, TransportError> => {
  if (placements === undefined) return Effect.void;
  if (placements.length !== tp) {
    return Effect.fail(
      new TransportError({ message: `tp is ${tp} but ${placements.length} placements were given` }),
    );
  }
  if (!transport.oneProcess) return Effect.void;
  const fits = requireOneProcess(placements, transport.name);
  return fits._tag === "Left"
    ? Effect.fail(new TransportError({ message: fits.left.message }))
    : Effect.void;
};

/** One rank as the supervisor sees it. */
export interface RankHandle {
  /** The rank's index, 0 to tp - 1. */
  readonly rank: number;
  /**
   * Sends one command, behind every command sent before it, and succeeds with the wait for its
   * reply (a `Failed` reply or a dead rank fails that wait). A rank runs its commands one at a
   * time in the order sent, so several can be in flight: the supervisor pipelines a token's
   * layers this way.
   */
  send(command: RankCommand): Effect.Effect<Effect.Effect<RankReply, StepFailure>>;
}

/** A rank's reply as its handle's wait ends: a `Failed` reply becomes a `RankFailed` error. */
export const failedReply =
  (rank: number) => (reply: RankReply): Effect.Effect<RankReply, RankFailed> =>
    reply._tag === "Failed"
      ? Effect.fail(new RankFailed({ ...reply, message: `rank ${rank}: ${reply.message}` }))
      : Effect.succeed(reply);

/** A running group of ranks; closing the scope that spawned it shuts every rank down. */
export interface RankGroup {
  /** Every rank, in rank order. */
  readonly ranks: readonly RankHandle[];
  /** Fails every pending and future collective of `step` (a rank of that step failed). */
  abortStep(step: number, failure: CollectiveFailure): void;
  /** The rank's device when it lives in this isolate (diagnostics and tests), else undefined. */
  localGpu(rank: number): Gpu | undefined;
  /**
   * Stops `rank` abruptly, as a crash would (Worker cut off, process killed, connection
   * dropped), for fault drills and tests; the group then reports it dead like any other death.
   */
  kill(rank: number): Effect.Effect<void>;
  /** Calls and bytes per collective so far (for examples and benchmarks). */
  collectiveStats(): ReadonlyArray<{ op: string; calls: number; bytes: number }>;
}

/** Why ranks could not be started: no adapter, a failed device, or an unreachable rank. */
export type SpawnError = NoAdapterError | GpuOperationError | TransportError;

/** What a transport provides: a name and a way to spawn `tp` ranks. */
export interface TransportShape {
  /** "inprocess", "workers" or "tcp". */
  readonly name: string;
  /** Starts `tp` ranks; they live until the scope closes. */
  spawn(tp: number): Effect.Effect<RankGroup, SpawnError, Scope.Scope>;
}

/** The service key of {@link Transport}. */
export type Transport = Context.TagClassShape<"tessera/Transport", TransportShape>;

/**
 * How the supervisor reaches its ranks (a `Context.Tag`); provide one of `InProcessTransport`,
 * `WorkersTransport` or `TcpTransport`.
 */
export const Transport: Context.TagClass<Transport, "tessera/Transport", TransportShape> = Context
  .Tag("tessera/Transport")<Transport, TransportShape>();
