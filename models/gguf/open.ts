/**
 * A GGUF file as a model: its metadata read into a `LlamaConfig` (architectures llama — Mistral
 * files say llama too —, qwen2, qwen3, phi3, whose q/k/v and gate/up are fused tensors, and
 * gemma2), its tensors as a `WeightSource` under the names
 * models/shards.ts reads, dequantized to f32 as a rank reads its own slices, and its tokenizer
 * (the SentencePiece-style `llama` vocabulary) from the metadata.
 *
 * llama.cpp's converter puts Llama's q/k rows back in Meta's order (rotation pairs (2i, 2i+1)),
 * so llama files run with interleaved RoPE; the other architectures keep HF's order (half).
 */
import { Effect, type Scope } from "effect";
import type { LlamaConfig } from "../config.ts";
import { type LoadError, loadError } from "../errors.ts";
import type { Span } from "../plan.ts";
import type { WeightSource } from "../shards.ts";
import { checkRange, openForRead, readBytesAt, readSpans } from "../tensor_reader.ts";
import type { TextTokenizer } from "../tokenizer.ts";
import type { WeightType } from "../../kernels/matmul.ts";
import { type GgufFile, type GgufTensor, type GgufValue, readGgufHeader } from "./format.ts";
import { ggufTokenizer } from "./tokenizer.ts";

/** The architectures read, with their RoPE pairing and the family they are. */
const ARCHITECTURES: Readonly<Record<string, { layout: "interleaved" | "half" }>> = {
  llama: { layout: "interleaved" },
  qwen2: { layout: "half" },
  qwen3: { layout: "half" },
  phi3: { layout: "half" },
  gemma2: { layout: "half" },
};

/** GGUF names of the per-layer tensors, by the name models/shards.ts reads. */
const LAYER_TENSORS: Readonly<Record<string, string>> = {
  attention_norm: "attn_norm.weight",
  wq: "attn_q.weight",
  wk: "attn_k.weight",
  wv: "attn_v.weight",
  wo: "attn_output.weight",
  ffn_norm: "ffn_norm.weight",
  w1: "ffn_gate.weight",
  w2: "ffn_down.weight",
  w3: "ffn_up.weight",
  bq: "attn_q.bias",
  bk: "attn_k.bias",
  bv: "attn_v.bias",
  q_norm: "attn_q_norm.weight",
  k_norm: "attn_k_norm.weight",
  post_attention_norm: "post_attention_norm.weight",
  post_ffn_norm: "post_ffw_norm.weight",
};

/** The GGUF name of a tensor models/shards.ts reads by `name`. */
const ggufName = (name: string, config: LlamaConfig): string | undefined => {
  if (name === "tok_embeddings") return "token_embd.weight";
  if (name === "norm") return "output_norm.weight";
  if (name === "output") return config.sharedClassifier ? "token_embd.weight" : "output.weight";
  const match = /^layers\.(\d+)\.(\w+)$/.exec(name);
  const suffix = match && LAYER_TENSORS[match[2]];
  return suffix ? `blk.${match[1]}.${suffix}` : undefined;
};

/** The file's tensor that holds `name` (a fused projection's whole tensor), if any. */
export const ggufTensorOf = (
  gguf: GgufFile,
  name: string,
  config: LlamaConfig,
): GgufTensor | undefined => {
  const hf = fusedRows(config)(name)?.tensor ?? ggufName(name, config);
  return hf === undefined ? undefined : gguf.tensors.get(hf);
};

/**
 * Where a fused file keeps a projection: Phi-3's `attn_qkv` (q | k | v rows) and `ffn_up`
 * (gate | up rows, with no ffn_gate).
 */
