/**
 * The two vocabulary-parallel ends of a decoder (vLLM's vocab_parallel_embedding.py): the
 * embedding table and the LM head are both split along the vocabulary, rank r owning the rows
 * of its `vocab` span.
 */
import { Effect } from "effect";
import type { Communicator } from "../../collectives/communicator.ts";
import type { Dispatch } from "../../gpu/dispatch.ts";
import { embedding } from "../../kernels/embedding.ts";
import { softcapInPlace } from "../../kernels/elementwise.ts";
import { topk } from "../../kernels/topk.ts";
import type { InvalidInput } from "../../actors/errors.ts";
import { allReduceInPlace, type ReduceArgs } from "./linear.ts";
import type { DeviceMatrix, DeviceWeights, MatrixShard, ShardReader, Span } from "./weights.ts";

/**
 * VocabParallelEmbedding: the [vocab, dim] table is split along vocab; rank r gathers the rows
 * of the ids in its span and zero rows for every other id, so an all-reduce of the ranks'
 * outputs is the embedding. The shard is kept as the LM head keeps its weight ([dim, vocab_r],
 * blocked, in the weight type), so a tied head multiplies by the same device matrix.
 */
export class VocabParallelEmbedding {
  private constructor(
    private readonly weights: DeviceWeights,
    readonly vocab: Span,
    readonly table: DeviceMatrix,
  ) {}

  /** Embedding width. */
  get dim(): number {
    return this.table.k;
  }

  /** Rank r's rows of the table as [dim, vocab_r], read as it is uploaded. */
  static read<E>(reader: ShardReader<E>, name: string, vocab: Span, dim: number) {
    return reader.outputSlice(name, vocab, dim);
  }

  /** Uploads a shard [dim, vocab_r]. */
  static upload<E>(
    weights: DeviceWeights,
    label: string,
    shard: MatrixShard<E>,
    vocab: Span,
  ): Effect.Effect<VocabParallelEmbedding, InvalidInput | E> {
    return Effect.map(
      weights.matrix(label, shard),
      (table) => new VocabParallelEmbedding(weights, vocab, table),
    );
  }

  /** out = this rank's share of the rows' embeddings, times `scale` (Gemma's √dim). */
  dispatch(
    { ids, output, rows, scale }: {
      readonly ids: GPUBuffer;
      readonly output: GPUBuffer;
      readonly rows: number;
      readonly scale?: number;
    },
  ): Dispatch {
    return embedding(this.weights.gpu, {
      table: this.table.buffer,
      type: this.table.type,
      ids,
      out: output,
      rows,
      dim: this.dim,
      vocabStart: this.vocab.start,
      vocabCount: this.vocab.count,
      scale,
      label: "embedding",
    });
  }

  /** The collective that ends the block: output = Σ_ranks share, in place. */
  allReduce(comm: Communicator, args: ReduceArgs) {
    return allReduceInPlace(this.weights.gpu, comm, this.dim, args);
  }
}

/** The head's buffers and what it computes for `rows` normed rows. */
export interface HeadArgs {
  readonly input: GPUBuffer;
  /** [rows, vocab_r]. */
  readonly logits: GPUBuffer;
  /** [rows, k] candidates (f32 value, u32 id). */
  readonly candidates: GPUBuffer;
  readonly rows: number;
  /** Candidates per row; 0 stops at the logits (the caller reads the slice back). */
  readonly k: number;
  /** Final logits become cap·tanh(logit / cap) (Gemma 2); absent: none. */
  readonly softcap?: number;
}

/**
 * ParallelLMHead: the [vocab, dim] classifier is split along vocab; rank r computes the logits
 * of its span and its own top-k of them, so the collective is a gather of k candidates per rank
 * (the supervisor merges them), never of the logits.
 */
export class ParallelLMHead {
  private constructor(
    private readonly weights: DeviceWeights,
    readonly vocab: Span,
    readonly weight: DeviceMatrix,
  ) {}

  /** Rank r's rows of the classifier as [dim, vocab_r] (a tied head reads the embedding's). */
  static read<E>(reader: ShardReader<E>, name: string, vocab: Span, dim: number) {
    return reader.outputSlice(name, vocab, dim);
  }

  /** Uploads a shard [dim, vocab_r]. */
  static upload<E>(
    weights: DeviceWeights,
    label: string,
    shard: MatrixShard<E>,
    vocab: Span,
  ): Effect.Effect<ParallelLMHead, InvalidInput | E> {
    return Effect.map(
      weights.matrix(label, shard),
      (weight) => new ParallelLMHead(weights, vocab, weight),
    );
  }

  /** A tied head: the embedding's own device matrix, not a second copy. */
  static tiedTo(weights: DeviceWeights, embedding: VocabParallelEmbedding): ParallelLMHead {
    return new ParallelLMHead(weights, embedding.vocab, embedding.table);
  }

  /** logits = x·W_r (soft-capped if asked), then the local top-k with global ids. */
  dispatches({ input, logits, candidates, rows, k, softcap }: HeadArgs): Dispatch[] {
    const { gpu } = this.weights;
    const n = this.vocab.count;
    return [
      this.weight.multiply({ input, output: logits, rows }),
      ...(softcap ? [softcapInPlace(gpu, { target: logits, length: rows * n, cap: softcap })] : []),
      ...(k > 0
        ? [topk(gpu, { logits, out: candidates, rows, n, k, indexOffset: this.vocab.start })]
        : []),
    ];
  }
}
