/**
 * The rank-side linear blocks a decoder is built from (vLLM's layers/linear.py): each holds its
 * rank's shard on the device, in [in, out] blocked layout, beside the rule that cut it. The
 * step's buffers (run state) belong to the model; a block only encodes its dispatch over them.
 */
import { Effect } from "effect";
import { allReduceBuffer } from "../../collectives/device.ts";
import type { Communicator } from "../../collectives/communicator.ts";
import type { Readback } from "../../gpu/buffers.ts";
import type { Gpu } from "../../gpu/device.ts";
import type { Dispatch } from "../../gpu/dispatch.ts";
import type { MatmulInput } from "../../kernels/matmul.ts";
import type { Timeline } from "../../observe/timeline.ts";
import type { InvalidInput } from "../../actors/errors.ts";
import {
  concatColumns,
  type DeviceMatrix,
  type DeviceWeights,
  joinColumns,
  type MatrixShard,
  type ShardReader,
  type Span,
} from "./weights.ts";

/** One projection of a merged column-parallel weight: its tensor and this rank's outputs. */
export interface OutputPart {
  /** The checkpoint tensor, [out, in]. */
  readonly name: string;
  /** The output features this rank owns. */
  readonly span: Span;
}

/** A matmul y[rows, out_r] = x[rows, in]·W_r over the model's buffers. */
export interface LinearArgs {
  readonly input: GPUBuffer;
  readonly output: GPUBuffer;
  readonly rows: number;
}

/**
 * Column-parallel, merged (vLLM's MergedColumnParallelLinear): every part's [out, in] weight is
 * split along out, rank r keeping its `span` of each, and the parts sit side by side in one
 * [in, Σ span] matmul; the outputs stay local, so no collective follows.
 */
export class ColumnParallelLinear {
  private constructor(readonly weight: DeviceMatrix) {}

  /** This rank's output width: the parts' spans summed. */
  get outFeatures(): number {
    return this.weight.n;
  }

  /** Rank r's columns of every part, merged: [in, Σ span], read as it is uploaded. */
  static read<E>(
    reader: ShardReader<E>,
    parts: readonly OutputPart[],
    inFeatures: number,
  ): MatrixShard<E> {
    return joinColumns(parts.map((p) => reader.outputSlice(p.name, p.span, inFeatures)));
  }

  /** Uploads a merged shard [in, out_r]. */
  static upload<E>(
    weights: DeviceWeights,
    label: string,
    shard: MatrixShard<E>,
  ): Effect.Effect<ColumnParallelLinear, InvalidInput | E> {
    return Effect.map(weights.matrix(label, shard), (matrix) => new ColumnParallelLinear(matrix));
  }

  /** y = x·W_r for `rows` rows. */
  dispatch(args: LinearArgs): Dispatch {
    return this.weight.multiply(args);
  }
}

/** The q, k and v tensors of one attention block, and their biases where the family has them. */
export interface QkvNames {
  readonly q: string;
  readonly k: string;
  readonly v: string;
  /** q | k | v biases (Qwen2). */
  readonly bias?: { readonly q: string; readonly k: string; readonly v: string };
}

/** How attention is split: this rank's query heads and kv heads, and the head width. */
export interface HeadSplit {
  readonly heads: Span;
  /** Split when kv heads ≥ tp, else the one kv head this rank's query heads read (replicated). */
  readonly kvHeads: Span;
  readonly headDim: number;
}

/** Rank r's q | k | v columns (read as they are uploaded) and bias. */
export interface QkvShard<E> {
  readonly weight: MatrixShard<E>;
  readonly bias?: Float32Array;
}

/**
 * QKVParallelLinear: q is split by query heads and k, v by kv heads (a kv head replicated on
 * every rank whose query heads read it, when there are fewer kv heads than ranks); rank r's
 * q | k | v columns are one matmul, and the outputs stay local for the rank's own heads. The
 * bias, if any, is added by the kernel that next reads the row (RoPE and the cache write).
 */
export class QKVParallelLinear {
  private constructor(readonly projection: ColumnParallelLinear, readonly bias?: GPUBuffer) {}

  /** Output spans of q, k and v for `split`, in features (heads × head width). */
  static parts(names: Omit<QkvNames, "bias">, { heads, kvHeads, headDim }: HeadSplit) {
    const features = (s: Span): Span => ({ start: s.start * headDim, count: s.count * headDim });
    return [
      { name: names.q, span: features(heads) },
      { name: names.k, span: features(kvHeads) },
      { name: names.v, span: features(kvHeads) },
    ];
  }

