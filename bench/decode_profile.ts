/**
 * Where a decode step's GPU time goes, from the device's own timestamps (gpu/kernel_profile.ts):
 * the matmuls (whose time falls with the weight type's bytes and widening work) apart from
 * everything else (norms, RoPE, attention, embedding, top-k), which is the same for every
 * weight type and so bounds the ratio a lighter type can reach. Run after the timed steps: a
 * profiled step gives each dispatch a pass of its own, which costs time of its own.
 */
import { Effect } from "effect";
import type { Gpu } from "../gpu/device.ts";
import { KernelProfile } from "../gpu/kernel_profile.ts";
import type { LlamaModel } from "../models/llama.ts";

/** Per decoded token, on one rank. */
export interface DecodeProfile {
  /** GPU ms of the weight matmuls (QKV, o, gate | up, down, LM head). */
  readonly matmulMs: number;
  /** GPU ms of every other kernel. */
  readonly otherMs: number;
  /** Dispatches per token, and how many of them are matmuls. */
  readonly dispatches: number;
  readonly matmulDispatches: number;
  /** GPU ms per kernel kind (the label without its layer), largest first. */
  readonly kinds: readonly { readonly kind: string; readonly ms: number }[];
}

/** The weight matmuls' labels (models/llama_rank.ts): `layers.N.wqkv` …, and `output`. */
const MATMUL = /^(layers\.\d+\.(wqkv|wo|w13|w2)|output)$/;

/**
 * Profiles `steps` greedy decode steps of sequence 0 from `token` at `pos` on `gpu` (rank 0's
 * device); undefined where the adapter has no timestamp-query.
 */
export const profileDecode = (
  model: LlamaModel,
  gpu: Gpu,
  token: number,
  pos: number,
  steps: number,
) =>
  Effect.gen(function* () {
    if (!gpu.features.timestampQuery) return undefined;
    const kinds = new Map<string, number>();
    let matmulMs = 0, otherMs = 0, dispatches = 0, matmulDispatches = 0, profiled = 0;
    yield* Effect.acquireUseRelease(
      KernelProfile.start(gpu),
      (profile) =>
        Effect.gen(function* () {
          for (let i = 0; i < steps && pos < model.config.seqLen; i++) {
            token = (yield* model.forwardWithCandidates([token], pos++, 0, 1, 0)).indices[0];
            profiled++;
            for (const k of (yield* profile.collect()).kernels) {
              const isMatmul = MATMUL.test(k.label);
              if (isMatmul) matmulMs += k.millis;
              else otherMs += k.millis;
              dispatches += k.dispatches;
              if (isMatmul) matmulDispatches += k.dispatches;
              const kind = k.label.replace(/^layers\.\d+\./, "");
              kinds.set(kind, (kinds.get(kind) ?? 0) + k.millis);
            }
          }
        }),
      (profile) => Effect.sync(() => profile.stop()),
    );
    // The context may end before `steps`: average over the steps that ran.
    if (profiled === 0) return undefined;
    return {
      matmulMs: matmulMs / profiled,
      otherMs: otherMs / profiled,
      dispatches: dispatches / profiled,
      matmulDispatches: matmulDispatches / profiled,
      kinds: [...kinds].map(([kind, ms]) => ({ kind, ms: ms / profiled })).sort((a, b) =>
        b.ms - a.ms
      ),
    } satisfies DecodeProfile;
  });
