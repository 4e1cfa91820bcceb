/**
 * Hugging Face Llama directories (`config.json`, `model.safetensors` or
 * `model.safetensors.index.json` with its shards, `tokenizer.json`, `tokenizer_config.json`) as a
 * second weight format beside llama2.c: a `WeightSource` under the names models/shards.ts reads,
 * and a tokenizer with the surface generation needs.
 *
 * RoPE: HF's `convert_llama_weights_to_hf.py` permutes the rows of every q/k head from Meta's
 * order (rotation pairs (2i, 2i+1)) to (even dims, then odd dims), so that HF's `rotate_half`
 * — which pairs (i, i + headDim/2) — computes the same rotation. HF then runs the permuted
 * weights with rotate_half. So we use the weights exactly as stored with `ropeLayout: "half"`:
 * that *is* HF's computation (and Meta's, up to the row order of q and k inside each head).
 * The permutation stays inside each head, so splitting q/k by heads for tensor parallelism is
 * unaffected.
 */
import { Effect, type Scope } from "effect";
import { join } from "node:path";
import { Tokenizer as LibraryTokenizer } from "@huggingface/tokenizers";
import { kvDim, type LlamaConfig, qDim } from "./config.ts";
import { type LoadError, loadError } from "./errors.ts";
import type { HuggingFaceTensor } from "./families/family.ts";
import { familyNamed, familyOf, MODEL_FAMILIES } from "./families/registry.ts";
import { parseRopeScaling } from "./rope_scaling.ts";
import {
  checkReadable,
  readSafetensorsColumns,
  readSafetensorsHeader,
  readSafetensorsRows,
  type SafetensorsEntry,
  type SafetensorsHeader,
} from "./safetensors.ts";
import type { WeightSource } from "./shards.ts";
import { type FilePath, filePathString, openForRead } from "./tensor_reader.ts";
import type { StreamDecoder, TextTokenizer } from "./tokenizer.ts";

const describe = (e: unknown): string => (e instanceof Error ? e.message : String(e));

const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

/** The text of a file, or `undefined` when it does not exist (optional files). */
const readOptionalText = (file: string): Effect.Effect<string | undefined, LoadError> =>
  Effect.tryPromise({
    try: async () => {
      try {
        return await Deno.readTextFile(file);
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) return undefined;
        throw e;
      }
    },
    catch: (e) => loadError(file, `cannot read the file (${describe(e)})`),
  });

const parseJson = (file: string, text: string): Effect.Effect<unknown, LoadError> =>
  Effect.try({
    try: () => JSON.parse(text) as unknown,
    catch: (e) => loadError(file, `not valid JSON (${describe(e)})`),
  });

/** A JSON object from a file; `undefined` if the file is absent and `optional`. */
const readJsonObject = (
  file: string,
  optional: boolean,
): Effect.Effect<Record<string, unknown> | undefined, LoadError> =>
  Effect.gen(function* () {
    const text = yield* readOptionalText(file);
    if (text === undefined) {
      return optional ? undefined : yield* Effect.fail(loadError(file, "file not found"));
    }
    const json = yield* parseJson(file, text);
    if (!isRecord(json)) return yield* Effect.fail(loadError(file, "not a JSON object"));
    return json;
  });

// ---------------------------------------------------------------------------------------------
// config.json

/** Plausibility bounds, as for llama2.c headers: anything larger is a misread file. */
const LIMITS = {
  hidden_size: 1 << 16,
  intermediate_size: 1 << 18,
  num_hidden_layers: 1 << 10,
  num_attention_heads: 1 << 12,
  num_key_value_heads: 1 << 12,
  vocab_size: 1 << 22,
  max_position_embeddings: 1 << 22,
  head_dim: 1 << 12,
} as const;

/**
 * A `LlamaForCausalLM` config.json as a `LlamaConfig` (ropeLayout "half", see the module doc).
 * Defaults follow transformers' `LlamaConfig`: num_key_value_heads = num_attention_heads,
 * rope_theta 10000, rms_norm_eps 1e-6, tie_word_embeddings false, head_dim = hidden/heads.
 * `rope_scaling` is read by models/rope_scaling.ts. Features the reference forward pass does not
 * implement (biases, other activations, other rope types) are rejected rather than silently
 * computed wrong.
 */
