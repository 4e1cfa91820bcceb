/**
 * The llama2.c `tokenizer.bin` vocabulary (int32 max_token_length, then per token: f32 score,
 * int32 byte length, bytes) with encode and decode ported from llama2.c `run.c`, so prompts give
 * the same ids as llama2.c and generated ids print the same text. Pieces are handled as bytes
 * (run.c works on C strings): byte-fallback tokens `<0xNN>` can split one UTF-8 character over
 * several tokens, so streamed text goes through a streaming UTF-8 decoder.
 */
import { Effect } from "effect";
import { type LoadError, loadError } from "./errors.ts";
import { type FilePath, filePathString } from "./tensor_reader.ts";

export const BOS_ID = 1;
export const EOS_ID = 2;

/** Incremental detokenizer: text comes out only once its UTF-8 bytes are complete. */
export interface StreamDecoder {
  /** Text completed by `token` (run.c `decode(prev, token)` with `prev` tracked here). */
  push(token: number): string;
  /** Whatever is still pending (U+FFFD for an unfinished character); resets the decoder. */
  flush(): string;
}

/**
 * The text a generated token adds to its stream, for every decode loop (generate() and the
 * engine): none for a stop token, what `token` completes, and on the last token whatever is
 * pending. A token the tokenizer cannot decode (a tokenizer not of this model) prints as U+FFFD,
 * as Hugging Face's `errors="replace"` does, rather than ending the stream.
 */
export const generatedText = (
  decoder: StreamDecoder,
  token: number,
  { stop, last }: { readonly stop: boolean; readonly last: boolean },
): string => {
  const replaced = (f: () => string) => {
    try {
      return f();
    } catch {
      return "\uFFFD";
    }
  };
  return (stop ? "" : replaced(() => decoder.push(token))) +
    (last ? replaced(() => decoder.flush()) : "");
};

/**
 * What generation needs from a tokenizer, whatever its format: llama2.c `tokenizer.bin`
 * (`Tokenizer` below) or Hugging Face `tokenizer.json` (models/huggingface.ts).
 */
export interface TextTokenizer {
  /** Tokens in the vocabulary. */
  readonly vocabSize: number;
  /** Id of the beginning-of-sequence token. */
  readonly bosId: number;
  /**
   * Whether a prompt starts with BOS (what `encode`'s callers pass as `bos`): llama2.c and
   * Llama 2 yes; Qwen no; from tokenizer_config.json's `add_bos_token`, else the post-processor.
   */
  readonly addsBos: boolean;
  /** Id of the end-of-sequence token. */
  readonly eosId: number;
  /** Token ids of `text`, with BOS and/or EOS added as asked. */
  encode(text: string, options: { readonly bos: boolean; readonly eos: boolean }): number[];
  /** Text of a token sequence; BOS, EOS and other control tokens produce no text. */
  decode(tokens: readonly number[]): string;
  /** Streaming detokenizer; `prev` is the token before the first pushed one. */
  streamDecoder(prev?: number): StreamDecoder;
}

export interface Tokenizer extends TextTokenizer {
  readonly vocabSize: number;
  readonly maxTokenLength: number;
  readonly scores: Float32Array;
  /** The raw bytes of token `id` as stored in the file. */
  piece(id: number): Uint8Array;
  /** run.c `encode`: optional BOS, dummy-prefix space, codepoints with byte fallback, BPE merges. */
  encode(text: string, options: { readonly bos: boolean; readonly eos: boolean }): number[];
  /** run.c `decode` as bytes: a space after BOS is stripped, `<0xNN>` becomes the raw byte. */
  decodeTokenBytes(prev: number, token: number): Uint8Array;
  /** `decodeTokenBytes` as text; a lone byte of a multi-byte character becomes U+FFFD. */
  decodeToken(prev: number, token: number): string;
  /** Streaming detokenizer; `prev` is the token before the first pushed one. */
  streamDecoder(prev?: number): StreamDecoder;
  /**
   * Text of a token sequence (as if streamed from its first token). BOS and EOS, control tokens,
   * produce no text, as in SentencePiece; a space right after BOS is still stripped.
   */
  decode(tokens: readonly number[]): string;
}

/** Bytes as a string of char codes 0..255: an exact, cheap Map key for byte strings. */
const byteKey = (bytes: Uint8Array): string => {
  let s = "";
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
  return s;
};

