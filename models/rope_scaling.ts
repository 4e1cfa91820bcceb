/**
 * RoPE's frequencies under Hugging Face's `rope_scaling` (its `rope_type`, or the older `type`),
 * computed once on the host in f64, as transformers' modeling_rope_utils computes them: the
 * kernels read one inverse frequency per pair and scale cos/sin by the attention factor, so every
 * rule below is just a different table.
 *
 * - default: inv_freq[i] = theta^(-2i/d);
 * - linear: inv_freq / factor (position interpolation);
 * - dynamic (NTK-aware): theta raised to base·((factor·L/L₀) − (factor − 1))^(d/(d−2)) with L the
 *   served context, fixed for the whole run as vLLM does (transformers recomputes it per forward
 *   from the length so far, which changes the keys' rotation mid-sequence);
 * - llama3 (Llama 3.1+): long wavelengths divided by factor, short ones kept, a smooth blend
 *   between `low_freq_factor` and `high_freq_factor`;
 * - factors (GGUF's `rope_freqs`, which llama.cpp's converter computes from Llama 3.1's rule):
 *   inv_freq[i] / factors[i];
 * - yarn: interpolation blended with extrapolation over a ramp between the `beta_fast` and
 *   `beta_slow` correction dims, and cos/sin scaled by `attention_factor` (default 0.1·ln(factor)+1,
 *   or the ratio of the `mscale`/`mscale_all_dim` forms).
 *
 * Any other rope_type, or a field of the wrong type, is refused by name when the config is read.
 */
import { defaultInverseFrequencies } from "../kernels/rope.ts";

/** A parsed `rope_scaling`. */
export type RopeScaling =
  | { readonly type: "default" }
  | { readonly type: "linear"; readonly factor: number }
  | {
    readonly type: "dynamic";
    readonly factor: number;
    readonly originalMaxPositions: number;
  }
  | {
    readonly type: "llama3";
    readonly factor: number;
    readonly lowFreqFactor: number;
    readonly highFreqFactor: number;
    readonly originalMaxPositions: number;
  }
  | {
    /** Per-pair divisors of the default frequencies, as GGUF's `rope_freqs` stores them. */
    readonly type: "factors";
    readonly factors: readonly number[];
  }
  | {
    readonly type: "yarn";
    readonly factor: number;
    readonly originalMaxPositions: number;
    readonly betaFast: number;
    readonly betaSlow: number;
    readonly attentionFactor: number;
    readonly truncate: boolean;
  };

/** What the kernels and the CPU reference rotate with. */
export interface RopeFrequencies {
  /** One inverse frequency per pair of a head (headDim / 2 of them). */
  readonly inverse: Float64Array;
  /** cos and sin are multiplied by this (1 but for yarn). */
  readonly attentionFactor: number;
}

const DEFAULT_SCALING: RopeScaling = { type: "default" };

const defaultInverse = defaultInverseFrequencies;

const yarnMscale = (scale: number, mscale = 1) =>
  scale <= 1 ? 1 : 0.1 * mscale * Math.log(scale) + 1;

/**
 * The frequencies for a head of `headDim` with base `theta`, scaled by `scaling`, for a model
 * serving `maxPositions` positions.
 */
export const ropeFrequencies = (
  theta: number,
  headDim: number,
  scaling: RopeScaling = DEFAULT_SCALING,
  maxPositions = 0,
): RopeFrequencies => {
  const half = headDim / 2;
  switch (scaling.type) {
    case "default":
      return { inverse: defaultInverse(theta, headDim), attentionFactor: 1 };
    case "linear":
      return {
        inverse: defaultInverse(theta, headDim).map((f) => f / scaling.factor),
        attentionFactor: 1,
      };
    case "dynamic": {
      const { factor, originalMaxPositions } = scaling;
      const length = Math.max(maxPositions, originalMaxPositions);
      const base = theta *
        Math.pow(factor * length / originalMaxPositions - (factor - 1), headDim / (headDim - 2));
      return { inverse: defaultInverse(base, headDim), attentionFactor: 1 };
    }
    case "factors":
      return {
        inverse: defaultInverse(theta, headDim).map((f, i) => f / scaling.factors[i]),
        attentionFactor: 1,
      };
    case "llama3": {
      const { factor, lowFreqFactor, highFreqFactor, originalMaxPositions } = scaling;
      const lowFreqWavelength = originalMaxPositions / lowFreqFactor;
      const highFreqWavelength = originalMaxPositions / highFreqFactor;
      const inverse = defaultInverse(theta, headDim).map((f) => {
        const wavelength = (2 * Math.PI) / f;
        if (wavelength < highFreqWavelength) return f;
        if (wavelength > lowFreqWavelength) return f / factor;
        const smooth = (originalMaxPositions / wavelength - lowFreqFactor) /
          (highFreqFactor - lowFreqFactor);
        return (1 - smooth) * (f / factor) + smooth * f;
      });
      return { inverse, attentionFactor: 1 };
    }
    case "yarn": {
      const { factor, originalMaxPositions, betaFast, betaSlow, truncate } = scaling;
      const correctionDim = (rotations: number) =>
        (headDim * Math.log(originalMaxPositions / (rotations * 2 * Math.PI))) /
        (2 * Math.log(theta));
      let low = correctionDim(betaFast), high = correctionDim(betaSlow);
      if (truncate) [low, high] = [Math.floor(low), Math.ceil(high)];
      low = Math.max(low, 0);
      high = Math.min(high, headDim - 1);
      if (low === high) high += 0.001;
      const inverse = Float64Array.from({ length: half }, (_, i) => {
        const extrapolation = Math.pow(theta, (-2 * i) / headDim);
        const interpolation = extrapolation / factor;
        const ramp = Math.min(1, Math.max(0, (i - low) / (high - low)));
        const extrapolationShare = 1 - ramp;
        return interpolation * (1 - extrapolationShare) + extrapolation * extrapolationShare;
      });
      return { inverse, attentionFactor: scaling.attentionFactor };
    }
  }
};

