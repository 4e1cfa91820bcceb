/**
 * A rank's view of its group: NCCL's collective vocabulary over host tensors. Every rank calls
 * the same collectives in the same order within a step; the n-th call of step s on every rank
 * forms one collective.
 */
import { Effect } from "effect";
import type { CollectiveError, RankDied } from "./errors.ts";
import { Contribution, fromPayload, type TensorPayload, toPayload } from "./protocol.ts";
import { type HostTensor, tensor } from "./tensor.ts";

/** Carries contributions between ranks; one per transport (in-process, Workers, TCP). */
export interface CollectiveGroup {
  /** Number of ranks in the group. */
  readonly worldSize: number;
  /** Hands in one rank's contribution; succeeds with that rank's result once all have arrived. */
  exchange(contribution: Contribution): Effect.Effect<TensorPayload, CollectiveError | RankDied>;
}

/** Why a collective failed: a mismatch, timeout or abort, or a dead rank. */
export type CollectiveFailure = CollectiveError | RankDied;

/** One rank's collectives within one step (see {@link stepCommunicator}). */
export interface Communicator {
  /** This rank's index. */
  readonly rank: number;
  /** Number of ranks. */
  readonly worldSize: number;
  /** Element-wise sum over ranks; everyone gets the total. */
  allReduce(t: HostTensor): Effect.Effect<HostTensor, CollectiveFailure>;
  /** Concatenation along `axis`, in rank order; parts may differ in size along `axis` only. */
  allGather(t: HostTensor, axis: number): Effect.Effect<HostTensor, CollectiveFailure>;
  /** Sum over ranks, then rank r keeps part r along `axis` (uneven parts per `splitSizes`). */
  reduceScatter(t: HostTensor, axis?: number): Effect.Effect<HostTensor, CollectiveFailure>;
  /** Everyone gets `root`'s tensor (all ranks pass a tensor of the same shape). */
  broadcast(t: HostTensor, root: number): Effect.Effect<HostTensor, CollectiveFailure>;
  /** Returns once every rank has reached it. */
  barrier(): Effect.Effect<void, CollectiveFailure>;
}

/**
 * The communicator of `rank` for one step; collectives are numbered in call order.
 * `collectiveMillis` is the time spent inside them so far (waiting included), for metrics.
 */
export const stepCommunicator = (
  group: CollectiveGroup,
  rank: number,
  step: number,
): Communicator & { readonly collectiveMillis: number } => {
  let seq = 0;
  let collectiveMillis = 0;
  const call = (op: Contribution["op"], t: HostTensor, arg = 0) =>
    Effect.suspend(() => {
      const started = performance.now();
      return group.exchange(
        new Contribution({ step, seq: seq++, rank, op, arg, tensor: toPayload(t) }),
      ).pipe(Effect.ensuring(Effect.sync(() => collectiveMillis += performance.now() - started)));
    }).pipe(Effect.map(fromPayload));
  return {
    get collectiveMillis() {
      return collectiveMillis;
    },
    rank,
    worldSize: group.worldSize,
    allReduce: (t) => call("allReduce", t),
    allGather: (t, axis) => call("allGather", t, axis),
    reduceScatter: (t, axis = 0) => call("reduceScatter", t, axis),
    broadcast: (t, root) => call("broadcast", t, root),
    barrier: () => Effect.asVoid(call("barrier", tensor([0], new Float32Array(0)))),
  };
};
