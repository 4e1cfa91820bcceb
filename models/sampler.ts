/**
 * Token sampling on the host, ported from llama2.c `run.c`: argmax at temperature 0, otherwise
 * softmax(logits / temperature) and either plain multinomial sampling or top-p (nucleus) sampling
 * with run.c's cutoff rule, drawing coins from run.c's xorshift64* generator so that a seed gives
 * a reproducible token stream. Probabilities are computed in f64 (run.c uses f32), so a coin that
 * lands within float rounding of a boundary may, very rarely, pick the neighbouring token.
 *
 * GPU ranks do not send full logits: each sends its top-k `(logit, index)` candidates and the
 * log-sum-exp of its shard, and the host merges them (`mergeCandidates`) and samples from the
 * candidates (`Sampler.sampleCandidates`). That equals full-logit sampling when
 * - temperature is 0 (argmax is the first candidate), or
 * - top-p is on, the log-sum-exp covers the whole vocabulary, and the nucleus fits in the
 *   candidates (the cumulative probability passes top-p within them, or they reach below
 *   run.c's cutoff `(1 - topp) / (n - 1)`); the result reports `exact: true` then.
 * Plain multinomial sampling (top-p off) on candidates is top-k sampling: exact only when the
 * candidates are the whole vocabulary.
 */
import { type Cause, Data, Effect } from "effect";
import type { ErrorFields, TaggedErrorClass } from "../util/tagged_error.ts";
import { ConfigError } from "./errors.ts";

const MASK64 = (1n << 64n) - 1n;

/** run.c's xorshift64* generator (`random_u32`, `random_f32`), on a 64-bit state. */
export class XorShift64Star {
  private state: bigint;

  constructor(seed: number | bigint) {
    this.state = BigInt.asUintN(64, BigInt(seed));
  }

  /** run.c `random_u32`. */
  nextU32(): number {
    let s = this.state;
    s ^= s >> 12n;
    s ^= (s << 25n) & MASK64;
    s ^= s >> 27n;
    this.state = s;
    return Number(((s * 0x2545f4914f6cdd1dn) & MASK64) >> 32n);
  }

  /** The generator state, to replay a draw (see `Sampler.replay`). */
  get snapshot(): bigint {
    return this.state;
  }

  set snapshot(state: bigint) {
    this.state = state;
  }

  /** run.c `random_f32`: 24 random bits as a float in [0, 1). */
  nextF32(): number {
    return (this.nextU32() >>> 8) / 16777216;
  }
}

/**
 * Top-k candidates: `values` are logits sorted descending (ties: lower index first), `indices`
 * their token ids. `logSumExp` is `log Σ exp(logit / temperature)` over the vocabulary covered
 * (the whole vocabulary once merged), at the sampler's temperature; without it the candidates are
 * treated as the whole distribution.
 */
export interface CandidateList {
  /** Logits, sorted descending. */
  readonly values: Float32Array;
  /** Token id of each value. */
  readonly indices: Int32Array;
  /** `log Σ exp(logit / temperature)` over the vocabulary covered. */
  readonly logSumExp?: number;
}

/**
 * The model's logits are NaN or infinite (broken weights, or an overflow), so no token can be
 * sampled: top-k would otherwise report its padding index (-1) as the winner.
 */
export interface NonFiniteLogits extends Cause.YieldableError {
  /** Always `"NonFiniteLogits"`. */
  readonly _tag: "NonFiniteLogits";
  /** Human-readable description. */
  readonly message: string;
}

/** Makes a `NonFiniteLogits` (a `Data.TaggedError`: yieldable, matched by `_tag`). */
export const NonFiniteLogits: TaggedErrorClass<NonFiniteLogits> = Data.TaggedError(
  "NonFiniteLogits",
)<ErrorFields<NonFiniteLogits>>;

const nonFinite = (value: number) =>
  new NonFiniteLogits({
    message: `the model produced non-finite logits (${value}); its weights or activations ` +
      "are broken",
  });

/**
 * `candidates` when every one is a finite logit of a real token (top-k pads with -Infinity and
 * index -1 only past a vocabulary smaller than k, which is fine after the first).
 */
