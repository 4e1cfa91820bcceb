/**
 * Causal attention over a KV cache, with grouped-query attention (GQA).
 *
 * KV cache layout (one pair of buffers per layer): kCache and vCache are each
 * [maxSeq, nKvHeads, headDim] row-major f32, so the K (or V) rows of one position are contiguous
 * and a step's new rows are a single contiguous copy.
 *
 * A step holds `rows` tokens at positions start..start+rows-1, where start is word 0 of the
 * caller's position buffer (position.ts): decode is rows = 1, prefill is rows = T. Query row t
 * attends to cache positions 0..start+t. Query head h reads kv head floor(h / (nHeads/nKvHeads)).
 * q and out are [rows, nHeads, headDim].
 */
import type { Gpu } from "../gpu/device.ts";
import { type Dispatch, prepareDispatch } from "../gpu/dispatch.ts";
import { f32Bits, grid1d, LINEAR_WORKGROUP_WGSL, u32Param } from "./grid.ts";

const KEY_TILE = 64;
const COPY_WORKGROUP = 256;

/**
 * One workgroup per (query head, row). Keys stream through in tiles of 64 with an online
 * softmax (running max and sum, rescaling the accumulator when the max grows), so no scratch
 * buffer of scores is needed and any context length works. Invocation j scores key t0+j; each
 * invocation owns output dims lid, lid+64, ... (headDim is baked in for the private array).
 */
export const attentionWgsl = (headDim: number): string => /* wgsl */ `
struct Params { nHeads: u32, nKvHeads: u32, maxSeq: u32, scaleBits: u32 }
@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> kCache: array<f32>;
@group(0) @binding(2) var<storage, read> vCache: array<f32>;
@group(0) @binding(3) var<storage, read> position: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

const HEAD_DIM: u32 = ${headDim}u;
const TILE: u32 = ${KEY_TILE}u;
const DIMS_PER_INVOCATION: u32 = ${Math.ceil(headDim / KEY_TILE)}u;
const LOWEST: f32 = -0x1.fffffep+127f;
var<workgroup> qShared: array<f32, HEAD_DIM>;
var<workgroup> probs: array<f32, TILE>;
var<workgroup> scratch: array<f32, TILE>;

fn reduceMax(lid: u32) -> f32 {
  for (var stride = TILE / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) { scratch[lid] = max(scratch[lid], scratch[lid + stride]); }
    workgroupBarrier();
  }
  let result = scratch[0];
  workgroupBarrier();
  return result;
}

fn reduceSum(lid: u32) -> f32 {
  for (var stride = TILE / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) { scratch[lid] += scratch[lid + stride]; }
    workgroupBarrier();
  }
  let result = scratch[0];
  workgroupBarrier();
  return result;
}

@compute @workgroup_size(${KEY_TILE})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let head = wid.x;
  let row = wid.y;
  let nKvHeads = params.nKvHeads;
  let kvHead = head / (params.nHeads / nKvHeads);
  let qBase = (row * params.nHeads + head) * HEAD_DIM;
  let scale = bitcast<f32>(params.scaleBits);
  for (var d = lid; d < HEAD_DIM; d += TILE) { qShared[d] = q[qBase + d] * scale; }
  let length = min(position[0] + row + 1u, params.maxSeq);
  var runningMax = LOWEST;
  var runningSum = 0.0;
  var acc: array<f32, DIMS_PER_INVOCATION>;
  workgroupBarrier();
  for (var t0 = 0u; t0 < length; t0 += TILE) {
    let key = t0 + lid;
    var score = LOWEST;
    if (key < length) {
      let kBase = (key * nKvHeads + kvHead) * HEAD_DIM;
      score = 0.0;
      for (var d = 0u; d < HEAD_DIM; d++) { score += qShared[d] * kCache[kBase + d]; }
    }
    scratch[lid] = score;
    workgroupBarrier();
    let newMax = max(runningMax, reduceMax(lid));
    var p = 0.0;
    if (key < length) { p = exp(score - newMax); }
    probs[lid] = p;
    scratch[lid] = p;
    workgroupBarrier();
    let tileSum = reduceSum(lid);
    let correction = exp(runningMax - newMax);
    runningSum = runningSum * correction + tileSum;
    runningMax = newMax;
    let tileLength = min(TILE, length - t0);
    for (var j = 0u; j < DIMS_PER_INVOCATION; j++) { acc[j] *= correction; }
    for (var t = 0u; t < tileLength; t++) {
      let pt = probs[t];
      let vBase = ((t0 + t) * nKvHeads + kvHead) * HEAD_DIM;
      for (var j = 0u; j < DIMS_PER_INVOCATION; j++) {
        let d = lid + j * TILE;
        if (d < HEAD_DIM) { acc[j] += pt * vCache[vBase + d]; }
      }
    }
    workgroupBarrier();
  }
  for (var j = 0u; j < DIMS_PER_INVOCATION; j++) {
    let d = lid + j * TILE;
    if (d < HEAD_DIM) { out[qBase + d] = acc[j] / runningSum; }
  }
}
`;

