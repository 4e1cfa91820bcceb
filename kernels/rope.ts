/**
 * Rotary position embeddings, applied in place to q or k laid out [rows, nHeads, headDim] (the
 * model rotates its fused qkv rows with `ropeKvCache`, kernels/rope_kv_cache.ts).
 * Pair i (0 ≤ i < headDim/2) rotates by angle position·inverse[i], read from a table of
 * inverse frequencies (theta^(-2i/headDim) by default; models/rope_scaling.ts computes the
 * scaled ones), and cos/sin are multiplied by an attention factor (yarn's; 1 otherwise). The pair
 * is (2i, 2i+1) in the "interleaved" layout (llama2.c, Meta checkpoints) and (i, i + headDim/2)
 * in the "half" layout (Hugging Face rotate_half).
 */
import { createStorageBuffer } from "../gpu/buffers.ts";
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
fn ropeCosSin(position: u32, i: u32, attentionFactor: f32) -> vec2<f32> {
  let freq = ropeInverse[i];
  // Reduce to [-π, π] in revolutions first: GPU sin/cos are only accurate near zero.
  let revolutions = f32(position) * (freq * 0.15915494309189535);
  let angle = (revolutions - round(revolutions)) * 6.283185307179586;
  return vec2<f32>(cos(angle), sin(angle)) * attentionFactor;
}
`;

/**
 * The table of inverse frequencies a rope kernel reads (f32, one per pair), made from `inverse`
 * (default: theta^(-2i/headDim)). A model makes it once at load; a kernel call without one gets
 * its own.
 */
export const ropeFrequencyBuffer = (
  gpu: Gpu,
  headDim: number,
  inverse: ArrayLike<number> = defaultInverseFrequencies(10000, headDim),
): GPUBuffer => {
  if (inverse.length !== headDim / 2) {
    throw new RangeError(`rope: ${inverse.length} frequencies for a head of ${headDim}`);
  }
  return createStorageBuffer(gpu, "rope.inverseFrequencies", Float32Array.from(inverse));
};

/** theta^(-2i/headDim) for i < headDim/2. */
export const defaultInverseFrequencies = (theta: number, headDim: number): Float64Array =>
  Float64Array.from({ length: headDim / 2 }, (_, i) => Math.pow(theta, (-2 * i) / headDim));

/** One invocation per rotated pair; row r rotates by its own position (see position.ts). */
export const ropeWgsl = (layout: RopeLayout): string => /* wgsl */ `
struct Params { pairs: u32, nHeads: u32, headDim: u32, attentionFactorBits: u32 }
@group(0) @binding(0) var<storage, read_write> qk: array<f32>;
@group(0) @binding(1) var<storage, read> positions: array<u32>;
@group(0) @binding(2) var<storage, read> ropeInverse: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;
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
  let cs = ropeCosSin(rowPosition(row), i, bitcast<f32>(params.attentionFactorBits));
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
  {
    qk,
    positions,
    rows,
    nHeads,
    headDim,
    theta = 10000,
    frequencies,
    attentionFactor = 1,
    layout,
    label,
  }: {
    readonly qk: GPUBuffer;
    /** The rows' (sequence, position) pairs (see position.ts). */
    readonly positions: GPUBuffer;
    readonly rows: number;
    readonly nHeads: number;
    readonly headDim: number;
    /** Base of the default frequencies, when no `frequencies` table is given. */
    readonly theta?: number;
    /** The inverse frequencies (`ropeFrequencyBuffer`); default: theta's. */
    readonly frequencies?: GPUBuffer;
    /** cos and sin are scaled by it (yarn's attention factor). */
    readonly attentionFactor?: number;
    readonly layout: RopeLayout;
    readonly label?: string;
  },
): Dispatch => {
  if (headDim % 2 !== 0) throw new RangeError(`rope: headDim ${headDim} must be even`);
  const pairs = u32Param("pairs", (rows * nHeads * headDim) / 2);
  return prepareDispatch(gpu, {
    label: label ?? `rope.${layout}`,
    code: ropeWgsl(layout),
    buffers: [
      qk,
      positions,
      frequencies ??
        ropeFrequencyBuffer(gpu, headDim, defaultInverseFrequencies(theta, headDim)),
    ],
    params: [
      pairs,
      u32Param("nHeads", nHeads),
      u32Param("headDim", headDim),
      f32Bits(attentionFactor),
    ],
    workgroups: grid1d(gpu, Math.ceil(pairs / WORKGROUP)),
  });
};
