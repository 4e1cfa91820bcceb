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
 * WGSL that sums each invocation's `sum` over the workgroup by halving, the total left in
 * `partial[0]` (needs `sum`, `lid`, a power-of-two `WORKGROUP` and `partial: array<f32,
 * WORKGROUP>` in workgroup memory).
 */
export const WORKGROUP_SUM_WGSL = `partial[lid] = sum;
  workgroupBarrier();
  for (var stride = WORKGROUP / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) { partial[lid] += partial[lid + stride]; }
    workgroupBarrier();
  }`;

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