const BYTE_TOKEN = /^<0x([0-9A-Fa-f]{2})>$/;
const SPACE = 0x20;
const EMPTY = new Uint8Array(0);

/** A vocabulary's control tokens and whether a prompt starts with BOS. */
export interface SpecialTokens {
  readonly bosId: number;
  readonly eosId: number;
  readonly addsBos: boolean;
}

class Llama2cTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly bosId: number;
  readonly eosId: number;
  readonly addsBos: boolean;
  /** Byte-string key of each token. */
  private readonly keys: string[];
  /** Byte string → lowest id with that string (run.c's bsearch picks an arbitrary duplicate). */
  private readonly ids = new Map<string, number>();
  /** Decoded bytes per token for `prev != BOS`, precomputed once. */
  private readonly decoded: Uint8Array[];

  constructor(
    readonly maxTokenLength: number,
    readonly scores: Float32Array,
    private readonly pieces: Uint8Array[],
    // run.c: BOS 1, EOS 2, and every prompt starts with BOS.
    specials: SpecialTokens = { bosId: BOS_ID, eosId: EOS_ID, addsBos: true },
  ) {
    this.bosId = specials.bosId;
    this.eosId = specials.eosId;
    this.addsBos = specials.addsBos;
    this.vocabSize = pieces.length;
    this.keys = pieces.map(byteKey);
    this.keys.forEach((k, id) => {
      if (!this.ids.has(k)) this.ids.set(k, id);
    });
    this.decoded = this.keys.map((key, id) => {
      const m = BYTE_TOKEN.exec(key);
      if (m === null) return pieces[id];
      const byte = parseInt(m[1], 16);
      // run.c returns the C string "<byte>\0", which is empty for byte 0.
      return byte === 0 ? EMPTY : Uint8Array.of(byte);
    });
  }

  piece(id: number): Uint8Array {
    this.checkId(id);
    return this.pieces[id];
  }

  private checkId(id: number): void {
    if (!(Number.isInteger(id) && id >= 0 && id < this.vocabSize)) {
      throw new RangeError(`token id ${id} is outside the vocabulary [0, ${this.vocabSize})`);
    }
  }

  private lookup(key: string): number {
    return this.ids.get(key) ?? -1;
  }

  /** run.c's byte fallback: byte b is token b + 3 (after <unk>, <s>, </s>); <unk> if absent. */
  private byteToken(byte: number): number {
    return byte + 3 < this.vocabSize ? byte + 3 : 0;
  }

  encode(text: string, options: { readonly bos: boolean; readonly eos: boolean }): number[] {
    const bytes = new TextEncoder().encode(text);
    const tokens: number[] = [];
    if (options.bos) tokens.push(this.bosId);
    if (bytes.length > 0) {
      const prefix = this.lookup(" ");
      tokens.push(prefix !== -1 ? prefix : this.byteToken(SPACE));
    }
    // One codepoint at a time (a leading byte plus up to 3 continuation bytes), as run.c does.
    let start = 0;
    for (let i = 0; i < bytes.length; i++) {
      if ((bytes[i] & 0xc0) !== 0x80) start = i;
      const next = i + 1 < bytes.length ? bytes[i + 1] : 0;
      if ((next & 0xc0) === 0x80 && i + 1 - start < 4) continue;
      const codepoint = bytes.subarray(start, i + 1);
      const id = this.lookup(byteKey(codepoint));
      if (id !== -1) tokens.push(id);
      else for (const b of codepoint) tokens.push(this.byteToken(b));
      start = i + 1;
    }
    const merged = this.mergePairs(tokens);
    if (options.eos) merged.push(this.eosId);
    return merged;
  }

  /**
   * run.c's merge loop (merge the adjacent pair whose merged token scores best, leftmost on
   * ties, until none merges) in O(n log n) instead of O(n²): the symbols are a linked list and
   * every adjacent pair that merges is a candidate in a max-heap ordered by (score, leftmost).
   * A candidate goes stale when either of its symbols changes; it is then skipped when popped.
   */
  private mergePairs(tokens: number[]): number[] {
    const n = tokens.length;
    const token = Int32Array.from(tokens);
    const next = new Int32Array(n);
    const prev = new Int32Array(n);
    // Bumped when a symbol is merged into or away: candidates remember the versions they saw.
    const version = new Uint32Array(n);
    for (let i = 0; i < n; i++) {
      next[i] = i + 1 < n ? i + 1 : -1;
      prev[i] = i - 1;
    }
    const candidates = new MergeHeap();
    // run.c only takes a merge that beats -1e10 (its initial best score).
    const floor = Math.fround(-1e10);
    const offer = (left: number) => {
      if (left === -1) return;
      const right = next[left];
      if (right === -1) return;
      const id = this.lookup(this.keys[token[left]] + this.keys[token[right]]);
      if (id !== -1 && this.scores[id] > floor) {
        candidates.push(this.scores[id], left, id, version[left], version[right]);
      }
    };
    for (let i = 0; i + 1 < n; i++) offer(i);
    while (candidates.size > 0) {
      const { left, id, leftVersion, rightVersion } = candidates.pop();
      const right = next[left];
      if (version[left] !== leftVersion || right === -1 || version[right] !== rightVersion) {
        continue;
      }
      token[left] = id;
      version[left]++;
      version[right]++; // gone: nothing may merge with it again
      next[left] = next[right];
      if (next[right] !== -1) prev[next[right]] = left;
      offer(prev[left]);
      offer(left);
    }
    const out: number[] = [];
    for (let i = n > 0 ? 0 : -1; i !== -1; i = next[i]) out.push(token[i]);
    return out;
  }

  decodeTokenBytes(prev: number, token: number): Uint8Array {
    this.checkId(token);
    const piece = this.pieces[token];
    if (prev === this.bosId && piece[0] === SPACE) {
      // run.c strips the space first, then tests the rest for `<0xNN>`.
      const rest = piece.subarray(1);
      const m = BYTE_TOKEN.exec(byteKey(rest));
      if (m === null) return rest;
      const byte = parseInt(m[1], 16);
      return byte === 0 ? EMPTY : Uint8Array.of(byte);
    }
    return this.decoded[token];
  }

  decodeToken(prev: number, token: number): string {
    return new TextDecoder().decode(this.decodeTokenBytes(prev, token));
  }

  streamDecoder(prev = -1): StreamDecoder {
    let last = prev;
    let utf8 = new TextDecoder("utf-8", { fatal: false });
    return {
      push: (token: number) => {
        const bytes = this.decodeTokenBytes(last, token);
        last = token;
        return utf8.decode(bytes, { stream: true });
      },
      flush: () => {
        const rest = utf8.decode();
        utf8 = new TextDecoder("utf-8", { fatal: false });
        return rest;
      },
    };
  }

  decode(tokens: readonly number[]): string {
    let prev = -1;
    let text = "";
    const utf8 = new TextDecoder("utf-8", { fatal: false });
    for (const token of tokens) {
      if (token !== this.bosId && token !== this.eosId) {
        text += utf8.decode(this.decodeTokenBytes(prev, token), { stream: true });
      } else this.checkId(token);
      prev = token;
    }
    return text + utf8.decode();
  }
}

