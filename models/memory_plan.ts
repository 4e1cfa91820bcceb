/**
 * The memory plan: before any rank loads, what each rank will hold on its device (weights in
 * the weight type, the KV cache for sequences × context, the step's activations) against its
 * budget, and the context served. Without a requested context the model's is served, cut to
 * what the budget and the KV buffers' binding limit allow; a requested one that does not fit is
 * refused, naming the smallest tp at which it would.
 */
import { Effect, Either } from "effect";
import { deviceMatrixBytes } from "../layers/blocks/weights.ts";
import type { WeightType } from "../kernels/matmul.ts";
import { MAX_TOPK } from "../kernels/topk.ts";
import type { LlamaConfig } from "./config.ts";
import { ConfigError } from "./errors.ts";
import { planLlama, type RankPlan } from "./plan.ts";

/** Element type of the KV cache. */
export type KvCacheDtype = "f32" | "f16";

/** What one rank will hold, in bytes. */
export interface RankMemory {
  /** The rank. */
  readonly rank: number;
  /** Its shards on the device, in the weight type. */
  readonly weights: number;
  /** K and V of every layer for sequences × context. */
  readonly kvCache: number;
  /** The step's buffers for the largest batch. */
  readonly activations: number;
  /** weights + kvCache + activations. */
  readonly total: number;
  /** What the rank may use (utilization × its memory); undefined when unknown. */
  readonly budget: number | undefined;
}

/** The plan for one tp. */
export interface MemoryPlan {
  /** Ranks the plan is for. */
  readonly tp: number;
  /** Positions each sequence may reach (prompt and generated tokens). */
  readonly context: number;
  /** The model's own context (seq_len, max_position_embeddings). */
  readonly modelContext: number;
  /** Why the context is less than the model's: asked for, the budget, or the binding limit. */
  readonly contextLimitedBy: "request" | "budget" | "binding" | undefined;
  /** KV-cache slots (sequences that may run at once). */
  readonly sequences: number;
  /** The KV cache's element type. */
  readonly kvCacheDtype: KvCacheDtype;
  /** Each rank's bytes, in rank order. */
  readonly ranks: readonly RankMemory[];
}

/** What {@link planMemory} plans for. */
export interface MemoryPlanOptions {
  /** Element type of the matmul weights on the devices. */
  readonly weights: WeightType;
  /** Element type of the KV cache. */
  readonly kvCacheDtype: KvCacheDtype;
  /** KV-cache slots. */
  readonly sequences: number;
  /** Most tokens one step carries (the activations' rows). */
  readonly maxBatchTokens: number;
  /** The context asked for (`--max-model-len`); default the model's, cut to what fits. */
  readonly maxModelLen?: number;
  /** Bytes each rank may use; undefined: unknown, only the binding limit is checked. */
  readonly budgetPerRank?: number;
  /** The devices' maxStorageBufferBindingSize: one layer's K (or V) cache is one binding. */
  readonly bindingLimit?: number;
}

const bytesPerElement = (dtype: KvCacheDtype) => (dtype === "f16" ? 2 : 4);

/** Device bytes of a rank's weights: its blocks' matrices in the weight type, vectors in f32. */
export const plannedWeightBytes = (
  config: LlamaConfig,
  plan: RankPlan,
  weights: WeightType,
): number => {
  const { dim, headDim: hd } = config;
  const qkvColumns = (plan.heads.count + 2 * plan.kvHeads.count) * hd;
  const vectors = 2 * dim + (config.attentionBias ? qkvColumns : 0) +
    (config.qkNorm ? 2 * hd : 0) + (config.sandwichNorms ? 2 * dim : 0);
  const layer = deviceMatrixBytes(weights, dim, qkvColumns) +
    deviceMatrixBytes(weights, plan.heads.count * hd, dim) +
    deviceMatrixBytes(weights, dim, 2 * plan.hidden.count) +
    deviceMatrixBytes(weights, plan.hidden.count, dim) + 4 * vectors;
  // A tied head multiplies by the embedding's matrix: the table is on the device once.
  const tables = (config.sharedClassifier ? 1 : 2) *
    deviceMatrixBytes(weights, dim, plan.vocab.count);
  return config.nLayers * layer + tables + 4 * dim;
};