/**
 * `rope_scaling` of a config.json, for a model of `maxPositions` (max_position_embeddings):
 * the parsed rule, or a message naming the field that is wrong or not supported.
 */
export const parseRopeScaling = (value: unknown, maxPositions: number): RopeScaling | string => {
  if (value == null) return DEFAULT_SCALING;
  if (typeof value !== "object" || Array.isArray(value)) {
    return `rope_scaling = ${JSON.stringify(value)} must be an object`;
  }
  const json = value as Record<string, unknown>;
  const type = json.rope_type ?? json.type;
  const number = (name: string, fallback?: number, above = 0): number | string => {
    const v = json[name] ?? fallback;
    if (v === undefined) return `rope_scaling.${name} is missing (rope_type ${type})`;
    if (!(typeof v === "number" && Number.isFinite(v) && v > above)) {
      return `rope_scaling.${name} = ${JSON.stringify(v)} must be a number > ${above}`;
    }
    return v;
  };
  const numbers = (specs: Record<string, [number | undefined, number?]>) => {
    const out: Record<string, number> = {};
    for (const [name, [fallback, above]] of Object.entries(specs)) {
      const v = number(name, fallback, above);
      if (typeof v === "string") return v;
      out[name] = v;
    }
    return out;
  };
  switch (type) {
    case "default":
      return DEFAULT_SCALING;
    case "linear": {
      const n = numbers({ factor: [undefined] });
      return typeof n === "string" ? n : { type: "linear", factor: n.factor };
    }
    case "dynamic": {
      const n = numbers({
        factor: [undefined, 1],
        original_max_position_embeddings: [maxPositions],
      });
      if (typeof n === "string") return n;
      return {
        type: "dynamic",
        factor: n.factor,
        originalMaxPositions: n.original_max_position_embeddings,
      };
    }
    case "llama3": {
      const n = numbers({
        factor: [undefined],
        low_freq_factor: [undefined],
        high_freq_factor: [undefined],
        original_max_position_embeddings: [undefined],
      });
      if (typeof n === "string") return n;
      if (!(n.high_freq_factor > n.low_freq_factor)) {
        return `rope_scaling.high_freq_factor ${n.high_freq_factor} must exceed ` +
          `low_freq_factor ${n.low_freq_factor}`;
      }
      return {
        type: "llama3",
        factor: n.factor,
        lowFreqFactor: n.low_freq_factor,
        highFreqFactor: n.high_freq_factor,
        originalMaxPositions: n.original_max_position_embeddings,
      };
    }
    case "yarn": {
      const n = numbers({
        factor: [undefined],
        original_max_position_embeddings: [maxPositions],
        beta_fast: [32],
        beta_slow: [1],
      });
      if (typeof n === "string") return n;
      const truncate = json.truncate ?? true;
      if (typeof truncate !== "boolean") {
        return `rope_scaling.truncate = ${JSON.stringify(truncate)} must be a boolean`;
      }
      let attentionFactor: number;
      if (json.attention_factor != null) {
        const a = number("attention_factor");
        if (typeof a === "string") return a;
        attentionFactor = a;
      } else if (json.mscale != null && json.mscale_all_dim != null) {
        const m = numbers({ mscale: [undefined], mscale_all_dim: [undefined] });
        if (typeof m === "string") return m;
        attentionFactor = yarnMscale(n.factor, m.mscale) / yarnMscale(n.factor, m.mscale_all_dim);
      } else attentionFactor = yarnMscale(n.factor);
      return {
        type: "yarn",
        factor: n.factor,
        originalMaxPositions: n.original_max_position_embeddings,
        betaFast: n.beta_fast,
        betaSlow: n.beta_slow,
        attentionFactor,
        truncate,
      };
    }
    default:
      return `rope_scaling type ${JSON.stringify(type)} is not supported ` +
        `(supported: linear, dynamic, llama3, yarn)`;
  }
};
