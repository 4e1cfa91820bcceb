/** RMSNorm (Llama): out = x / sqrt(mean(x²) + eps) · weight, one workgroup per row. */
import type { Gpu } from "../gpu/device.ts";
import { type Dispatch, prepareDispatch } from "../gpu/dispatch.ts";
import { f32Bits, grid1d, LINEAR_WORKGROUP_WGSL, u32Param } from "./grid.ts";

const WORKGROUP = 256;

/** Each workgroup strides over its row summing squares, then tree-reduces in shared memory. */
export const RMSNORM_WGSL = /* wgsl */ `
struct Params { rows: u32, dim: u32, epsBits: u32 }
@group(0) @binding(0) var<storage, read> input: array<f32>;
@group(0) @binding(1) var<storage, read> weight: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

const WORKGROUP: u32 = ${WORKGROUP}u;
var<workgroup> partial: array<f32, WORKGROUP>;

@compute @workgroup_size(WORKGROUP)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let row = ${LINEAR_WORKGROUP_WGSL};
  if (row >= params.rows) { return; }
  let dim = params.dim;
  let base = row * dim;
  var sum = 0.0;
  for (var i = lid; i < dim; i += WORKGROUP) {
    let x = input[base + i];
    sum += x * x;
  }
  partial[lid] = sum;
  workgroupBarrier();
  for (var stride = WORKGROUP / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) { partial[lid] += partial[lid + stride]; }
    workgroupBarrier();
  }
  let scale = inverseSqrt(partial[0] / f32(dim) + bitcast<f32>(params.epsBits));
  for (var i = lid; i < dim; i += WORKGROUP) {
    out[base + i] = input[base + i] * scale * weight[i];
  }
}
`;

/** out[rows×dim] = rmsnorm(input[rows×dim]) · weight[dim]; `out` must not alias `input`. */
export const rmsnorm = (
  gpu: Gpu,
  { input, weight, out, rows, dim, eps = 1e-5, label }: {
    readonly input: GPUBuffer;
    readonly weight: GPUBuffer;
    readonly out: GPUBuffer;
    readonly rows: number;
    readonly dim: number;
    readonly eps?: number;
    readonly label?: string;
  },
): Dispatch =>
  prepareDispatch(gpu, {
    label: label ?? "rmsnorm",
    code: RMSNORM_WGSL,
    buffers: [input, weight, out],
    params: [u32Param("rows", rows), u32Param("dim", dim), f32Bits(eps)],
    workgroups: grid1d(gpu, rows),
  });
