/**
 * The llama2.c checkpoint format (`.bin`): a header of 7 little-endian int32 (dim, hidden_dim,
 * n_layers, n_heads, n_kv_heads, vocab_size — negative when a separate classifier follows —,
 * seq_len), then f32 tensors in a fixed order, each matrix row-major `[out, in]` and stacked over
 * layers: embedding, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final, two unused RoPE
 * tables, then the optional classifier. The header is checked against the file size up front so a
 * truncated or padded file fails at load with the tensor where it ends, not later with garbage.
 */
import { Effect, type Scope } from "effect";
import type { LlamaConfig } from "./config.ts";
import { kvDim, qDim } from "./config.ts";
import { type LoadError, loadError } from "./errors.ts";
import {
  type FilePath,
  filePathString,
  fileSize,
  openForRead,
  readBytesAt,
  readColumnsFrom,
  readRowsFrom,
  type TensorEntry,
} from "./tensor_reader.ts";
import type { WeightSource } from "./shards.ts";

export {
  type FilePath,
  readColumns,
  readRows,
  readTensors,
  type TensorEntry,
} from "./tensor_reader.ts";

/** Bytes of the header: 7 int32. */
export const LLAMA2C_HEADER_BYTES = 28;

/** Where every named tensor of a checkpoint lives. */
export interface Llama2cLayout {
  readonly file: string;
  readonly fileSize: number;
  /**
   * File order: `tok_embeddings`, `layers.{l}.attention_norm`, `layers.{l}.wq|wk|wv|wo`,
   * `layers.{l}.ffn_norm`, `layers.{l}.w1` (gate), `w2` (down), `w3` (up), `norm`,
   * `freq_cis_real`, `freq_cis_imag` (unused), `output`. With a shared classifier `output` has the
   * embedding's offset.
   */
  readonly tensors: ReadonlyMap<string, TensorEntry>;
}

export interface Llama2cHeader {
  readonly config: LlamaConfig;
  readonly layout: Llama2cLayout;
}

/** Plausibility bounds: anything larger is a misread header, not a model. */
const LIMITS = {
  dim: 1 << 16,
  hidden_dim: 1 << 18,
  n_layers: 1 << 10,
  n_heads: 1 << 12,
  n_kv_heads: 1 << 12,
  vocab_size: 1 << 22,
  seq_len: 1 << 22,
} as const;

const FIELDS = Object.keys(LIMITS) as (keyof typeof LIMITS)[];

/** The magic of llama2.c's newer "version 2" export (`ak42`), which this legacy reader rejects. */
const AK42_MAGIC = 0x616b3432;

/** Turns the 7 header ints into a config, rejecting non-positive, absurd or inconsistent dims. */
export const configFromLlama2cHeader = (
  file: string,
  header: readonly number[],
): Effect.Effect<LlamaConfig, LoadError> => {
  const fail = (reason: string) => Effect.fail(loadError(file, `bad header: ${reason}`));
  if (header[0] === AK42_MAGIC) {
    return fail("this is a llama2.c version-2 export (magic 'ak42'), not the legacy f32 format");
  }
  const values = FIELDS.map((name, i) => ({
    name,
    value: name === "vocab_size" ? Math.abs(header[i]) : header[i],
  }));
  for (const { name, value } of values) {
    if (!(value > 0)) return fail(`${name} = ${value} must be positive`);
    if (value > LIMITS[name]) {
      return fail(`${name} = ${value} is implausibly large (limit ${LIMITS[name]})`);
    }
  }
  const [dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabSize, seqLen] = values.map((v) => v.value);
  if (dim % nHeads !== 0) return fail(`dim ${dim} is not divisible by n_heads ${nHeads}`);
  if (nKvHeads > nHeads || nHeads % nKvHeads !== 0) {
    return fail(`n_heads ${nHeads} is not a multiple of n_kv_heads ${nKvHeads}`);
  }
  const headDim = dim / nHeads;
  if (headDim % 2 !== 0) {
    return fail(`head size ${headDim} (dim / n_heads) is odd; RoPE needs pairs`);
  }
  return Effect.succeed({
    dim,
    hiddenDim,
    nLayers,
    nHeads,
    nKvHeads,
    vocabSize,
    seqLen,
    headDim,
    normEps: 1e-5,
    ropeTheta: 10000,
    ropeLayout: "interleaved",
    sharedClassifier: header[5] > 0,
  });
};

/** The header ints of a config (negative vocab for a separate classifier), for writing files. */
export const encodeLlama2cHeader = (config: LlamaConfig): Uint8Array => {
  const ints = new Int32Array([
    config.dim,
    config.hiddenDim,
    config.nLayers,
    config.nHeads,
    config.nKvHeads,
    config.sharedClassifier ? config.vocabSize : -config.vocabSize,
    config.seqLen,
  ]);
  const bytes = new Uint8Array(LLAMA2C_HEADER_BYTES);
  const view = new DataView(bytes.buffer);
  ints.forEach((v, i) => view.setInt32(i * 4, v, true));
  return bytes;
};

/**
 * The tensors physically present in a file of this config, in file order, and the total size.
 * (`output` appears here only when it is stored separately.)
 */
