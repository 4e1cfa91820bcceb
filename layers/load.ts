/** Loading a stand-alone parallel layer: check its plan, cut each rank's shards by its rule. */
import { Effect } from "effect";
import type { HostTensor } from "../collectives/tensor.ts";
import type { PlanError, StepFailure } from "../actors/errors.ts";
import type { LayerSpec } from "../actors/protocol.ts";
import type { Supervisor } from "../actors/supervisor.ts";
import { layerKind } from "./kinds.ts";

/**
 * Checks the plan for the group's tp, shards the full weights with the layer's rule and loads
 * each rank's shards. Returns, per rank, the shapes of the shards it holds and their bytes.
 */
export const loadParallelLayer = (
  supervisor: Supervisor,
  spec: LayerSpec,
  weights: readonly HostTensor[],
): Effect.Effect<
  ReadonlyArray<{ rank: number; bytes: number; shardShapes: readonly (readonly number[])[] }>,
  PlanError | StepFailure
> => {
  const kind = layerKind(spec);
  const tp = supervisor.tp;
  return kind.plan(spec, tp).pipe(
    Effect.zipRight(
      supervisor.loadShards(
        spec,
        Array.from({ length: tp }, (_, rank) => kind.shard(spec, weights, rank, tp)),
      ),
    ),
  );
};
