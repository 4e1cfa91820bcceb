/**
 * The bench's synthetic llama2.c checkpoints (bench/synthetic_model.ts) written as GGUF files in
 * F16, Q8_0 or Q4_0 (llama.cpp's rounding), one tensor at a time: what a user's quantized file
 * looks like, for measuring what loading one costs. Norms stay F32, as llama.cpp writes them;
 * the classifier is tied (no output.weight). Cached beside the checkpoint.
 */
import { Effect } from "effect";
import { openLlama2c } from "../models/llama2c.ts";
import { quantizeQ4_0, quantizeQ8_0 } from "../models/gguf/quantize.ts";
import {
  encodeGgufHeader,
  GGML,
  type GgufMeta,
  type GgufTensorInfo,
  paddedLength,
} from "../models/gguf/write.ts";
import { f32ToF16 } from "../util/f16.ts";
import { type ModelShape, shapeConfig, syntheticCheckpoint } from "./synthetic_model.ts";

/** The tensor types a synthetic GGUF stores its matrices in. */
export type SyntheticGgufType = "F16" | "Q8_0" | "Q4_0";

const ALIGNMENT = 32;

/** Bytes of `elements` values of `type`. */
const typeBytes = (type: SyntheticGgufType | "F32", elements: number) =>
  type === "F32"
    ? elements * 4
    : type === "F16"
    ? elements * 2
    : (elements / 32) * (type === "Q8_0" ? 34 : 18);

const encode = (type: SyntheticGgufType | "F32", values: Float32Array): Uint8Array => {
  if (type === "Q8_0") return quantizeQ8_0(values);
  if (type === "Q4_0") return quantizeQ4_0(values);
  if (type === "F32") return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  const halves = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) halves[i] = f32ToF16(values[i]);
  return new Uint8Array(halves.buffer);
};

/** The GGUF tensors of `shape`: GGUF name, llama2.c name, [rows, cols]. */
const tensorsOf = (shape: ModelShape) => {
  const { dim, hiddenDim: hidden, vocabSize } = shape;
  const list: Array<[string, string, number, number]> = [
    ["token_embd.weight", "tok_embeddings", vocabSize, dim],
  ];
  for (let l = 0; l < shape.nLayers; l++) {
    const g = `blk.${l}.`, p = `layers.${l}.`;
    const kv = (dim / shape.nHeads) * shape.nKvHeads;
    list.push(
      [`${g}attn_norm.weight`, `${p}attention_norm`, 1, dim],
      [`${g}attn_q.weight`, `${p}wq`, dim, dim],
      [`${g}attn_k.weight`, `${p}wk`, kv, dim],
      [`${g}attn_v.weight`, `${p}wv`, kv, dim],
      [`${g}attn_output.weight`, `${p}wo`, dim, dim],
      [`${g}ffn_norm.weight`, `${p}ffn_norm`, 1, dim],
      [`${g}ffn_gate.weight`, `${p}w1`, hidden, dim],
      [`${g}ffn_up.weight`, `${p}w3`, hidden, dim],
      [`${g}ffn_down.weight`, `${p}w2`, dim, hidden],
    );
  }
  list.push(["output_norm.weight", "norm", 1, dim]);
  return list;
};

const metadataOf = (shape: ModelShape, type: SyntheticGgufType): Record<string, GgufMeta> => ({
  "general.architecture": { string: "llama" },
  "general.name": { string: `synthetic-${shape.name}-${type}` },
  "general.file_type": { u32: type === "F16" ? 1 : type === "Q8_0" ? 7 : 2 },
  "llama.context_length": { u32: shape.seqLen },
  "llama.embedding_length": { u32: shape.dim },
  "llama.block_count": { u32: shape.nLayers },
  "llama.feed_forward_length": { u32: shape.hiddenDim },
  "llama.attention.head_count": { u32: shape.nHeads },
  "llama.attention.head_count_kv": { u32: shape.nKvHeads },
  "llama.rope.dimension_count": { u32: shape.dim / shape.nHeads },
  "llama.attention.layer_norm_rms_epsilon": { f32: shapeConfig(shape).normEps },
});

/** Writes `shape`'s synthetic checkpoint (at `checkpoint`) as a GGUF file of `type` at `path`. */
const writeSyntheticGguf = (
  checkpoint: string,
  path: string,
  shape: ModelShape,
  type: SyntheticGgufType,
) =>
  Effect.scoped(Effect.gen(function* () {
    const { source } = yield* openLlama2c(checkpoint);
    const tensors = tensorsOf(shape).map(([name, from, rows, cols]) => {
      const stored: SyntheticGgufType | "F32" = rows > 1 ? type : "F32";
      return {
        info: {
          name,
          dims: rows > 1 ? [cols, rows] : [cols],
          type: GGML[stored],
          byteLength: typeBytes(stored, rows * cols),
        } satisfies GgufTensorInfo,
        from,
        rows,
        cols,
        stored,
      };
    });
    const file = yield* Effect.promise(() =>
      Deno.open(path, { write: true, create: true, truncate: true })
    );
    yield* Effect.addFinalizer(() => Effect.sync(() => file.close()));
    const writeAll = (data: Uint8Array) =>
      Effect.promise(async () => {
        for (let at = 0; at < data.length;) at += await file.write(data.subarray(at));
      });
    yield* writeAll(encodeGgufHeader(metadataOf(shape, type), tensors.map((t) => t.info)));
    for (const t of tensors) {
      const values = t.rows > 1
        ? yield* source.rows(t.from, 0, t.rows)
        : yield* source.vector(t.from, t.cols);
      const bytes = encode(t.stored, values);
      yield* writeAll(bytes);
      yield* writeAll(new Uint8Array(paddedLength(bytes.length, ALIGNMENT) - bytes.length));
    }
  }));

/**
 * The path of a cached GGUF of `shape`, `seed` and `type` under `dir`, converted from the
 * synthetic checkpoint first when missing.
 */
export const syntheticGguf = async (
  shape: ModelShape,
  seed: number,
  dir: string,
  type: SyntheticGgufType,
): Promise<string> => {
  const { path: checkpoint } = await syntheticCheckpoint(shape, seed, dir);
  const path = checkpoint.replace(/\.bin$/, `-${type}.gguf`);
  if (await Deno.stat(path).then(() => true, () => false)) return path;
  const partial = `${path}.partial`;
  await Effect.runPromise(writeSyntheticGguf(checkpoint, partial, shape, type));
  await Deno.rename(partial, path);
  return path;
};