export const configFromHuggingFace = (
  file: string,
  json: Record<string, unknown>,
): Effect.Effect<LlamaConfig, LoadError> =>
  Effect.suspend(() => {
    const fail = (reason: string) => Effect.fail(loadError(file, `bad config: ${reason}`));
    const family = familyOf(json);
    if (family === undefined) {
      return fail(
        `not a supported model (model_type ${JSON.stringify(json.model_type)}, architectures ` +
          `${JSON.stringify(json.architectures)}; supported: ${
            MODEL_FAMILIES.map((f) => f.modelType).join(", ")
          })`,
      );
    }
    const int = (name: keyof typeof LIMITS, fallback?: number): number | string => {
      const value = json[name] ?? fallback;
      if (value === undefined) return `${name} is missing`;
      if (!(Number.isSafeInteger(value) && (value as number) > 0)) {
        return `${name} = ${JSON.stringify(value)} must be a positive integer`;
      }
      if ((value as number) > LIMITS[name]) {
        return `${name} = ${value} is implausibly large (limit ${LIMITS[name]})`;
      }
      return value as number;
    };
    const dims = {
      dim: int("hidden_size"),
      hiddenDim: int("intermediate_size"),
      nLayers: int("num_hidden_layers"),
      nHeads: int("num_attention_heads"),
      vocabSize: int("vocab_size"),
      seqLen: int("max_position_embeddings"),
    };
    for (const v of Object.values(dims)) if (typeof v === "string") return fail(v);
    const { dim, hiddenDim, nLayers, nHeads, vocabSize, seqLen } = dims as Record<
      keyof typeof dims,
      number
    >;
    const nKvHeads = int("num_key_value_heads", nHeads);
    if (typeof nKvHeads === "string") return fail(nKvHeads);
    if (json.head_dim == null && dim % nHeads !== 0) {
      return fail(`hidden_size ${dim} is not divisible by num_attention_heads ${nHeads}`);
    }
    const headDim = int("head_dim", json.head_dim == null ? dim / nHeads : undefined);
    if (typeof headDim === "string") return fail(headDim);
    if (headDim % 2 !== 0) return fail(`head size ${headDim} is odd; RoPE needs pairs`);
    if (nKvHeads > nHeads || nHeads % nKvHeads !== 0) {
      return fail(
        `num_attention_heads ${nHeads} is not a multiple of num_key_value_heads ${nKvHeads}`,
      );
    }
    const eps = json.rms_norm_eps ?? 1e-6;
    if (!(typeof eps === "number" && eps > 0 && eps < 1)) {
      return fail(`rms_norm_eps = ${JSON.stringify(eps)} must be a small positive number`);
    }
    const theta = json.rope_theta ?? 10000;
    if (!(typeof theta === "number" && theta > 1 && Number.isFinite(theta))) {
      return fail(`rope_theta = ${JSON.stringify(theta)} must be a number > 1`);
    }
    const tie = json.tie_word_embeddings ?? false;
    if (typeof tie !== "boolean") {
      return fail(`tie_word_embeddings = ${JSON.stringify(tie)} must be a boolean`);
    }
    const ropeScaling = parseRopeScaling(json.rope_scaling, seqLen);
    if (typeof ropeScaling === "string") return fail(ropeScaling);
    if (json.mlp_bias === true) return fail("mlp_bias is not supported");
    const features = family.features(json, { seqLen });
    if (typeof features === "string") return fail(features);
    if (
      features.mlpActivation === undefined && json.hidden_act !== undefined &&
      json.hidden_act !== "silu"
    ) {
      return fail(`hidden_act ${JSON.stringify(json.hidden_act)} is not supported (only silu)`);
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
      normEps: eps,
      ropeTheta: theta,
      ropeLayout: "half",
      ...(ropeScaling.type === "default" ? {} : { ropeScaling }),
      family: family.modelType,
      sharedClassifier: tie,
      ...features,
    });
  });

// ---------------------------------------------------------------------------------------------
// Tensor names

export type { HuggingFaceTensor } from "./families/family.ts";

