/**
 * The supervisor's side of a Llama model: checks the plan, has every rank load its own slices,
 * and drives a forward pass layer by layer (Embed, L × DecoderLayer, LmHead), each a step whose
 * only communication is the all-reduces inside it.
 */
import { Effect, type Scope } from "effect";
import type { PlanError, StepFailure } from "../actors/errors.ts";
import type { ModelSource, RankReply } from "../actors/protocol.ts";
import { expectReplies, type ReplyObserver, Supervisor } from "../actors/supervisor.ts";
import type { SpawnError, Transport } from "../actors/transport.ts";
import { fromPayload } from "../collectives/protocol.ts";
import { concat, f32FromBytes, i32FromBytes } from "../collectives/tensor.ts";
import type { WeightType } from "../kernels/matmul.ts";
import type { LlamaConfig } from "./config.ts";
import { ConfigError, type LoadError } from "./errors.ts";
import { planLlama } from "./plan.ts";
import {
  describeMemoryPlan,
  type KvCacheDtype,
  type MemoryPlan,
  planMemory,
} from "./memory_plan.ts";
import { type CandidateList, mergeCandidates } from "./sampler.ts";
import { openModelSource } from "./source.ts";

/** Ranks with the same device line share an entry: `ranks 0,1: llvmpipe (dawn): …`. */
const describeRankDevices = (lines: readonly string[]): string => {
  const byLine = new Map<string, number[]>();
  lines.forEach((line, rank) => byLine.set(line, [...(byLine.get(line) ?? []), rank]));
  return [...byLine].map(([line, ranks]) =>
    `${ranks.length > 1 ? "ranks" : "rank"} ${ranks.join(",")}: ${line}`
  ).join("; ");
};

/**
 * What each rank may use: utilization × the memory given, else for CPU renderers (lavapipe) the
 * host's available memory shared by the ranks; undefined when nothing says.
 */
const memoryBudget = (
  devices: ReadonlyArray<{ readonly cpuRenderer: boolean }>,
  gpuMemoryBytes: number | undefined,
  utilization: number,
): Effect.Effect<number | undefined> =>
  Effect.sync(() => {
    if (gpuMemoryBytes !== undefined) return Math.floor(utilization * gpuMemoryBytes);
    if (!devices.every((d) => d.cpuRenderer)) return undefined;
    const available = hostAvailableBytes();
    return available === undefined
      ? undefined
      : Math.floor(utilization * available / devices.length);
  });