export const finiteCandidates = (
  candidates: CandidateList,
): Effect.Effect<CandidateList, NonFiniteLogits> => {
  const { values, indices } = candidates;
  for (let i = 0; i < values.length; i++) {
    const padding = i > 0 && values[i] === -Infinity && indices[i] === -1;
    if (!(Number.isFinite(values[i]) && indices[i] >= 0) && !padding) {
      return Effect.fail(nonFinite(values[i]));
    }
  }
  return Effect.succeed(candidates);
};

/**
 * The next token from a model whose vocabulary (`modelVocab` logits) may be padded past the
 * tokenizer's `tokenVocab` (Qwen2.5 ships 151,936 rows for 151,665 tokens): padding ids are never
 * chosen. Candidates of padding are dropped (with the log-sum-exp, which counted their mass),
 * the full logits are cut to the tokenizer's length, and greedy falls back to those when every
 * candidate was padding. With no padding, it is `sampler.sampleExactly`, or greedy's top one.
 */
export const chooseToken = <E>(
  sampler: Sampler | undefined,
  candidates: CandidateList,
  fullLogits: Effect.Effect<Float32Array, E>,
  tokenVocab: number,
  modelVocab: number,
): Effect.Effect<number, E | NonFiniteLogits> => {
  const padded = modelVocab > tokenVocab;
  const real = padded ? withoutPadding(candidates, tokenVocab) : candidates;
  const logits = padded ? Effect.map(fullLogits, (l) => l.subarray(0, tokenVocab)) : fullLogits;
  if (sampler !== undefined) return sampler.sampleExactly(real, logits);
  if (real.values.length > 0) return Effect.map(finiteCandidates(real), (c) => c.indices[0]);
  return Effect.map(Effect.flatMap(logits, finiteLogits), argmax);
};

/** The candidates below `tokenVocab`, in order, without a log-sum-exp (it counted padding). */
const withoutPadding = (candidates: CandidateList, tokenVocab: number): CandidateList => {
  const keep: number[] = [];
  candidates.indices.forEach((index, i) => {
    if (index < tokenVocab) keep.push(i);
  });
  return {
    values: Float32Array.from(keep, (i) => candidates.values[i]),
    indices: Int32Array.from(keep, (i) => candidates.indices[i]),
  };
};

/** `logits` when all are finite. */
const finiteLogits = (logits: Float32Array): Effect.Effect<Float32Array, NonFiniteLogits> => {
  for (const value of logits) if (!Number.isFinite(value)) return Effect.fail(nonFinite(value));
  return Effect.succeed(logits);
};

/** Options of {@link Sampler.make}. */
export interface SamplerOptions {
  /** Size of the vocabulary the logits cover. */
  readonly vocabSize: number;
  /** 0 means greedy (argmax). */
  readonly temperature: number;
  /** Nucleus mass in (0, 1); values outside turn top-p off, as in run.c. */
  readonly topp: number;
  /** xorshift64* seed; must not be 0 (the generator would stay at 0). */
  readonly seed: number | bigint;
}

/** A token sampled from candidates, and whether the full logits would agree. */
export interface CandidateSample {
  /** The sampled token id. */
  readonly token: number;
  /** True when full-logit sampling with the same state would certainly give the same token. */
  readonly exact: boolean;
}

/** Greater first; equal values by lower index, matching argmax's first maximum. */
const byValueThenIndex = (
  values: ArrayLike<number>,
  indices: ArrayLike<number>,
) =>
(a: number, b: number): number => values[b] - values[a] || indices[a] - indices[b];

/** `log Σ exp(x_i / t)` computed stably. */
const logSumExpOf = (xs: ArrayLike<number>, t: number, from = 0, to = xs.length): number => {
  let max = -Infinity;
  for (let i = from; i < to; i++) max = Math.max(max, xs[i] / t);
  if (max === -Infinity) return -Infinity;
  let sum = 0;
  for (let i = from; i < to; i++) sum += Math.exp(xs[i] / t - max);
  return max + Math.log(sum);
};

/** Stable combination of partial log-sum-exps from several shards. */
const combineLogSumExp = (parts: readonly number[]): number => {
  const max = Math.max(...parts);
  if (max === -Infinity) return -Infinity;
  return max + Math.log(parts.reduce((s, p) => s + Math.exp(p - max), 0));
};

/**
 * A rank's candidates: the top `k` of its logits shard, whose first element is token `offset`,
 * with the shard's log-sum-exp at `temperature` (omitted when greedy).
 */