const fusedRows = (c: LlamaConfig) => {
  const q = c.nHeads * c.headDim, kv = c.nKvHeads * c.headDim, h = c.hiddenDim;
  const qkv = c.family === "phi3", gateUp = c.family === "phi3";
  const parts: Record<string, [string, number, number] | undefined> = {
    wq: qkv ? ["attn_qkv.weight", 0, q + 2 * kv] : undefined,
    wk: qkv ? ["attn_qkv.weight", q, q + 2 * kv] : undefined,
    wv: qkv ? ["attn_qkv.weight", q + kv, q + 2 * kv] : undefined,
    w1: gateUp ? ["ffn_up.weight", 0, 2 * h] : undefined,
    w3: gateUp ? ["ffn_up.weight", h, 2 * h] : undefined,
  };
  return (name: string) => {
    const match = /^layers\.(\d+)\.(\w+)$/.exec(name);
    const part = match && parts[match[2]];
    return part
      ? { tensor: `blk.${match[1]}.${part[0]}`, firstRow: part[1], totalRows: part[2] }
      : undefined;
  };
};

/** The [rows, cols] each tensor the model needs must have. */
const expectedShapes = (c: LlamaConfig): Map<string, [number, number]> => {
  const q = c.nHeads * c.headDim, kv = c.nKvHeads * c.headDim;
  const shapes = new Map<string, [number, number]>([
    ["tok_embeddings", [c.vocabSize, c.dim]],
    ["norm", [1, c.dim]],
    ["output", [c.vocabSize, c.dim]],
  ]);
  for (let l = 0; l < c.nLayers; l++) {
    const layer: Record<string, [number, number]> = {
      attention_norm: [1, c.dim],
      wq: [q, c.dim],
      wk: [kv, c.dim],
      wv: [kv, c.dim],
      wo: [c.dim, q],
      ffn_norm: [1, c.dim],
      w1: [c.hiddenDim, c.dim],
      w2: [c.dim, c.hiddenDim],
      w3: [c.hiddenDim, c.dim],
      ...(c.attentionBias ? { bq: [1, q], bk: [1, kv], bv: [1, kv] } : {}),
      ...(c.qkNorm ? { q_norm: [1, c.headDim], k_norm: [1, c.headDim] } : {}),
      ...(c.sandwichNorms ? { post_attention_norm: [1, c.dim], post_ffn_norm: [1, c.dim] } : {}),
    };
    for (const [name, shape] of Object.entries(layer)) shapes.set(`layers.${l}.${name}`, shape);
  }
  return shapes;
};

/** `${arch}.${key}` as a positive integer, or the reason it is not one. */
const positive = (gguf: GgufFile, key: string, fallback?: number): number | string => {
  const value = gguf.metadata.get(key) ?? fallback;
  if (value === undefined) return `${key} is missing`;
  return typeof value === "number" && Number.isSafeInteger(value) && value > 0
    ? value
    : `${key} = ${String(value)} must be a positive integer`;
};

/** `${arch}.attention.sliding_window` (Phi-3's 4k models) where it is below the context. */
const slidingWindow = (gguf: GgufFile, arch: string, seqLen: number) => {
  const window = gguf.metadata.get(`${arch}.attention.sliding_window`);
  return typeof window === "number" && window > 0 && window < seqLen
    ? { slidingWindow: window }
    : {};
};

/**
 * Gemma 2's features as llama.cpp reads them: the norms are stored as 1 + w already (its
 * converter adds the one), the caps and window are metadata, and the attention scale is not:
 * llama.cpp uses 1/√(n_embd / n_head) for the 46-layer 27B and 1/√head_dim otherwise, which is
 * each model's query_pre_attn_scalar.
 */
const gemma2Features = (
  gguf: GgufFile,
  c: { dim: number; nHeads: number; nLayers: number; headDim: number; seqLen: number },
): Partial<LlamaConfig> => {
  const number = (key: string) => {
    const v = gguf.metadata.get(`gemma2.${key}`);
    return typeof v === "number" && v > 0 ? v : undefined;
  };
  const scalar = c.nLayers === 46 ? c.dim / c.nHeads : c.headDim;
  const window = slidingWindow(gguf, "gemma2", c.seqLen);
  return {
    mlpActivation: "gelu_tanh",
    embeddingScale: Math.sqrt(c.dim),
    sandwichNorms: true,
    attentionScale: 1 / Math.sqrt(scalar),
    ...(number("attn_logit_softcapping")
      ? { attentionSoftcap: number("attn_logit_softcapping") }
      : {}),
    ...(number("final_logit_softcapping")
      ? { finalLogitSoftcap: number("final_logit_softcapping") }
      : {}),
    ...(window.slidingWindow ? { ...window, slidingWindowLayers: "even" as const } : {}),
  };
};

