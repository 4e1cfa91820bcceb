/**
 * Per-row top-k (and argmax = top-1) over logits, so a vocab-parallel rank sends only k
 * candidates to the sampler. Output per row: k candidates {value: f32, index: u32} (8 bytes
 * each, index as u32 bits), sorted by value descending, ties broken by lower index (like
 * numpy/torch argmax). Indices are `indexOffset` + the column, so a shard can report global
 * vocab ids. When n < k the tail is padded with (-Infinity, 0xFFFFFFFF). NaN logits give
 * unspecified results.
 */
import type { Gpu } from "../gpu/device.ts";
import { type Dispatch, prepareDispatch } from "../gpu/dispatch.ts";
import { grid1d, LINEAR_WORKGROUP_WGSL, u32Param } from "./grid.ts";

/** Largest k supported: each invocation keeps k candidates in private memory. */
export const MAX_TOPK = 128;

const WORKGROUP = 256;
const NEGATIVE_INFINITY_BITS = 0xff800000;

/**
 * One workgroup per row: each invocation keeps a sorted top-k of its strided share of the row
 * (insertion sort, cheap once the list is warm), then k rounds of a workgroup argmax over the
 * invocations' heads pick the winners in order; the winning invocation advances its head.
 */
export const topkWgsl = (k: number): string => /* wgsl */ `
struct Params { rows: u32, n: u32, indexOffset: u32, negInfBits: u32 }
struct Candidate { value: f32, index: u32 }
@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<Candidate>;
@group(0) @binding(2) var<uniform> params: Params;

const K: u32 = ${k}u;
const WORKGROUP: u32 = ${WORKGROUP}u;
var<workgroup> bestValue: array<f32, WORKGROUP>;
var<workgroup> bestIndex: array<u32, WORKGROUP>;

fn better(av: f32, ai: u32, bv: f32, bi: u32) -> bool {
  return av > bv || (av == bv && ai < bi);
}

@compute @workgroup_size(WORKGROUP)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let row = ${LINEAR_WORKGROUP_WGSL};
  if (row >= params.rows) { return; }
  let n = params.n;
  let empty = bitcast<f32>(params.negInfBits);
  var values: array<f32, K>;
  var indices: array<u32, K>;
  for (var s = 0u; s < K; s++) {
    values[s] = empty;
    indices[s] = 0xffffffffu;
  }
  for (var c = lid; c < n; c += WORKGROUP) {
    let value = logits[row * n + c];
    let index = c + params.indexOffset;
    if (!better(value, index, values[K - 1u], indices[K - 1u])) { continue; }
    var slot = K - 1u;
    while (slot > 0u && better(value, index, values[slot - 1u], indices[slot - 1u])) {
      values[slot] = values[slot - 1u];
      indices[slot] = indices[slot - 1u];
      slot--;
    }
    values[slot] = value;
    indices[slot] = index;
  }
  var head = 0u;
  for (var rank = 0u; rank < K; rank++) {
    var value = empty;
    var index = 0xffffffffu;
    if (head < K) {
      value = values[head];
      index = indices[head];
    }
    bestValue[lid] = value;
    bestIndex[lid] = index;
    workgroupBarrier();
    for (var stride = WORKGROUP / 2u; stride > 0u; stride /= 2u) {
      if (lid < stride &&
          better(bestValue[lid + stride], bestIndex[lid + stride], bestValue[lid], bestIndex[lid])) {
        bestValue[lid] = bestValue[lid + stride];
        bestIndex[lid] = bestIndex[lid + stride];
      }
      workgroupBarrier();
    }
    let winner = bestIndex[0];
    if (lid == 0u) { out[row * K + rank] = Candidate(bestValue[0], winner); }
    // Indices are unique within a row, so only the owner advances (padding never wins early).
    if (head < K && index == winner) { head++; }
    workgroupBarrier();
  }
}
`;

export interface TopkArgs {
  /** [rows, n]. */
  readonly logits: GPUBuffer;
  /** [rows, k] candidates of 8 bytes: f32 value then u32 index. */
  readonly out: GPUBuffer;
  readonly rows: number;
  readonly n: number;
  /** Added to each column index, e.g. a vocab shard's first id. */
  readonly indexOffset?: number;
  readonly label?: string;
}

/** The k largest (value, index) pairs of each row, sorted descending. */
export const topk = (gpu: Gpu, args: TopkArgs & { readonly k: number }): Dispatch => {
  const { logits, out, rows, n, k } = args;
  if (!Number.isInteger(k) || k < 1 || k > MAX_TOPK) {
    throw new RangeError(`topk: k=${k} outside 1..${MAX_TOPK}`);
  }
  return prepareDispatch(gpu, {
    label: args.label ?? `topk${k}`,
    code: topkWgsl(k),
    buffers: [logits, out],
    params: [
      u32Param("rows", rows),
      u32Param("n", n),
      u32Param("indexOffset", args.indexOffset ?? 0),
      NEGATIVE_INFINITY_BITS,
    ],
    workgroups: grid1d(gpu, rows),
  });
};

/** Each row's largest (value, index): top-1, one 8-byte candidate per row. */
export const argmax = (gpu: Gpu, args: TopkArgs): Dispatch =>
  topk(gpu, { ...args, k: 1, label: args.label ?? "argmax" });

/** Splits candidates read back as f32 words (e.g. by `readF32`) into values and indices. */
export const decodeCandidates = (raw: Float32Array) => {
  const words = new Uint32Array(raw.buffer, raw.byteOffset, raw.length);
  const count = raw.length / 2;
  return {
    values: Float32Array.from({ length: count }, (_, i) => raw[2 * i]),
    indices: Uint32Array.from({ length: count }, (_, i) => words[2 * i + 1]),
  };
};