export interface AttentionArgs {
  /** [rows, nHeads, headDim]. */
  readonly q: GPUBuffer;
  /** [maxSeq, nKvHeads, headDim]. */
  readonly kCache: GPUBuffer;
  /** [maxSeq, nKvHeads, headDim]. */
  readonly vCache: GPUBuffer;
  /** u32 storage buffer, word 0 = position of row 0 (see position.ts). */
  readonly position: GPUBuffer;
  /** [rows, nHeads, headDim]; must not alias q. */
  readonly out: GPUBuffer;
  /** Query tokens this step: 1 for decode, T for prefill. */
  readonly rows: number;
  readonly nHeads: number;
  readonly nKvHeads: number;
  readonly headDim: number;
  readonly maxSeq: number;
  /** Softmax scale; default 1/√headDim. */
  readonly scale?: number;
  readonly label?: string;
}

/** Causal GQA attention of `rows` query tokens over the cache (which must already hold them). */
export const attention = (gpu: Gpu, args: AttentionArgs): Dispatch => {
  const { q, kCache, vCache, position, out, rows, nHeads, nKvHeads, headDim, maxSeq } = args;
  if (nKvHeads < 1 || nHeads % nKvHeads !== 0) {
    throw new RangeError(`attention: nHeads ${nHeads} is not a multiple of nKvHeads ${nKvHeads}`);
  }
  const max = gpu.limits.maxComputeWorkgroupsPerDimension;
  if (nHeads > max || rows > max) throw new RangeError(`attention: more than ${max} heads or rows`);
  return prepareDispatch(gpu, {
    label: args.label ?? "attention",
    code: attentionWgsl(u32Param("headDim", headDim)),
    buffers: [q, kCache, vCache, position, out],
    params: [
      u32Param("nHeads", nHeads),
      u32Param("nKvHeads", nKvHeads),
      u32Param("maxSeq", maxSeq),
      f32Bits(args.scale ?? 1 / Math.sqrt(headDim)),
    ],
    workgroups: [nHeads, u32Param("rows", rows)],
  });
};

/** Copies the step's K and V rows into the cache at position[0]..; rows past maxSeq are dropped. */
export const WRITE_KV_CACHE_WGSL = /* wgsl */ `
struct Params { count: u32, rowWidth: u32, maxSeq: u32 }
@group(0) @binding(0) var<storage, read> k: array<f32>;
@group(0) @binding(1) var<storage, read> v: array<f32>;
@group(0) @binding(2) var<storage, read> position: array<u32>;
@group(0) @binding(3) var<storage, read_write> kCache: array<f32>;
@group(0) @binding(4) var<storage, read_write> vCache: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

@compute @workgroup_size(${COPY_WORKGROUP})
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = ${LINEAR_WORKGROUP_WGSL} * ${COPY_WORKGROUP}u + lid;
  if (i >= params.count) { return; }
  let slot = position[0] + i / params.rowWidth;
  if (slot >= params.maxSeq) { return; }
  let dest = slot * params.rowWidth + i % params.rowWidth;
  kCache[dest] = k[i];
  vCache[dest] = v[i];
}
`;

/** Writes k, v [rows, nKvHeads, headDim] into the caches at positions position[0]... */
export const writeKvCache = (
  gpu: Gpu,
  { k, v, kCache, vCache, position, rows, nKvHeads, headDim, maxSeq, label }: {
    readonly k: GPUBuffer;
    readonly v: GPUBuffer;
    readonly kCache: GPUBuffer;
    readonly vCache: GPUBuffer;
    readonly position: GPUBuffer;
    readonly rows: number;
    readonly nKvHeads: number;
    readonly headDim: number;
    readonly maxSeq: number;
    readonly label?: string;
  },
): Dispatch => {
  const rowWidth = u32Param("rowWidth", nKvHeads * headDim);
  const count = u32Param("count", rows * rowWidth);
  return prepareDispatch(gpu, {
    label: label ?? "writeKvCache",
    code: WRITE_KV_CACHE_WGSL,
    buffers: [k, v, position, kCache, vCache],
    params: [count, rowWidth, u32Param("maxSeq", maxSeq)],
    workgroups: grid1d(gpu, Math.ceil(count / COPY_WORKGROUP)),
  });
};