/** HF suffixes of the per-layer tensors, by the name models/shards.ts reads. */
const LAYER_TENSORS = {
  attention_norm: "input_layernorm",
  wq: "self_attn.q_proj",
  wk: "self_attn.k_proj",
  wv: "self_attn.v_proj",
  wo: "self_attn.o_proj",
  ffn_norm: "post_attention_layernorm",
  w1: "mlp.gate_proj",
  w2: "mlp.down_proj",
  w3: "mlp.up_proj",
} as const;

/**
 * Every tensor of a Llama of this config with its HF name and expected shape; `output`
 * (`lm_head.weight`) only when the classifier is not shared with the embedding.
 */
export const huggingFaceTensors = (config: LlamaConfig): HuggingFaceTensor[] => {
  const { dim, hiddenDim, vocabSize } = config;
  const family = familyNamed(config.family);
  const shapes: Record<keyof typeof LAYER_TENSORS, number[]> = {
    attention_norm: [dim],
    wq: [qDim(config), dim],
    wk: [kvDim(config), dim],
    wv: [kvDim(config), dim],
    wo: [dim, qDim(config)],
    ffn_norm: [dim],
    w1: [hiddenDim, dim],
    w2: [dim, hiddenDim],
    w3: [hiddenDim, dim],
  };
  const out: HuggingFaceTensor[] = [
    { name: "tok_embeddings", hfName: "model.embed_tokens.weight", shape: [vocabSize, dim] },
  ];
  const q = qDim(config), kv = kvDim(config);
  for (let l = 0; l < config.nLayers; l++) {
    for (const [name, hf] of Object.entries(LAYER_TENSORS)) {
      const fused = family.fused?.[name];
      out.push(
        fused === undefined
          ? {
            name: `layers.${l}.${name}`,
            hfName: `model.layers.${l}.${family.renamed?.[name] ?? hf}.weight`,
            shape: shapes[name as keyof typeof LAYER_TENSORS],
          }
          : {
            name: `layers.${l}.${name}`,
            hfName: `model.layers.${l}.${fused.hf}.weight`,
            shape: [fused.rows(q, kv, hiddenDim), dim],
            rowOffset: fused.offset(q, kv, hiddenDim),
          },
      );
    }
    out.push(...family.layerTensors?.(config, l) ?? []);
  }
  out.push({ name: "norm", hfName: "model.norm.weight", shape: [dim] });
  if (!config.sharedClassifier) {
    out.push({ name: "output", hfName: "lm_head.weight", shape: [vocabSize, dim] });
  }
  return out;
};

// ---------------------------------------------------------------------------------------------
// Weights

const SINGLE_FILE = "model.safetensors";
const INDEX_FILE = "model.safetensors.index.json";

/** Which file holds each HF tensor: the index's weight_map, or everything in one file. */
interface WeightMap {
  /** The file that names the tensors (index or single file), for "missing tensor" errors. */
  readonly file: string;
  shardOf(hfName: string): string | undefined;
}

const exists = (file: string): Effect.Effect<boolean, LoadError> =>
  Effect.tryPromise({
    try: async () => {
      try {
        return (await Deno.stat(file)).isFile;
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) return false;
        throw e;
      }
    },
    catch: (e) => loadError(file, `cannot stat the file (${describe(e)})`),
  });

/** A shard name from an index must be a plain file name in the model directory. */
const plainFileName = (name: string): boolean =>
  name.length > 0 && !name.includes("/") && !name.includes("\\") && name !== "." &&
  name !== "..";

const readWeightMap = (root: string): Effect.Effect<WeightMap, LoadError> =>
  Effect.gen(function* () {
    const single = join(root, SINGLE_FILE);
    if (yield* exists(single)) return { file: single, shardOf: () => single };
    const indexFile = join(root, INDEX_FILE);
    if (!(yield* exists(indexFile))) {
      return yield* Effect.fail(
        loadError(root, `no ${SINGLE_FILE} or ${INDEX_FILE} in the model directory`),
      );
    }
    const index = (yield* readJsonObject(indexFile, false))!;
    const weightMap = index.weight_map;
    if (!isRecord(weightMap)) {
      return yield* Effect.fail(loadError(indexFile, "weight_map is missing or not an object"));
    }
    const shards = new Map<string, string>();
    for (const [name, shard] of Object.entries(weightMap)) {
      if (typeof shard !== "string" || !plainFileName(shard)) {
        return yield* Effect.fail(
          loadError(
            indexFile,
            `weight_map entry ${JSON.stringify(shard)} is not a file name`,
            name,
          ),
        );
      }
      shards.set(name, join(root, shard));
    }
    return { file: indexFile, shardOf: (name: string) => shards.get(name) };
  });

