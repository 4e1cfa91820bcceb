/**
 * A plain CPU forward pass of a Llama model, ported from llama2.c `run.c` `forward` and kept
 * readable on purpose: it is the yardstick every GPU kernel and every tensor-parallel plan is
 * checked against, not something to run fast. f32 storage, f64 accumulation.
 */
import { Effect } from "effect";
import { kvDim, kvGroupSize, type LlamaConfig, qDim } from "./config.ts";
import { ConfigError, type LoadError, loadError } from "./errors.ts";
import { readLlama2cHeader, readTensors } from "./llama2c.ts";
import { type RopeFrequencies, ropeFrequencies } from "./rope_scaling.ts";
import { argmax } from "./sampler.ts";
import type { FilePath } from "./tensor_reader.ts";

export interface LlamaLayerWeights {
  readonly attentionNorm: Float32Array; // [dim]
  readonly wq: Float32Array; // [nHeads * headDim, dim]
  readonly wk: Float32Array; // [nKvHeads * headDim, dim]
  readonly wv: Float32Array; // [nKvHeads * headDim, dim]
  readonly wo: Float32Array; // [dim, nHeads * headDim]
  readonly ffnNorm: Float32Array; // [dim]
  readonly w1: Float32Array; // gate [hiddenDim, dim]
  readonly w2: Float32Array; // down [dim, hiddenDim]
  readonly w3: Float32Array; // up [hiddenDim, dim]
  /** Projection biases (Qwen2's q/k/v; absent for Llama). */
  readonly bq?: Float32Array; // [nHeads * headDim]
  readonly bk?: Float32Array; // [nKvHeads * headDim]
  readonly bv?: Float32Array; // [nKvHeads * headDim]
  /** Per-head q and k norms (Qwen3; absent for Llama). */
  readonly qNorm?: Float32Array; // [headDim]
  readonly kNorm?: Float32Array; // [headDim]
  /** Gemma 2's norms of the attention and MLP outputs (config.sandwichNorms). */
  readonly postAttentionNorm?: Float32Array; // [dim]
  readonly postFfnNorm?: Float32Array; // [dim]
}

export interface LlamaWeights {
  readonly tokEmbeddings: Float32Array; // [vocabSize, dim]
  readonly layers: readonly LlamaLayerWeights[];
  readonly norm: Float32Array; // [dim]
  /** The classifier [vocabSize, dim]; the embedding array itself when shared. */
  readonly output: Float32Array;
}

/** `out[i] = Σ_j w[i, j] x[j]` for a row-major `[d, n]` matrix. */
export const matmul = (
  out: Float32Array,
  x: Float32Array,
  w: Float32Array,
  n: number,
  d: number,
) => {
  for (let i = 0; i < d; i++) {
    let sum = 0;
    const row = i * n;
    for (let j = 0; j < n; j++) sum += w[row + j] * x[j];
    out[i] = sum;
  }
};

/** `x += b`. */
const addInPlace = (x: Float32Array, b: Float32Array) => {
  for (let i = 0; i < x.length; i++) x[i] += b[i];
};

/** `out = weight ⊙ x / sqrt(mean(x²) + eps)`. */
export const rmsnorm = (out: Float32Array, x: Float32Array, weight: Float32Array, eps: number) => {
  let ss = 0;
  for (let j = 0; j < x.length; j++) ss += x[j] * x[j];
  const scale = 1 / Math.sqrt(ss / x.length + eps);
  for (let j = 0; j < x.length; j++) out[j] = weight[j] * (scale * x[j]);
};

/** In-place softmax of `x[0..size)`. */
export const softmax = (x: Float32Array, size = x.length) => {
  let max = -Infinity;
  for (let i = 0; i < size; i++) max = Math.max(max, x[i]);
  let sum = 0;
  for (let i = 0; i < size; i++) {
    x[i] = Math.exp(x[i] - max);
    sum += x[i];
  }
  for (let i = 0; i < size; i++) x[i] /= sum;
};

/**
 * Rotates each head of `vec` (heads of `headDim`) by position `pos`: pair p of a head turns by
 * pos·inverse[p] (models/rope_scaling.ts), cos and sin scaled by the attention factor, and is
 * (2p, 2p+1) when interleaved, (p, p + headDim/2) when half.
 */
