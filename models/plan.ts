/**
 * The tensor-parallel plan for a Llama model (DESIGN.md §1): which heads, kv heads, hidden units
 * and vocabulary rows each rank owns. Rejected up front, naming the numbers, if it cannot work.
 */
import { Effect } from "effect";
import { PlanError } from "../actors/errors.ts";
import { partRange } from "../collectives/tensor.ts";
import type { Span } from "../layers/blocks/weights.ts";
import type { LlamaConfig } from "./config.ts";

export type { Span } from "../layers/blocks/weights.ts";

/** What one rank owns of a Llama model. */
export interface RankPlan {
  /** The rank's index. */
  readonly rank: number;
  /** Number of ranks. */
  readonly tp: number;
  /** Query heads, column-parallel by heads. */
  readonly heads: Span;
  /** KV heads: split when nKvHeads ≥ tp, else one replicated head (vLLM's rule). */
  readonly kvHeads: Span;
  /** Feed-forward units: gate/up columns and down rows (uneven splits allowed). */
  readonly hidden: Span;
  /** Vocabulary rows of the embedding and the LM head (uneven splits allowed). */
  readonly vocab: Span;
}

const span = (total: number, rank: number, tp: number): Span => {
  const { start, size } = partRange(total, rank, tp);
  return { start, count: size };
};

/** Every rank's plan, or a `PlanError` naming the numbers that do not divide. */
export const planLlama = (config: LlamaConfig, tp: number): Effect.Effect<RankPlan[], PlanError> =>
  Effect.gen(function* () {
    const { nHeads, nKvHeads, hiddenDim, vocabSize } = config;
    const fail = (message: string) => Effect.fail(new PlanError({ message }));
    if (!Number.isInteger(tp) || tp < 1) {
      return yield* fail(`tp must be a positive integer, got ${tp}`);
    }
    if (nHeads % tp !== 0) {
      return yield* fail(`tp = ${tp} does not divide n_heads = ${nHeads}`);
    }
    if (nKvHeads >= tp ? nKvHeads % tp !== 0 : tp % nKvHeads !== 0) {
      return yield* fail(
        nKvHeads >= tp
          ? `tp = ${tp} does not divide n_kv_heads = ${nKvHeads}`
          : `n_kv_heads = ${nKvHeads} < tp = ${tp} needs replication, but ${nKvHeads} does not divide ${tp}`,
      );
    }
    if (hiddenDim < tp || vocabSize < tp) {
      return yield* fail(
        `hidden_dim = ${hiddenDim} and vocab_size = ${vocabSize} must be ≥ tp = ${tp}`,
      );
    }
    return Array.from({ length: tp }, (_, rank) => ({
      rank,
      tp,
      heads: span(nHeads, rank, tp),
      kvHeads: nKvHeads >= tp
        ? span(nKvHeads, rank, tp)
        : { start: Math.floor(rank / (tp / nKvHeads)), count: 1 },
      hidden: span(hiddenDim, rank, tp),
      vocab: span(vocabSize, rank, tp),
    }));
  });
