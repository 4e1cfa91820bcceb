/** Buffer creation, uploads, and readbacks that never outlive a lost device. */
import { Effect } from "effect";
import { collectIfDue } from "./collector.ts";
import { gpuCounters } from "./counters.ts";
import type { Gpu } from "./device.ts";
import { DeviceLostError, GpuOperationError } from "./errors.ts";

const STORAGE = 0x0080 | 0x0004 | 0x0008; // STORAGE | COPY_SRC | COPY_DST
const MAP_READ = 0x0001 | 0x0008; // MAP_READ | COPY_DST
const UNIFORM = 0x0040 | 0x0008; // UNIFORM | COPY_DST

/** Rounds up to WebGPU's 4-byte copy alignment. */
export const align4 = (bytes: number): number => Math.ceil(bytes / 4) * 4;

/** A storage buffer, optionally filled with `data`. */
export const createStorageBuffer = (
  gpu: Gpu,
  label: string,
  sizeOrData: number | ArrayBufferView,
): GPUBuffer => {
  const bytes = typeof sizeOrData === "number" ? sizeOrData : sizeOrData.byteLength;
  const buffer = gpu.device.createBuffer({
    label,
    size: align4(Math.max(bytes, 4)),
    usage: STORAGE,
  });
  gpuCounters(gpu.device).allocatedBytes += buffer.size;
  if (typeof sizeOrData !== "number") writeBuffer(gpu, buffer, sizeOrData);
  return buffer;
};

/** A small uniform buffer holding `u32` parameters, written once. */
export const createUniformBuffer = (gpu: Gpu, label: string, words: Uint32Array): GPUBuffer => {
  const buffer = gpu.device.createBuffer({
    label,
    size: align4(Math.max(words.byteLength, 16)),
    usage: UNIFORM,
  });
  gpuCounters(gpu.device).allocatedBytes += buffer.size;
  writeBuffer(gpu, buffer, words);
  return buffer;
};

/** Queues a host-to-device copy (ordered before later submits). */
export const writeBuffer = (
  gpu: Gpu,
  buffer: GPUBuffer,
  data: ArrayBufferView,
  offset = 0,
): void => {
  gpuCounters(gpu.device).writes++;
  gpu.device.queue.writeBuffer(
    buffer,
    offset,
    data.buffer as ArrayBuffer,
    data.byteOffset,
    align4(data.byteLength),
  );
};

/**
 * Waits for a GPU promise, failing with `DeviceLostError` instead of hanging on a lost device,
 * and with `GpuOperationError` when the device has raised an error (its results are suspect).
 */
export const awaitGpu = <A>(gpu: Gpu, operation: string, promise: () => Promise<A>) =>
  Effect.tryPromise({
    try: () => {
      // While the GPU runs what was just submitted: gpu/collector.ts says why.
      if (gpu.backend === "dawn") collectIfDue();
      return gpu.unlessLost(promise()).catch(
        // Some backends reject the operation just before they report the loss: name the cause.
        async (cause) => {
          const lost = await Promise.race([gpu.whenLost, sleep(LOSS_GRACE_MS)]);
          throw lost ?? cause;
        },
      );
    },
    catch: (cause) =>
      cause instanceof DeviceLostError
        ? cause
        : new GpuOperationError({ operation, message: `${operation} failed: ${String(cause)}` }),
  }).pipe(
    Effect.filterOrFail(
      () => gpu.uncapturedError() === undefined,
      () =>
        new GpuOperationError({
          operation,
          message: `the GPU device reported an error: ${gpu.uncapturedError()}`,
        }),
    ),
  );

const LOSS_GRACE_MS = 200;
const sleep = (ms: number) =>
  new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), ms));

/**
 * A reusable staging buffer for reading `byteLength` bytes back to the host. Collectives and the
 * sampler each own one, allocated once, so a step never allocates GPU memory.
 */
export class Readback {
  private readonly staging: GPUBuffer;
  constructor(private readonly gpu: Gpu, readonly byteLength: number, label = "readback") {
    this.staging = gpu.device.createBuffer({
      label,
      size: align4(Math.max(byteLength, 4)),
      usage: MAP_READ,
    });
    gpuCounters(gpu.device).allocatedBytes += this.staging.size;
  }

  /**
   * Copies `bytes` (default: all) of `source` into `target`, after the commands in `encoder`
   * (if given), in a single submit.
   */
  read(
    source: GPUBuffer,
    target: Uint8Array,
    options: { encoder?: GPUCommandEncoder; sourceOffset?: number } = {},
  ): Effect.Effect<Uint8Array, DeviceLostError | GpuOperationError> {
    const bytes = target.byteLength;
    const encoder = options.encoder ?? this.gpu.device.createCommandEncoder();
    const staging = this.staging;
    return Effect.gen(this, function* () {
      if (bytes > this.byteLength) {
        return yield* new GpuOperationError({
          operation: "readback",
          message: `readback of ${bytes} bytes exceeds staging size ${this.byteLength}`,
        });
      }
      encoder.copyBufferToBuffer(source, options.sourceOffset ?? 0, staging, 0, align4(bytes));
      const counters = gpuCounters(this.gpu.device);
      const submitted = performance.now();
      this.gpu.device.queue.submit([encoder.finish()]);
      yield* awaitGpu(this.gpu, "readback", () => staging.mapAsync(1, 0, align4(bytes)));
      counters.gpuWaitMillis += performance.now() - submitted;
      counters.readbacks++;
      counters.readbackBytes += bytes;
      target.set(new Uint8Array(staging.getMappedRange(0, align4(bytes)), 0, bytes));
      staging.unmap();
      return target;
    });
  }

  destroy(): void {
    this.staging.destroy();
  }
}

/** One-off read of a whole f32 buffer (tests, debugging; not for hot paths). */
export const readF32 = (gpu: Gpu, source: GPUBuffer, length: number) =>
  Effect.gen(function* () {
    const readback = new Readback(gpu, length * 4);
    const out = new Float32Array(length);
    yield* readback.read(source, new Uint8Array(out.buffer)).pipe(
      Effect.ensuring(Effect.sync(() => readback.destroy())),
    );
    return out;
  });

/** Submits the encoder's commands and waits until the queue has finished them. */
export const submitAndWait = (gpu: Gpu, encoder: GPUCommandEncoder) =>
  Effect.suspend(() => {
    const counters = gpuCounters(gpu.device);
    const submitted = performance.now();
    gpu.device.queue.submit([encoder.finish()]);
    return awaitGpu(gpu, "onSubmittedWorkDone", () => gpu.device.queue.onSubmittedWorkDone()).pipe(
      Effect.tap(() => Effect.sync(() => counters.gpuWaitMillis += performance.now() - submitted)),
    );
  });
