/**
 * Per-head RMSNorm of q and k (Qwen3's q_norm and k_norm), in place on fused qkv rows [rows,
 * (nHeads + 2·nKvHeads)·headDim]: each q head is normed with `qWeight` [headDim], each k head
 * with `kWeight`, the v heads are left alone. One workgroup per (row, q or k head); it runs
 * before RoPE, as the model does.
 */
import type { Gpu } from "../gpu/device.ts";
import { type Dispatch, prepareDispatch } from "../gpu/dispatch.ts";
import { f32Bits, grid1d, LINEAR_WORKGROUP_WGSL, u32Param, workgroupSum } from "./grid.ts";

const WORKGROUP = 64;

export const headNormWgsl = (subgroups = false): string => /* wgsl */ `
${workgroupSum(subgroups).enable}
struct Params { heads: u32, nHeads: u32, nKvHeads: u32, headDim: u32, epsBits: u32 }
@group(0) @binding(0) var<storage, read_write> qkv: array<f32>;
@group(0) @binding(1) var<storage, read> qWeight: array<f32>;
@group(0) @binding(2) var<storage, read> kWeight: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

const WORKGROUP: u32 = ${WORKGROUP}u;
var<workgroup> partial: array<f32, WORKGROUP>;

@compute @workgroup_size(WORKGROUP)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,${workgroupSum(subgroups).builtins}
) {
  let index = ${LINEAR_WORKGROUP_WGSL};
  if (index >= params.heads) { return; }
  let normed = params.nHeads + params.nKvHeads;
  let row = index / normed;
  let head = index % normed;
  let headDim = params.headDim;
  let base = (row * (normed + params.nKvHeads) + head) * headDim;
  var sum = 0.0;
  for (var i = lid; i < headDim; i += WORKGROUP) {
    let x = qkv[base + i];
    sum += x * x;
  }
  ${workgroupSum(subgroups).code}
  let scale = inverseSqrt(partial[0] / f32(headDim) + bitcast<f32>(params.epsBits));
  for (var i = lid; i < headDim; i += WORKGROUP) {
    let w = select(kWeight[i], qWeight[i], head < params.nHeads);
    qkv[base + i] = qkv[base + i] * scale * w;
  }
}
`;

/** Norms the q and k heads of `rows` fused qkv rows in place (see the module comment). */
export const headNorm = (
  gpu: Gpu,
  { qkv, qWeight, kWeight, rows, nHeads, nKvHeads, headDim, eps, label }: {
    readonly qkv: GPUBuffer;
    readonly qWeight: GPUBuffer;
    readonly kWeight: GPUBuffer;
    readonly rows: number;
    readonly nHeads: number;
    readonly nKvHeads: number;
    readonly headDim: number;
    readonly eps: number;
    readonly label?: string;
  },
): Dispatch => {
  const heads = u32Param("heads", rows * (nHeads + nKvHeads));
  return prepareDispatch(gpu, {
    label: label ?? "headNorm",
    code: headNormWgsl(gpu.features.subgroups),
    buffers: [qkv, qWeight, kWeight],
    params: [
      heads,
      u32Param("nHeads", nHeads),
      u32Param("nKvHeads", nKvHeads),
      u32Param("headDim", headDim),
      f32Bits(eps),
    ],
    workgroups: grid1d(gpu, heads),
  });
};
