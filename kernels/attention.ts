/**
 * Causal attention over a KV cache, with grouped-query attention (GQA).
 *
 * KV cache layout (one pair of buffers per layer): kCache and vCache are each
 * [sequences, maxSeq, nKvHeads, headDim] row-major f32: one slot per sequence that can run at
 * once, and within a slot the K (or V) rows of one position are contiguous.
 *
 * Each of a step's `rows` tokens carries its own (sequence, position) pair (position.ts):
 * prefill is T rows of one sequence, a batched decode one row per running sequence. Query row t
 * at position p of sequence s attends to slot s's positions 0..p, or with a sliding `window` W
 * (Mistral) to the last W of them, p−W+1..p. Query head h reads kv head
 * floor(h / (nHeads/nKvHeads)). q and out are [rows, nHeads, headDim].
 */
import type { Gpu } from "../gpu/device.ts";
import { type Dispatch, prepareDispatch } from "../gpu/dispatch.ts";
import { f32Bits, grid1d, LINEAR_WORKGROUP_WGSL, u32Param } from "./grid.ts";
import { ROW_POSITION_WGSL } from "./position.ts";

const COPY_WORKGROUP = 256;

/**
 * Query heads per workgroup, one lane each. Measured on lavapipe (a CPU adapter) for 12 heads
 * of 64: a 128-token prefill's attention took 7.9-9.3 ms per layer at 4 heads per workgroup,
 * 9.3-9.5 at 8, against 10.4-11.5 ms when 4 lanes split the keys of one head and merged
 * through shared memory, and 26 ms when 32 lanes did (the kernel before this one).
 */
const HEADS_PER_WORKGROUP = 4;

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/**
 * A workgroup per (group of query heads, row); each lane is one (head, row) and walks all of
 * its keys in order with an online softmax (running max, sum and output accumulator), so there
 * is no shared memory and no barrier, and a row's arithmetic does not depend on the batch. The
 * head dimension is handled as vectors of `W` floats (4, or 2 for a head size that is only even)
 * in loops of constant length, which the shader compiler unrolls: K and V rows load whole, and
 * lavapipe ran the same loops with a length known only at run time twice as slowly. The price
 * is compile time on lavapipe, once per process and head size (cached on disk by Mesa): about
 * 3 s for 64-wide heads and 12 s for 128-wide ones, cold.
 */
export const attentionWgsl = (headDim: number, cache: "f32" | "f16" = "f32"): string => {
  const W = headDim % 4 === 0 ? 4 : 2;
  const V = headDim / W;
  const vec = `vec${W}<f32>`;
  // An f16 cache is widened as it is read: the scores and sums stay f32.
  const cached = `vec${W}<${cache}>`;
  const components = range(W);
  return /* wgsl */ `
${cache === "f16" ? "enable f16;" : ""}
struct Params {
  nHeads: u32, nKvHeads: u32, maxSeq: u32, scaleBits: u32, qRowStride: u32, window: u32,
  softcapBits: u32,
}
@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> kCache: array<${cached}>;
@group(0) @binding(2) var<storage, read> vCache: array<${cached}>;
@group(0) @binding(3) var<storage, read> positions: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;
${ROW_POSITION_WGSL}
const LOWEST: f32 = -0x1.fffffep+127f;
const PARTS: u32 = ${V}u;

@compute @workgroup_size(${HEADS_PER_WORKGROUP})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let wanted = wid.x * ${HEADS_PER_WORKGROUP}u + lid;
  // Lanes past the last head redo it (uniform control flow) and store nothing.
  let head = min(wanted, params.nHeads - 1u);
  let row = wid.y;
  let nKvHeads = params.nKvHeads;
  let kvHead = head / (params.nHeads / nKvHeads);
  let qBase = row * params.qRowStride + head * ${headDim}u;
  let scale = bitcast<f32>(params.scaleBits);
  let softcap = bitcast<f32>(params.softcapBits);
  var qv: array<${vec}, PARTS>;
  for (var v = 0u; v < PARTS; v++) {
    qv[v] = ${vec}(${components.map((i) => `q[qBase + ${W}u * v + ${i}u]`).join(", ")}) * scale;
  }
  let length = min(rowPosition(row) + 1u, params.maxSeq);
  let slotBase = rowSequence(row) * params.maxSeq;
  var m = LOWEST;
  var s = 0.0;
  var acc: array<${vec}, PARTS>;
  let first = select(0u, length - params.window, length > params.window);
  for (var key = first; key < length; key++) {
    let base = ((slotBase + key) * nKvHeads + kvHead) * PARTS;
    var score = 0.0;
    for (var v = 0u; v < PARTS; v++) { score += dot(qv[v], ${vec}(kCache[base + v])); }
    // Gemma 2's soft cap (0: none); tanh saturates in f32 beyond ±9, so clamp before it.
    if (softcap > 0.0) { score = softcap * tanh(clamp(score / softcap, -10.0, 10.0)); }
    if (score > m) {
      let correction = exp(m - score);
      s *= correction;
      for (var v = 0u; v < PARTS; v++) { acc[v] *= correction; }
      m = score;
    }
    let p = exp(score - m);
    s += p;
    for (var v = 0u; v < PARTS; v++) { acc[v] += p * ${vec}(vCache[base + v]); }
  }
  if (wanted < params.nHeads) {
    let outBase = (row * params.nHeads + head) * ${headDim}u;
    for (var v = 0u; v < PARTS; v++) {
      let o = acc[v] / s;
      ${components.map((i) => `out[outBase + ${W}u * v + ${i}u] = o[${i}];`).join("\n      ")}
    }
  }
}
`;
};

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
  /** Keys a query sees: its own position and the window − 1 before it; default all. */
  readonly window?: number;
  /** Scores become softcap·tanh(score / softcap) (Gemma 2); default none. */
  readonly softcap?: number;
  /** Element type of the caches (default f32; f16 needs shader-f16). */
  readonly cacheElement?: "f32" | "f16";
  readonly label?: string;
}

/** Causal GQA attention of `rows` query tokens over the cache (which must already hold them). */
export const attention = (gpu: Gpu, args: AttentionArgs): Dispatch => {
  const { q, kCache, vCache, positions, out, rows, nHeads, nKvHeads, headDim, maxSeq } = args;
  if (headDim < 2 || headDim % 2 !== 0) {
    throw new RangeError(`attention: headDim ${headDim} must be even`);
  }
  if (nKvHeads < 1 || nHeads % nKvHeads !== 0) {
    throw new RangeError(`attention: nHeads ${nHeads} is not a multiple of nKvHeads ${nKvHeads}`);
  }
  const max = gpu.limits.maxComputeWorkgroupsPerDimension;
  if (nHeads > max || rows > max) throw new RangeError(`attention: more than ${max} heads or rows`);
  return prepareDispatch(gpu, {
    label: args.label ?? "attention",
    code: attentionWgsl(u32Param("headDim", headDim), args.cacheElement),
    buffers: [q, kCache, vCache, positions, out],
    params: [
      u32Param("nHeads", nHeads),
      u32Param("nKvHeads", nKvHeads),
      u32Param("maxSeq", maxSeq),
      f32Bits(args.scale ?? 1 / Math.sqrt(headDim)),
      u32Param("qRowStride", args.qRowStride ?? nHeads * headDim),
      u32Param("window", args.window ?? 0xffffffff),
      f32Bits(args.softcap ?? 0),
    ],
    workgroups: [Math.ceil(nHeads / HEADS_PER_WORKGROUP), u32Param("rows", rows)],
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