/** A tensor resolved to its open shard file. */
interface Located {
  readonly file: string;
  readonly handle: Deno.FsFile;
  readonly entry: SafetensorsEntry;
  /** The first row of this tensor inside a fused one. */
  readonly rowOffset?: number;
}

const sameShape = (a: readonly number[], b: readonly number[]) =>
  a.length === b.length && a.every((x, i) => x === b[i]);

/**
 * A Hugging Face Llama directory as a `WeightSource` under the names models/shards.ts reads,
 * with its config. Every shard that holds a needed tensor is opened once (shards holding none
 * are never opened) and stays open for the enclosing scope; its header is read and every needed
 * tensor checked — present, an f32/f16/bf16 dtype, the shape config.json implies — before this
 * succeeds, so a broken checkpoint fails here naming file and tensor. Reads then fetch only the
 * bytes of the requested rows or columns. With tied embeddings, or no `lm_head.weight`, the
 * classifier is the embedding (`sharedClassifier`).
 */
export const openHuggingFace = (
  dir: FilePath,
): Effect.Effect<{ config: LlamaConfig; source: WeightSource }, LoadError, Scope.Scope> =>
  Effect.gen(function* () {
    const root = filePathString(dir);
    const configFile = join(root, "config.json");
    const configJson = (yield* readJsonObject(configFile, false))!;
    const declared = yield* configFromHuggingFace(configFile, configJson);
    const weightMap = yield* readWeightMap(root);

    const shards = new Map<string, { handle: Deno.FsFile; header: SafetensorsHeader }>();
    const openShard = (file: string) =>
      Effect.gen(function* () {
        const open = shards.get(file);
        if (open !== undefined) return open;
        const handle = yield* openForRead(file);
        const shard = { handle, header: yield* readSafetensorsHeader(handle, file) };
        shards.set(file, shard);
        return shard;
      });
    const locate = (hfName: string) =>
      Effect.gen(function* () {
        const file = weightMap.shardOf(hfName);
        if (file === undefined) {
          return yield* Effect.fail(
            loadError(weightMap.file, "tensor is missing from the weight_map", hfName),
          );
        }
        const { handle, header } = yield* openShard(file);
        const entry = header.tensors.get(hfName);
        if (entry === undefined) {
          const why = file === weightMap.file
            ? "tensor is missing from the file"
            : `tensor is missing from the file, though ${weightMap.file} maps it there`;
          return yield* Effect.fail(loadError(file, why, hfName));
        }
        return { file, handle, entry } as Located;
      });

    // Without lm_head.weight the model can only mean the embedding as classifier.
    const hasHead = weightMap.shardOf("lm_head.weight") !== undefined &&
      (yield* openShard(weightMap.shardOf("lm_head.weight")!)).header.tensors.has(
        "lm_head.weight",
      );
    const config: LlamaConfig = {
      ...declared,
      sharedClassifier: declared.sharedClassifier || !hasHead,
    };

    const tensors = new Map<string, Located>();
    for (const t of huggingFaceTensors(config)) {
      const located = yield* locate(t.hfName);
      yield* checkReadable(located.file, located.entry);
      if (!sameShape(located.entry.shape, t.shape)) {
        return yield* Effect.fail(
          loadError(
            located.file,
            `shape [${located.entry.shape.join(", ")}] does not match config.json, which ` +
              `implies [${t.shape.join(", ")}]`,
            t.hfName,
          ),
        );
      }
      tensors.set(
        t.name,
        t.rowOffset === undefined ? located : { ...located, rowOffset: t.rowOffset },
      );
    }
    if (config.sharedClassifier) tensors.set("output", tensors.get("tok_embeddings")!);

    const find = (name: string): Effect.Effect<Located, LoadError> => {
      const t = tensors.get(name);
      return t !== undefined
        ? Effect.succeed(t)
        : Effect.fail(loadError(root, "no such tensor in a Hugging Face Llama checkpoint", name));
    };
    const source: WeightSource = {
      rows: (name, start, count) =>
        Effect.flatMap(
          find(name),
          (t) => readSafetensorsRows(t.handle, t.file, t.entry, (t.rowOffset ?? 0) + start, count),
        ),
      columns: (name, start, count, rows) =>
        Effect.flatMap(
          find(name),
          (t) =>
            t.rowOffset === undefined
              ? readSafetensorsColumns(t.handle, t.file, t.entry, start, count, rows)
              // Only column-parallel tensors are fused, and those are read by rows.
              : Effect.fail(loadError(t.file, "columns of a fused tensor are not readable", name)),
        ),
      vector: (name, length) =>
        Effect.flatMap(
          find(name),
          (t) => readSafetensorsColumns(t.handle, t.file, t.entry, 0, length),
        ),
    };
    return { config, source };
  });

