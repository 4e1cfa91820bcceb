/**
 * Vocab-parallel embedding gather: each rank holds the columns vocabStart..vocabStart+vocabCount-1
 * of the [dim, vocab] table in the matmul's blocked layout and weight type (kernels/matmul.ts,
 * kernels/quantized.ts), the same matrix a tied LM head multiplies by, and writes zero rows for
 * ids it does not own, so summing the ranks' outputs (an all-reduce) yields the full embedding.
 * A token's row is one column of the table: dequantized here exactly as the matmul reads it.
 */
import type { Gpu } from "../gpu/device.ts";
import { type Dispatch, prepareDispatch } from "../gpu/dispatch.ts";
import { f32Bits, grid1d, LINEAR_WORKGROUP_WGSL, u32Param } from "./grid.ts";
import type { WeightType } from "./matmul.ts";
import { groupWords, SCALE_WORDS } from "./quantized.ts";

const WORKGROUP = 256;

/** Element (kk, col) of a blocked [k = dim, n] table of `type`, as f32 (`table` holds u32 words). */
const elementWgsl = (type: WeightType): string => {
  switch (type) {
    case "f32":
      return "return bitcast<f32>(table[(blk * params.dim + kk) * 128u + c]);";
    case "f16": {
      return `let at = (blk * params.dim + kk) * 128u + c;
  let pair = unpack2x16float(table[at / 2u]);
  return select(pair.x, pair.y, (at & 1u) == 1u);`;
    }
    case "q8_0":
    case "q4_0": {
      // Lane u % 8 of vec4 u = c / 4 holds column c (kernels/quantized.ts's layout).
      const quant = type === "q8_0"
        ? `let word = table[base + ${SCALE_WORDS}u + j * 32u + lane * 4u + v];
  let q = f32((i32(word << (24u - (c & 3u) * 8u))) >> 24u);`
        : `let word = table[base + ${SCALE_WORDS}u + (j >> 1u) * 32u + lane * 4u + (j & 1u) * 2u + (v >> 1u)];
  let q = f32((word >> ((v & 1u) * 16u + (c & 3u) * 4u)) & 15u) - 8.0;`;
      return `let groups = params.dim / 32u;
  let base = (blk * groups + kk / 32u) * ${groupWords(type)}u;
  let j = kk % 32u;
  let u = c >> 2u;
  let lane = u & 7u;
  let v = u >> 3u;
  ${quant}
  let half = ((v >> 1u) * 8u + lane) * 4u + (v & 1u) * 2u + ((c & 3u) >> 1u);
  let scales = unpack2x16float(table[base + half]);
  return q * select(scales.x, scales.y, (c & 1u) == 1u);`;
    }
  }
};

/** One invocation per output element; `id - vocabStart` wraps for ids below the shard. */
export const embeddingWgsl = (type: WeightType): string => /* wgsl */ `
struct Params { count: u32, dim: u32, vocabStart: u32, vocabCount: u32, scaleBits: u32 }
@group(0) @binding(0) var<storage, read> table: array<u32>;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

fn element(kk: u32, col: u32) -> f32 {
  let blk = col / 128u;
  let c = col % 128u;
  ${elementWgsl(type)}
}

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
    value = element(i % params.dim, local) * bitcast<f32>(params.scaleBits);
  }
  out[i] = value;
}
`;

/**
 * out[rows×dim] = column (ids[r] - vocabStart) of the table·scale for owned ids, else zeros;
 * ids is a u32 buffer.
 */
export const embedding = (
  gpu: Gpu,
  { table, type, ids, out, rows, dim, vocabStart = 0, vocabCount, scale = 1, label }: {
    /** [dim, vocabCount] in the blocked layout of `type`: this rank's shard. */
    readonly table: GPUBuffer;
    readonly type: WeightType;
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
    code: embeddingWgsl(type),
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