const text = (value: GgufValue | undefined): string | undefined =>
  typeof value === "string" ? value : undefined;

/**
 * The model's shape from the metadata, or a `LoadError` naming the key at fault; `ropeFactors`
 * is the file's `rope_freqs` tensor where it has one (Llama 3.1+).
 */
export const configFromGguf = (
  gguf: GgufFile,
  ropeFactors?: Float32Array,
): Effect.Effect<LlamaConfig, LoadError> =>
  Effect.suspend(() => {
    const fail = (reason: string, tensor?: string) =>
      Effect.fail(loadError(gguf.file, `bad GGUF: ${reason}`, tensor));
    const arch = text(gguf.metadata.get("general.architecture"));
    if (arch === undefined || !(arch in ARCHITECTURES)) {
      return fail(
        `general.architecture ${JSON.stringify(arch)} is not supported (supported: ` +
          `${Object.keys(ARCHITECTURES).join(", ")})`,
      );
    }
    const fields = {
      dim: positive(gguf, `${arch}.embedding_length`),
      hiddenDim: positive(gguf, `${arch}.feed_forward_length`),
      nLayers: positive(gguf, `${arch}.block_count`),
      nHeads: positive(gguf, `${arch}.attention.head_count`),
      seqLen: positive(gguf, `${arch}.context_length`),
    };
    for (const v of Object.values(fields)) if (typeof v === "string") return fail(v);
    const { dim, hiddenDim, nLayers, nHeads, seqLen } = fields as Record<string, number>;
    const nKvHeads = positive(gguf, `${arch}.attention.head_count_kv`, nHeads);
    const headDim = positive(gguf, `${arch}.attention.key_length`, Math.floor(dim / nHeads));
    if (typeof nKvHeads === "string") return fail(nKvHeads);
    if (typeof headDim === "string") return fail(headDim);
    if (nHeads % nKvHeads !== 0) {
      return fail(`head_count ${nHeads} is not a multiple of head_count_kv ${nKvHeads}`);
    }
    const valueLength = gguf.metadata.get(`${arch}.attention.value_length`) ?? headDim;
    const ropeDims = gguf.metadata.get(`${arch}.rope.dimension_count`) ?? headDim;
    if (valueLength !== headDim) return fail(`${arch}.attention.value_length ≠ key_length`);
    if (ropeDims !== headDim) {
      return fail(
        `${arch}.rope.dimension_count = ${ropeDims} rotates part of a ${headDim}-wide head ` +
          `(partial rotary is not supported)`,
      );
    }
    const eps = gguf.metadata.get(`${arch}.attention.layer_norm_rms_epsilon`) ?? 1e-5;
    const theta = gguf.metadata.get(`${arch}.rope.freq_base`) ?? 10000;
    if (!(typeof eps === "number" && eps > 0 && eps < 1)) {
      return fail(`${arch}.attention.layer_norm_rms_epsilon = ${eps} must be small and positive`);
    }
    if (!(typeof theta === "number" && theta > 1)) return fail(`${arch}.rope.freq_base = ${theta}`);
    const scaling = text(gguf.metadata.get(`${arch}.rope.scaling.type`)) ?? "none";
    const factor = gguf.metadata.get(`${arch}.rope.scaling.factor`);
    if (scaling !== "none" && scaling !== "linear") {
      return fail(`${arch}.rope.scaling.type = ${scaling} is not supported (none, linear)`);
    }
    if (scaling === "linear" && !(typeof factor === "number" && factor >= 1)) {
      return fail(`${arch}.rope.scaling.factor = ${factor} must be a number ≥ 1`);
    }
    if (ropeFactors !== undefined) {
      if (scaling !== "none") return fail(`both rope_freqs and ${arch}.rope.scaling.type`);
      if (ropeFactors.length !== headDim / 2 || !ropeFactors.every((f) => f > 0)) {
        return fail(`rope_freqs must hold ${headDim / 2} positive factors`, "rope_freqs.weight");
      }
    }
    const embedding = gguf.tensors.get("token_embd.weight");
    if (embedding === undefined) return fail("no token_embd.weight", "token_embd.weight");
    return Effect.succeed(
      {
        dim,
        hiddenDim,
        nLayers,
        nHeads,
        nKvHeads,
        vocabSize: embedding.rows,
        seqLen,
        headDim,
        normEps: eps,
        ropeTheta: theta,
        ropeLayout: ARCHITECTURES[arch].layout,
        ...(scaling === "linear"
          ? { ropeScaling: { type: "linear", factor: factor as number } }
          : {}),
        ...(ropeFactors
          ? { ropeScaling: { type: "factors", factors: Array.from(ropeFactors) } }
          : {}),
        family: arch,
        ...(gguf.tensors.has("blk.0.attn_q.bias") ? { attentionBias: true } : {}),
        ...(arch === "qwen3" ? { qkNorm: true } : {}),
        ...(arch === "gemma2"
          ? gemma2Features(gguf, { dim, nHeads, nLayers, headDim, seqLen })
          : slidingWindow(gguf, arch, seqLen)),
        sharedClassifier: !gguf.tensors.has("output.weight"),
      } satisfies LlamaConfig,
    );
  });