export const rope = (
  vec: Float32Array,
  pos: number,
  headDim: number,
  frequencies: RopeFrequencies,
  layout: LlamaConfig["ropeLayout"],
) => {
  const half = headDim / 2;
  const { inverse, attentionFactor } = frequencies;
  for (let h = 0; h < vec.length; h += headDim) {
    for (let p = 0; p < half; p++) {
      const angle = pos * inverse[p];
      const cos = Math.cos(angle) * attentionFactor;
      const sin = Math.sin(angle) * attentionFactor;
      const a = layout === "interleaved" ? h + 2 * p : h + p;
      const b = layout === "interleaved" ? a + 1 : a + half;
      const v0 = vec[a];
      const v1 = vec[b];
      vec[a] = v0 * cos - v1 * sin;
      vec[b] = v0 * sin + v1 * cos;
    }
  }
};

const silu = (x: number): number => x / (1 + Math.exp(-x));

/** GELU, tanh form (PyTorch's approximate="tanh", Gemma's gelu_pytorch_tanh). */
const geluTanh = (x: number): number =>
  0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));

/** cap·tanh(x / cap): Gemma 2's soft cap; no cap, x. */
const softcap = (x: number, cap: number | undefined): number =>
  cap === undefined ? x : cap * Math.tanh(x / cap);

/** Expected element counts of every weight, to reject a mismatched set at construction. */
const weightSizes = (c: LlamaConfig) => ({
  tokEmbeddings: c.vocabSize * c.dim,
  norm: c.dim,
  output: c.vocabSize * c.dim,
  attentionNorm: c.dim,
  wq: qDim(c) * c.dim,
  wk: kvDim(c) * c.dim,
  wv: kvDim(c) * c.dim,
  wo: c.dim * qDim(c),
  ffnNorm: c.dim,
  w1: c.hiddenDim * c.dim,
  w2: c.dim * c.hiddenDim,
  w3: c.hiddenDim * c.dim,
  bq: qDim(c),
  bk: kvDim(c),
  bv: kvDim(c),
  qNorm: c.headDim,
  kNorm: c.headDim,
  postAttentionNorm: c.dim,
  postFfnNorm: c.dim,
});

const checkModel = (config: LlamaConfig, weights: LlamaWeights): string | undefined => {
  const c = config;
  const dims = [c.dim, c.hiddenDim, c.nLayers, c.nHeads, c.nKvHeads, c.vocabSize, c.seqLen];
  if (!dims.every((d) => Number.isInteger(d) && d > 0)) {
    return `config dims must be positive integers, got ${JSON.stringify(c)}`;
  }
  if (c.nHeads % c.nKvHeads !== 0) {
    return `nHeads ${c.nHeads} is not a multiple of nKvHeads ${c.nKvHeads}`;
  }
  if (!(Number.isInteger(c.headDim) && c.headDim > 0 && c.headDim % 2 === 0)) {
    return `headDim ${c.headDim} must be a positive even integer`;
  }
  if (weights.layers.length !== c.nLayers) {
    return `${weights.layers.length} layers of weights for nLayers ${c.nLayers}`;
  }
  const sizes = weightSizes(c);
  const top = ["tokEmbeddings", "norm", "output"] as const;
  for (const name of top) {
    if (weights[name].length !== sizes[name]) {
      return `${name} has ${weights[name].length} elements, expected ${sizes[name]}`;
    }
  }
  for (const [l, layer] of weights.layers.entries()) {
    for (const name of Object.keys(layer) as (keyof LlamaLayerWeights)[]) {
      const length = layer[name]?.length;
      if (length !== undefined && length !== sizes[name]) {
        return `layers.${l}.${name} has ${length} elements, expected ${sizes[name]}`;
      }
    }
    const norms = [layer.qNorm, layer.kNorm].filter((n) => n !== undefined).length;
    if (norms !== (c.qkNorm ? 2 : 0)) {
      return `layers.${l} has ${norms} of the q/k norms; qkNorm is ${c.qkNorm ?? false}`;
    }
    const post = [layer.postAttentionNorm, layer.postFfnNorm].filter((n) => n !== undefined);
    if (post.length !== (c.sandwichNorms ? 2 : 0)) {
      return `layers.${l} has ${post.length} of the post norms; sandwichNorms is ` +
        `${c.sandwichNorms ?? false}`;
    }
    const biases = [layer.bq, layer.bk, layer.bv].filter((b) => b !== undefined).length;
    if (biases !== (c.attentionBias ? 3 : 0)) {
      return `layers.${l} has ${biases} of the q/k/v biases; attentionBias is ` +
        `${c.attentionBias ?? false}`;
    }
  }
  return undefined;
};

export class ReferenceLlama {
  /** Keys and values per layer, `[seqLen, kvDim]` each, filled position by position. */
  private readonly keyCache: Float32Array[];
  private readonly valueCache: Float32Array[];
  /** RoPE's table, computed once (in f64) from the config's theta and rope_scaling. */
  private readonly frequencies: RopeFrequencies;