  /** Rank r's merged q | k | v weight [in, (heads_r + 2·kvHeads_r)·hd] and bias. */
  static read<E>(
    reader: ShardReader<E>,
    names: QkvNames,
    split: HeadSplit,
    inFeatures: number,
  ): Effect.Effect<QkvShard<E>, E> {
    return Effect.gen(function* () {
      const weight = ColumnParallelLinear.read(
        reader,
        QKVParallelLinear.parts(names, split),
        inFeatures,
      );
      if (!names.bias) return { weight };
      const parts = QKVParallelLinear.parts(names.bias, split);
      const slices = yield* Effect.forEach(parts, (p) => reader.vectorSlice(p.name, p.span));
      return { weight, bias: concatColumns(1, slices) };
    });
  }

  /** Uploads a shard read by {@link QKVParallelLinear.read}. */
  static upload<E>(
    weights: DeviceWeights,
    label: string,
    shard: QkvShard<E>,
  ): Effect.Effect<QKVParallelLinear, InvalidInput | E> {
    return Effect.gen(function* () {
      const projection = yield* ColumnParallelLinear.upload(weights, label, shard.weight);
      const bias = shard.bias ? yield* weights.vector(`${label}.bias`, shard.bias) : undefined;
      return new QKVParallelLinear(projection, bias);
    });
  }

  /** Floats in one output row: q | k | v of this rank's heads. */
  get width(): number {
    return this.projection.outFeatures;
  }

  /** qkv = x·W_qkv for `rows` rows (bias not yet added). */
  dispatch(args: LinearArgs): Dispatch {
    return this.projection.dispatch(args);
  }
}

/** The all-reduce's buffers: the device readback and the host copy, allocated once. */
export interface ReduceArgs {
  /** Holds the dispatches that wrote `output`, submitted with the readback. */
  readonly encoder: GPUCommandEncoder;
  /** The partial sums, [rows, out]; the sum is written back in place. */
  readonly output: GPUBuffer;
  readonly rows: number;
  readonly readback: Readback;
  readonly host: Float32Array;
  readonly timeline: Timeline;
}

/** output[rows, width] = Σ_ranks output, in place, through the readback and the host copy. */
export const allReduceInPlace = (
  gpu: Gpu,
  comm: Communicator,
  width: number,
  args: ReduceArgs,
) =>
  allReduceBuffer(gpu, comm, {
    timeline: args.timeline,
    encoder: args.encoder,
    source: args.output,
    shape: [args.rows, width],
    readback: args.readback,
    host: args.host.subarray(0, args.rows * width),
    writeBackTo: args.output,
  });

/**
 * RowParallelLinear: the [out, in] weight is split along in, rank r keeping its `span` of input
 * features (the outputs of its heads or hidden units, already local), so each rank computes a
 * partial sum of the whole output and an all-reduce adds them.
 */
export class RowParallelLinear {
  private constructor(private readonly gpu: Gpu, readonly weight: DeviceMatrix) {}

  /** Output features: the whole output, of which each rank computes a partial sum. */
  get outFeatures(): number {
    return this.weight.n;
  }

  /** Rank r's rows [span.count, out] of the weight as the kernels store it, read as uploaded. */
  static read<E>(
    reader: ShardReader<E>,
    name: string,
    span: Span,
    outFeatures: number,
  ): MatrixShard<E> {
    return reader.inputSlice(name, span, outFeatures);
  }

  /** Uploads a shard [in_r, out]. */
  static upload<E>(
    weights: DeviceWeights,
    label: string,
    shard: MatrixShard<E>,
  ): Effect.Effect<RowParallelLinear, InvalidInput | E> {
    return Effect.map(
      weights.matrix(label, shard),
      (matrix) => new RowParallelLinear(weights.gpu, matrix),
    );
  }

  /**
   * partial = x_r·W_r; `activation` computes the input as it is read from gate | up rows (the
   * MLP's act(gate)·up), so no kernel runs between the merged gate/up and this one.
   */
  dispatch(args: LinearArgs & { readonly activation?: MatmulInput }): Dispatch {
    return this.weight.multiply(args);
  }

  /** The collective that ends the block: output = Σ_ranks partial, in place. */
  allReduce(comm: Communicator, args: ReduceArgs) {
    return allReduceInPlace(this.gpu, comm, this.outFeatures, args);
  }
}
