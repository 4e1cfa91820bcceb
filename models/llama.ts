/**
 * The supervisor's side of a Llama model: checks the plan, has every rank load its own slices,
 * and drives a forward pass layer by layer (Embed, L × DecoderLayer, LmHead), each a step whose
 * only communication is the all-reduces inside it.
 */
import { Effect, type Scope } from "effect";
import type { PlanError, StepFailure } from "../actors/errors.ts";
import type { ModelSource } from "../actors/protocol.ts";
import { expectReplies, Supervisor } from "../actors/supervisor.ts";
import type { SpawnError, Transport } from "../actors/transport.ts";
import { fromPayload } from "../collectives/protocol.ts";
import { concat, f32FromBytes, i32FromBytes } from "../collectives/tensor.ts";
import type { LlamaConfig } from "./config.ts";
import { ConfigError, type LoadError } from "./errors.ts";
import { planLlama } from "./plan.ts";
import { type CandidateList, mergeCandidates } from "./sampler.ts";
import { openModelSource } from "./source.ts";

export interface LoadLlamaOptions {
  readonly source: ModelSource;
  readonly tp: number;
  /** Most prompt tokens per prefill step; longer prompts are prefilled in chunks. */
  readonly maxBatchTokens?: number;
}

export type LoadLlamaError = LoadError | ConfigError | PlanError | StepFailure | SpawnError;

export class LlamaModel {
  private constructor(
    readonly config: LlamaConfig,
    readonly supervisor: Supervisor,
    readonly maxBatchTokens: number,
    readonly weightBytesPerRank: readonly number[],
  ) {}

  /**
   * Reads the config, rejects an impossible plan before any rank starts, spawns `tp` ranks and
   * has each load only its own slices.
   */
  static load(
    options: LoadLlamaOptions,
  ): Effect.Effect<LlamaModel, LoadLlamaError, Scope.Scope | Transport> {
    return Effect.gen(function* () {
      const { config } = yield* Effect.scoped(openModelSource(options.source));
      yield* planLlama(config, options.tp);
      const requested = options.maxBatchTokens ?? 64;
      if (!Number.isInteger(requested) || requested < 1) {
        return yield* new ConfigError({
          message: `maxBatchTokens must be a positive integer, got ${requested}`,
        });
      }
      const maxBatchTokens = Math.min(requested, config.seqLen);
      const supervisor = yield* Supervisor.make({ tp: options.tp });
      const loaded = yield* supervisor.step((_, step) => ({
        _tag: "LoadModel",
        step,
        source: options.source,
        maxBatchTokens,
      })).pipe(Effect.flatMap(expectReplies("ModelLoaded")));
      return new LlamaModel(config, supervisor, maxBatchTokens, loaded.map((r) => r.bytes));
    });
  }

  /** Runs `tokens` at positions startPos… through every layer (prefill in chunks, or decode). */
  forward(tokens: readonly number[], startPos: number): Effect.Effect<void, StepFailure> {
    const s = this.supervisor;
    return Effect.gen(this, function* () {
      for (let i = 0; i < tokens.length; i += this.maxBatchTokens) {
        const chunk = tokens.slice(i, i + this.maxBatchTokens);
        yield* s.step((_, step) => ({
          _tag: "Embed",
          step,
          tokens: chunk,
          startPos: startPos + i,
        }));
        for (let layer = 0; layer < this.config.nLayers; layer++) {
          yield* s.step((_, step) => ({ _tag: "DecoderLayer", step, layer }));
        }
      }
    });
  }

  /**
   * The top `k` next-token candidates after the last forward, merged over the ranks' vocabulary
   * slices; with temperature > 0 they carry the exact log-sum-exp for the sampler.
   */
  candidates(k: number, temperature: number): Effect.Effect<CandidateList, StepFailure> {
    return this.supervisor.step((_, step) => ({ _tag: "LmHead", step, topK: k, temperature })).pipe(
      Effect.flatMap(expectReplies("Candidates")),
      Effect.map((replies) =>
        mergeCandidates(
          replies.map((r) => ({
            values: f32FromBytes(r.values),
            indices: i32FromBytes(r.indices),
            logSumExp: r.logSumExp,
          })),
          // The global top k lies within the union of every rank's top k; beyond k the merged
          // list would skip tokens that ranks did not send.
          k,
        )
      ),
    );
  }

  /** The full logits of the last token, gathered from every rank's slice (checks, fallbacks). */
  logits(): Effect.Effect<Float32Array, StepFailure> {
    return this.supervisor.step((_, step) => ({ _tag: "LmHead", step, topK: 0, temperature: 0 }))
      .pipe(
        Effect.flatMap(expectReplies("Output")),
        Effect.map((replies) => concat(replies.map((r) => fromPayload(r.output)), 1).data),
      );
  }
}
