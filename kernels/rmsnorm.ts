/**
 * RMSNorm (Llama): out = x / sqrt(mean(x²) + eps) · weight, one workgroup per row; optionally
 * fused with the residual add before it (vLLM's fused_add_rms_norm): x += residual, then the
 * norm of the new x, in one pass over the row.
 */
import type { Gpu } from "../gpu/device.ts";
import { type Dispatch, prepareDispatch } from "../gpu/dispatch.ts";
import { f32Bits, grid1d, LINEAR_WORKGROUP_WGSL, u32Param, workgroupSum } from "./grid.ts";

const WORKGROUP = 256;

/**
 * Each workgroup strides over its row summing squares, then tree-reduces in shared memory. With
 * `addResidual`, each invocation first adds residual into input (the same indices it later
 * reads, so no other invocation's write is involved).
 */
export const rmsnormWgsl = (addResidual: boolean, subgroups = false): string => /* wgsl */ `
${workgroupSum(subgroups).enable}
struct Params { rows: u32, dim: u32, epsBits: u32 }
${
  addResidual
    ? `@group(0) @binding(0) var<storage, read_write> input: array<f32>;
@group(0) @binding(1) var<storage, read> residual: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;`
    : `@group(0) @binding(0) var<storage, read> input: array<f32>;
@group(0) @binding(1) var<storage, read> weight: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;`
}

const WORKGROUP: u32 = ${WORKGROUP}u;
var<workgroup> partial: array<f32, WORKGROUP>;

@compute @workgroup_size(WORKGROUP)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,${workgroupSum(subgroups).builtins}
) {
  let row = ${LINEAR_WORKGROUP_WGSL};
  if (row >= params.rows) { return; }
  let dim = params.dim;
  let base = row * dim;
  var sum = 0.0;
  for (var i = lid; i < dim; i += WORKGROUP) {
    ${
  addResidual
    ? "let x = input[base + i] + residual[base + i];\n    input[base + i] = x;"
    : "let x = input[base + i];"
}
    sum += x * x;
  }
  ${workgroupSum(subgroups).code}
  let scale = inverseSqrt(partial[0] / f32(dim) + bitcast<f32>(params.epsBits));
  for (var i = lid; i < dim; i += WORKGROUP) {
    out[base + i] = input[base + i] * scale * weight[i];
  }
}
`;

/**
 * out[rows×dim] = rmsnorm(input[rows×dim]) · weight[dim]; `out` must not alias `input`. The sum
 * uses subgroups where the device has them (`subgroups: false` forces the shared-memory sum).
 */
export const rmsnorm = (
  gpu: Gpu,
  { input, residual, weight, out, rows, dim, eps = 1e-5, label, subgroups }: {
    /** Read, or with `residual` updated in place to input + residual first. */
    readonly input: GPUBuffer;
    /** Added into `input` before the norm (must alias neither input nor out). */
    readonly residual?: GPUBuffer;
    readonly weight: GPUBuffer;
    readonly out: GPUBuffer;
    readonly rows: number;
    readonly dim: number;
    readonly eps?: number;
    readonly label?: string;
    readonly subgroups?: boolean;
  },
): Dispatch =>
  prepareDispatch(gpu, {
    label: label ?? (residual ? "rmsnorm.addResidual" : "rmsnorm"),
    code: rmsnormWgsl(residual !== undefined, subgroups ?? gpu.features.subgroups),
    buffers: residual ? [input, residual, weight, out] : [input, weight, out],
    params: [u32Param("rows", rows), u32Param("dim", dim), f32Bits(eps)],
    workgroups: grid1d(gpu, rows),
  });
