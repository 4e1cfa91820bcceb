/**
 * One rank's share of a Llama model on its own device, in llama2.c's shape: weights (this
 * rank's shards) apart from run state (activations, KV cache), every buffer allocated once, and
 * a forward pass that reads top to bottom. Each method is one supervisor step; each step's
 * dispatches go into one command encoder, submitted together with the readback that feeds the
 * step's collective.
 *
 * The residual stream stays on the device, and after every step it is x + partial: each
 * row-parallel segment (and the embedding) leaves its output in `partial`; at tp > 1 that is
 * read back, all-reduced on the host and written back in place. The next segment begins with
 * the fused x += partial; h = rmsnorm(x), and the head with x += partial. At tp = 1 there is
 * nothing to reduce, so nothing is read back and no step waits for the GPU until the head.
 */
import { Effect } from "effect";
import { allReduceBuffer } from "../collectives/device.ts";
import type { Communicator } from "../collectives/communicator.ts";
import { createStorageBuffer, Readback, submitAndWait, writeBuffer } from "../gpu/buffers.ts";
import type { Gpu } from "../gpu/device.ts";
import { type Dispatch, encodeDispatches } from "../gpu/dispatch.ts";
import { attention } from "../kernels/attention.ts";
import { headNorm } from "../kernels/head_norm.ts";
import { ropeFrequencyBuffer } from "../kernels/rope.ts";
import { ropeKvCache } from "../kernels/rope_kv_cache.ts";
import { addInPlace } from "../kernels/elementwise.ts";
import { embedding } from "../kernels/embedding.ts";
import { blockColumns, matmul, type WeightType } from "../kernels/matmul.ts";
import { createPositionBuffer, type RowPosition, writePositions } from "../kernels/position.ts";
import { rmsnorm } from "../kernels/rmsnorm.ts";
import { MAX_TOPK, topk } from "../kernels/topk.ts";
import { InvalidInput } from "../actors/errors.ts";
import { noTimeline, type Timeline, wallClockMillis } from "../observe/timeline.ts";
import type { StepFailure } from "../layers/layer.ts";
import type { LlamaConfig } from "./config.ts";
import type { RankPlan } from "./plan.ts";
import { ropeFrequencies } from "./rope_scaling.ts";
import { concatColumns, type RankShards } from "./shards.ts";

/**
 * One layer's weights on this rank. The column-parallel projections that read the same input
 * are merged, as vLLM's QKVParallelLinear and MergedColumnParallelLinear do: wqkv is this rank's
 * wq | wk | wv columns side by side, w13 its gate | up columns, so each is one matmul. Every
 * output column is the same dot product as before, so the numbers do not change.
 */
interface LayerWeights {
  readonly attentionNorm: GPUBuffer;
  readonly wqkv: GPUBuffer; // [dim, (heads_r + 2·kvHeads_r)·hd]
  readonly qkvBias?: GPUBuffer; // [(heads_r + 2·kvHeads_r)·hd]: q | k | v biases (Qwen2)
  readonly qNorm?: GPUBuffer; // [hd]: per-head q norm (Qwen3)
  readonly kNorm?: GPUBuffer; // [hd]: per-head k norm (Qwen3)
  readonly wo: GPUBuffer;
  readonly ffnNorm: GPUBuffer;
  readonly w13: GPUBuffer; // [dim, 2·hidden_r]: gate | up
  readonly w2: GPUBuffer;
  readonly kCache: GPUBuffer; // [sequences, seqLen, kvHeads_r, headDim]
  readonly vCache: GPUBuffer;
}

