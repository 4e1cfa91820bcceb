/**
 * Per-device work counters for `deno task bench`: a few additions per submit, nothing that
 * touches numerics. Dispatches are counted per command encoder when encoded and credited to the
 * device when that encoder is submitted (through gpu/buffers.ts), since an encoder does not name
 * its device.
 */

export interface GpuCounters {
  /** Compute dispatches submitted. */
  dispatches: number;
  /** Queue submits (each `submitAndWait` or `Readback.read`). */
  submits: number;
  /** Readbacks to the host (`Readback.read`), and their bytes. */
  readbacks: number;
  readbackBytes: number;
  /** Host-to-device writes (`writeBuffer`). */
  writes: number;
  /** Milliseconds from a submit until the host saw its work done (queue done or buffer mapped). */
  gpuWaitMillis: number;
  /** Bytes of every buffer created through gpu/buffers.ts (storage, uniform, staging). */
  allocatedBytes: number;
}

const perDevice = new WeakMap<GPUDevice, GpuCounters>();
const pendingDispatches = new WeakMap<GPUCommandEncoder, number>();

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

/** Notes `count` dispatches encoded into `encoder` (gpu/dispatch.ts). */
export const countEncoded = (encoder: GPUCommandEncoder, count: number): void => {
  pendingDispatches.set(encoder, (pendingDispatches.get(encoder) ?? 0) + count);
};

/** Credits a submitted encoder's dispatches, and the submit, to `device`; returns its counters. */
export const countSubmit = (device: GPUDevice, encoder: GPUCommandEncoder): GpuCounters => {
  const c = gpuCounters(device);
  c.submits++;
  const pending = pendingDispatches.get(encoder);
  if (pending !== undefined) {
    c.dispatches += pending;
    pendingDispatches.delete(encoder);
  }
  return c;
};
