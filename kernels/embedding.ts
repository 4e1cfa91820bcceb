/**
 * Vocab-parallel embedding gather: each rank holds rows vocabStart..vocabStart+vocabCount-1 of
 * the table and writes zero rows for ids it does not own, so summing the ranks' outputs (an
 * all-reduce) yields the full embedding.
 */
import type { Gpu } from "../gpu/device.ts";
import { type Dispatch, prepareDispatch } from "../gpu/dispatch.ts";
import { f32Bits, grid1d, LINEAR_WORKGROUP_WGSL, u32Param } from "./grid.ts";

const WORKGROUP = 256;

/** One invocation per output element; `id - vocabStart` wraps for ids below the shard. */
export const EMBEDDING_WGSL = /* wgsl */ `
struct Params { count: u32, dim: u32, vocabStart: u32, vocabCount: u32, scaleBits: u32 }
@group(0) @binding(0) var<storage, read> table: array<f32>;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(${WORKGROUP})
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = ${LINEAR_WORKGROUP_WGSL} * ${WORKGROUP}u + lid;
  if (i >= params.count) { return; }
  let local = ids[i / params.dim] - params.vocabStart;
  var value = 0.0;
  if (local < params.vocabCount) {
    value = table[local * params.dim + i % params.dim] * bitcast<f32>(params.scaleBits);
  }
  out[i] = value;
}
`;

/**
 * out[rows×dim] = table[ids[r] - vocabStart]·scale for owned ids, else zeros; ids is a u32
 * buffer.
 */
export const embedding = (
  gpu: Gpu,
  { table, ids, out, rows, dim, vocabStart = 0, vocabCount, scale = 1, label }: {
    /** [vocabCount, dim]: this rank's shard. */
    readonly table: GPUBuffer;
    /** u32 token ids [rows], rewritten by the caller each step. */
    readonly ids: GPUBuffer;
    readonly out: GPUBuffer;
    readonly rows: number;
    readonly dim: number;
    readonly vocabStart?: number;
    readonly vocabCount: number;
    /** Multiplies every gathered value (Gemma scales its embedding by √dim); default 1. */
    readonly scale?: number;
    readonly label?: string;
  },
): Dispatch => {
  const count = u32Param("count", rows * dim);
  return prepareDispatch(gpu, {
    label: label ?? "embedding",
    code: EMBEDDING_WGSL,
    buffers: [table, ids, out],
    params: [
      count,
      u32Param("dim", dim),
      u32Param("vocabStart", vocabStart),
      u32Param("vocabCount", vocabCount),
      f32Bits(scale),
    ],
    workgroups: grid1d(gpu, Math.ceil(count / WORKGROUP)),
  });
};