/**
 * Max-heap of merge candidates by (score desc, left position asc), in parallel arrays so a
 * long prompt's many candidates cost no object each. A merged symbol keeps its left symbol's
 * position and the list keeps text order, so the smallest position is run.c's leftmost pair.
 */
class MergeHeap {
  private score: number[] = [];
  private left: number[] = [];
  private id: number[] = [];
  private leftVersion: number[] = [];
  private rightVersion: number[] = [];

  get size(): number {
    return this.score.length;
  }

  push(score: number, left: number, id: number, leftVersion: number, rightVersion: number) {
    this.score.push(score);
    this.left.push(left);
    this.id.push(id);
    this.leftVersion.push(leftVersion);
    this.rightVersion.push(rightVersion);
    let i = this.score.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.before(i, parent)) break;
      this.swap(i, parent);
      i = parent;
    }
  }

  pop(): { left: number; id: number; leftVersion: number; rightVersion: number } {
    const top = {
      left: this.left[0],
      id: this.id[0],
      leftVersion: this.leftVersion[0],
      rightVersion: this.rightVersion[0],
    };
    const last = this.score.length - 1;
    this.swap(0, last);
    this.score.pop();
    this.left.pop();
    this.id.pop();
    this.leftVersion.pop();
    this.rightVersion.pop();
    let i = 0;
    while (true) {
      const l = 2 * i + 1;
      const r = l + 1;
      let best = i;
      if (l < last && this.before(l, best)) best = l;
      if (r < last && this.before(r, best)) best = r;
      if (best === i) break;
      this.swap(i, best);
      i = best;
    }
    return top;
  }

  private before(a: number, b: number): boolean {
    return this.score[a] > this.score[b] ||
      (this.score[a] === this.score[b] && this.left[a] < this.left[b]);
  }

  private swap(a: number, b: number) {
    swapIn(this.score, a, b);
    swapIn(this.left, a, b);
    swapIn(this.id, a, b);
    swapIn(this.leftVersion, a, b);
    swapIn(this.rightVersion, a, b);
  }
}

