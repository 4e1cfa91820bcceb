/**
 * What every rank-side block loads with: ranged reads of the checkpoint's [out, in] tensors (a
 * rank reads only its own slice) and the device upload of the result, checked against the
 * adapter's binding limit and counted.
 */
import { Effect } from "effect";
import { createStorageBuffer } from "../../gpu/buffers.ts";
import type { Gpu } from "../../gpu/device.ts";
import type { Dispatch } from "../../gpu/dispatch.ts";
import { blockColumns, matmul, type MatmulInput, type WeightType } from "../../kernels/matmul.ts";
import { QUANT_BLOCK, quantizeColumns } from "../../kernels/quantized.ts";
import { InvalidInput } from "../../actors/errors.ts";

/** A contiguous range of heads, units or rows: `count` starting at `start`. */
export interface Span {
  /** First index. */
  readonly start: number;
  /** Number of indices. */
  readonly count: number;
}

/** Ranged reads of named [out, in] tensors, whatever the file format; E: why a read failed. */
export interface WeightSource<E> {
  /** Rows [start, start + count) as [count, cols]. */
  rows(name: string, start: number, count: number): Effect.Effect<Float32Array, E>;
  /** Columns [start, start + count) of every row as [rows, count]. */
  columns(name: string, start: number, count: number): Effect.Effect<Float32Array, E>;
  /** A whole vector (norm weights). */
  vector(name: string, length: number): Effect.Effect<Float32Array, E>;
}

/** [rows, cols] → [cols, rows]. */
export const transpose = (data: Float32Array, rows: number, cols: number): Float32Array => {
  const out = new Float32Array(data.length);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) out[c * rows + r] = data[r * cols + c];
  }
  return out;
};

/** [rows, a], [rows, b], … → [rows, a + b + …]: column blocks side by side (merged layers). */
export const concatColumns = (rows: number, parts: readonly Float32Array[]): Float32Array => {
  const widths = parts.map((p) => p.length / rows);
  const width = widths.reduce((a, b) => a + b, 0);
  const out = new Float32Array(rows * width);
  for (let r = 0; r < rows; r++) {
    let at = r * width;
    for (const [i, part] of parts.entries()) {
      out.set(part.subarray(r * widths[i], (r + 1) * widths[i]), at);
      at += widths[i];
    }
  }
  return out;
};

/**
 * A source's reads in the two shapes the parallel layers use, as [in, out] for the kernels,
 * each counted for load progress.
 */
export class ShardReader<E> {
  private bytesRead = 0;
  constructor(
    private readonly source: WeightSource<E>,
    private readonly onRead: (bytesRead: number) => void = () => {},
  ) {}

  private counted(read: Effect.Effect<Float32Array, E>) {
    return Effect.tap(read, (data) => this.onRead(this.bytesRead += data.byteLength));
  }

  /** Output features `span` of an [out, in] weight (a column-parallel shard), as [in, count]. */
  outputSlice(name: string, span: Span, inFeatures: number): Effect.Effect<Float32Array, E> {
    return Effect.map(
      this.counted(this.source.rows(name, span.start, span.count)),
      (d) => transpose(d, span.count, inFeatures),
    );
  }

  /** Input features `span` of an [out, in] weight (a row-parallel shard), as [count, out]. */
  inputSlice(name: string, span: Span, outFeatures: number): Effect.Effect<Float32Array, E> {
    return Effect.map(
      this.counted(this.source.columns(name, span.start, span.count)),
      (d) => transpose(d, outFeatures, span.count),
    );
  }

  /** Rows `span` of a table, as stored (an embedding shard: gathered, not multiplied). */
  tableRows(name: string, span: Span): Effect.Effect<Float32Array, E> {
    return this.counted(this.source.rows(name, span.start, span.count));
  }

  /** `span` of a vector (a bias, split as its projection's outputs). */
  vectorSlice(name: string, span: Span): Effect.Effect<Float32Array, E> {
    return this.counted(this.source.columns(name, span.start, span.count));
  }

  /** A whole vector (a norm weight, replicated). */
  vector(name: string, length: number): Effect.Effect<Float32Array, E> {
    return this.counted(this.source.vector(name, length));
  }
}

/** A matmul weight [k, n] on the device, in the element type it is stored in. */
export class DeviceMatrix {
  constructor(
    private readonly gpu: Gpu,
    readonly label: string,
    readonly buffer: GPUBuffer,
    readonly type: WeightType,
    /** Input features (rows of the [in, out] weight). */
    readonly k: number,
    /** Output features. */
    readonly n: number,
  ) {}

  /**
   * y[rows, n] = x[rows, k]·W with the blocked kernel; `activation` reads each input row as
   * act(gate)·up from gate | up rows (kernels/matmul.ts `MatmulInput`).
   */
  multiply(
    { input, output, rows, activation = "plain" }: {
      readonly input: GPUBuffer;
      readonly output: GPUBuffer;
      readonly rows: number;
      readonly activation?: MatmulInput;
    },
  ): Dispatch {
    return matmul(this.gpu, {
      a: input,
      b: this.buffer,
      out: output,
      m: rows,
      k: this.k,
      n: this.n,
      weights: this.type,
      layout: "blocked",
      input: activation,
      label: this.label,
    });
  }
}

/**
 * The device side of loading: uploads each shard once, refusing one over the adapter's
 * `maxStorageBufferBindingSize`, and counts the bytes the rank's weights take.
 */
export class DeviceWeights {
  /** Bytes uploaded so far. */
  bytes = 0;
  private readonly buffers: GPUBuffer[] = [];
  constructor(readonly gpu: Gpu, readonly weightType: WeightType) {}

  /** Frees every buffer uploaded. */
  release(): void {
    for (const buffer of this.buffers.splice(0)) buffer.destroy();
    this.bytes = 0;
  }

  /** A buffer holding `data` as it is (vectors, tables). */
  vector(label: string, data: Float32Array): Effect.Effect<GPUBuffer, InvalidInput> {
    const limit = this.gpu.limits.maxStorageBufferBindingSize;
    if (data.byteLength > limit) {
      return Effect.fail(
        new InvalidInput({
          message: `${label}: shard of ${data.byteLength} bytes exceeds this adapter's ` +
            `maxStorageBufferBindingSize ${limit}; use a larger tp`,
        }),
      );
    }
    return Effect.sync(() => {
      this.bytes += data.byteLength;
      const buffer = createStorageBuffer(this.gpu, label, data);
      this.buffers.push(buffer);
      return buffer;
    });
  }

  /**
   * A matmul weight [k, n] in the kernels' blocked layout and the weight type (a block is 128
   * columns, so an f16 weight is whole 4-byte words), and the type it was stored as: Q8_0 and
   * Q4_0 need k a multiple of 32, and a weight whose k is not stays f32 (exact).
   */
  matrix(label: string, data: Float32Array, k: number): Effect.Effect<DeviceMatrix, InvalidInput> {
    const n = data.length / k;
    const quantized = this.weightType === "q8_0" || this.weightType === "q4_0";
    const type = quantized && k % QUANT_BLOCK !== 0 ? "f32" : this.weightType;
    const stored = type === "q8_0" || type === "q4_0"
      ? quantizeColumns(type, data, k, n)
      : type === "f16"
      ? Float16Array.from(blockColumns(data, k, n))
      : blockColumns(data, k, n);
    return Effect.map(
      this.vector(label, stored as unknown as Float32Array),
      (buffer) => new DeviceMatrix(this.gpu, label, buffer, type, k, n),
    );
  }
}
