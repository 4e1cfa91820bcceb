/**
 * Rotary position embeddings, applied in place to q or k laid out [rows, nHeads, headDim] (the
 * model rotates its fused qkv rows with `ropeKvCache`, kernels/rope_kv_cache.ts).
 * Pair i (0 ≤ i < headDim/2) rotates by angle position·theta^(-2i/headDim). The pair is
 * (2i, 2i+1) in the "interleaved" layout (llama2.c, Meta checkpoints) and (i, i + headDim/2) in
 * the "half" layout (Hugging Face rotate_half).
 */
import type { Gpu } from "../gpu/device.ts";
import { type Dispatch, prepareDispatch } from "../gpu/dispatch.ts";
import { f32Bits, grid1d, LINEAR_WORKGROUP_WGSL, u32Param } from "./grid.ts";
import { ROW_POSITION_WGSL } from "./position.ts";

export type RopeLayout = "interleaved" | "half";

const WORKGROUP = 256;

/**
 * The rotation of pair `i` of a head at `position`, as (cos, sin), and where the pair sits in
 * the head. Shared by `rope` and the fused rope-into-KV-cache kernel (kernels/rope_kv_cache.ts),
 * so both rotate to the same bits.
 */
export const ropeRotationWgsl = (layout: RopeLayout): string => /* wgsl */ `
fn ropePair(i: u32, headDim: u32) -> vec2<u32> {
  ${
  layout === "interleaved"
    ? "return vec2<u32>(2u * i, 2u * i + 1u);"
    : "return vec2<u32>(i, i + headDim / 2u);"
}
}
fn ropeCosSin(position: u32, i: u32, headDim: u32, log2Theta: f32) -> vec2<f32> {
  let freq = exp2(-f32(2u * i) / f32(headDim) * log2Theta);
  // Reduce to [-π, π] in revolutions first: GPU sin/cos are only accurate near zero.
  let revolutions = f32(position) * (freq * 0.15915494309189535);
  let angle = (revolutions - round(revolutions)) * 6.283185307179586;
  return vec2<f32>(cos(angle), sin(angle));
}
`;

/** One invocation per rotated pair; row r rotates by its own position (see position.ts). */
export const ropeWgsl = (layout: RopeLayout): string => /* wgsl */ `
struct Params { pairs: u32, nHeads: u32, headDim: u32, log2ThetaBits: u32 }
@group(0) @binding(0) var<storage, read_write> qk: array<f32>;
@group(0) @binding(1) var<storage, read> positions: array<u32>;
@group(0) @binding(2) var<uniform> params: Params;
${ROW_POSITION_WGSL}
${ropeRotationWgsl(layout)}
@compute @workgroup_size(${WORKGROUP})
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let p = ${LINEAR_WORKGROUP_WGSL} * ${WORKGROUP}u + lid;
  if (p >= params.pairs) { return; }
  let half = params.headDim / 2u;
  let i = p % half;
  let headRow = p / half;
  let row = headRow / params.nHeads;
  let base = headRow * params.headDim;
  let pair = ropePair(i, params.headDim);
  let i0 = base + pair.x;
  let i1 = base + pair.y;
  let cs = ropeCosSin(rowPosition(row), i, params.headDim, bitcast<f32>(params.log2ThetaBits));
  let c = cs.x;
  let s = cs.y;
  let x0 = qk[i0];
  let x1 = qk[i1];
  qk[i0] = x0 * c - x1 * s;
  qk[i1] = x0 * s + x1 * c;
}
`;

/** Rotates `qk` [rows, nHeads, headDim] in place, each row by its position. */
export const rope = (
  gpu: Gpu,
  { qk, positions, rows, nHeads, headDim, theta = 10000, layout, label }: {
    readonly qk: GPUBuffer;
    /** The rows' (sequence, position) pairs (see position.ts). */
    readonly positions: GPUBuffer;
    readonly rows: number;
    readonly nHeads: number;
    readonly headDim: number;
    readonly theta?: number;
    readonly layout: RopeLayout;
    readonly label?: string;
  },
): Dispatch => {
  if (headDim % 2 !== 0) throw new RangeError(`rope: headDim ${headDim} must be even`);
  const pairs = u32Param("pairs", (rows * nHeads * headDim) / 2);
  return prepareDispatch(gpu, {
    label: label ?? `rope.${layout}`,
    code: ropeWgsl(layout),
    buffers: [qk, positions],
    params: [
      pairs,
      u32Param("nHeads", nHeads),
      u32Param("headDim", headDim),
      f32Bits(Math.log2(theta)),
    ],
    workgroups: grid1d(gpu, Math.ceil(pairs / WORKGROUP)),
  });
};