/** Activations for up to `maxTokens` tokens per step. */
interface RunState {
  readonly ids: GPUBuffer; // u32 [T]
  readonly positions: GPUBuffer; // u32 [T, 2]: each row's (sequence, position)
  readonly ropeInverse: GPUBuffer; // [hd/2]: RoPE's inverse frequencies (models/rope_scaling.ts)
  readonly x: GPUBuffer; // [T, dim]: the residual stream
  readonly h: GPUBuffer; // [T, dim]: normed x
  readonly qkv: GPUBuffer; // [T, (heads_r + 2·kvHeads_r)·hd]: q | k | v per row
  readonly att: GPUBuffer; // [T, heads_r·hd]
  readonly gateUp: GPUBuffer; // [T, 2·hidden_r]: gate | up per row
  readonly partial: GPUBuffer; // [T, dim]: this rank's share of a row-parallel sum
  readonly last: GPUBuffer; // [B, dim]: the x rows whose next token is wanted, for the LM head
  readonly lastNormed: GPUBuffer;
  readonly logits: GPUBuffer; // [B, vocab_r]
  readonly candidates: GPUBuffer; // [B, MAX_TOPK] × (f32, u32)
  readonly partialReadback: Readback;
  readonly logitsReadback: Readback;
  /** The all-reduce's host copy of `partial`, allocated once. */
  readonly hostPartial: Float32Array;
}

/** Prepared dispatches for a step of T tokens. */
interface Segments {
  readonly embed: Dispatch[];
  /** x += partial: the head's first dispatch (segments fuse it into their rmsnorm). */
  readonly addPartial: Dispatch;
  readonly attention: Dispatch[][]; // per layer, up to the row-parallel output projection
  readonly mlp: Dispatch[][]; // per layer, up to the row-parallel down projection
}

/** The head's output for B rows: top-k candidates [B, k], or the whole logits slice [B, vocab_r]. */
export interface HeadResult {
  readonly rows: number;
  readonly values: Float32Array;
  readonly indices: Int32Array;
  /** Set when the whole slice was read back (temperature > 0 or topK = 0). */
  readonly logits?: Float32Array;
}

/** RoPE's frequencies for the config (theta, rope_scaling, the served context). */
const ropeTable = (config: LlamaConfig) =>
  ropeFrequencies(config.ropeTheta, config.headDim, config.ropeScaling, config.seqLen);

export class RankLlama {
  private readonly segments = new Map<number, Segments>();
  private headDispatches = new Map<string, Dispatch[]>();
  /** Tokens of the step in flight (set by `embed`). */
  private rows = 0;

  private constructor(
    private readonly gpu: Gpu,
    readonly config: LlamaConfig,
    readonly plan: RankPlan,
    readonly maxTokens: number,
    readonly maxSequences: number,
    readonly weights: WeightType,
    private readonly embedding: GPUBuffer,
    private readonly layers: readonly LayerWeights[],
    private readonly norm: GPUBuffer,
    private readonly output: GPUBuffer,
    private readonly run: RunState,
    readonly weightBytes: number,
    readonly kvCacheBytes: number,
    private readonly timeline: Timeline,
  ) {}