/** The rank's largest weight matrix on the device, by name. */
const largestMatrix = (config: LlamaConfig, plan: RankPlan, weights: WeightType) => {
  const { dim, headDim: hd } = config;
  const matrices: [string, number][] = [
    ["embedding", deviceMatrixBytes(weights, dim, plan.vocab.count)],
    ["qkv", deviceMatrixBytes(weights, dim, (plan.heads.count + 2 * plan.kvHeads.count) * hd)],
    ["o", deviceMatrixBytes(weights, plan.heads.count * hd, dim)],
    ["gate | up", deviceMatrixBytes(weights, dim, 2 * plan.hidden.count)],
    ["down", deviceMatrixBytes(weights, plan.hidden.count, dim)],
  ];
  const [name, bytes] = matrices.reduce((a, b) => (b[1] > a[1] ? b : a));
  return { name, bytes };
};

/** Bytes of the step's buffers for `rows` tokens (models/llama_rank.ts's run state). */
export const plannedActivationBytes = (
  config: LlamaConfig,
  plan: RankPlan,
  rows: number,
  sequences: number,
): number => {
  const { dim, headDim: hd } = config;
  const last = Math.min(sequences, rows);
  const perRow = 3 * dim + (plan.heads.count + 2 * plan.kvHeads.count) * hd +
    plan.heads.count * hd + 2 * plan.hidden.count + (config.sandwichNorms ? dim : 0) + 1 + 2 +
    dim; // x, h, partial, qkv, att, gateUp, postNormed, ids, positions, partial readback
  const perLast = 2 * dim + plan.vocab.count + 2 * MAX_TOPK +
    Math.max(plan.vocab.count, 2 * MAX_TOPK);
  return 4 * (rows * perRow + last * perLast + hd / 2);
};

/** KV-cache bytes a rank holds per position of every sequence, over all layers. */
const kvBytesPerPosition = (config: LlamaConfig, plan: RankPlan, o: MemoryPlanOptions) =>
  config.nLayers * 2 * o.sequences * plan.kvHeads.count * config.headDim *
  bytesPerElement(o.kvCacheDtype);

