/**
 * The Megatron MLP block Y = act(X·A)·B: A [dim, hidden] column-split and B [hidden, dim]
 * row-split over hidden, so the activation stays local and the block costs exactly one
 * all-reduce and no all-gather. On the rank it is the two layers/blocks linears with the
 * activation between them.
 */
import { Effect } from "effect";
import { allReduceBuffer } from "../collectives/device.ts";
import { type HostTensor, partRange, sliceRange } from "../collectives/tensor.ts";
import type { ParallelMlpSpec } from "../actors/protocol.ts";
import { createStorageBuffer, Readback, writeBuffer } from "../gpu/buffers.ts";
import type { Gpu } from "../gpu/device.ts";
import { encodeDispatches } from "../gpu/dispatch.ts";
import { geluInPlace, siluInPlace } from "../kernels/elementwise.ts";
import { ColumnParallelLinear, RowParallelLinear } from "./blocks/linear.ts";
import { DeviceWeights, matrixShardOf } from "./blocks/weights.ts";
import {
  expectRows,
  expectShape,
  type ParallelLayerKind,
  PerBatch,
  planSplit,
  type RankLayer,
  type StepContext,
} from "./layer.ts";

/** A decoded {@link ParallelMlpSpec}. */
export type MlpSpec = typeof ParallelMlpSpec.Type;

const activations = { gelu: geluInPlace, silu: siluInPlace };

/** The Megatron MLP block as a parallel layer kind: one all-reduce per forward. */
export const ParallelMlp: ParallelLayerKind<MlpSpec> = {
  plan: (spec, tp) => planSplit(spec.name, "hidden", spec.hidden, tp),

  /** Rank r owns hidden units partRange(hidden, r, tp): columns of A and the same rows of B. */
  shard: (spec, [a, b], rank, tp) => {
    const { start, size } = partRange(spec.hidden, rank, tp);
    return [sliceRange(a, 1, start, size), sliceRange(b, 0, start, size)];
  },

  load: (gpu, spec, rank, tp, [a, b]) =>
    Effect.gen(function* () {
      const { size: local } = partRange(spec.hidden, rank, tp);
      yield* expectShape(`${spec.name} A shard`, a, [spec.dim, local]);
      yield* expectShape(`${spec.name} B shard`, b, [local, spec.dim]);
      const weights = new DeviceWeights(gpu, "f32");
      const up = yield* ColumnParallelLinear.upload(
        weights,
        `${spec.name}.A`,
        matrixShardOf(a.data, spec.dim),
      );
      const down = yield* RowParallelLinear.upload(
        weights,
        `${spec.name}.B`,
        matrixShardOf(b.data, local),
      );
      const batches = new PerBatch((rows) => mlpBatch(gpu, spec, rows, local, up, down));
      return {
        weightBytes: weights.bytes,
        forward: (ctx: StepContext, input: HostTensor) =>
          Effect.gen(function* () {
            const rows = yield* expectRows(spec.name, input, spec.dim);
            const batch = batches.get(rows);
            writeBuffer(gpu, batch.x, input.data);
            const encoder = gpu.device.createCommandEncoder();
            encodeDispatches(encoder, batch.dispatches);
            return yield* allReduceBuffer(gpu, ctx.comm, {
              encoder,
              source: batch.partial,
              shape: [rows, spec.dim],
              readback: batch.readback,
            });
          }),
        destroy: () => {
          batches.destroy();
          weights.release();
        },
      } satisfies RankLayer;
    }),
};

/** Buffers and the three dispatches (matmul, activation, matmul) for one batch size. */
const mlpBatch = (
  gpu: Gpu,
  spec: MlpSpec,
  rows: number,
  local: number,
  up: ColumnParallelLinear,
  down: RowParallelLinear,
) => {
  const x = createStorageBuffer(gpu, `${spec.name}.x`, rows * spec.dim * 4);
  const h = createStorageBuffer(gpu, `${spec.name}.h`, rows * local * 4);
  const partial = createStorageBuffer(gpu, `${spec.name}.partial`, rows * spec.dim * 4);
  const readback = new Readback(gpu, rows * spec.dim * 4, `${spec.name}.readback`);
  const dispatches = [
    up.dispatch({ input: x, output: h, rows }),
    activations[spec.activation](gpu, { target: h, length: rows * local }),
    down.dispatch({ input: h, output: partial, rows }),
  ];
  return {
    x,
    partial,
    readback,
    dispatches,
    destroy: () => {
      for (const buffer of [x, h, partial]) buffer.destroy();
      readback.destroy();
    },
  };
};