  /**
   * Uploads the shards and allocates the KV cache (one slot per sequence that may run at once)
   * and run state once.
   */
  static create(
    gpu: Gpu,
    config: LlamaConfig,
    plan: RankPlan,
    shards: RankShards,
    maxTokens: number,
    maxSequences = 1,
    weights: WeightType = "f32",
    timeline: Timeline = noTimeline,
  ): Effect.Effect<RankLlama, InvalidInput> {
    return Effect.gen(function* () {
      const limit = gpu.limits.maxStorageBufferBindingSize;
      let weightBytes = 0;
      const upload = (label: string, data: Float32Array) =>
        data.byteLength > limit
          ? Effect.fail(
            new InvalidInput({
              message: `${label}: shard of ${data.byteLength} bytes exceeds this adapter's ` +
                `maxStorageBufferBindingSize ${limit}; use a larger tp`,
            }),
          )
          : Effect.sync(() => {
            weightBytes += data.byteLength;
            return createStorageBuffer(gpu, label, data);
          });
      /**
       * A matmul weight [k, n] in the kernels' blocked layout and the chosen element type (a
       * block is 64 columns, so an f16 weight is whole 4-byte words).
       */
      const uploadWeight = (label: string, data: Float32Array, k: number) => {
        const blocked = blockColumns(data, k, data.length / k);
        return upload(
          label,
          weights === "f32" ? blocked : Float16Array.from(blocked) as unknown as Float32Array,
        );
      };
      const { seqLen, headDim: hd, dim } = config;
      const { heads, kvHeads, hidden, vocab } = plan;
      const cacheBytes = maxSequences * seqLen * kvHeads.count * hd * 4;
      if (cacheBytes > limit) {
        return yield* new InvalidInput({
          message: `a KV cache of ${maxSequences} sequences × ${seqLen} positions is ` +
            `${cacheBytes} bytes per layer, over this adapter's maxStorageBufferBindingSize ` +
            `${limit}; serve fewer sequences or use a larger tp`,
        });
      }
      const layers: LayerWeights[] = [];
      for (const [l, s] of shards.layers.entries()) {
        layers.push({
          attentionNorm: yield* upload(`layers.${l}.attention_norm`, s.attentionNorm),
          wqkv: yield* uploadWeight(
            `layers.${l}.wqkv`,
            concatColumns(dim, [s.wq, s.wk, s.wv]),
            dim,
          ),
          wo: yield* uploadWeight(`layers.${l}.wo`, s.wo, heads.count * hd),
          ffnNorm: yield* upload(`layers.${l}.ffn_norm`, s.ffnNorm),
          w13: yield* uploadWeight(`layers.${l}.w13`, concatColumns(dim, [s.w1, s.w3]), dim),
          w2: yield* uploadWeight(`layers.${l}.w2`, s.w2, hidden.count),
          kCache: createStorageBuffer(gpu, `layers.${l}.kCache`, cacheBytes),
          vCache: createStorageBuffer(gpu, `layers.${l}.vCache`, cacheBytes),
          ...(s.bq && s.bk && s.bv
            ? {
              qkvBias: yield* upload(`layers.${l}.qkv_bias`, concatColumns(1, [s.bq, s.bk, s.bv])),
            }
            : {}),
          ...(s.qNorm && s.kNorm
            ? {
              qNorm: yield* upload(`layers.${l}.q_norm`, s.qNorm),
              kNorm: yield* upload(`layers.${l}.k_norm`, s.kNorm),
            }
            : {}),
        });
      }
      const T = maxTokens;
      const B = Math.min(maxSequences, T); // rows the head can serve in one step
      const f32 = (label: string, elements: number) =>
        createStorageBuffer(gpu, label, elements * 4);
      const run: RunState = {
        ids: f32("ids", T),
        positions: createPositionBuffer(gpu, T),
        ropeInverse: ropeFrequencyBuffer(gpu, hd, ropeTable(config).inverse),
        x: f32("x", T * dim),
        h: f32("h", T * dim),
        qkv: f32("qkv", T * (heads.count + 2 * kvHeads.count) * hd),
        att: f32("att", T * heads.count * hd),
        gateUp: f32("gateUp", T * 2 * hidden.count),
        partial: f32("partial", T * dim),
        last: f32("last", B * dim),
        lastNormed: f32("lastNormed", B * dim),
        logits: f32("logits", B * vocab.count),
        candidates: f32("candidates", B * 2 * MAX_TOPK),
        partialReadback: new Readback(gpu, T * dim * 4, "partial.readback"),
        logitsReadback: new Readback(
          gpu,
          B * Math.max(vocab.count, 2 * MAX_TOPK) * 4,
          "logits.readback",
        ),
        hostPartial: new Float32Array(T * dim),
      };
      return new RankLlama(
        gpu,
        config,
        plan,
        maxTokens,
        maxSequences,
        weights,
        yield* upload("tok_embeddings", shards.embedding),
        layers,
        yield* upload("norm", shards.norm),
        yield* uploadWeight("output", shards.output, dim),
        run,
        weightBytes,
        cacheBytes * 2 * layers.length,
        timeline,
      );
    });
  }

