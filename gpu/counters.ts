/**
 * Per-device work counters for `deno task bench`: a few additions per submit, nothing that
 * touches numerics. Submits and encoders are seen by wrapping the device's own methods
 * (`instrumentDevice`, called by `acquireGpu`), so direct `queue.submit` calls count too;
 * readbacks and GPU waits are counted in gpu/buffers.ts.
 */

export interface GpuCounters {
  /** Compute dispatches encoded through gpu/dispatch.ts. */
  dispatches: number;
  /** Queue submits, however made. */
  submits: number;
  /** Readbacks to the host (`Readback.read`), and their bytes. */
  readbacks: number;
  readbackBytes: number;
  /** Host-to-device writes (`writeBuffer`). */
  writes: number;
  /**
   * Milliseconds the host was blocked on the GPU: from a submit until its work was seen done
   * (`submitAndWait`'s queue done, `Readback.read`'s buffer mapped). Work submitted without a
   * wait is waited for by the next wait.
   */
  gpuWaitMillis: number;
  /** Bytes of every buffer created through gpu/buffers.ts (storage, uniform, staging). */
  allocatedBytes: number;
}

const perDevice = new WeakMap<GPUDevice, GpuCounters>();

/** The live counters of `device` (created at zero on first use). */
export const gpuCounters = (device: GPUDevice): GpuCounters => {
  let c = perDevice.get(device);
  if (!c) {
    c = {
      dispatches: 0,
      submits: 0,
      readbacks: 0,
      readbackBytes: 0,
      writes: 0,
      gpuWaitMillis: 0,
      allocatedBytes: 0,
    };
    perDevice.set(device, c);
  }
  return c;
};

/** A copy of the counters, to subtract from a later one. */
export const snapshotCounters = (device: GPUDevice): GpuCounters => ({ ...gpuCounters(device) });

/** Field-wise `after - before`. */
export const diffCounters = (after: GpuCounters, before: GpuCounters): GpuCounters => ({
  dispatches: after.dispatches - before.dispatches,
  submits: after.submits - before.submits,
  readbacks: after.readbacks - before.readbacks,
  readbackBytes: after.readbackBytes - before.readbackBytes,
  writes: after.writes - before.writes,
  gpuWaitMillis: after.gpuWaitMillis - before.gpuWaitMillis,
  allocatedBytes: after.allocatedBytes - before.allocatedBytes,
});

/**
 * Counts on `device` from now on: every queue submit, and the dispatches encoded (through
 * gpu/dispatch.ts) into each command encoder it creates, whoever submits them. Wraps the two
 * methods in place; the wrappers add one call each.
 */
export const instrumentDevice = (device: GPUDevice): void => {
  const c = gpuCounters(device);
  const queue = device.queue;
  const submit = queue.submit;
  queue.submit = function (this: GPUQueue, buffers: Parameters<GPUQueue["submit"]>[0]) {
    c.submits++;
    return submit.call(this, buffers);
  };
  const createCommandEncoder = device.createCommandEncoder;
  device.createCommandEncoder = function (
    this: GPUDevice,
    descriptor?: GPUCommandEncoderDescriptor,
  ) {
    const encoder = createCommandEncoder.call(this, descriptor);
    encoderCounters.set(encoder, c);
    encoderDevices.set(encoder, device);
    return encoder;
  };
};

const encoderCounters = new WeakMap<GPUCommandEncoder, GpuCounters>();
const encoderDevices = new WeakMap<GPUCommandEncoder, GPUDevice>();

/** The device that created `encoder` (if it is instrumented). */
export const deviceOf = (encoder: GPUCommandEncoder): GPUDevice | undefined =>
  encoderDevices.get(encoder);

/** Notes `count` dispatches encoded into `encoder` (gpu/dispatch.ts). */
export const countEncoded = (encoder: GPUCommandEncoder, count: number): void => {
  const c = encoderCounters.get(encoder);
  if (c) c.dispatches += count;
};
