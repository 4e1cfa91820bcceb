/**
 * What every rank-side block loads with: ranged reads of the checkpoint's [out, in] tensors (a
 * rank reads only its own slice) and the device upload of the result, checked against the
 * adapter's binding limit and counted.
 */
import { Effect } from "effect";
import { createStorageBuffer, writeBuffer } from "../../gpu/buffers.ts";
import type { Gpu } from "../../gpu/device.ts";
import type { Dispatch } from "../../gpu/dispatch.ts";
import { matmul, type MatmulInput, WEIGHT_BLOCK, type WeightType } from "../../kernels/matmul.ts";
import { groupWords, QUANT_BLOCK, quantizeColumns } from "../../kernels/quantized.ts";
import { InvalidInput } from "../../actors/errors.ts";

/** Pending upload bytes after which a load waits for the queue to drain (staging stays small). */
const FLUSH_BYTES = 8 << 20;

/**
 * A full collection where V8 exposes one (every deno task starts with --expose-gc): a matrix's
 * reads leave blocks of garbage that V8 would otherwise keep for seconds, and the allocator
 * keeps the pages after. Once per matrix holds a load's host memory to about the weights.
 */
const collectGarbage = (globalThis as { gc?: () => void }).gc ?? (() => {});

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
  /**
   * Columns [start, start + count) as [rows, count]: of every row, or of `rows` only (a
   * row-parallel shard is read a device block of output rows at a time).
   */
  columns(
    name: string,
    start: number,
    count: number,
    rows?: Span,
  ): Effect.Effect<Float32Array, E>;
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
 * A [k, n] weight shard as the kernels store it ([in, out]), read a range of its columns at a
 * time: the device takes it one 128-column block after another, so no whole shard (or f32 copy
 * of a quantized tensor) is ever built on the host.
 */
export interface MatrixShard<E> {
  /** Input features (rows). */
  readonly k: number;
  /** Output features (columns). */
  readonly n: number;
  /** Columns [start, start + count) as [k, count], row-major. */
  read(start: number, count: number): Effect.Effect<Float32Array, E>;
}

/** A shard already on the host (a stand-alone layer's, sent over the wire), [k, n] row-major. */
export const matrixShardOf = (data: Float32Array, k: number): MatrixShard<never> => {
  const n = data.length / k;
  return {
    k,
    n,
    read: (start, count) =>
      Effect.sync(() => {
        if (start === 0 && count === n) return data;
        const out = new Float32Array(k * count);
        for (let r = 0; r < k; r++) {
          out.set(data.subarray(r * n + start, r * n + start + count), r * count);
        }
        return out;
      }),
  };
};

/** Shards with the same k side by side, [k, Σ n] (a merged projection: gate | up, q | k | v). */
export const joinColumns = <E>(parts: readonly MatrixShard<E>[]): MatrixShard<E> => {
  const k = parts[0].k;
  const firsts = parts.map((_, i) => parts.slice(0, i).reduce((n, p) => n + p.n, 0));
  return {
    k,
    n: parts.reduce((n, p) => n + p.n, 0),
    read: (start, count) =>
      Effect.map(
        Effect.forEach(
          parts.flatMap((part, i) => {
            const from = Math.max(start, firsts[i]),
              to = Math.min(start + count, firsts[i] + part.n);
            return to > from ? [part.read(from - firsts[i], to - from)] : [];
          }),
          (read) => read,
        ),
        (pieces) => concatColumns(k, pieces),
      ),
  };
};

