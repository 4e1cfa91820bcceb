/**
 * Causal attention over a KV cache, with grouped-query attention (GQA).
 *
 * KV cache layout (one pair of buffers per layer): kCache and vCache are each
 * [sequences, maxSeq, nKvHeads, headDim] row-major f32: one slot per sequence that can run at
 * once, and within a slot the K (or V) rows of one position are contiguous.
 *
 * Each of a step's `rows` tokens carries its own (sequence, position) pair (position.ts):
 * prefill is T rows of one sequence, a batched decode one row per running sequence. Query row t
 * at position p of sequence s attends to slot s's positions 0..p. Query head h reads kv head
 * floor(h / (nHeads/nKvHeads)). q and out are [rows, nHeads, headDim].
 */
import type { Gpu } from "../gpu/device.ts";
import { type Dispatch, prepareDispatch } from "../gpu/dispatch.ts";
import { f32Bits, grid1d, LINEAR_WORKGROUP_WGSL, u32Param } from "./grid.ts";
import { ROW_POSITION_WGSL } from "./position.ts";

const COPY_WORKGROUP = 256;

/** Lanes per (head, row): as many as 32 whose partial outputs fit in 16 KiB of shared memory. */
const lanesFor = (headDim: number) => {
  let lanes = 32;
  while (lanes > 1 && lanes * (headDim + 2) * 4 > 16384) lanes /= 2;
  return lanes;
};

/**
 * One workgroup per (query head, row). Lane l takes keys l, l + LANES, ... and keeps its own
 * online softmax (running max, sum and output accumulator), so the loop over the context has
 * no barrier at all; at the end the lanes' partial results are merged once through shared
 * memory. (The earlier kernel reduced every 64-key tile across the workgroup, ~15 barriers per
 * tile: on lavapipe that made decode attention cost more with each position, 5 ms per layer at
 * position 600.) headDim is baked in for the private arrays.
 */
export const attentionWgsl = (headDim: number): string => /* wgsl */ `
struct Params { nHeads: u32, nKvHeads: u32, maxSeq: u32, scaleBits: u32, qRowStride: u32 }
@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> kCache: array<f32>;
@group(0) @binding(2) var<storage, read> vCache: array<f32>;
@group(0) @binding(3) var<storage, read> positions: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;
${ROW_POSITION_WGSL}
const HEAD_DIM: u32 = ${headDim}u;
const LANES: u32 = ${lanesFor(headDim)}u;
const LOWEST: f32 = -0x1.fffffep+127f;
var<workgroup> laneMax: array<f32, LANES>;
var<workgroup> laneSum: array<f32, LANES>;
var<workgroup> laneAcc: array<f32, ${lanesFor(headDim) * headDim}>;

@compute @workgroup_size(${lanesFor(headDim)})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let head = wid.x;
  let row = wid.y;
  let nKvHeads = params.nKvHeads;
  let kvHead = head / (params.nHeads / nKvHeads);
  let qBase = row * params.qRowStride + head * HEAD_DIM;
  let outBase = (row * params.nHeads + head) * HEAD_DIM;
  let scale = bitcast<f32>(params.scaleBits);
  var qv: array<f32, HEAD_DIM>;
  for (var d = 0u; d < HEAD_DIM; d++) { qv[d] = q[qBase + d] * scale; }
  let length = min(rowPosition(row) + 1u, params.maxSeq);
  let slotBase = rowSequence(row) * params.maxSeq;
  var m = LOWEST;
  var s = 0.0;
  var acc: array<f32, HEAD_DIM>;
  for (var key = lid; key < length; key += LANES) {
    let base = ((slotBase + key) * nKvHeads + kvHead) * HEAD_DIM;
    var score = 0.0;
    for (var d = 0u; d < HEAD_DIM; d++) { score += qv[d] * kCache[base + d]; }
    if (score > m) {
      let correction = exp(m - score);
      s *= correction;
      for (var d = 0u; d < HEAD_DIM; d++) { acc[d] *= correction; }
      m = score;
    }
    let p = exp(score - m);
    s += p;
    for (var d = 0u; d < HEAD_DIM; d++) { acc[d] += p * vCache[base + d]; }
  }
  laneMax[lid] = m;
  laneSum[lid] = s;
  for (var d = 0u; d < HEAD_DIM; d++) { laneAcc[lid * HEAD_DIM + d] = acc[d]; }
  workgroupBarrier();
  // Merge: every lane computes the global max and sum; lane l then writes dims l, l + LANES...
  var globalMax = LOWEST;
  for (var l = 0u; l < LANES; l++) { globalMax = max(globalMax, laneMax[l]); }
  var total = 0.0;
  for (var l = 0u; l < LANES; l++) { total += laneSum[l] * exp(laneMax[l] - globalMax); }
  for (var d = lid; d < HEAD_DIM; d += LANES) {
    var value = 0.0;
    for (var l = 0u; l < LANES; l++) {
      value += laneAcc[l * HEAD_DIM + d] * exp(laneMax[l] - globalMax);
    }
    out[outBase + d] = value / total;
  }
}
`;