  /**
   * Step 1: the vocab-parallel embedding of `tokens`, summed over ranks; row r belongs at
   * `rows[r]` (its sequence's KV-cache slot and its position there).
   */
  embed(comm: Communicator, tokens: readonly number[], rows: readonly RowPosition[]) {
    return Effect.gen(this, function* () {
      const T = tokens.length;
      const { seqLen } = this.config;
      if (T > this.maxTokens || rows.length !== T) {
        return yield* new InvalidInput({
          message: `cannot run ${T} tokens with ${rows.length} positions: at most ` +
            `${this.maxTokens} tokens per step, one position each`,
        });
      }
      const bad = rows.find((r) => r.position >= seqLen || r.sequence >= this.maxSequences);
      if (bad) {
        return yield* new InvalidInput({
          message: `no place for a token at position ${bad.position} of sequence ` +
            `${bad.sequence}: ${seqLen} positions (seq_len) and ${this.maxSequences} sequences`,
        });
      }
      this.rows = T;
      writeBuffer(this.gpu, this.run.ids, Uint32Array.from(tokens));
      writePositions(this.gpu, this.run.positions, rows);
      // x = 0 and partial = Σ_ranks embedding slice: the stream x + partial is the embedding.
      const encoder = this.gpu.device.createCommandEncoder();
      encoder.clearBuffer(this.run.x, 0, T * this.config.dim * 4);
      yield* this.runSegment(comm, encoder, this.segmentsFor(T).embed, "embedding");
    });
  }

  /** Step 2…L+1: one decoder layer; x += attention(x), then x += mlp(x): two all-reduces. */
  layer(comm: Communicator, l: number) {
    return Effect.gen(this, function* () {
      if (this.rows === 0) return yield* new InvalidInput({ message: "DecoderLayer before Embed" });
      if (!(l < this.layers.length)) {
        return yield* new InvalidInput({
          message: `no layer ${l}: the model has ${this.layers.length}`,
        });
      }
      const segments = this.segmentsFor(this.rows);
      // x += Σ_ranks attention(x), then x += Σ_ranks mlp(x); each sum is added on the device
      // by the dispatch that runs next.
      const device = this.gpu.device;
      yield* this.runSegment(
        comm,
        device.createCommandEncoder(),
        segments.attention[l],
        `attention ${l}`,
      );
      yield* this.runSegment(comm, device.createCommandEncoder(), segments.mlp[l], `mlp ${l}`);
    });
  }