export const shardCandidates = (
  logits: ArrayLike<number>,
  k: number,
  offset = 0,
  temperature = 0,
): CandidateList => {
  const order = Array.from({ length: logits.length }, (_, i) => i);
  const ids = order.map((i) => i + offset);
  order.sort(byValueThenIndex(logits, ids));
  const top = order.slice(0, Math.min(k, logits.length));
  return {
    values: Float32Array.from(top, (i) => logits[i]),
    indices: Int32Array.from(top, (i) => i + offset),
    logSumExp: temperature > 0 ? logSumExpOf(logits, temperature) : undefined,
  };
};

/** Merges several ranks' candidate lists into one top-`k` list over their union of shards. */
export const mergeCandidates = (lists: readonly CandidateList[], k: number): CandidateList => {
  const values = lists.flatMap((l) => Array.from(l.values));
  const indices = lists.flatMap((l) => Array.from(l.indices));
  const order = values.map((_, i) => i).sort(byValueThenIndex(values, indices)).slice(0, k);
  const parts = lists.map((l) => l.logSumExp);
  return {
    values: Float32Array.from(order, (i) => values[i]),
    indices: Int32Array.from(order, (i) => indices[i]),
    logSumExp: parts.every((p) => p !== undefined) && parts.length > 0
      ? combineLogSumExp(parts as number[])
      : undefined,
  };
};

/**
 * run.c `sample_topp` after its cutoff filter and sort: `probs` descending. Returns the position
 * drawn and whether the cumulative mass passed `topp` inside the list.
 */
const nucleus = (probs: ArrayLike<number>, topp: number, coin: number) => {
  const n0 = probs.length;
  let cumulative = 0;
  let last = n0 - 1;
  let passed = false;
  for (let i = 0; i < n0; i++) {
    cumulative += probs[i];
    if (cumulative > topp) {
      last = i;
      passed = true;
      break;
    }
  }
  const r = coin * cumulative;
  let cdf = 0;
  for (let i = 0; i <= last; i++) {
    cdf += probs[i];
    if (r < cdf) return { position: i, passed };
  }
  return { position: last, passed };
};

/** run.c `sample_argmax`: the first maximum. */
export const argmax = (xs: ArrayLike<number>): number => {
  let best = 0;
  for (let i = 1; i < xs.length; i++) if (xs[i] > xs[best]) best = i;
  return best;
};

/** run.c `sample_mult`: walk the probabilities in the given order until the coin is covered. */
const multinomial = (probs: ArrayLike<number>, coin: number): number => {
  let cdf = 0;
  for (let i = 0; i < probs.length; i++) {
    cdf += probs[i];
    if (coin < cdf) return i;
  }
  return probs.length - 1;
};

/** run.c's sampler (greedy, temperature, top-p) with its xorshift64* state. */
export class Sampler {
  private readonly rng: XorShift64Star;

  private constructor(readonly options: SamplerOptions) {
    this.rng = new XorShift64Star(options.seed);
  }

  /** Validates the options; the sampler holds the RNG state, one per generation stream. */
  static make(options: SamplerOptions): Effect.Effect<Sampler, ConfigError> {
    const { vocabSize, temperature, topp, seed } = options;
    const fail = (message: string) => Effect.fail(new ConfigError({ message }));
    if (!(Number.isInteger(vocabSize) && vocabSize > 0)) {
      return fail(`sampler vocabSize ${vocabSize} must be a positive integer`);
    }
    if (!(Number.isFinite(temperature) && temperature >= 0)) {
      return fail(`sampler temperature ${temperature} must be a finite number >= 0`);
    }
    if (!Number.isFinite(topp)) return fail(`sampler topp ${topp} must be finite`);
    if (typeof seed === "number" && !Number.isSafeInteger(seed)) {
      return fail(`sampler seed ${seed} must be an integer`);
    }
    if (BigInt.asUintN(64, BigInt(seed)) === 0n) {
      return fail("sampler seed must not be 0 (xorshift would stay at 0)");
    }
    return Effect.succeed(new Sampler(options));
  }