  private constructor(readonly config: LlamaConfig, readonly weights: LlamaWeights) {
    this.frequencies = ropeFrequencies(
      config.ropeTheta,
      config.headDim,
      config.ropeScaling,
      config.seqLen,
    );
    const cache = () =>
      Array.from({ length: config.nLayers }, () => new Float32Array(config.seqLen * kvDim(config)));
    this.keyCache = cache();
    this.valueCache = cache();
  }

  /** A model from weights in memory (synthetic models, permuted copies, other formats). */
  static make(
    config: LlamaConfig,
    weights: LlamaWeights,
  ): Effect.Effect<ReferenceLlama, ConfigError> {
    const problem = checkModel(config, weights);
    return problem === undefined
      ? Effect.succeed(new ReferenceLlama(config, weights))
      : Effect.fail(new ConfigError({ message: `reference model: ${problem}` }));
  }

  /** Loads a whole llama2.c checkpoint into memory. */
  static load(path: FilePath): Effect.Effect<ReferenceLlama, LoadError> {
    return Effect.gen(function* () {
      const { config, layout } = yield* readLlama2cHeader(path);
      const names = [
        "tok_embeddings",
        "norm",
        ...Array.from(
          { length: config.nLayers },
          (_, l) =>
            ["attention_norm", "wq", "wk", "wv", "wo", "ffn_norm", "w1", "w2", "w3"].map((t) =>
              `layers.${l}.${t}`
            ),
        ).flat(),
        ...(config.sharedClassifier ? [] : ["output"]),
      ];
      const arrays = yield* readTensors(path, names.map((n) => layout.tensors.get(n)!));
      const t = new Map(names.map((n, i) => [n, arrays[i]]));
      const get = (name: string) => t.get(name)!;
      const weights: LlamaWeights = {
        tokEmbeddings: get("tok_embeddings"),
        norm: get("norm"),
        output: config.sharedClassifier ? get("tok_embeddings") : get("output"),
        layers: Array.from({ length: config.nLayers }, (_, l) => ({
          attentionNorm: get(`layers.${l}.attention_norm`),
          wq: get(`layers.${l}.wq`),
          wk: get(`layers.${l}.wk`),
          wv: get(`layers.${l}.wv`),
          wo: get(`layers.${l}.wo`),
          ffnNorm: get(`layers.${l}.ffn_norm`),
          w1: get(`layers.${l}.w1`),
          w2: get(`layers.${l}.w2`),
          w3: get(`layers.${l}.w3`),
        })),
      };
      return yield* ReferenceLlama.make(config, weights).pipe(
        Effect.mapError((e) => loadError(layout.file, e.message)),
      );
    });
  }

