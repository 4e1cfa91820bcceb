/** Shared helpers for kernel grids and parameters. */
import type { Gpu } from "../gpu/device.ts";

/**
 * Spreads `count` workgroups over x and y so no dimension exceeds the device limit; kernels
 * recover the linear workgroup index with `LINEAR_WORKGROUP_WGSL`.
 */
export const grid1d = (gpu: Gpu, count: number): [number, number] => {
  const max = gpu.limits.maxComputeWorkgroupsPerDimension;
  if (count <= max) return [Math.max(count, 1), 1];
  const y = Math.ceil(count / max);
  if (y > max) throw new RangeError(`grid of ${count} workgroups exceeds ${max}²`);
  return [Math.ceil(count / y), y];
};

/** WGSL for the linear workgroup index of a grid built by `grid1d` (needs `wid`, `groups`). */
export const LINEAR_WORKGROUP_WGSL = "(wid.y * groups.x + wid.x)";

/**
 * WGSL that sums each invocation's `sum` over the workgroup, the total left in `partial[0]`
 * (needs `sum`, `lid`, a power-of-two `WORKGROUP` and `partial: array<f32, WORKGROUP>` in
 * workgroup memory), in one of two ways:
 * - halving in shared memory, log2(WORKGROUP) barriers (any device);
 * - with the device's subgroups: subgroupAdd within each subgroup, its leader stores the total,
 *   and invocation 0 adds the subgroups' totals, two barriers (lavapipe runs barriers as
 *   coroutine switches). The order of the additions differs, so the last bits may too.
 * `enable` goes at the top of the shader and `builtins` at the end of the entry point's
 * parameters.
 */
export const workgroupSum = (subgroups: boolean): {
  readonly enable: string;
  readonly builtins: string;
  readonly code: string;
} =>
  subgroups
    ? {
      enable: "enable subgroups;",
      builtins: `
  @builtin(subgroup_invocation_id) subgroupLane: u32,
  @builtin(subgroup_id) subgroupIndex: u32,
  @builtin(subgroup_size) subgroupSize: u32,`,
      code: `let subgroupTotal = subgroupAdd(sum);
  if (subgroupLane == 0u) { partial[subgroupIndex] = subgroupTotal; }
  workgroupBarrier();
  if (lid == 0u) {
    var total = 0.0;
    for (var i = 0u; i < (WORKGROUP + subgroupSize - 1u) / subgroupSize; i++) { total += partial[i]; }
    partial[0] = total;
  }
  workgroupBarrier();`,
    }
    : {
      enable: "",
      builtins: "",
      code: `partial[lid] = sum;
  workgroupBarrier();
  for (var stride = WORKGROUP / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) { partial[lid] += partial[lid + stride]; }
    workgroupBarrier();
  }`,
    };

/** The bits of an f32 as a u32, so float parameters can travel in the u32 params uniform. */
export const f32Bits = (value: number): number => {
  const word = new Float32Array([value]);
  return new Uint32Array(word.buffer)[0];
};

/** Throws unless `value` is a non-negative integer that fits in a u32 param. */
export const u32Param = (name: string, value: number): number => {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw new RangeError(`${name} must be a u32, got ${value}`);
  }
  return value;
};