  /**
   * Runs `draw` and rewinds the RNG to before it, so a candidate draw that turned out inexact
   * can be redone on the full logits with the same coin.
   */
  replay<A>(draw: (sampler: Sampler) => A): A {
    const state = this.rng.snapshot;
    try {
      return draw(this);
    } finally {
      this.rng.snapshot = state;
    }
  }

  /**
   * Whether top-p filtering is on.
   *
   * @ignore
   */
  private get toppOn(): boolean {
    return this.options.topp > 0 && this.options.topp < 1;
  }

  /** run.c `sample` on full logits (not modified). One coin per call unless greedy. */
  sample(logits: ArrayLike<number>): number {
    const { vocabSize, temperature, topp } = this.options;
    if (logits.length !== vocabSize) {
      throw new RangeError(`sampler got ${logits.length} logits for a vocabulary of ${vocabSize}`);
    }
    if (temperature === 0) return argmax(logits);
    const lse = logSumExpOf(logits, temperature);
    const probs = new Float64Array(vocabSize);
    for (let i = 0; i < vocabSize; i++) probs[i] = Math.exp(logits[i] / temperature - lse);
    const coin = this.rng.nextF32();
    if (!this.toppOn) return multinomial(probs, coin);
    const cutoff = (1 - topp) / (vocabSize - 1);
    const kept: number[] = [];
    for (let i = 0; i < vocabSize; i++) if (probs[i] >= cutoff) kept.push(i);
    kept.sort((a, b) => probs[b] - probs[a] || a - b);
    if (kept.length === 0) kept.push(argmax(probs)); // run.c would index -1 here
    return kept[nucleus(kept.map((i) => probs[i]), topp, coin).position];
  }

  /**
   * Samples from merged top-k candidates (see the module note for when this equals `sample` on
   * the full logits). Draws exactly one coin unless greedy, like `sample`, so streams that mix
   * both stay in step.
   */
  sampleCandidates(candidates: CandidateList): CandidateSample {
    const { vocabSize, temperature, topp } = this.options;
    const { values, indices, logSumExp } = candidates;
    const k = values.length;
    if (k === 0 || indices.length !== k) {
      throw new RangeError(`candidate list has ${k} values and ${indices.length} indices`);
    }
    const complete = k === vocabSize;
    if (temperature === 0) return { token: indices[0], exact: true };
    const lse = logSumExp ?? logSumExpOf(values, temperature);
    const exactMass = logSumExp !== undefined;
    const probs = Float64Array.from(values, (v) => Math.exp(v / temperature - lse));
    const coin = this.rng.nextF32();
    if (!this.toppOn) {
      // run.c walks tokens in index order; renormalise over the candidates (top-k sampling).
      const order = Array.from({ length: k }, (_, i) => i).sort((a, b) => indices[a] - indices[b]);
      const mass = order.reduce((s, i) => s + probs[i], 0);
      const walk = order.map((i) => probs[i] / mass);
      return { token: indices[order[multinomial(walk, coin)]], exact: complete };
    }
    const cutoff = (1 - topp) / (vocabSize - 1);
    let n0 = 0;
    while (n0 < k && probs[n0] >= cutoff) n0++;
    const coveredAll = n0 < k || complete;
    n0 = Math.max(n0, 1); // nothing reaches the cutoff: take the top token (run.c: undefined)
    const { position, passed } = nucleus(probs.subarray(0, n0), topp, coin);
    return { token: indices[position], exact: (exactMass || complete) && (passed || coveredAll) };
  }

  /**
   * The next token from merged candidates, exactly as the full logits would give it: the
   * candidates' draw when it is provably the same, else the same coin on `fullLogits`.
   * Non-finite logits fail with {@link NonFiniteLogits}.
   */
  sampleExactly<E>(
    candidates: CandidateList,
    fullLogits: Effect.Effect<Float32Array, E>,
  ): Effect.Effect<number, E | NonFiniteLogits> {
    return Effect.flatMap(finiteCandidates(candidates), (finite) => {
      if (this.replay((s) => s.sampleCandidates(finite)).exact) {
        return Effect.succeed(this.sampleCandidates(finite).token);
      }
      return fullLogits.pipe(
        Effect.flatMap(finiteLogits),
        Effect.map((logits) => this.sample(logits)),
      );
    });
  }
}

/** Candidates each rank sends when sampling; enough to hold the nucleus almost always. */
export const CANDIDATES_PER_RANK = 64;