/** The host's available memory (/proc/meminfo's MemAvailable); undefined where unreadable. */
const hostAvailableBytes = (): number | undefined => {
  try {
    const match = /^MemAvailable:\s+(\d+) kB$/m.exec(Deno.readTextFileSync("/proc/meminfo"));
    return match ? Number(match[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
};

/** Options of {@link LlamaModel.load}. */
export interface LoadLlamaOptions {
  /** Where the weights come from (see `modelSourceOf`). */
  readonly source: ModelSource;
  /** Number of ranks (tensor-parallel size). */
  readonly tp: number;
  /** Most prompt tokens per prefill step; longer prompts are prefilled in chunks. */
  readonly maxBatchTokens?: number;
  /** Sequences that may run at once (batched decode), each with a KV-cache slot. Default 1. */
  readonly maxSequences?: number;
  /** Sees every rank reply and its latency (metrics). */
  readonly onReply?: ReplyObserver;
  /**
   * Element type of the matmul weights on the devices: "f32" (default, exact), "f16" (half
   * the bytes per decode step; packed halves widened in the kernel, so any adapter), "q8_0" or
   * "q4_0" (llama.cpp's quantizers along each weight's input dimension at load, dequantized in
   * the kernel's registers; a weight whose input width is not a multiple of 32 stays f32).
   */
  readonly weights?: WeightType;
  /**
   * Positions each sequence may reach (vLLM's max_model_len); default the model's context, cut
   * to what the memory plan allows (models/memory_plan.ts). A value that does not fit fails.
   */
  readonly maxModelLen?: number;
  /** KV-cache element type; "auto" (default): f16 where every rank's adapter has shader-f16. */
  readonly kvCacheDtype?: KvCacheDtype | "auto";
  /**
   * Each rank's device memory in bytes, where the adapter does not say (WebGPU does not
   * report it); default: for CPU renderers the host's available memory shared by the ranks,
   * otherwise unknown (then only the binding limit bounds the plan).
   */
  readonly gpuMemoryBytes?: number;
  /** Share of the memory the plan may use (vLLM's gpu_memory_utilization). Default 0.9. */
  readonly gpuMemoryUtilization?: number;
}

/** A token of a step and where it goes: its sequence's KV-cache slot and its position. */
export interface StepRow {
  /** Token id to feed. */
  readonly token: number;
  /** KV-cache slot of its sequence, below `maxSequences`. */
  readonly sequence: number;
  /** Its position in the sequence. */
  readonly position: number;
}

/** Why {@link LlamaModel.load} failed. */
export type LoadLlamaError = LoadError | ConfigError | PlanError | StepFailure | SpawnError;

/** An LM head over some rows of a step: the rows, how many candidates, at which temperature. */
export interface HeadRequest {
  /** Rows of the step whose next-token candidates are wanted. */
  readonly rows: readonly number[];
  /** Candidates per rank and row (1 for greedy). */
  readonly k: number;
  /** Sampling temperature; above 0 the candidates carry each row's log-sum-exp. */
  readonly temperature: number;
}

const headCommand = (step: number, head: HeadRequest) => ({
  _tag: "LmHead" as const,
  step,
  rows: head.rows,
  topK: head.k,
  temperature: head.temperature,
});

/** Every rank's candidates of a head, merged per row over the ranks' vocabulary slices. */
const mergeHeadReplies = (
  replies: readonly RankReply[],
  head: HeadRequest,
): Effect.Effect<readonly CandidateList[], StepFailure> =>
  expectReplies("Candidates")(replies).pipe(
    Effect.map((ranks) =>
      head.rows.map((_, row) =>
        mergeCandidates(
          ranks.map((r) => {
            const values = f32FromBytes(r.values);
            const indices = i32FromBytes(r.indices);
            const perRow = values.length / r.rows;
            return {
              values: values.subarray(row * perRow, (row + 1) * perRow),
              indices: indices.subarray(row * perRow, (row + 1) * perRow),
              logSumExp: r.logSumExp?.[row],
            };
          }),
          // The global top k lies within the union of every rank's top k; beyond k the
          // merged list would skip tokens that ranks did not send.
          head.k,
        )
      )
    ),
  );

/**
 * A Llama-family model sharded over a group of ranks (see {@link LlamaModel.load}): runs
 * batched steps and returns the last row's top candidates or logits.
 */
export class LlamaModel {
  /** Rows of the last step run, so `candidates` can name its last row. */
  private lastStepRows = 0;

  private constructor(
    readonly config: LlamaConfig,
    readonly supervisor: Supervisor,
    readonly maxBatchTokens: number,
    readonly maxSequences: number,
    readonly weightBytesPerRank: readonly number[],
    /** Bytes of KV cache on each rank's device, in rank order. */
    readonly kvCacheBytesPerRank: readonly number[],
    /** What the plan put on each rank, the context and the KV type, as logged before loading. */
    readonly memoryPlan: MemoryPlan,
  ) {}

  /**
   * Reads the config, rejects an impossible plan before any rank starts, spawns `tp` ranks and
   * has each load only its own slices.
   *
   * @example Load stories260K over two Workers and print its config
   * ```ts
   * import { Effect } from "effect";
   * import { LlamaModel, WorkersTransport } from "jsr:@tessera/tp";
   *
   * const program = Effect.gen(function* () {
   *   const model = yield* LlamaModel.load({
   *     source: { format: "llama2c", path: "stories260K.bin" },
   *     tp: 2,
   *   });
   *   console.log(model.config.nLayers, model.weightBytesPerRank);
   * });
   * await Effect.runPromise(Effect.scoped(program).pipe(Effect.provide(WorkersTransport())));
   * ```
   */
  static load(
    options: LoadLlamaOptions,
  ): Effect.Effect<LlamaModel, LoadLlamaError, Scope.Scope | Transport> {
    return Effect.gen(function* () {
      const { config, defaultWeights } = yield* Effect.scoped(openModelSource(options.source));
      const weights = options.weights ?? defaultWeights ?? "f32";
      yield* planLlama(config, options.tp);
      const requested = options.maxBatchTokens ?? 64;
      if (!Number.isInteger(requested) || requested < 1) {
        return yield* new ConfigError({
          message: `maxBatchTokens must be a positive integer, got ${requested}`,
        });
      }
      const maxSequences = options.maxSequences ?? 1;
      if (!Number.isInteger(maxSequences) || maxSequences < 1) {
        return yield* new ConfigError({
          message: `maxSequences must be a positive integer, got ${maxSequences}`,
        });
      }
      // A context past the model's is refused before any rank starts (the plan says it too).
      const { maxModelLen } = options;
      if (maxModelLen !== undefined && !(Number.isInteger(maxModelLen) && maxModelLen >= 1)) {
        return yield* new ConfigError({
          message: `maxModelLen must be a positive integer, got ${maxModelLen}`,
        });
      }
      if (maxModelLen !== undefined && maxModelLen > config.seqLen) {
        return yield* new ConfigError({
          message:
            `max model length ${maxModelLen} is more than the model's context of ${config.seqLen}`,
        });
      }
      // A batched decode step carries one row per sequence; no step is longer than the context.
      const maxBatchTokens = Math.max(
        Math.min(requested, maxModelLen ?? config.seqLen),
        maxSequences,
      );
      const utilization = options.gpuMemoryUtilization ?? 0.9;
      if (!(utilization > 0 && utilization <= 1)) {
        return yield* new ConfigError({
          message: `gpuMemoryUtilization must be in (0, 1], got ${utilization}`,
        });
      }
      const supervisor = yield* Supervisor.make({ tp: options.tp, onReply: options.onReply });
      const devices = yield* supervisor.ranks();
      const kvCacheDtype = options.kvCacheDtype === "f32" || options.kvCacheDtype === "f16"
        ? options.kvCacheDtype
        : devices.every((d) => d.shaderF16)
        ? "f16"
        : "f32";
      if (kvCacheDtype === "f16" && !devices.every((d) => d.shaderF16)) {
        return yield* new ConfigError({
          message: "an f16 KV cache needs shader-f16 on every rank's adapter",
        });
      }
      const memory = yield* planMemory(config, options.tp, {
        weights,
        kvCacheDtype,
        sequences: maxSequences,
        maxBatchTokens,
        maxModelLen: options.maxModelLen,
        budgetPerRank: yield* memoryBudget(devices, options.gpuMemoryBytes, utilization),
        bindingLimit: Math.min(...devices.map((d) => d.maxBindingBytes)),
      });
      yield* Effect.logInfo("memory plan").pipe(Effect.annotateLogs({
        context: memory.context,
        ...(memory.contextLimitedBy === undefined
          ? {}
          : { modelContext: memory.modelContext, limitedBy: memory.contextLimitedBy }),
        ranks: describeMemoryPlan(memory).join("; "),
      }));
      const started = performance.now();
      const loaded = yield* supervisor.step((_, step) => ({
        _tag: "LoadModel",
        step,
        source: options.source,
        maxBatchTokens,
        maxSequences,
        weights,
        contextLength: memory.context,
        kvCacheDtype,
      })).pipe(Effect.flatMap(expectReplies("ModelLoaded")));
      // One line for the group, logged once every rank is done (a rank's own line is debug):
      // lines from ranks in other isolates would land in the middle of the progress bar.
      yield* Effect.logInfo("model loaded").pipe(Effect.annotateLogs({
        tp: options.tp,
        weightMB: +(loaded.reduce((sum, r) => sum + r.bytes, 0) / 1e6).toFixed(1),
        kvCacheMB: +(loaded.reduce((sum, r) => sum + r.kvCacheBytes, 0) / 1e6).toFixed(1),
        weights,
        seconds: +((performance.now() - started) / 1000).toFixed(2),
        // One entry per distinct device line: "rank 0-1: llvmpipe (dawn): +shader-f16 …".
        devices: describeRankDevices(loaded.map((r) => r.device)),
      }));
      return new LlamaModel(
        { ...config, seqLen: memory.context },
        supervisor,
        maxBatchTokens,
        maxSequences,
        loaded.map((r) => r.bytes),
        loaded.map((r) => r.kvCacheBytes),
        memory,
      );
    });
  }

  /**
   * Runs `tokens` at positions startPos… of `sequence` through every layer (a prompt is
   * prefilled in chunks of maxBatchTokens; one token is a decode).
   */
  forward(
    tokens: readonly number[],
    startPos: number,
    sequence = 0,
  ): Effect.Effect<void, StepFailure> {
    return Effect.gen(this, function* () {
      for (let i = 0; i < tokens.length; i += this.maxBatchTokens) {
        const chunk = tokens.slice(i, i + this.maxBatchTokens);
        yield* this.step(
          chunk.map((token, r) => ({ token, sequence, position: startPos + i + r })),
        );
      }
    });
  }

  /**
   * One step of at most maxBatchTokens rows, each its own token, sequence and position: a
   * prefill chunk, or a batched decode with one row per running sequence.
   */
  step(rows: readonly StepRow[]): Effect.Effect<void, StepFailure> {
    return this.stepWithHeads(rows, []).pipe(Effect.asVoid);
  }

  /**
   * A step and the LM head of some of its rows in one pipeline, so a decode token costs one
   * round trip to the ranks, not two: every rank gets the embedding, the layers and the heads at
   * once. One list of candidates per head, one per row it names.
   */
  stepWithHeads(
    rows: readonly StepRow[],
    heads: readonly HeadRequest[],
  ): Effect.Effect<readonly (readonly CandidateList[])[], StepFailure> {
    // One pipeline: every rank gets the embedding and all layers at once (see Supervisor.pipeline).
    return this.supervisor.pipeline([
      (_, step) => ({
        _tag: "Embed",
        step,
        tokens: rows.map((r) => r.token),
        positions: rows.map((r) => r.position),
        sequences: rows.map((r) => r.sequence),
      }),
      ...Array.from(
        { length: this.config.nLayers },
        (_, layer) => (_rank: number, step: number) =>
          ({ _tag: "DecoderLayer", step, layer }) as const,
      ),
      ...heads.map((head) => (_rank: number, step: number) => headCommand(step, head)),
    ]).pipe(
      Effect.tap(() => (this.lastStepRows = rows.length)),
      Effect.flatMap((replies) =>
        Effect.forEach(
          heads,
          (head, i) => mergeHeadReplies(replies[replies.length - heads.length + i], head),
        )
      ),
    );
  }

  /**
   * `forward`, then the top `k` candidates after its last token, the LM head riding in the
   * pipeline of the last chunk.
   */
  forwardWithCandidates(
    tokens: readonly number[],
    startPos: number,
    sequence: number,
    k: number,
    temperature: number,
  ): Effect.Effect<CandidateList, StepFailure> {
    if (tokens.length === 0) return this.candidates(k, temperature);
    return Effect.gen(this, function* () {
      const last = Math.floor((tokens.length - 1) / this.maxBatchTokens) * this.maxBatchTokens;
      yield* this.forward(tokens.slice(0, last), startPos, sequence);
      const chunk = tokens.slice(last).map((token, r) => ({
        token,
        sequence,
        position: startPos + last + r,
      }));
      const [lists] = yield* this.stepWithHeads(chunk, [
        { rows: [chunk.length - 1], k, temperature },
      ]);
      return lists[0];
    });
  }

  /**
   * The top `k` next-token candidates after the last row of the last step, merged over the
   * ranks' vocabulary slices; with temperature > 0 they carry the exact log-sum-exp for the
   * sampler.
   */
  candidates(k: number, temperature: number): Effect.Effect<CandidateList, StepFailure> {
    // Suspended: the row is the last step's when this runs, not when it was built.
    return Effect.suspend(() =>
      Effect.map(this.candidatesFor([this.lastStepRows - 1], k, temperature), (l) => l[0])
    );
  }

  /** `candidates` for several rows of the last step at once (one list per row). */
  candidatesFor(
    rows: readonly number[],
    k: number,
    temperature: number,
  ): Effect.Effect<readonly CandidateList[], StepFailure> {
    const head = { rows, k, temperature };
    return this.supervisor.step((_, step) => headCommand(step, head)).pipe(
      Effect.flatMap((replies) => mergeHeadReplies(replies, head)),
    );
  }

  /** The full logits of the last row of the last step, gathered from every rank's slice. */
  logits(): Effect.Effect<Float32Array, StepFailure> {
    return Effect.suspend(() =>
      Effect.map(this.logitsFor([this.lastStepRows - 1]), (rows) => rows[0])
    );
  }

  /** Full logits of several rows of the last step (checks, the sampler's fallback). */
  logitsFor(rows: readonly number[]): Effect.Effect<readonly Float32Array[], StepFailure> {
    return this.supervisor.step((_, step) => ({
      _tag: "LmHead",
      step,
      rows,
      topK: 0,
      temperature: 0,
    })).pipe(
      Effect.flatMap(expectReplies("Output")),
      Effect.map((replies) => {
        const all = concat(replies.map((r) => fromPayload(r.output)), 1);
        const vocab = all.shape[1];
        return rows.map((_, r) => all.data.slice(r * vocab, (r + 1) * vocab));
      }),
    );
  }
}