/** The whole shard on the host, [k, n] (tests that compare what ranks read). */
export const readWhole = <E>(shard: MatrixShard<E>): Effect.Effect<Float32Array, E> =>
  shard.read(0, shard.n);

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

  /**
   * Output features `span` of an [out, in] weight (a column-parallel shard), as [in, count]:
   * a range of its columns is a range of the file's rows.
   */
  outputSlice(name: string, span: Span, inFeatures: number): MatrixShard<E> {
    return {
      k: inFeatures,
      n: span.count,
      read: (start, count) =>
        Effect.map(
          this.counted(this.source.rows(name, span.start + start, count)),
          (d) => transpose(d, count, inFeatures),
        ),
    };
  }

  /**
   * Input features `span` of an [out, in] weight (a row-parallel shard), as [count, out]: a
   * range of its columns is the span of a range of the file's rows.
   */
  inputSlice(name: string, span: Span, outFeatures: number): MatrixShard<E> {
    return {
      k: span.count,
      n: outFeatures,
      read: (start, count) =>
        Effect.map(
          this.counted(this.source.columns(name, span.start, span.count, { start, count })),
          (d) => transpose(d, count, span.count),
        ),
    };
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
 * Columns [k, width] of a weight (width ≤ 128) as one device block of `type` in `staging`
 * (the block's bytes, zero-padded past `width`); a whole f32 block is its input as it is.
 */
const stageBlock = (
  type: WeightType,
  data: Float32Array,
  k: number,
  width: number,
  staging: Uint8Array,
): ArrayBufferView => {
  if (type === "f32" && width === WEIGHT_BLOCK) return data;
  staging.fill(0);
  const { buffer, byteOffset } = staging;
  if (type === "q8_0" || type === "q4_0") {
    return quantizeColumns(
      type,
      data,
      k,
      width,
      new Uint32Array(buffer, byteOffset, staging.length / 4),
    );
  }
  const out = type === "f16"
    ? new Float16Array(buffer, byteOffset, k * WEIGHT_BLOCK)
    : new Float32Array(buffer, byteOffset, k * WEIGHT_BLOCK);
  for (let r = 0; r < k; r++) out.set(data.subarray(r * width, (r + 1) * width), r * WEIGHT_BLOCK);
  return staging;
};

/** The type a [k, ·] weight is stored in: Q8_0 and Q4_0 need k a multiple of 32, else f32. */
const storedType = (weightType: WeightType, k: number): WeightType =>
  (weightType === "q8_0" || weightType === "q4_0") && k % QUANT_BLOCK !== 0 ? "f32" : weightType;

/** Bytes of one 128-column block of a weight with k rows. */
const blockBytesOf = (type: WeightType, k: number): number =>
  type === "q8_0" || type === "q4_0"
    ? (k / QUANT_BLOCK) * groupWords(type) * 4
    : k * WEIGHT_BLOCK * (type === "f16" ? 2 : 4);

/** Device bytes of a [k, n] matmul weight uploaded in `weightType` (the memory plan's unit). */
export const deviceMatrixBytes = (weightType: WeightType, k: number, n: number): number =>
  Math.ceil(n / WEIGHT_BLOCK) * blockBytesOf(storedType(weightType, k), k);

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
    return Effect.tap(this.allocate(label, data.byteLength), (buffer) => {
      writeBuffer(this.gpu, buffer, data);
      return this.flushEvery(data.byteLength);
    });
  }

  /**
   * A matmul weight [k, n] in the kernels' blocked layout and the weight type, uploaded one
   * 128-column block at a time as it is read (a block is contiguous on the device; an f16
   * block is whole 4-byte words). Q8_0 and Q4_0 need k a multiple of 32: a weight whose k is
   * not stays f32 (exact).
   */
  matrix<E>(label: string, shard: MatrixShard<E>): Effect.Effect<DeviceMatrix, InvalidInput | E> {
    const { k, n } = shard;
    const type = storedType(this.weightType, k);
    const blockBytes = blockBytesOf(type, k);
    const blocks = Math.ceil(n / WEIGHT_BLOCK);
    const gpu = this.gpu;
    return Effect.gen(this, function* () {
      const buffer = yield* this.allocate(label, blocks * blockBytes);
      const staging = this.stagingOf(blockBytes);
      for (let b = 0; b < blocks; b++) {
        const start = b * WEIGHT_BLOCK, width = Math.min(WEIGHT_BLOCK, n - start);
        const data = yield* shard.read(start, width);
        writeBuffer(gpu, buffer, stageBlock(type, data, k, width, staging), b * blockBytes);
        yield* this.flushEvery(data.byteLength + blockBytes);
      }
      collectGarbage();
      return new DeviceMatrix(gpu, label, buffer, type, k, n);
    });
  }

  private staging = new ArrayBuffer(0);

  /**
   * One block's host staging, reused for every block of every matrix: the write copies it out,
   * and a fresh array per block is garbage the allocator keeps long after the load.
   */
  private stagingOf(bytes: number): Uint8Array {
    if (this.staging.byteLength < bytes) this.staging = new ArrayBuffer(bytes);
    return new Uint8Array(this.staging, 0, bytes);
  }

  /** Host bytes queued for upload since the queue last drained. */
  private queuedBytes = 0;

  /**
   * Lets the queue drain once `FLUSH_BYTES` of writes are pending: each write is staged in host
   * memory until the device has copied it, so a load that never waited would hold a staged copy
   * of every weight at once.
   */
  private flushEvery(bytes: number): Effect.Effect<void> {
    this.queuedBytes += bytes;
    if (this.queuedBytes < FLUSH_BYTES) return Effect.void;
    this.queuedBytes = 0;
    const queue = this.gpu.device.queue;
    return Effect.promise(() => queue.onSubmittedWorkDone());
  }

  /** An empty buffer of `bytes`, refused over the binding limit, counted. */
  private allocate(label: string, bytes: number): Effect.Effect<GPUBuffer, InvalidInput> {
    const limit = this.gpu.limits.maxStorageBufferBindingSize;
    if (bytes > limit) {
      return Effect.fail(
        new InvalidInput({
          message: `${label}: shard of ${bytes} bytes exceeds this adapter's ` +
            `maxStorageBufferBindingSize ${limit}; use a larger tp`,
        }),
      );
    }
    return Effect.sync(() => {
      this.bytes += bytes;
      const buffer = createStorageBuffer(this.gpu, label, bytes);
      this.buffers.push(buffer);
      return buffer;
    });
  }
}
