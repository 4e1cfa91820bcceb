/**
 * RoPE and the KV-cache write in one dispatch, on fused qkv rows [rows, (nHeads + 2·nKvHeads)
 * · headDim] (q heads, then k heads, then v heads). The q heads are rotated in place; the k
 * heads are rotated on their way into the cache and the v heads copied beside them, each row
 * into its sequence's slot at its position (cache layout in attention.ts). A row past maxSeq or
 * with no slot writes no K or V. It does what `rope` then `writeKvCache` do, to the same bits
 * (they share the rotation, kernels/rope.ts), one dispatch per layer fewer; the k heads in the
 * qkv rows are left unrotated, since attention reads K from the cache. With `bias` (Qwen2's
 * q/k/v projection biases, fused qkv order) every element is biased first: q in place, k and v
 * in the caches.
 */
import type { Gpu } from "../gpu/device.ts";
import { type Dispatch, prepareDispatch } from "../gpu/dispatch.ts";
import { f32Bits, grid1d, LINEAR_WORKGROUP_WGSL, u32Param } from "./grid.ts";
import { ROW_POSITION_WGSL } from "./position.ts";
import {
  defaultInverseFrequencies,
  ropeFrequencyBuffer,
  type RopeLayout,
  ropeRotationWgsl,
} from "./rope.ts";

const WORKGROUP = 256;

/** Element type of a KV cache: f16 (rounded to nearest on write, needs shader-f16) or f32. */
export type KvCacheElement = "f32" | "f16";

/** One invocation per rotated pair of a q or k head; a k pair also moves its v pair. */
export const ropeKvCacheWgsl = (
  layout: RopeLayout,
  withBias = false,
  cache: KvCacheElement = "f32",
): string => /* wgsl */ `
${cache === "f16" ? "enable f16;" : ""}
struct Params {
  pairs: u32, nHeads: u32, nKvHeads: u32, headDim: u32, attentionFactorBits: u32, maxSeq: u32,
  sequences: u32,
}
@group(0) @binding(0) var<storage, read_write> qkv: array<f32>;
@group(0) @binding(1) var<storage, read> positions: array<u32>;
@group(0) @binding(2) var<storage, read_write> kCache: array<${cache}>;
@group(0) @binding(3) var<storage, read_write> vCache: array<${cache}>;
@group(0) @binding(4) var<storage, read> ropeInverse: array<f32>;
${
  withBias
    ? `@group(0) @binding(5) var<storage, read> qkvBias: array<f32>;
@group(0) @binding(6) var<uniform> params: Params;
fn biasAt(column: u32) -> f32 { return qkvBias[column]; }`
    : `@group(0) @binding(5) var<uniform> params: Params;
fn biasAt(column: u32) -> f32 { return 0.0; }`
}
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
  let headDim = params.headDim;
  let i = p % (headDim / 2u);
  let headRow = p / (headDim / 2u);
  let rotated = params.nHeads + params.nKvHeads;
  let row = headRow / rotated;
  let head = headRow % rotated;
  let rowBase = row * (rotated + params.nKvHeads) * headDim;
  let pair = ropePair(i, headDim);
  let i0 = rowBase + head * headDim + pair.x;
  let i1 = rowBase + head * headDim + pair.y;
  let position = rowPosition(row);
  let cs = ropeCosSin(position, i, bitcast<f32>(params.attentionFactorBits));
  let c = cs.x;
  let s = cs.y;
  // The projections' biases (Qwen2) are added on the way: q, k and v leave here biased.
  let x0 = qkv[i0] + biasAt(i0 - rowBase);
  let x1 = qkv[i1] + biasAt(i1 - rowBase);
  let r0 = x0 * c - x1 * s;
  let r1 = x0 * s + x1 * c;
  if (head < params.nHeads) {
    qkv[i0] = r0;
    qkv[i1] = r1;
    return;
  }
  let sequence = rowSequence(row);
  if (position >= params.maxSeq || sequence >= params.sequences) { return; }
  let kvHead = head - params.nHeads;
  let dest = ((sequence * params.maxSeq + position) * params.nKvHeads + kvHead) * headDim;
  kCache[dest + pair.x] = ${cache}(r0);
  kCache[dest + pair.y] = ${cache}(r1);
  let v = rowBase + (rotated + kvHead) * headDim;
  vCache[dest + pair.x] = ${cache}(qkv[v + pair.x] + biasAt(v - rowBase + pair.x));
  vCache[dest + pair.y] = ${cache}(qkv[v + pair.y] + biasAt(v - rowBase + pair.y));
}
`;

/** Rotates the q and k heads of fused qkv rows and writes K and V into the caches. */
export const ropeKvCache = (
  gpu: Gpu,
  {
    qkv,
    positions,
    kCache,
    vCache,
    rows,
    nHeads,
    nKvHeads,
    headDim,
    maxSeq,
    sequences = 1,
    theta = 10000,
    frequencies,
    attentionFactor = 1,
    bias,
    layout,
    cacheElement = "f32",
    label,
  }: {
    /** [rows, (nHeads + 2·nKvHeads)·headDim]: q heads, k heads, v heads. */
    readonly qkv: GPUBuffer;
    /** The rows' (sequence, position) pairs (see position.ts). */
    readonly positions: GPUBuffer;
    /** [sequences, maxSeq, nKvHeads, headDim]. */
    readonly kCache: GPUBuffer;
    /** [sequences, maxSeq, nKvHeads, headDim]. */
    readonly vCache: GPUBuffer;
    readonly rows: number;
    readonly nHeads: number;
    readonly nKvHeads: number;
    readonly headDim: number;
    readonly maxSeq: number;
    /** Slots in the caches (default 1). */
    readonly sequences?: number;
    /** Base of the default frequencies, when no `frequencies` table is given. */
    readonly theta?: number;
    /** The inverse frequencies (`ropeFrequencyBuffer`); default: theta's. */
    readonly frequencies?: GPUBuffer;
    /** cos and sin are scaled by it (yarn's attention factor). */
    readonly attentionFactor?: number;
    /** [(nHeads + 2·nKvHeads)·headDim]: added to every qkv row first (Qwen2's q/k/v biases). */
    readonly bias?: GPUBuffer;
    readonly layout: RopeLayout;
    /** Element type of the caches (default f32). */
    readonly cacheElement?: KvCacheElement;
    readonly label?: string;
  },
): Dispatch => {
  if (headDim % 2 !== 0) throw new RangeError(`ropeKvCache: headDim ${headDim} must be even`);
  const pairs = u32Param("pairs", (rows * (nHeads + nKvHeads) * headDim) / 2);
  return prepareDispatch(gpu, {
    label: label ?? `ropeKvCache.${layout}`,
    code: ropeKvCacheWgsl(layout, bias !== undefined, cacheElement),
    buffers: [
      qkv,
      positions,
      kCache,
      vCache,
      frequencies ??
        ropeFrequencyBuffer(gpu, headDim, defaultInverseFrequencies(theta, headDim)),
      ...(bias === undefined ? [] : [bias]),
    ],
    params: [
      pairs,
      u32Param("nHeads", nHeads),
      u32Param("nKvHeads", nKvHeads),
      u32Param("headDim", headDim),
      f32Bits(attentionFactor),
      u32Param("maxSeq", maxSeq),
      u32Param("sequences", sequences),
    ],
    workgroups: grid1d(gpu, Math.ceil(pairs / WORKGROUP)),
  });
};
