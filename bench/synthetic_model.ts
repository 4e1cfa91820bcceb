/**
 * Synthetic llama2.c checkpoints for the benchmark: the stories15M and stories110M shapes with
 * weights from a fixed-seed PRNG, small enough in magnitude that activations stay finite (norm
 * weights 1, every other weight uniform in ±0.035, std 0.02, as in GPT-2's initialisation; real
 * RoPE tables in the unused freq_cis slots). A shared classifier, as the real stories models.
 * Files are streamed out in chunks (a 110M file is ~440 MB) and cached by shape and seed.
 */
import type { LlamaConfig } from "../models/config.ts";
import { encodeLlama2cHeader, planLlama2cLayout } from "../models/llama2c.ts";

/** The header fields of a llama2.c model shape, and a name for the tables. */
export type ModelShape =
  & { readonly name: string }
  & Pick<
    LlamaConfig,
    "dim" | "hiddenDim" | "nLayers" | "nHeads" | "nKvHeads" | "vocabSize" | "seqLen"
  >;

export const STORIES15M: ModelShape = {
  name: "15M",
  dim: 288,
  hiddenDim: 768,
  nLayers: 6,
  nHeads: 6,
  nKvHeads: 6,
  vocabSize: 32000,
  seqLen: 256,
};

export const STORIES110M: ModelShape = {
  name: "110M",
  dim: 768,
  hiddenDim: 2048,
  nLayers: 12,
  nHeads: 12,
  nKvHeads: 12,
  vocabSize: 32000,
  seqLen: 1024,
};

/** Bump when the generated values change, so stale cached files are not reused. */
const FORMAT_VERSION = 1;

/** Uniform half-width: std 0.02. */
const WEIGHT_SCALE = 0.02 * Math.sqrt(3);

/** The config a checkpoint of this shape loads as (llama2.c defaults, shared classifier). */
export const shapeConfig = (shape: ModelShape): LlamaConfig => ({
  dim: shape.dim,
  hiddenDim: shape.hiddenDim,
  nLayers: shape.nLayers,
  nHeads: shape.nHeads,
  nKvHeads: shape.nKvHeads,
  vocabSize: shape.vocabSize,
  seqLen: shape.seqLen,
  headDim: shape.dim / shape.nHeads,
  normEps: 1e-5,
  ropeTheta: 10000,
  ropeLayout: "interleaved",
  sharedClassifier: true,
});

/** Bytes of the checkpoint file of `shape`. */
export const checkpointBytes = (shape: ModelShape): number =>
  planLlama2cLayout(shapeConfig(shape)).totalBytes;

/** Bytes of every weight a forward pass reads (the classifier once; RoPE tables excluded). */
export const modelWeightBytes = (shape: ModelShape): number => {
  const { stored } = planLlama2cLayout(shapeConfig(shape));
  return stored.filter((e) => !e.name.startsWith("freq_cis")).reduce((n, e) => n + e.byteLength, 0);
};

/** xorshift32: fast, fixed sequence for a seed; never zero. */
const xorshift32 = (seed: number) => {
  let s = (seed >>> 0) || 0x9e3779b9;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
};

/**
 * Writes a checkpoint of `shape` to `path`: header, then every tensor in llama2.c order, at most
 * `chunkFloats` floats in memory at a time.
 */
export const writeSyntheticCheckpoint = async (
  path: string,
  shape: ModelShape,
  seed: number,
  chunkFloats = 1 << 20,
): Promise<void> => {
  const config = shapeConfig(shape);
  const { stored } = planLlama2cLayout(config);
  const next = xorshift32(seed);
  const chunk = new Float32Array(chunkFloats);
  const bytes = new Uint8Array(chunk.buffer);
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  const writeAll = async (data: Uint8Array) => {
    for (let at = 0; at < data.length;) at += await file.write(data.subarray(at));
  };
  try {
    await writeAll(encodeLlama2cHeader(config));
    for (const entry of stored) {
      const count = entry.byteLength / 4;
      const fill = fillerFor(entry.name, config, next);
      for (let at = 0; at < count; at += chunkFloats) {
        const n = Math.min(chunkFloats, count - at);
        fill(chunk, at, n);
        await writeAll(bytes.subarray(0, n * 4));
      }
    }
  } finally {
    file.close();
  }
};

/** How the floats [at, at + n) of a tensor are made, into chunk[0, n). */
const fillerFor = (
  name: string,
  config: LlamaConfig,
  next: () => number,
): (chunk: Float32Array, at: number, n: number) => void => {
  if (name === "norm" || name.endsWith("_norm")) return (chunk, _, n) => chunk.fill(1, 0, n);
  if (name.startsWith("freq_cis")) {
    const half = config.headDim / 2;
    const trig = name === "freq_cis_real" ? Math.cos : Math.sin;
    return (chunk, at, n) => {
      for (let i = 0; i < n; i++) {
        const pos = Math.floor((at + i) / half), j = (at + i) % half;
        chunk[i] = trig(pos * config.ropeTheta ** (-(2 * j) / config.headDim));
      }
    };
  }
  const scale = (2 * WEIGHT_SCALE) / 4294967296;
  return (chunk, _, n) => {
    for (let i = 0; i < n; i++) chunk[i] = next() * scale - WEIGHT_SCALE;
  };
};

/**
 * The path of a cached checkpoint of `shape` and `seed` under `dir`, written first when missing
 * (or the wrong size: an interrupted write). Returns whether it was generated now.
 */
export const syntheticCheckpoint = async (
  shape: ModelShape,
  seed: number,
  dir: string,
): Promise<{ path: string; generated: boolean }> => {
  const s = shape;
  const path = `${dir}/synthetic-${s.name}-${s.dim}x${s.hiddenDim}x${s.nLayers}` +
    `-h${s.nHeads}kv${s.nKvHeads}-v${s.vocabSize}-t${s.seqLen}-seed${seed}-v${FORMAT_VERSION}.bin`;
  const expected = checkpointBytes(shape);
  const size = await Deno.stat(path).then((st) => st.size, () => -1);
  if (size === expected) return { path, generated: false };
  await Deno.mkdir(dir, { recursive: true });
  const partial = `${path}.partial`;
  await writeSyntheticCheckpoint(partial, shape, seed);
  await Deno.rename(partial, path);
  return { path, generated: true };
};
