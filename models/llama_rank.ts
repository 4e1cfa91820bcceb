/**
 * One rank's share of a decoder model on its own device, in llama2.c's shape: weights (this
 * rank's layers/ blocks) apart from run state (activations, KV cache), every buffer allocated
 * once, and a forward pass that reads top to bottom. Each method is one supervisor step; each
 * step's dispatches go into one command encoder, submitted together with the readback that feeds
 * the step's collective.
 *
 * The residual stream stays on the device, and after every step it is x + partial: each
 * row-parallel block (and the embedding) leaves its output in `partial`; at tp > 1 its
 * all-reduce reads it back, sums it on the host and writes it back in place. The next segment
 * begins with the fused x += partial; h = rmsnorm(x) (Gemma 2 norms partial first), and the head
 * with x += partial. At tp = 1 there is nothing to reduce, so no step waits for the GPU until the
 * head.
 */
import { Effect } from "effect";
import type { Communicator } from "../collectives/communicator.ts";
import { createStorageBuffer, Readback, submitAndWait, writeBuffer } from "../gpu/buffers.ts";
import type { Gpu } from "../gpu/device.ts";
import { type Dispatch, encodeDispatches } from "../gpu/dispatch.ts";
import { attention } from "../kernels/attention.ts";
import { headNorm } from "../kernels/head_norm.ts";
import { ropeFrequencyBuffer } from "../kernels/rope.ts";
import { type KvCacheElement, ropeKvCache } from "../kernels/rope_kv_cache.ts";
import { addInPlace } from "../kernels/elementwise.ts";
import type { WeightType } from "../kernels/matmul.ts";
import { createPositionBuffer, type RowPosition, writePositions } from "../kernels/position.ts";
import { MAX_TOPK } from "../kernels/topk.ts";
import { InvalidInput } from "../actors/errors.ts";
import { noTimeline, type Timeline, wallClockMillis } from "../observe/timeline.ts";
import type { StepFailure } from "../layers/layer.ts";
import {
  ColumnParallelLinear,
  QKVParallelLinear,
  RowParallelLinear,
} from "../layers/blocks/linear.ts";
import { RMSNorm } from "../layers/blocks/norm.ts";
import { ParallelLMHead, VocabParallelEmbedding } from "../layers/blocks/vocab.ts";
import { DeviceWeights, ShardReader } from "../layers/blocks/weights.ts";
import { layerWindow, type LlamaConfig } from "./config.ts";
import type { LoadError } from "./errors.ts";
import type { RankPlan } from "./plan.ts";
import { ropeFrequencies } from "./rope_scaling.ts";
import {
  type LayerShards,
  readEmbeddingShard,
  readHeadShards,
  readLayerShards,
  type WeightSource,
} from "./shards.ts";

/**
 * One decoder layer on this rank, as nano-vllm's DecoderLayer: attention (QKV column-parallel by
 * heads, o row-parallel, one all-reduce) then the MLP (gate | up column-parallel over hidden,
 * down row-parallel, one all-reduce).
 */
interface DecoderLayer {
  readonly inputNorm: RMSNorm;
  readonly qkvProj: QKVParallelLinear;
  readonly qNorm?: GPUBuffer; // [hd]: per-head q norm (Qwen3)
  readonly kNorm?: GPUBuffer; // [hd]: per-head k norm (Qwen3)
  readonly oProj: RowParallelLinear;
  readonly postAttentionNorm?: RMSNorm; // Gemma 2: norms the all-reduced attention output
  readonly ffnNorm: RMSNorm;
  readonly gateUpProj: ColumnParallelLinear;
  readonly downProj: RowParallelLinear;
  readonly postFfnNorm?: RMSNorm; // Gemma 2: norms the all-reduced MLP output
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
  readonly postNormed?: GPUBuffer; // [T, dim]: Gemma 2's norm of the summed partial
  readonly last: GPUBuffer; // [B, dim]: the x rows whose next token is wanted, for the LM head
  readonly lastNormed: GPUBuffer;
  readonly logits: GPUBuffer; // [B, vocab_r]
  readonly candidates: GPUBuffer; // [B, MAX_TOPK] × (f32, u32)
  readonly partialReadback: Readback;
  readonly logitsReadback: Readback;
  /** The all-reduce's host copy of `partial`, allocated once. */
  readonly hostPartial: Float32Array;
}