  /**
   * Logits `[vocabSize]` for `token` at position `pos`, after which the KV cache holds positions
   * `0..pos`. Positions must be fed in order from 0 (a later `pos` reuses the earlier entries).
   */
  forward(token: number, pos: number): Float32Array {
    const c = this.config;
    const w = this.weights;
    if (!(Number.isInteger(token) && token >= 0 && token < c.vocabSize)) {
      throw new RangeError(`token ${token} is outside the vocabulary [0, ${c.vocabSize})`);
    }
    if (!(Number.isInteger(pos) && pos >= 0 && pos < c.seqLen)) {
      throw new RangeError(`position ${pos} is outside the context [0, ${c.seqLen})`);
    }
    const { dim, hiddenDim, headDim, nHeads } = c;
    const kvd = kvDim(c);
    const qd = qDim(c);
    const group = kvGroupSize(c);

    const x = w.tokEmbeddings.slice(token * dim, (token + 1) * dim);
    if (c.embeddingScale !== undefined) { for (let i = 0; i < dim; i++) x[i] *= c.embeddingScale; }
    // Gemma stores each norm weight as an offset from one.
    const norm = (out: Float32Array, input: Float32Array, weight: Float32Array, eps: number) =>
      rmsnorm(out, input, c.normWeightOffset ? weight.map((v) => 1 + v) : weight, eps);
    const xb = new Float32Array(dim);
    const q = new Float32Array(qd);
    const attOut = new Float32Array(qd);
    const att = new Float32Array(pos + 1);
    const hb = new Float32Array(hiddenDim);
    const hb2 = new Float32Array(hiddenDim);
    const scale = c.attentionScale ?? 1 / Math.sqrt(headDim);

    for (let l = 0; l < c.nLayers; l++) {
      const lw = w.layers[l];
      // Attention: norm, q/k/v projections, RoPE on q and k, k and v into the cache.
      norm(xb, x, lw.attentionNorm, c.normEps);
      matmul(q, xb, lw.wq, dim, qd);
      const k = this.keyCache[l].subarray(pos * kvd, (pos + 1) * kvd);
      const v = this.valueCache[l].subarray(pos * kvd, (pos + 1) * kvd);
      matmul(k, xb, lw.wk, dim, kvd);
      matmul(v, xb, lw.wv, dim, kvd);
      if (lw.bq && lw.bk && lw.bv) {
        addInPlace(q, lw.bq);
        addInPlace(k, lw.bk);
        addInPlace(v, lw.bv);
      }
      if (lw.qNorm && lw.kNorm) {
        for (let h = 0; h < qd; h += headDim) {
          const head = q.subarray(h, h + headDim);
          norm(head, head.slice(), lw.qNorm, c.normEps);
        }
        for (let h = 0; h < kvd; h += headDim) {
          const head = k.subarray(h, h + headDim);
          norm(head, head.slice(), lw.kNorm, c.normEps);
        }
      }
      rope(q, pos, headDim, this.frequencies, c.ropeLayout);
      rope(k, pos, headDim, this.frequencies, c.ropeLayout);

      // Causal GQA: query head h reads kv head floor(h / group) at positions first..pos (all
      // of 0..pos, or the last slidingWindow of them: on every layer, or Gemma 2's even ones).
      const windowed = c.slidingWindowLayers !== "even" || l % 2 === 0;
      const first = Math.max(0, pos + 1 - (windowed ? c.slidingWindow ?? Infinity : Infinity));
      for (let h = 0; h < nHeads; h++) {
        const qh = h * headDim;
        const kvh = Math.floor(h / group) * headDim;
        for (let t = first; t <= pos; t++) {
          const kt = t * kvd + kvh;
          let score = 0;
          for (let i = 0; i < headDim; i++) score += q[qh + i] * this.keyCache[l][kt + i];
          att[t - first] = softcap(score * scale, c.attentionSoftcap);
        }
        softmax(att, pos + 1 - first);
        for (let i = 0; i < headDim; i++) {
          let sum = 0;
          for (let t = first; t <= pos; t++) {
            sum += att[t - first] * this.valueCache[l][t * kvd + kvh + i];
          }
          attOut[qh + i] = sum;
        }
      }
      matmul(xb, attOut, lw.wo, qd, dim);
      if (lw.postAttentionNorm) norm(xb, xb.slice(), lw.postAttentionNorm, c.normEps);
      for (let i = 0; i < dim; i++) x[i] += xb[i];

      // Feed-forward: w2(act(w1 h) ⊙ w3 h), act silu (SwiGLU) or tanh GELU (GeGLU).
      const act = c.mlpActivation === "gelu_tanh" ? geluTanh : silu;
      norm(xb, x, lw.ffnNorm, c.normEps);
      matmul(hb, xb, lw.w1, dim, hiddenDim);
      matmul(hb2, xb, lw.w3, dim, hiddenDim);
      for (let i = 0; i < hiddenDim; i++) hb[i] = act(hb[i]) * hb2[i];
      matmul(xb, hb, lw.w2, hiddenDim, dim);
      if (lw.postFfnNorm) norm(xb, xb.slice(), lw.postFfnNorm, c.normEps);
      for (let i = 0; i < dim; i++) x[i] += xb[i];
    }

    norm(x, x, w.norm, c.normEps);
    const logits = new Float32Array(c.vocabSize);
    matmul(logits, x, w.output, dim, c.vocabSize);
    for (let i = 0; i < logits.length; i++) logits[i] = softcap(logits[i], c.finalLogitSoftcap);
    return logits;
  }

  /**
   * Greedy decoding: feeds `prompt` from position 0, then appends the argmax (first maximum)
   * until `steps` forward passes have run, like run.c `generate` at temperature 0 except that it
   * does not stop at BOS. Returns the `steps - prompt.length + 1` generated ids and each step's
   * logits if `keepLogits` asks for the first few.
   */
  generateGreedy(
    prompt: readonly number[],
    steps: number,
    keepLogits = 0,
  ): { tokens: number[]; logits: Float32Array[] } {
    if (prompt.length === 0) throw new RangeError("greedy generation needs a non-empty prompt");
    const tokens: number[] = [];
    const logits: Float32Array[] = [];
    let token = prompt[0];
    for (let pos = 0; pos < steps; pos++) {
      const out = this.forward(token, pos);
      if (pos < keepLogits) logits.push(out);
      if (pos + 1 < prompt.length) {
        token = prompt[pos + 1];
        continue;
      }
      token = argmax(out);
      tokens.push(token);
    }
    return { tokens, logits };
  }
}