  /**
   * Last step: final norm and this rank's vocabulary slice of the LM head for the given rows of
   * the last step (each a sequence whose next token is wanted). Greedy sampling needs only the
   * top-k candidates (8 bytes each); temperature > 0 (or topK 0) reads the slices back so the
   * sampler can normalise exactly.
   */
  head(
    rows: readonly number[],
    topK: number,
    temperature: number,
  ): Effect.Effect<HeadResult, StepFailure> {
    return Effect.gen(this, function* () {
      if (this.rows === 0) return yield* new InvalidInput({ message: "LmHead before Embed" });
      const B = rows.length;
      const maxRows = Math.min(this.maxSequences, this.maxTokens);
      const badRow = rows.find((r) => r >= this.rows);
      if (B > maxRows || badRow !== undefined) {
        return yield* new InvalidInput({
          message: `cannot compute logits for rows [${rows}] of a ${this.rows}-row step ` +
            `(at most ${maxRows} rows at once)`,
        });
      }
      const { dim } = this.config;
      const vocabCount = this.plan.vocab.count;
      const k = Math.min(topK, MAX_TOPK, vocabCount);
      const wholeSlice = temperature > 0 || k === 0;
      const encoder = this.gpu.device.createCommandEncoder();
      // x += partial, partial = 0: the stream is unchanged, so the head may run again.
      encodeDispatches(encoder, [this.segmentsFor(this.rows).addPartial]);
      encoder.clearBuffer(this.run.partial, 0, this.rows * dim * 4);
      rows.forEach((r, i) =>
        encoder.copyBufferToBuffer(this.run.x, r * dim * 4, this.run.last, i * dim * 4, dim * 4)
      );
      encodeDispatches(encoder, this.headFor(B, wholeSlice ? 0 : k));
      // The head's kernels and its small readback share one wait: one span for both.
      const started = wallClockMillis();
      const read = (source: GPUBuffer, into: ArrayBufferView) =>
        this.run.logitsReadback.read(source, new Uint8Array(into.buffer), { encoder }).pipe(
          Effect.tap(() => this.timeline.record("lm head", "kernels", started, { rows: B })),
        );
      if (wholeSlice) {
        const logits = new Float32Array(B * vocabCount);
        yield* read(this.run.logits, logits);
        return { rows: B, values: new Float32Array(0), indices: new Int32Array(0), logits };
      }
      const raw = new Uint32Array(B * 2 * k);
      yield* read(this.run.candidates, raw);
      const floats = new Float32Array(raw.buffer);
      return {
        rows: B,
        values: Float32Array.from({ length: B * k }, (_, i) => floats[2 * i]),
        indices: Int32Array.from({ length: B * k }, (_, i) => raw[2 * i + 1]),
      };
    });
  }

  /** Frees every buffer (the device belongs to the rank's scope). */
  release(): void {
    const buffers = [this.embedding, this.norm, this.output, ...this.layers.flatMap(Object.values)];
    for (const value of Object.values(this.run)) {
      if (value instanceof Readback) value.destroy();
      else if (!(value instanceof Float32Array)) buffers.push(value);
    }
    for (const b of buffers) b.destroy();
  }

  /**
   * Runs `dispatches` (which end by writing `partial`) after what `encoder` holds, and
   * all-reduces `partial` in place; at tp = 1 it only submits, without waiting. When tracing,
   * the kernels are waited for on their own first, so the trace can tell them from the
   * transfer (one extra wait per segment, only then).
   */
  private runSegment(
    comm: Communicator,
    encoder: GPUCommandEncoder,
    dispatches: Dispatch[],
    name: string,
  ) {
    return Effect.gen(this, function* () {
      encodeDispatches(encoder, dispatches);
      if (this.timeline.enabled) {
        const started = wallClockMillis();
        yield* submitAndWait(this.gpu, encoder);
        this.timeline.record(name, "kernels", started, { dispatches: dispatches.length });
        encoder = this.gpu.device.createCommandEncoder();
      }
      if (comm.worldSize > 1) {
        yield* allReduceBuffer(this.gpu, comm, {
          timeline: this.timeline,
          encoder,
          source: this.run.partial,
          shape: [this.rows, this.config.dim],
          readback: this.run.partialReadback,
          host: this.run.hostPartial.subarray(0, this.rows * this.config.dim),
          writeBackTo: this.run.partial,
        });
      } else if (!this.timeline.enabled) {
        this.gpu.device.queue.submit([encoder.finish()]);
      }
    });
  }