/** The `rope_freqs` tensor (Llama 3.1+ files), or undefined. */
const readRopeFactors = (handle: Deno.FsFile, gguf: GgufFile) =>
  Effect.gen(function* () {
    const tensor = gguf.tensors.get("rope_freqs.weight");
    if (tensor === undefined) return undefined;
    const bytes = new Uint8Array(tensor.rows * tensor.rowBytes);
    yield* readBytesAt(handle, gguf.file, tensor.offset, bytes, tensor.name);
    return dequantize(tensor, bytes, tensor.rows * tensor.cols);
  });

/**
 * The device weight type that keeps a GGUF file's precision, by the type that holds most of its
 * matmul weights (by elements; files keep a few tensors in a wider type): F32 → f32, F16/BF16 → f16, Q4_0 → q4_0 (re-quantizing its values gives its
 * blocks back), every other block type → q8_0 (near-lossless for their 4-6 bit values).
 */
export const deviceWeightsFor = (gguf: GgufFile): WeightType => {
  const elements = new Map<string, number>();
  for (const t of gguf.tensors.values()) {
    if (t.rows > 1 && t.name !== "token_embd.weight") {
      elements.set(t.type.name, (elements.get(t.type.name) ?? 0) + t.rows * t.cols);
    }
  }
  const [main] = [...elements].sort((a, b) => b[1] - a[1])[0] ?? ["F32"];
  return main === "F32"
    ? "f32"
    : main === "F16" || main === "BF16"
    ? "f16"
    : main === "Q4_0"
    ? "q4_0"
    : "q8_0";
};

/** `bytes` of whole blocks of `tensor`'s type, as f32. */
const dequantize = (tensor: GgufTensor, bytes: Uint8Array, elements: number) => {
  const out = new Float32Array(elements);
  tensor.type.dequantize(bytes, out);
  return out;
};

/**
 * A GGUF file as a `WeightSource`: one handle, open for the enclosing scope. Every tensor the
 * config needs is checked (present, the shape the metadata implies) before this succeeds. Rows
 * are one contiguous read; columns are one read per row and must be whole blocks.
 */
export const openGguf = (
  path: string,
): Effect.Effect<
  { config: LlamaConfig; source: WeightSource; gguf: GgufFile; defaultWeights: WeightType },
  LoadError,
  Scope.Scope