export interface AttentionArgs {
  /** [rows, nHeads, headDim], or the q heads at the start of wider rows (see qRowStride). */
  readonly q: GPUBuffer;
  /** Floats from one q row to the next; default nHeads·headDim (a fused qkv row is wider). */
  readonly qRowStride?: number;
  /** [sequences, maxSeq, nKvHeads, headDim]. */
  readonly kCache: GPUBuffer;
  /** [sequences, maxSeq, nKvHeads, headDim]. */
  readonly vCache: GPUBuffer;
  /** The rows' (sequence, position) pairs (see position.ts); sequences must have a slot. */
  readonly positions: GPUBuffer;
  /** [rows, nHeads, headDim]; must not alias q. */
  readonly out: GPUBuffer;
  /** Query tokens this step: T for a prefill chunk, one per sequence for a decode. */
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
  const { q, kCache, vCache, positions, out, rows, nHeads, nKvHeads, headDim, maxSeq } = args;
  if (nKvHeads < 1 || nHeads % nKvHeads !== 0) {
    throw new RangeError(`attention: nHeads ${nHeads} is not a multiple of nKvHeads ${nKvHeads}`);
  }
  const max = gpu.limits.maxComputeWorkgroupsPerDimension;
  if (nHeads > max || rows > max) throw new RangeError(`attention: more than ${max} heads or rows`);
  return prepareDispatch(gpu, {
    label: args.label ?? "attention",
    code: attentionWgsl(u32Param("headDim", headDim)),
    buffers: [q, kCache, vCache, positions, out],
    params: [
      u32Param("nHeads", nHeads),
      u32Param("nKvHeads", nKvHeads),
      u32Param("maxSeq", maxSeq),
      f32Bits(args.scale ?? 1 / Math.sqrt(headDim)),
      u32Param("qRowStride", args.qRowStride ?? nHeads * headDim),
    ],
    workgroups: [nHeads, u32Param("rows", rows)],
  });
};

/**
 * Copies each row's K and V into its sequence's slot at its position; a row past maxSeq or with
 * no slot is dropped.
 */
export const WRITE_KV_CACHE_WGSL = /* wgsl */ `
struct Params { count: u32, rowWidth: u32, maxSeq: u32, sequences: u32 }
@group(0) @binding(0) var<storage, read> k: array<f32>;
@group(0) @binding(1) var<storage, read> v: array<f32>;
@group(0) @binding(2) var<storage, read> positions: array<u32>;
@group(0) @binding(3) var<storage, read_write> kCache: array<f32>;
@group(0) @binding(4) var<storage, read_write> vCache: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;
${ROW_POSITION_WGSL}
@compute @workgroup_size(${COPY_WORKGROUP})
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = ${LINEAR_WORKGROUP_WGSL} * ${COPY_WORKGROUP}u + lid;
  if (i >= params.count) { return; }
  let row = i / params.rowWidth;
  let position = rowPosition(row);
  let sequence = rowSequence(row);
  if (position >= params.maxSeq || sequence >= params.sequences) { return; }
  let dest = (sequence * params.maxSeq + position) * params.rowWidth + i % params.rowWidth;
  kCache[dest] = k[i];
  vCache[dest] = v[i];
}
`;

/**
 * Writes k, v [rows, nKvHeads, headDim] into the caches, each row at its (sequence, position).
 * (The Llama model writes its cache with `ropeKvCache`, which rotates k on the way.)
 */
export const writeKvCache = (
  gpu: Gpu,
  {
    k,
    v,
    kCache,
    vCache,
    positions,
    rows,
    nKvHeads,
    headDim,
    maxSeq,
    sequences = 1,
    label,
  }: {
    readonly k: GPUBuffer;
    readonly v: GPUBuffer;
    readonly kCache: GPUBuffer;
    readonly vCache: GPUBuffer;
    readonly positions: GPUBuffer;
    readonly rows: number;
    readonly nKvHeads: number;
    readonly headDim: number;
    readonly maxSeq: number;
    /** Slots in the caches (default 1). */
    readonly sequences?: number;
    readonly label?: string;
  },
): Dispatch => {
  const rowWidth = u32Param("rowWidth", nKvHeads * headDim);
  const count = u32Param("count", rows * rowWidth);
  return prepareDispatch(gpu, {
    label: label ?? "writeKvCache",
    code: WRITE_KV_CACHE_WGSL,
    buffers: [k, v, positions, kCache, vCache],
    params: [
      count,
      rowWidth,
      u32Param("maxSeq", maxSeq),
      u32Param("sequences", sequences),
    ],
    workgroups: grid1d(gpu, Math.ceil(count / COPY_WORKGROUP)),
  });
};
