/** A prepared compute dispatch: pipeline, bindings and grid fixed once, encoded every step. */
import type { Gpu } from "./device.ts";
import { bindBuffers, computePipeline } from "./pipelines.ts";
import { createUniformBuffer } from "./buffers.ts";
import { countEncoded, deviceOf } from "./counters.ts";
import { activeProfile } from "./kernel_profile.ts";

export interface Dispatch {
  readonly label: string;
  readonly pipeline: GPUComputePipeline;
  readonly bindGroup: GPUBindGroup;
  readonly workgroups: readonly [number, number, number];
}

/**
 * Builds a dispatch whose bindings are `buffers` followed (when `params` is given) by a uniform
 * buffer of u32 parameters, which is the WGSL convention every Tessera kernel follows.
 */
export const prepareDispatch = (
  gpu: Gpu,
  spec: {
    readonly label: string;
    readonly code: string;
    readonly buffers: readonly GPUBuffer[];
    readonly params?: readonly number[];
    readonly workgroups: readonly [number, number?, number?];
  },
): Dispatch => {
  const pipeline = computePipeline(gpu, spec.label, spec.code);
  const uniforms = spec.params
    ? [createUniformBuffer(gpu, `${spec.label}.params`, Uint32Array.from(spec.params))]
    : [];
  const [x, y = 1, z = 1] = spec.workgroups;
  return {
    label: spec.label,
    pipeline,
    bindGroup: bindBuffers(gpu, pipeline, spec.label, [...spec.buffers, ...uniforms]),
    workgroups: [x, y, z],
  };
};

const encode = (pass: GPUComputePassEncoder, d: Dispatch) => {
  pass.setPipeline(d.pipeline);
  pass.setBindGroup(0, d.bindGroup);
  pass.dispatchWorkgroups(d.workgroups[0], d.workgroups[1], d.workgroups[2]);
};

/**
 * Encodes dispatches in order into one compute pass (one pass each, stamped, while a kernel
 * profile runs on the encoder's device: gpu/kernel_profile.ts).
 */
export const encodeDispatches = (
  encoder: GPUCommandEncoder,
  dispatches: readonly Dispatch[],
): void => {
  const profile = activeProfile(deviceOf(encoder));
  if (profile) {
    for (const d of dispatches) {
      const pass = encoder.beginComputePass(profile.passFor(d.label));
      encode(pass, d);
      pass.end();
    }
  } else {
    const pass = encoder.beginComputePass();
    for (const d of dispatches) encode(pass, d);
    pass.end();
  }
  countEncoded(encoder, dispatches.length);
};