  private segmentsFor(T: number): Segments {
    let segments = this.segments.get(T);
    if (segments) return segments;
    const { gpu, config, plan, run } = this;
    const { dim, headDim: hd } = config;
    const nh = plan.heads.count, nkv = plan.kvHeads.count, hid = plan.hidden.count;
    const mm = (
      a: GPUBuffer,
      b: GPUBuffer,
      out: GPUBuffer,
      k: number,
      n: number,
      label: string,
      input: "plain" | "swiglu" = "plain",
    ) =>
      matmul(gpu, {
        a,
        b,
        out,
        m: T,
        k,
        n,
        weights: this.weights,
        layout: "blocked",
        input,
        label,
      });
    const qkvWidth = (nh + 2 * nkv) * hd;
    segments = {
      addPartial: addInPlace(gpu, { target: run.x, other: run.partial, length: T * dim }),
      embed: [
        embedding(gpu, {
          table: this.embedding,
          ids: run.ids,
          out: run.partial,
          rows: T,
          dim,
          vocabStart: plan.vocab.start,
          vocabCount: plan.vocab.count,
        }),
      ],
      attention: this.layers.map((w, l) => [
        rmsnorm(gpu, {
          input: run.x,
          residual: run.partial,
          weight: w.attentionNorm,
          out: run.h,
          rows: T,
          dim,
          eps: config.normEps,
        }),
        mm(run.h, w.wqkv, run.qkv, dim, qkvWidth, `layers.${l}.wqkv`),
        ...(w.qNorm && w.kNorm
          ? [headNorm(gpu, {
            qkv: run.qkv,
            qWeight: w.qNorm,
            kWeight: w.kNorm,
            rows: T,
            nHeads: nh,
            nKvHeads: nkv,
            headDim: hd,
            eps: config.normEps,
          })]
          : []),
        // q rotated in place, k rotated into the cache and v copied beside it: one dispatch.
        ropeKvCache(gpu, {
          qkv: run.qkv,
          positions: run.positions,
          kCache: w.kCache,
          vCache: w.vCache,
          rows: T,
          nHeads: nh,
          nKvHeads: nkv,
          headDim: hd,
          maxSeq: config.seqLen,
          sequences: this.maxSequences,
          frequencies: run.ropeInverse,
          attentionFactor: ropeTable(config).attentionFactor,
          bias: w.qkvBias,
          layout: config.ropeLayout,
        }),
        attention(gpu, {
          window: config.slidingWindow,
          q: run.qkv,
          qRowStride: qkvWidth,
          kCache: w.kCache,
          vCache: w.vCache,
          positions: run.positions,
          out: run.att,
          rows: T,
          nHeads: nh,
          nKvHeads: nkv,
          headDim: hd,
          maxSeq: config.seqLen,
        }),
        mm(run.att, w.wo, run.partial, nh * hd, dim, `layers.${l}.wo`),
      ]),
      mlp: this.layers.map((w, l) => [
        rmsnorm(gpu, {
          input: run.x,
          residual: run.partial,
          weight: w.ffnNorm,
          out: run.h,
          rows: T,
          dim,
          eps: config.normEps,
        }),
        mm(run.h, w.w13, run.gateUp, dim, 2 * hid, `layers.${l}.w13`),
        // The down projection reads silu(gate)·up straight from the gate | up rows.
        mm(run.gateUp, w.w2, run.partial, hid, dim, `layers.${l}.w2`, "swiglu"),
      ]),
    };
    this.segments.set(T, segments);
    return segments;
  }

  /** The head's dispatches for B rows; k = 0 stops at the logits (the slices are read back). */
  private headFor(B: number, k: number): Dispatch[] {
    const key = `${B}/${k}`;
    let dispatches = this.headDispatches.get(key);
    if (dispatches) return dispatches;
    const { gpu, config, plan, run } = this;
    const vocab = plan.vocab.count;
    dispatches = [
      rmsnorm(gpu, {
        input: run.last,
        weight: this.norm,
        out: run.lastNormed,
        rows: B,
        dim: config.dim,
        eps: config.normEps,
      }),
      matmul(gpu, {
        a: run.lastNormed,
        b: this.output,
        out: run.logits,
        m: B,
        k: config.dim,
        n: vocab,
        weights: this.weights,
        layout: "blocked",
        label: "output",
      }),
      ...(k > 0
        ? [
          topk(gpu, {
            logits: run.logits,
            out: run.candidates,
            rows: B,
            n: vocab,
            k,
            indexOffset: plan.vocab.start,
          }),
        ]
        : []),
    ];
    this.headDispatches.set(key, dispatches);
    return dispatches;
  }
}
