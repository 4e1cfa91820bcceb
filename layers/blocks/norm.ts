/** The replicated block: RMSNorm, whose weight every rank holds whole. */
import { Effect } from "effect";
import type { Dispatch } from "../../gpu/dispatch.ts";
import { rmsnorm } from "../../kernels/rmsnorm.ts";
import type { InvalidInput } from "../../actors/errors.ts";
import type { DeviceWeights, ShardReader } from "./weights.ts";

/**
 * RMSNorm, replicated (not split): out = x / rms(x) · w. A family that stores the weight as an
 * offset from one (Gemma's (1 + w)) reads it with `offset: 1`, so the kernel is the same.
 */
export class RMSNorm {
  private constructor(
    private readonly weights: DeviceWeights,
    readonly label: string,
    readonly dim: number,
    readonly eps: number,
    readonly weight: GPUBuffer,
  ) {}

  /** The whole weight [dim], plus `offset` (1 for Gemma's (1 + w)). */
  static read<E>(reader: ShardReader<E>, name: string, dim: number, offset = 0) {
    return Effect.map(
      reader.vector(name, dim),
      (w) => offset === 0 ? w : w.map((v) => v + offset),
    );
  }

  /** Uploads the weight. */
  static upload(
    weights: DeviceWeights,
    label: string,
    weight: Float32Array,
    eps: number,
  ): Effect.Effect<RMSNorm, InvalidInput> {
    return Effect.map(
      weights.vector(label, weight),
      (buffer) => new RMSNorm(weights, label, weight.length, eps, buffer),
    );
  }

  /** out = rmsnorm(input) · w; with `residual`, input += residual first (fused, in place). */
  dispatch(
    { input, residual, output, rows }: {
      readonly input: GPUBuffer;
      readonly residual?: GPUBuffer;
      readonly output: GPUBuffer;
      readonly rows: number;
    },
  ): Dispatch {
    return rmsnorm(this.weights.gpu, {
      input,
      residual,
      weight: this.weight,
      out: output,
      rows,
      dim: this.dim,
      eps: this.eps,
      label: this.label,
    });
  }
}
