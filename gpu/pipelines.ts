/** Compiles each WGSL module/entry point once per device. */
import type { Gpu } from "./device.ts";

const cache = new WeakMap<GPUDevice, Map<string, GPUComputePipeline>>();

/** The compute pipeline for `code`/`entryPoint` on this device, compiled on first use. */
export const computePipeline = (
  gpu: Gpu,
  label: string,
  code: string,
  entryPoint = "main",
): GPUComputePipeline => {
  let perDevice = cache.get(gpu.device);
  if (!perDevice) cache.set(gpu.device, perDevice = new Map());
  const key = `${entryPoint}\u0000${code}`;
  let pipeline = perDevice.get(key);
  if (!pipeline) {
    const module = gpu.device.createShaderModule({ label, code });
    pipeline = gpu.device.createComputePipeline({
      label,
      layout: "auto",
      compute: { module, entryPoint },
    });
    perDevice.set(key, pipeline);
  }
  return pipeline;
};

/** A bind group binding `buffers` to bindings 0..n-1 of group 0. */
export const bindBuffers = (
  gpu: Gpu,
  pipeline: GPUComputePipeline,
  label: string,
  buffers: readonly GPUBuffer[],
) =>
  gpu.device.createBindGroup({
    label,
    layout: pipeline.getBindGroupLayout(0),
    entries: buffers.map((buffer, binding) => ({ binding, resource: { buffer } })),
  });
