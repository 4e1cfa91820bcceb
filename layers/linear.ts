/**
 * Megatron's two linear layers as stand-alone layers driven over the wire (`LoadLayer`,
 * `Forward`): the sharding rule runs in the supervisor, and the rank side is the layers/blocks
 * block of the same name (the one a decoder is built from) with host input and output around it.
 * Weights are [in, out] (Y = X·W).
 */
import { Effect } from "effect";
import { allGatherBuffer, allReduceBuffer } from "../collectives/device.ts";
import { type HostTensor, partRange, sliceRange, tensor } from "../collectives/tensor.ts";
import { createStorageBuffer, Readback, writeBuffer } from "../gpu/buffers.ts";
import type { Gpu } from "../gpu/device.ts";
import { encodeDispatches } from "../gpu/dispatch.ts";
import type { Dispatch } from "../gpu/dispatch.ts";
import {
  ColumnParallelLinear as ColumnParallelBlock,
  type LinearArgs,
  RowParallelLinear as RowParallelBlock,
} from "./blocks/linear.ts";
import { DeviceWeights, matrixShardOf } from "./blocks/weights.ts";
import type { ColumnParallelSpec, RowParallelSpec } from "../actors/protocol.ts";
import {
  expectRows,
  expectShape,
  type ParallelLayerKind,
  PerBatch,
  planSplit,
  type RankLayer,
  type StepContext,
} from "./layer.ts";

/** A decoded {@link ColumnParallelSpec}. */
export type ColumnSpec = typeof ColumnParallelSpec.Type;
/** A decoded {@link RowParallelSpec}. */
export type RowSpec = typeof RowParallelSpec.Type;

/**
 * Device buffers for one batch size of a block's matmul y[M, n] = x[M, k]·W, and its dispatch
 * over them.
 */
export const matmulBatch = (
  gpu: Gpu,
  label: string,
  k: number,
  n: number,
  dispatch: (args: LinearArgs) => Dispatch,
) =>
(rows: number) => {
  const x = createStorageBuffer(gpu, `${label}.x`, rows * k * 4);
  const y = createStorageBuffer(gpu, `${label}.y`, rows * n * 4);
  const readback = new Readback(gpu, rows * n * 4, `${label}.readback`);
  return {
    x,
    y,
    readback,
    dispatch: dispatch({ input: x, output: y, rows }),
    destroy: () => {
      x.destroy();
      y.destroy();
      readback.destroy();
    },
  };
};

/** Uploads `input` and encodes the matmul; the caller adds the readback or collective. */
const encodeMatmul = (
  gpu: Gpu,
  batch: ReturnType<ReturnType<typeof matmulBatch>>,
  input: HostTensor,
) => {
  writeBuffer(gpu, batch.x, input.data);
  const encoder = gpu.device.createCommandEncoder();
  encodeDispatches(encoder, [batch.dispatch]);
  return encoder;
};

/**
 * Column-parallel: W [in, out] is split along out, so rank r holds columns
 * `partRange(out, r, tp)` and computes that slice of Y; `gatherOutput` all-gathers the slices.
 */
export const ColumnParallelLinear: ParallelLayerKind<ColumnSpec> = {
  plan: (spec, tp) => planSplit(spec.name, "out_features", spec.outFeatures, tp),

  shard: (spec, [weight], rank, tp) => {
    const { start, size } = partRange(spec.outFeatures, rank, tp);
    return [sliceRange(weight, 1, start, size)];
  },

  load: (gpu, spec, rank, tp, [shard]) =>
    Effect.gen(function* () {
      const { size: outLocal } = partRange(spec.outFeatures, rank, tp);
      yield* expectShape(`${spec.name} weight shard`, shard, [spec.inFeatures, outLocal]);
      const weights = new DeviceWeights(gpu, "f32");
      const block = yield* ColumnParallelBlock.upload(
        weights,
        `${spec.name}.weight`,
        matrixShardOf(shard.data, spec.inFeatures),
      );
      const batches = new PerBatch(
        matmulBatch(gpu, spec.name, spec.inFeatures, outLocal, (args) => block.dispatch(args)),
      );
      return {
        weightBytes: weights.bytes,
        forward: (ctx: StepContext, input: HostTensor) =>
          Effect.gen(function* () {
            const rows = yield* expectRows(spec.name, input, spec.inFeatures);
            const batch = batches.get(rows);
            const encoder = encodeMatmul(gpu, batch, input);
            const local = {
              encoder,
              source: batch.y,
              shape: [rows, outLocal],
              readback: batch.readback,
            };
            if (spec.gatherOutput) {
              return yield* allGatherBuffer(gpu, ctx.comm, { ...local, axis: 1 });
            }
            const out = new Float32Array(rows * outLocal);
            yield* batch.readback.read(batch.y, new Uint8Array(out.buffer), { encoder });
            return tensor([rows, outLocal], out);
          }),
        destroy: () => {
          batches.destroy();
          weights.release();
        },
      } satisfies RankLayer;
    }),
};

/**
 * Row-parallel: W [in, out] is split along in, so rank r holds rows `partRange(in, r, tp)`,
 * multiplies its slice of X, and the partial sums are all-reduced into Y.
 */
export const RowParallelLinear: ParallelLayerKind<RowSpec> = {
  plan: (spec, tp) => planSplit(spec.name, "in_features", spec.inFeatures, tp),

  shard: (spec, [weight], rank, tp) => {
    const { start, size } = partRange(spec.inFeatures, rank, tp);
    return [sliceRange(weight, 0, start, size)];
  },

  load: (gpu, spec, rank, tp, [shard]) =>
    Effect.gen(function* () {
      const { start, size: inLocal } = partRange(spec.inFeatures, rank, tp);
      yield* expectShape(`${spec.name} weight shard`, shard, [inLocal, spec.outFeatures]);
      const weights = new DeviceWeights(gpu, "f32");
      const block = yield* RowParallelBlock.upload(
        weights,
        `${spec.name}.weight`,
        matrixShardOf(shard.data, inLocal),
      );
      const batches = new PerBatch(
        matmulBatch(gpu, spec.name, inLocal, spec.outFeatures, (args) => block.dispatch(args)),
      );
      return {
        weightBytes: weights.bytes,
        forward: (ctx: StepContext, input: HostTensor) =>
          Effect.gen(function* () {
            // A non-parallel input is scattered locally: each rank keeps its own columns.
            if (!spec.inputIsParallel) yield* expectRows(spec.name, input, spec.inFeatures);
            const local = spec.inputIsParallel ? input : sliceRange(input, 1, start, inLocal);
            const rows = yield* expectRows(`${spec.name} (rank ${rank} slice)`, local, inLocal);
            const batch = batches.get(rows);
            const encoder = encodeMatmul(gpu, batch, local);
            return yield* allReduceBuffer(gpu, ctx.comm, {
              encoder,
              source: batch.y,
              shape: [rows, spec.outFeatures],
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
