/** Maps a layer spec on the wire to the code that shards and runs it. */
import type { LayerSpec } from "../actors/protocol.ts";
import type { ParallelLayerKind } from "./layer.ts";
import { ColumnParallelLinear, RowParallelLinear } from "./linear.ts";
import { ParallelMlp } from "./mlp.ts";

export const layerKind = (spec: LayerSpec): ParallelLayerKind<LayerSpec> => {
  switch (spec._tag) {
    case "ColumnParallelLinear":
      return ColumnParallelLinear as ParallelLayerKind<LayerSpec>;
    case "RowParallelLinear":
      return RowParallelLinear as ParallelLayerKind<LayerSpec>;
    case "ParallelMlp":
      return ParallelMlp as ParallelLayerKind<LayerSpec>;
  }
};