/** A step's dispatches up to a row-parallel block, and the block whose all-reduce ends it. */
interface Segment {
  readonly dispatches: Dispatch[];
  readonly reducedBy: RowParallelLinear | VocabParallelEmbedding;
}

/** Prepared dispatches for a step of T tokens. */
interface Segments {
  readonly embed: Segment;
  /** x += partial (normed first, Gemma 2): the head's first dispatches. */
  readonly absorbPartial: Dispatch[];
  readonly attention: Segment[]; // per layer, up to the row-parallel output projection
  readonly mlp: Segment[]; // per layer, up to the row-parallel down projection
}

/** The head's output for B rows: top-k candidates [B, k], or the whole logits slice [B, vocab_r]. */
export interface HeadResult {
  readonly rows: number;
  readonly values: Float32Array;
  readonly indices: Int32Array;
  /** Set when the whole slice was read back (temperature > 0 or topK = 0). */
  readonly logits?: Float32Array;
}

/** How a rank's model is sized and loaded. */
export interface RankModelOptions {
  /** Tokens one step may carry. */
  readonly maxTokens: number;
  /** KV-cache slots: sequences that may run at once. */
  readonly maxSequences?: number;
  readonly weights?: WeightType;
  /** Element type of the KV cache (default f32; f16 needs shader-f16). */
  readonly kvCacheDtype?: KvCacheElement;
  readonly timeline?: Timeline;
  /** Hears the bytes read so far after each tensor. */
  readonly onRead?: (bytesRead: number) => void;
}

/** RoPE's frequencies for the config (theta, rope_scaling, the served context). */
const ropeTable = (config: LlamaConfig) =>
  ropeFrequencies(config.ropeTheta, config.headDim, config.ropeScaling, config.seqLen);