export const planLlama2cLayout = (
  config: LlamaConfig,
): { readonly stored: readonly TensorEntry[]; readonly totalBytes: number } => {
  const { dim, hiddenDim, nLayers, vocabSize, seqLen, headDim } = config;
  const stored: TensorEntry[] = [];
  let offset = LLAMA2C_HEADER_BYTES;
  const add = (name: string, shape: number[]) => {
    const byteLength = shape.reduce((a, b) => a * b, 4);
    stored.push({ name, offset, shape, byteLength });
    offset += byteLength;
  };
  const perLayer = (suffix: string, shape: number[]) => {
    for (let l = 0; l < nLayers; l++) add(`layers.${l}.${suffix}`, shape);
  };
  add("tok_embeddings", [vocabSize, dim]);
  perLayer("attention_norm", [dim]);
  perLayer("wq", [qDim(config), dim]);
  perLayer("wk", [kvDim(config), dim]);
  perLayer("wv", [kvDim(config), dim]);
  perLayer("wo", [dim, qDim(config)]);
  perLayer("ffn_norm", [dim]);
  perLayer("w1", [hiddenDim, dim]);
  perLayer("w2", [dim, hiddenDim]);
  perLayer("w3", [hiddenDim, dim]);
  add("norm", [dim]);
  add("freq_cis_real", [seqLen, headDim / 2]);
  add("freq_cis_imag", [seqLen, headDim / 2]);
  if (!config.sharedClassifier) add("output", [vocabSize, dim]);
  return { stored, totalBytes: offset };
};

/** Explains a size mismatch by naming the tensor in which the file ends (or the last one). */
const sizeMismatch = (
  file: string,
  config: LlamaConfig,
  stored: readonly TensorEntry[],
  expected: number,
  size: number,
): LoadError => {
  const classifierBytes = config.vocabSize * config.dim * 4;
  if (size > expected) {
    const last = stored[stored.length - 1];
    const hint = config.sharedClassifier && size === expected + classifierBytes
      ? "; that is exactly a separate classifier, so vocab_size in the header should be negative"
      : "";
    return loadError(
      file,
      `${
        size - expected
      } trailing bytes after the last tensor (file is ${size} bytes, the header ` +
        `implies ${expected})${hint}`,
      last.name,
    );
  }
  const inside = stored.find((e) => size < e.offset + e.byteLength) ?? stored[stored.length - 1];
  const where = size <= inside.offset
    ? "exactly where this tensor should start"
    : `${size - inside.offset} bytes into this ${inside.byteLength}-byte tensor`;
  const hint = !config.sharedClassifier && size === expected - classifierBytes
    ? "; the header's negative vocab_size promises a separate classifier that is not there"
    : "";
  return loadError(
    file,
    `file is truncated: ${size} bytes but the header implies ${expected}; it ends ${where}${hint}`,
    inside.name,
  );
};

/**
 * Reads and validates the header of a llama2.c checkpoint and lays out every tensor. Reads only
 * the 28 header bytes; fails when the file size differs from what the header implies.
 */
export const readLlama2cHeader = (path: FilePath): Effect.Effect<Llama2cHeader, LoadError> => {
  const file = filePathString(path);
  return Effect.scoped(Effect.gen(function* () {
    const handle = yield* openForRead(file);
    const size = yield* fileSize(handle, file);
    if (size < LLAMA2C_HEADER_BYTES) {
      return yield* Effect.fail(
        loadError(
          file,
          `file is ${size} bytes, too short for the ${LLAMA2C_HEADER_BYTES}-byte llama2.c header`,
        ),
      );
    }
    const bytes = new Uint8Array(LLAMA2C_HEADER_BYTES);
    yield* readBytesAt(handle, file, 0, bytes);
    const view = new DataView(bytes.buffer);
    const header = Array.from({ length: 7 }, (_, i) => view.getInt32(i * 4, true));
    const config = yield* configFromLlama2cHeader(file, header);
    const { stored, totalBytes } = planLlama2cLayout(config);
    if (size !== totalBytes) {
      return yield* Effect.fail(sizeMismatch(file, config, stored, totalBytes, size));
    }
    const tensors = new Map(stored.map((e) => [e.name, e]));
    if (config.sharedClassifier) {
      tensors.set("output", { ...tensors.get("tok_embeddings")!, name: "output" });
    }
    return { config, layout: { file, fileSize: size, tensors } };
  }));
};

/** Looks a tensor up by name, failing with the names that do exist nearby. */
export const tensorEntry = (
  layout: Llama2cLayout,
  name: string,
): Effect.Effect<TensorEntry, LoadError> => {
  const entry = layout.tensors.get(name);
  return entry !== undefined
    ? Effect.succeed(entry)
    : Effect.fail(loadError(layout.file, "no such tensor in a llama2.c checkpoint", name));
};

/**
 * A llama2.c checkpoint as a `WeightSource`: one handle, open for the enclosing scope, from
 * which a rank reads only its own rows and columns.
 */
export const openLlama2c = (
  path: FilePath,
): Effect.Effect<{ config: LlamaConfig; source: WeightSource }, LoadError, Scope.Scope> =>
  Effect.gen(function* () {
    const { config, layout } = yield* readLlama2cHeader(path);
    const handle = yield* openForRead(layout.file);
    const source: WeightSource = {
      rows: (name, start, count) =>
        Effect.flatMap(
          tensorEntry(layout, name),
          (e) => readRowsFrom(handle, layout.file, e, start, count),
        ),
      columns: (name, start, count, rows) =>
        Effect.flatMap(
          tensorEntry(layout, name),
          (e) => readColumnsFrom(handle, layout.file, e, start, count, rows),
        ),
      vector: (name, length) =>
        Effect.flatMap(
          tensorEntry(layout, name),
          (e) => readColumnsFrom(handle, layout.file, e, 0, length),
        ),
    };
    return { config, source };
  });
