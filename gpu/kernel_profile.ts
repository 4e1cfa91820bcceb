/**
 * Per-kernel GPU time from the device's own timestamps (the `timestamp-query` feature), for
 * `deno task bench`: while a profile runs on a device, `encodeDispatches` gives every dispatch a
 * compute pass of its own whose start and end the GPU stamps into the profile's query set, and
 * `collect` sums the stamped time per dispatch label. A profiled step pays one pass per dispatch,
 * so profiled figures explain a step's time; they are not the step's speed.
 */
import { Effect } from "effect";
import type { Gpu } from "./device.ts";
import { Readback } from "./buffers.ts";
import { GpuOperationError } from "./errors.ts";

/** GPU time of the dispatches that share one label. */
export interface KernelTime {
  /** The dispatch label, e.g. `layers.3.wqkv`. */
  readonly label: string;
  /** Dispatches stamped under it. */
  readonly dispatches: number;
  /** Their summed GPU time. */
  readonly millis: number;
}

const active = new WeakMap<GPUDevice, KernelProfile>();

/** The profile running on `device`, if any (gpu/dispatch.ts asks before each pass). */
export const activeProfile = (device: GPUDevice | undefined): KernelProfile | undefined =>
  device ? active.get(device) : undefined;

/**
 * Dispatches stamped per collect: WebGPU's largest query set is 4096 timestamps, two per
 * dispatch; a decode step of a 32-layer model stamps ~300.
 */
const DEFAULT_CAPACITY = 2048;

/** Stamps each dispatch's GPU time on one device until `stop`. */
export class KernelProfile {
  private labels: string[] = [];
  private dropped = 0;

  private constructor(
    private readonly gpu: Gpu,
    private readonly querySet: GPUQuerySet,
    private readonly resolved: GPUBuffer,
    private readonly readback: Readback,
    private readonly capacity: number,
  ) {}

  /** Starts profiling `gpu`; fails where its adapter has no `timestamp-query`. */
  static start(
    gpu: Gpu,
    capacity = DEFAULT_CAPACITY,
  ): Effect.Effect<KernelProfile, GpuOperationError> {
    return Effect.suspend(() => {
      if (!gpu.features.timestampQuery) {
        return Effect.fail(
          new GpuOperationError({
            operation: "kernel profile",
            message: `${gpu.adapterName} has no timestamp-query feature`,
          }),
        );
      }
      if (active.has(gpu.device)) {
        return Effect.fail(
          new GpuOperationError({
            operation: "kernel profile",
            message: "a profile is already running on this device",
          }),
        );
      }
      const queries = 2 * capacity;
      const profile = new KernelProfile(
        gpu,
        gpu.device.createQuerySet({ type: "timestamp", count: queries }),
        gpu.device.createBuffer({
          label: "profile.resolved",
          size: queries * 8,
          usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
        }),
        new Readback(gpu, queries * 8, "profile.readback"),
        capacity,
      );
      active.set(gpu.device, profile);
      return Effect.succeed(profile);
    });
  }

  /** The pass descriptor that stamps the next dispatch, or undefined once the set is full. */
  passFor(label: string): GPUComputePassDescriptor | undefined {
    const i = this.labels.length;
    if (i >= this.capacity) {
      this.dropped++;
      return undefined;
    }
    this.labels.push(label);
    return {
      label,
      timestampWrites: {
        querySet: this.querySet,
        beginningOfPassWriteIndex: 2 * i,
        endOfPassWriteIndex: 2 * i + 1,
      },
    };
  }

  /**
   * GPU time per label of everything stamped since the last collect (submit that work first),
   * in order of first appearance; the profile starts over.
   */
  collect(): Effect.Effect<
    { readonly kernels: readonly KernelTime[]; readonly dropped: number },
    GpuOperationError | import("./errors.ts").DeviceLostError
  > {
    return Effect.gen(this, function* () {
      const labels = this.labels, dropped = this.dropped;
      this.labels = [];
      this.dropped = 0;
      if (labels.length === 0) return { kernels: [], dropped };
      const encoder = this.gpu.device.createCommandEncoder();
      encoder.resolveQuerySet(this.querySet, 0, 2 * labels.length, this.resolved, 0);
      const stamps = new BigUint64Array(2 * labels.length);
      yield* this.readback.read(this.resolved, new Uint8Array(stamps.buffer), { encoder });
      const byLabel = new Map<string, { dispatches: number; nanos: number }>();
      for (const [i, label] of labels.entries()) {
        const entry = byLabel.get(label) ?? { dispatches: 0, nanos: 0 };
        // A pass whose end is stamped before its start (some drivers' clocks) counts as zero.
        entry.nanos += Math.max(0, Number(stamps[2 * i + 1] - stamps[2 * i]));
        entry.dispatches++;
        byLabel.set(label, entry);
      }
      const kernels = [...byLabel].map(([label, e]) => ({
        label,
        dispatches: e.dispatches,
        millis: e.nanos / 1e6,
      }));
      return { kernels, dropped };
    });
  }

  /** Stops stamping and frees the query set. */
  stop(): void {
    if (active.get(this.gpu.device) === this) active.delete(this.gpu.device);
    this.querySet.destroy();
    this.resolved.destroy();
    this.readback.destroy();
  }
}