/** Uploads one layer's shards as its blocks, with its KV cache. */
const uploadLayer = (
  weights: DeviceWeights,
  config: LlamaConfig,
  l: number,
  s: LayerShards,
  cacheBytes: number,
): Effect.Effect<DecoderLayer, InvalidInput | LoadError> =>
  Effect.gen(function* () {
    const { normEps } = config;
    const p = `layers.${l}.`;
    const norm = (name: string, w: Float32Array) =>
      RMSNorm.upload(weights, `${p}${name}`, w, normEps);
    return {
      inputNorm: yield* norm("attention_norm", s.inputNorm),
      qkvProj: yield* QKVParallelLinear.upload(weights, `${p}wqkv`, s.qkv),
      ...(s.qNorm && s.kNorm
        ? {
          qNorm: yield* weights.vector(`${p}q_norm`, s.qNorm),
          kNorm: yield* weights.vector(`${p}k_norm`, s.kNorm),
        }
        : {}),
      oProj: yield* RowParallelLinear.upload(weights, `${p}wo`, s.o),
      ...(s.postAttentionNorm
        ? { postAttentionNorm: yield* norm("post_attention_norm", s.postAttentionNorm) }
        : {}),
      ffnNorm: yield* norm("ffn_norm", s.ffnNorm),
      gateUpProj: yield* ColumnParallelLinear.upload(weights, `${p}w13`, s.gateUp),
      downProj: yield* RowParallelLinear.upload(weights, `${p}w2`, s.down),
      ...(s.postFfnNorm ? { postFfnNorm: yield* norm("post_ffn_norm", s.postFfnNorm) } : {}),
      kCache: createStorageBuffer(weights.gpu, `${p}kCache`, cacheBytes),
      vCache: createStorageBuffer(weights.gpu, `${p}vCache`, cacheBytes),
    };
  });

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
    private readonly embedding: VocabParallelEmbedding,
    private readonly layers: readonly DecoderLayer[],
    private readonly norm: RMSNorm,
    private readonly lmHead: ParallelLMHead,
    private readonly run: RunState,
    private readonly deviceWeights: DeviceWeights,
    readonly weightBytes: number,
    readonly kvCacheBytes: number,
    readonly kvCacheDtype: KvCacheElement,
    private readonly timeline: Timeline,
  ) {}

  /**
   * Reads this rank's shards from `source` one layer at a time, uploading each as its blocks
   * before the next is read (host memory holds one layer's shards), and allocates the KV cache
   * (one slot per sequence that may run at once) and run state once.
   */
  static load(
    gpu: Gpu,
    config: LlamaConfig,
    plan: RankPlan,
    source: WeightSource,
    options: RankModelOptions,
  ): Effect.Effect<RankLlama, InvalidInput | LoadError> {
    return Effect.gen(function* () {
      const { maxTokens, maxSequences = 1, weights: weightType = "f32" } = options;
      const kvCacheDtype = options.kvCacheDtype ?? "f32";
      if (kvCacheDtype === "f16" && !gpu.features.shaderF16) {
        return yield* new InvalidInput({
          message: "an f16 KV cache needs shader-f16, which this adapter does not have",
        });
      }
      const limit = gpu.limits.maxStorageBufferBindingSize;
      const weights = new DeviceWeights(gpu, weightType);
      const reader = new ShardReader(source, options.onRead);
      const { seqLen, headDim: hd, dim, normEps } = config;
      const { heads, kvHeads, hidden, vocab } = plan;
      const cacheBytes = maxSequences * seqLen * kvHeads.count * hd *
        (kvCacheDtype === "f16" ? 2 : 4);
      if (cacheBytes > limit) {
        return yield* new InvalidInput({
          message: `a KV cache of ${maxSequences} sequences × ${seqLen} positions is ` +
            `${cacheBytes} bytes per layer, over this adapter's maxStorageBufferBindingSize ` +
            `${limit}; serve fewer sequences or use a larger tp`,
        });
      }
      const embedding = yield* VocabParallelEmbedding.upload(
        weights,
        "tok_embeddings",
        readEmbeddingShard(reader, config, plan),
        vocab,
      );
      const layers: DecoderLayer[] = [];
      for (let l = 0; l < config.nLayers; l++) {
        const shards = yield* readLayerShards(reader, config, plan, l);
        layers.push(yield* uploadLayer(weights, config, l, shards, cacheBytes));
      }
      const headShards = yield* readHeadShards(reader, config, plan);
      const norm = yield* RMSNorm.upload(weights, "norm", headShards.norm, normEps);
      // A tied head multiplies by the embedding's matrix: the rank holds the table once.
      const lmHead = config.sharedClassifier
        ? ParallelLMHead.tiedTo(weights, embedding)
        : yield* ParallelLMHead.upload(weights, "output", headShards.output, vocab);
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
        ...(config.sandwichNorms ? { postNormed: f32("postNormed", T * dim) } : {}),
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
        weightType,
        embedding,
        layers,
        norm,
        lmHead,
        run,
        weights,
        weights.bytes,
        cacheBytes * 2 * layers.length,
        kvCacheDtype,
        options.timeline ?? noTimeline,
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
      encodeDispatches(encoder, this.segmentsFor(this.rows).absorbPartial);
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
    this.deviceWeights.release();
    for (const layer of this.layers) {
      layer.kCache.destroy();
      layer.vCache.destroy();
    }
    for (const value of Object.values(this.run)) {
      if (value instanceof Readback) value.destroy();
      else if (!(value instanceof Float32Array)) value.destroy();
    }
  }

  /**
   * Runs a segment after what `encoder` holds and the all-reduce of `partial` that ends it; at
   * tp = 1 it only submits, without waiting. When tracing, the kernels are waited for on their
   * own first, so the trace can tell them from the transfer (one extra wait per segment, only
   * then).
   */
  private runSegment(
    comm: Communicator,
    encoder: GPUCommandEncoder,
    { dispatches, reducedBy }: Segment,
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
        yield* reducedBy.allReduce(comm, {
          timeline: this.timeline,
          encoder,
          output: this.run.partial,
          rows: this.rows,
          readback: this.run.partialReadback,
          host: this.run.hostPartial,
        });
      } else if (!this.timeline.enabled) {
        this.gpu.device.queue.submit([encoder.finish()]);
      }
    });
  }

  /**
   * x += partial, then h = norm(x), in one dispatch; with Gemma 2's `postNorm`, partial (a summed
   * attention or MLP output) is normed first.
   */
  private absorbThenNorm(T: number, postNorm: RMSNorm | undefined, norm: RMSNorm): Dispatch[] {
    const { run } = this;
    if (!postNorm) {
      return [norm.dispatch({ input: run.x, residual: run.partial, output: run.h, rows: T })];
    }
    return [
      postNorm.dispatch({ input: run.partial, output: run.postNormed!, rows: T }),
      norm.dispatch({ input: run.x, residual: run.postNormed!, output: run.h, rows: T }),
    ];
  }

  private segmentsFor(T: number): Segments {
    let segments = this.segments.get(T);
    if (segments) return segments;
    const { gpu, config, plan, run, layers } = this;
    const { dim, headDim: hd } = config;
    const nh = plan.heads.count, nkv = plan.kvHeads.count;
    const frequencies = ropeTable(config);
    const activation = config.mlpActivation === "gelu_tanh" ? "geglu" : "swiglu";
    const lastPostNorm = layers.at(-1)?.postFfnNorm;
    segments = {
      embed: {
        dispatches: [
          this.embedding.dispatch({
            ids: run.ids,
            output: run.partial,
            rows: T,
            scale: config.embeddingScale,
          }),
        ],
        reducedBy: this.embedding,
      },
      absorbPartial: lastPostNorm
        ? [
          lastPostNorm.dispatch({ input: run.partial, output: run.postNormed!, rows: T }),
          addInPlace(gpu, { target: run.x, other: run.postNormed!, length: T * dim }),
        ]
        : [addInPlace(gpu, { target: run.x, other: run.partial, length: T * dim })],
      // x += Σ_ranks o_proj(attention(qkv_proj(norm(x)))): QKV column-parallel by heads, o
      // row-parallel, its all-reduce ends the segment.
      attention: layers.map((layer, l) => ({
        dispatches: [
          ...this.absorbThenNorm(T, layers[l - 1]?.postFfnNorm, layer.inputNorm),
          layer.qkvProj.dispatch({ input: run.h, output: run.qkv, rows: T }),
          ...(layer.qNorm && layer.kNorm
            ? [headNorm(gpu, {
              qkv: run.qkv,
              qWeight: layer.qNorm,
              kWeight: layer.kNorm,
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
            kCache: layer.kCache,
            vCache: layer.vCache,
            rows: T,
            nHeads: nh,
            nKvHeads: nkv,
            headDim: hd,
            maxSeq: config.seqLen,
            sequences: this.maxSequences,
            frequencies: run.ropeInverse,
            attentionFactor: frequencies.attentionFactor,
            bias: layer.qkvProj.bias,
            layout: config.ropeLayout,
            cacheElement: this.kvCacheDtype,
          }),
          attention(gpu, {
            window: layerWindow(config, l),
            scale: config.attentionScale,
            softcap: config.attentionSoftcap,
            q: run.qkv,
            qRowStride: layer.qkvProj.width,
            kCache: layer.kCache,
            vCache: layer.vCache,
            positions: run.positions,
            out: run.att,
            rows: T,
            nHeads: nh,
            nKvHeads: nkv,
            headDim: hd,
            maxSeq: config.seqLen,
            cacheElement: this.kvCacheDtype,
          }),
          layer.oProj.dispatch({ input: run.att, output: run.partial, rows: T }),
        ],
        reducedBy: layer.oProj,
      })),
      // x += Σ_ranks down_proj(act(gate)·up): gate | up column-parallel over hidden, down
      // row-parallel reading act(gate)·up as it goes, its all-reduce ends the segment.
      mlp: layers.map((layer) => ({
        dispatches: [
          ...this.absorbThenNorm(T, layer.postAttentionNorm, layer.ffnNorm),
          layer.gateUpProj.dispatch({ input: run.h, output: run.gateUp, rows: T }),
          layer.downProj.dispatch({ input: run.gateUp, output: run.partial, rows: T, activation }),
        ],
        reducedBy: layer.downProj,
      })),
    };
    this.segments.set(T, segments);
    return segments;
  }

  /** The head's dispatches for B rows; k = 0 stops at the logits (the slices are read back). */
  private headFor(B: number, k: number): Dispatch[] {
    const key = `${B}/${k}`;
    let dispatches = this.headDispatches.get(key);
    if (dispatches) return dispatches;
    const { run } = this;
    dispatches = [
      this.norm.dispatch({ input: run.last, output: run.lastNormed, rows: B }),
      ...this.lmHead.dispatches({
        input: run.lastNormed,
        logits: run.logits,
        candidates: run.candidates,
        rows: B,
        k,
        softcap: this.config.finalLogitSoftcap,
      }),
    ];
    this.headDispatches.set(key, dispatches);
    return dispatches;
  }
}