> =>
  Effect.gen(function* () {
    const handle = yield* openForRead(path);
    const gguf = yield* readGgufHeader(handle, path);
    const config = yield* configFromGguf(gguf, yield* readRopeFactors(handle, gguf));
    const located = new Map<string, GgufTensor>();
    const fused = fusedRows(config);
    for (const [name, [rows, cols]] of expectedShapes(config)) {
      const part = fused(name);
      const hf = part?.tensor ?? ggufName(name, config)!;
      const tensor = gguf.tensors.get(hf);
      if (tensor === undefined) {
        return yield* Effect.fail(loadError(path, "tensor missing from the GGUF file", hf));
      }
      const wantRows = part?.totalRows ?? rows;
      if (tensor.rows !== wantRows || tensor.cols !== cols) {
        return yield* Effect.fail(loadError(
          path,
          `shape [${tensor.rows}, ${tensor.cols}] (rows, cols), expected [${wantRows}, ${cols}]`,
          hf,
        ));
      }
      // A fused tensor's part is its own rows: the same tensor from a later first row.
      located.set(
        name,
        part
          ? { ...tensor, offset: tensor.offset + part.firstRow * tensor.rowBytes, rows }
          : tensor,
      );
    }
    const tensorOf = (name: string) => {
      const tensor = located.get(name);
      return tensor
        ? Effect.succeed(tensor)
        : Effect.fail(loadError(path, "no such tensor in this model", name));
    };
    const inRange = (t: GgufTensor, what: "rows" | "columns", start: number, count: number) =>
      checkRange(
        path,
        { name: t.name, shape: [t.rows, t.cols] },
        what,
        start,
        count,
        t[
          what === "rows" ? "rows" : "cols"
        ],
      );
    const rows = (name: string, start: number, count: number) =>
      Effect.gen(function* () {
        const t = yield* tensorOf(name);
        yield* inRange(t, "rows", start, count);
        const bytes = new Uint8Array(count * t.rowBytes);
        yield* readBytesAt(handle, path, t.offset + start * t.rowBytes, bytes, t.name);
        return dequantize(t, bytes, count * t.cols);
      });
    const columns = (name: string, start: number, count: number, rowSpan?: Span) =>
      Effect.gen(function* () {
        const t = yield* tensorOf(name);
        yield* inRange(t, "columns", start, count);
        const { start: r0, count: rowCount } = rowSpan ?? { start: 0, count: t.rows };
        yield* inRange(t, "rows", r0, rowCount);
        if (count === t.cols) return yield* rows(name, r0, rowCount);
        const { blockElements: b, blockBytes, name: type } = t.type;
        if (start % b !== 0 || count % b !== 0) {
          return yield* Effect.fail(loadError(
            path,
            `columns ${start}..${start + count} cut a ${type} block of ${b}: a split across ` +
              `this tensor's inputs must fall on block boundaries (choose a tp that divides ` +
              `${t.cols / b} blocks)`,
            t.name,
          ));
        }
        const span = (count / b) * blockBytes;
        const bytes = new Uint8Array(rowCount * span);
        yield* readSpans(handle, path, t.name, async (read) => {
          for (let r = 0; r < rowCount; r++) {
            const at = t.offset + (r0 + r) * t.rowBytes + (start / b) * blockBytes;
            await read(at, bytes.subarray(r * span, (r + 1) * span));
          }
        });
        return dequantize(t, bytes, rowCount * count);
      });
    const source: WeightSource = {
      rows,
      columns,
      vector: (name, length) => columns(name, 0, length),
    };
    return { config, source, gguf, defaultWeights: deviceWeightsFor(gguf) };
  });

/** Opens a GGUF file just to read its tokenizer. */
export const loadGgufTokenizer = (path: string): Effect.Effect<TextTokenizer, LoadError> =>
  Effect.scoped(Effect.flatMap(
    Effect.flatMap(openForRead(path), (handle) => readGgufHeader(handle, path)),
    ggufTokenizer,
  ));

/** Opens a GGUF file just to read the model's shape. */
export const readGgufConfig = (path: string): Effect.Effect<LlamaConfig, LoadError> =>
  Effect.scoped(Effect.map(openGguf(path), ({ config }) => config));