// ---------------------------------------------------------------------------------------------
// Tokenizer

/** A `tokenizer.json` tokenizer with the generation surface of the llama2.c one. */
export interface HuggingFaceTokenizer extends TextTokenizer {
  /**
   * Every id that ends generation: tokenizer_config.json's eos_token, then config.json's
   * eos_token_id (one id or a list, as Llama 3 has). `eosId` is the first.
   */
  readonly eosIds: readonly number[];
  /** The underlying `@huggingface/tokenizers` object, for what generation does not need. */
  readonly library: LibraryTokenizer;
}

/** A special token given as a string or as an AddedToken object `{content, ...}`. */
const tokenContent = (value: unknown): string | undefined =>
  typeof value === "string"
    ? value
    : isRecord(value) && typeof value.content === "string"
    ? value.content
    : undefined;

/** config.json's `*_token_id`: one id, a list, or nothing. */
const tokenIds = (value: unknown): number[] =>
  (Array.isArray(value) ? value : [value]).filter((v): v is number => Number.isSafeInteger(v));

/**
 * Whether a tokenizer.json post-processor puts `token` first in a single sequence: a
 * TemplateProcessing whose template opens with it (Llama 2 and 3), alone or inside a Sequence
 * of processors. Anything else (Qwen's ByteLevel, none) adds no BOS.
 */
const templateStartsWith = (processor: unknown, token: string | undefined): boolean => {
  if (!isRecord(processor) || token === undefined) return false;
  if (processor.type === "Sequence" && Array.isArray(processor.processors)) {
    return processor.processors.some((p) => templateStartsWith(p, token));
  }
  if (processor.type !== "TemplateProcessing" || !Array.isArray(processor.single)) return false;
  const first = processor.single[0];
  return isRecord(first) && isRecord(first.SpecialToken) && first.SpecialToken.id === token;
};

class HfTokenizer implements HuggingFaceTokenizer {
  readonly vocabSize: number;
  readonly eosId: number;

  constructor(
    readonly library: LibraryTokenizer,
    readonly bosId: number,
    readonly eosIds: readonly number[],
    readonly addsBos: boolean,
  ) {
    let max = -1;
    for (const id of library.get_vocab(true).values()) max = Math.max(max, id);
    this.vocabSize = max + 1;
    this.eosId = eosIds[0];
  }

  private checkId(id: number): void {
    if (!(Number.isInteger(id) && id >= 0 && id < this.vocabSize)) {
      throw new RangeError(`token id ${id} is outside the vocabulary [0, ${this.vocabSize})`);
    }
  }

  /** The tokenizer's own pre/post-processing stays off: BOS/EOS are added here, on request. */
  encode(text: string, options: { readonly bos: boolean; readonly eos: boolean }): number[] {
    const ids = this.library.encode(text, { add_special_tokens: false }).ids;
    return [...(options.bos ? [this.bosId] : []), ...ids, ...(options.eos ? [this.eosId] : [])];
  }

  /** Text of a token sequence; special tokens (BOS, EOS, ...) produce none. */
  decode(tokens: readonly number[]): string {
    tokens.forEach((t) => this.checkId(t));
    if (tokens.length === 0) return "";
    return this.library.decode([...tokens], { skip_special_tokens: true });
  }