const swapIn = (column: number[], a: number, b: number) => {
  const t = column[a];
  column[a] = column[b];
  column[b] = t;
};

/** Largest piece length we believe: anything longer means we are not reading a tokenizer. */
const MAX_PIECE_BYTES = 1 << 16;

/**
 * run.c's tokenizer over a SentencePiece-style vocabulary from elsewhere (a GGUF file): pieces
 * as bytes (a space for "▁", `<0xNN>` byte tokens as they are) with their merge scores.
 */
export const makeSentencePieceTokenizer = (
  scores: Float32Array,
  pieces: Uint8Array[],
  specials: SpecialTokens,
): Tokenizer =>
  new Llama2cTokenizer(
    pieces.reduce((n, p) => Math.max(n, p.length), 1),
    scores,
    pieces,
    specials,
  );

/** Parses a `tokenizer.bin`; the file must hold exactly `vocabSize` tokens. */
export const parseLlama2cTokenizer = (
  file: string,
  data: Uint8Array,
  vocabSize: number,
): Effect.Effect<Tokenizer, LoadError> =>
  Effect.suspend(() => {
    const fail = (reason: string) => Effect.fail(loadError(file, reason));
    if (!(Number.isInteger(vocabSize) && vocabSize > 0)) {
      return fail(`vocab size ${vocabSize} must be a positive integer`);
    }
    const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
    if (data.length < 4) return fail(`file is ${data.length} bytes, too short for a tokenizer`);
    const maxTokenLength = view.getInt32(0, true);
    if (!(maxTokenLength > 0 && maxTokenLength <= MAX_PIECE_BYTES)) {
      return fail(`max_token_length ${maxTokenLength} is not plausible`);
    }
    const scores = new Float32Array(vocabSize);
    const pieces: Uint8Array[] = [];
    let at = 4;
    for (let id = 0; id < vocabSize; id++) {
      if (at + 8 > data.length) {
        return fail(
          `file ends at byte ${data.length} inside the entry of token ${id} of ${vocabSize}`,
        );
      }
      scores[id] = view.getFloat32(at, true);
      const len = view.getInt32(at + 4, true);
      at += 8;
      if (!(len >= 0 && len <= MAX_PIECE_BYTES)) {
        return fail(`token ${id} has an implausible length ${len} at byte ${at - 4}`);
      }
      if (at + len > data.length) {
        return fail(
          `file ends at byte ${data.length} inside the bytes of token ${id} of ${vocabSize}`,
        );
      }
      pieces.push(data.slice(at, at + len));
      at += len;
    }
    if (at !== data.length) {
      return fail(
        `${data.length - at} trailing bytes after ${vocabSize} tokens: the tokenizer has a ` +
          `different vocabulary size than the model`,
      );
    }
    return Effect.succeed(new Llama2cTokenizer(maxTokenLength, scores, pieces));
  });

/** Reads a llama2.c `tokenizer.bin` (small: read whole) for a model of `vocabSize` tokens. */
export const loadLlama2cTokenizer = (
  path: FilePath,
  vocabSize: number,
): Effect.Effect<Tokenizer, LoadError> => {
  const file = filePathString(path);
  return Effect.tryPromise({
    try: async () => {
      // Reading a named pipe would wait for a writer for ever.
      if (!(await Deno.stat(file)).isFile) throw new Error("not a regular file");
      return await Deno.readFile(file);
    },
    catch: (e) => loadError(file, `cannot read the file (${e instanceof Error ? e.message : e})`),
  }).pipe(Effect.flatMap((data) => parseLlama2cTokenizer(file, data, vocabSize)));
};

/** The ids that end generation at a stop: BOS, EOS, and any further EOS ids (HF). */
export const stopIds = (tokenizer: TextTokenizer): ReadonlySet<number> => {
  const extra = (tokenizer as { eosIds?: readonly number[] }).eosIds ?? [];
  return new Set([tokenizer.bosId, tokenizer.eosId, ...extra]);
};