/** The plan at `tp`, or why it cannot be made (a tp that does not divide, nothing fits). */
const planAt = (
  config: LlamaConfig,
  tp: number,
  options: MemoryPlanOptions,
): Effect.Effect<Either.Either<MemoryPlan, string>, ConfigError> =>
  Effect.gen(function* () {
    const plans = yield* planLlama(config, tp).pipe(
      Effect.mapError((e) => new ConfigError({ message: e.message })),
    );
    const modelContext = config.seqLen;
    const rows = Math.max(Math.min(options.maxBatchTokens, modelContext), options.sequences);
    // Each weight matrix is one binding until weights split across buffers.
    if (options.bindingLimit !== undefined) {
      for (const plan of plans) {
        const largest = largestMatrix(config, plan, options.weights);
        if (largest.bytes > options.bindingLimit) {
          return Either.left(
            `rank ${plan.rank}'s ${largest.name} shard takes ${mb(largest.bytes)}, over the ` +
              `adapter's maxStorageBufferBindingSize of ${mb(options.bindingLimit)}`,
          );
        }
      }
    }
    const fixed = plans.map((plan) => ({
      plan,
      weights: plannedWeightBytes(config, plan, options.weights),
      activations: plannedActivationBytes(config, plan, rows, options.sequences),
      perPosition: kvBytesPerPosition(config, plan, options),
    }));
    // The largest context every rank can hold, and what bounds it.
    let context = options.maxModelLen ?? modelContext;
    let limitedBy: MemoryPlan["contextLimitedBy"] = options.maxModelLen !== undefined &&
        options.maxModelLen < modelContext
      ? "request"
      : undefined;
    for (const rank of fixed) {
      const perLayerBuffer = rank.perPosition / (config.nLayers * 2);
      if (options.bindingLimit !== undefined) {
        const fits = Math.floor(options.bindingLimit / perLayerBuffer);
        if (fits < context) {
          if (options.maxModelLen !== undefined) {
            return Either.left(
              `a context of ${context} takes ${
                perLayerBuffer * context
              } bytes per layer's K cache, ` +
                `over the adapter's maxStorageBufferBindingSize ${options.bindingLimit}`,
            );
          }
          context = fits;
          limitedBy = "binding";
        }
      }
      if (options.budgetPerRank !== undefined) {
        const room = options.budgetPerRank - rank.weights - rank.activations;
        const fits = Math.floor(room / rank.perPosition);
        if (fits < context) {
          if (options.maxModelLen !== undefined || fits < 1) {
            return Either.left(
              `rank ${rank.plan.rank} needs ${
                mb(rank.weights + rank.activations + rank.perPosition * context)
              } for a context of ${context}, over its budget of ${mb(options.budgetPerRank)}`,
            );
          }
          context = fits;
          limitedBy = "budget";
        }
      }
    }
    if (context < 1) return Either.left("no context fits");
    return Either.right({
      tp,
      context,
      modelContext,
      contextLimitedBy: limitedBy,
      sequences: options.sequences,
      kvCacheDtype: options.kvCacheDtype,
      ranks: fixed.map((rank) => {
        const kvCache = rank.perPosition * context;
        return {
          rank: rank.plan.rank,
          weights: rank.weights,
          kvCache,
          activations: rank.activations,
          total: rank.weights + kvCache + rank.activations,
          budget: options.budgetPerRank,
        };
      }),
    });
  });

/** Megabytes, as the logs print them. */
export const mb = (bytes: number): string => `${(bytes / 1e6).toFixed(1)} MB`;

/**
 * The memory plan at `tp`, or a `ConfigError` that says why it does not fit and the smallest tp
 * at which it would (among those that divide the model, with the same budget per rank).
 */
export const planMemory = (
  config: LlamaConfig,
  tp: number,
  options: MemoryPlanOptions,
): Effect.Effect<MemoryPlan, ConfigError> =>
  Effect.gen(function* () {
    if (options.maxModelLen !== undefined) {
      if (!Number.isInteger(options.maxModelLen) || options.maxModelLen < 1) {
        return yield* new ConfigError({
          message: `max model length must be a positive integer, got ${options.maxModelLen}`,
        });
      }
      if (options.maxModelLen > config.seqLen) {
        return yield* new ConfigError({
          message: `max model length ${options.maxModelLen} is more than the model's context ` +
            `of ${config.seqLen}`,
        });
      }
    }
    const plan = yield* planAt(config, tp, options);
    if (Either.isRight(plan)) return plan.right;
    let larger: number | undefined;
    for (let t = tp + 1; t <= config.nHeads && larger === undefined; t++) {
      const attempt = yield* Effect.either(planAt(config, t, options));
      if (Either.isRight(attempt) && Either.isRight(attempt.right)) larger = t;
    }
    return yield* new ConfigError({
      message: `the memory plan does not fit at tp ${tp}: ${plan.left}; ${
        larger === undefined
          ? "no tp up to the head count fits: lower the context or the sequences"
          : `tp ${larger} would fit (or lower the context or the sequences)`
      }`,
    });
  });

/** One line per rank, for the log and /status. */
export const describeMemoryPlan = (plan: MemoryPlan): string[] =>
  plan.ranks.map((r) =>
    `rank ${r.rank}: weights ${mb(r.weights)}, KV cache ${mb(r.kvCache)} (${plan.sequences} × ` +
    `${plan.context} positions, ${plan.kvCacheDtype}), activations ${mb(r.activations)}, ` +
    `total ${mb(r.total)}${r.budget === undefined ? "" : ` of ${mb(r.budget)}`}`
  );