  /**
   * Incremental detokenization by difference, as text-generation-inference does: decode a short
   * window with and without the new tokens and emit the growth, holding it back while it ends in
   * U+FFFD (a character still split over byte-fallback tokens). Decoding a window that starts
   * one token earlier keeps leading-space rules (SentencePiece's "▁", Strip) right.
   */
  streamDecoder(prev?: number): StreamDecoder {
    let ids: number[] = prev !== undefined && prev >= 0 ? [prev] : [];
    let read = ids.length; // ids[0..read) have been emitted
    const growth = () => {
      const before = this.decode(ids.slice(0, read));
      const after = this.decode(ids);
      return after.length > before.length ? after.slice(before.length) : "";
    };
    return {
      push: (token: number) => {
        this.checkId(token);
        ids.push(token);
        const text = growth();
        if (text === "" || text.endsWith("\uFFFD")) return "";
        ids = ids.slice(read); // the tokens just emitted stay as context for the next
        read = ids.length;
        return text;
      },
      flush: () => {
        const text = growth();
        ids = ids.slice(-1);
        read = ids.length;
        return text;
      },
    };
  }
}

/**
 * A tokenizer from a tokenizer.json object built elsewhere (a GGUF file's vocabulary), with its
 * control tokens given; `file` names the source in errors.
 */
export const huggingFaceTokenizerFromJson = (
  file: string,
  tokenizerJson: Record<string, unknown>,
  specials: {
    readonly bosId: number;
    readonly eosIds: readonly number[];
    readonly addsBos: boolean;
  },
): Effect.Effect<HuggingFaceTokenizer, LoadError> =>
  Effect.try({
    try: () =>
      new HfTokenizer(
        new LibraryTokenizer(tokenizerJson, {}),
        specials.bosId,
        specials.eosIds,
        specials.addsBos,
      ),
    catch: (e) => loadError(file, `the tokenizers library rejects the vocabulary (${describe(e)})`),
  });

/**
 * The tokenizer of a Hugging Face model directory: `tokenizer.json` (required),
 * `tokenizer_config.json` and `config.json` (optional) for the BOS/EOS tokens.
 */
export const loadHuggingFaceTokenizer = (
  dir: FilePath,
): Effect.Effect<HuggingFaceTokenizer, LoadError> =>
  Effect.gen(function* () {
    const root = filePathString(dir);
    const tokenizerFile = join(root, "tokenizer.json");
    const configFile = join(root, "tokenizer_config.json");
    const tokenizerJson = (yield* readJsonObject(tokenizerFile, false))!;
    const tokConfig = (yield* readJsonObject(configFile, true)) ?? {};
    const modelConfig = (yield* readJsonObject(join(root, "config.json"), true)) ?? {};
    const library = yield* Effect.try({
      try: () => new LibraryTokenizer(tokenizerJson, tokConfig),
      catch: (e) => loadError(tokenizerFile, `the tokenizers library rejects it (${describe(e)})`),
    });
    const special = (which: "bos" | "eos") =>
      Effect.gen(function* () {
        const content = tokenContent(tokConfig[`${which}_token`]);
        const ids: number[] = [];
        if (content !== undefined) {
          const id = library.token_to_id(content);
          if (id === undefined) {
            return yield* Effect.fail(
              loadError(
                configFile,
                `${which}_token ${JSON.stringify(content)} is not in the vocabulary`,
              ),
            );
          }
          ids.push(id);
        }
        for (const id of tokenIds(modelConfig[`${which}_token_id`])) {
          if (!ids.includes(id)) ids.push(id);
        }
        if (ids.length === 0) {
          return yield* Effect.fail(
            loadError(
              configFile,
              `no ${which} token: neither tokenizer_config.json's ${which}_token nor ` +
                `config.json's ${which}_token_id names one`,
            ),
          );
        }
        return ids;
      });
    const [bosId] = yield* special("bos");
    const eosIds = yield* special("eos");
    const addBos = tokConfig.add_bos_token;
    const addsBos = typeof addBos === "boolean"
      ? addBos
      : templateStartsWith(tokenizerJson.post_processor, library.id_to_token(bosId));
    const tokenizer = new HfTokenizer(library, bosId, eosIds, addsBos);
    for (const id of [bosId, ...eosIds]) {
      if (id >= tokenizer.vocabSize || id < 0) {
        return yield* Effect.fail(
          loadError(configFile, `special token id ${id} is outside the vocabulary`),
        );
      }
    }
    return tokenizer;
  });
