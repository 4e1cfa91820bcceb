/**
 * The GGUF container (llama.cpp's gguf.md), versions 2 and 3: a header, typed metadata
 * key-values, then tensor infos (name, dims with the contiguous dimension first, ggml type,
 * offset into the aligned data section). Parsing reads a growing prefix of the file until the
 * infos end, so the data section is never read here.
 */
import { Effect } from "effect";
import { type LoadError, loadError } from "../errors.ts";
import { fileSize, readBytesAt } from "../tensor_reader.ts";
import { GGML_TYPES, type GgmlType, OTHER_GGML_TYPES } from "./quants.ts";

/** "GGUF" read as a little-endian u32. */
export const GGUF_MAGIC = 0x46554747;

/** A metadata value: numbers (u64/i64 as number when safe), strings, booleans, arrays. */
export type GgufValue = number | bigint | string | boolean | readonly GgufValue[] | Float32Array;

/** One tensor of a GGUF file, as [rows, cols] of an [out, in] matrix (a vector: one row). */
export interface GgufTensor {
  readonly name: string;
  /** GGUF dims, contiguous first: [cols] or [cols, rows]. */
  readonly dims: readonly number[];
  readonly type: GgmlType;
  /** Absolute byte offset of the first element. */
  readonly offset: number;
  readonly rows: number;
  readonly cols: number;
  /** Bytes of one row: whole blocks. */
  readonly rowBytes: number;
}

/** A parsed GGUF header. */
export interface GgufFile {
  readonly file: string;
  readonly version: number;
  readonly metadata: ReadonlyMap<string, GgufValue>;
  readonly tensors: ReadonlyMap<string, GgufTensor>;
}

/** Thrown while parsing when the prefix read so far ends inside the header. */
class NeedMore {}

/** Malformed content: the reason, and the tensor or key it concerns. */
class Malformed {
  constructor(readonly reason: string, readonly tensor?: string) {}
}

/** Header bytes beyond this are not a plausible header: a misread file. */
const MAX_HEADER_BYTES = 512 * 2 ** 20;
const MAX_COUNT = 2 ** 24;
const MAX_DIMS = 4;

/** One decoder for every string of a header (a vocabulary has 100k+ of them). */
const UTF8 = new TextDecoder();

class Cursor {
  private readonly view: DataView;
  at = 0;
  constructor(readonly bytes: Uint8Array) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  private need(n: number) {
    if (this.at + n > this.bytes.length) throw new NeedMore();
  }
  u8() {
    this.need(1);
    return this.view.getUint8(this.at++);
  }
  u32() {
    this.need(4);
    const v = this.view.getUint32(this.at, true);
    this.at += 4;
    return v;
  }
  u64(): number {
    this.need(8);
    const v = this.view.getBigUint64(this.at, true);
    this.at += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new Malformed(`a count of ${v} is implausible`);
    return Number(v);
  }
  string(): string {
    const length = this.u64();
    if (length > MAX_HEADER_BYTES) throw new Malformed(`a string of ${length} bytes`);
    this.need(length);
    const s = UTF8.decode(this.bytes.subarray(this.at, this.at + length));
    this.at += length;
    return s;
  }
  value(type: number): GgufValue {
    const v = this.view;
    const read = <T>(n: number, f: (at: number) => T): T => {
      this.need(n);
      const out = f(this.at);
      this.at += n;
      return out;
    };
    switch (type) {
      case 0:
        return read(1, (at) => v.getUint8(at));
      case 1:
        return read(1, (at) => v.getInt8(at));
      case 2:
        return read(2, (at) => v.getUint16(at, true));
      case 3:
        return read(2, (at) => v.getInt16(at, true));
      case 4:
        return read(4, (at) => v.getUint32(at, true));
      case 5:
        return read(4, (at) => v.getInt32(at, true));
      case 6:
        return read(4, (at) => v.getFloat32(at, true));
      case 7:
        return read(1, (at) => v.getUint8(at) !== 0);
      case 8:
        return this.string();
      case 9: {
        const itemType = this.u32();
        const count = this.u64();
        if (count > MAX_COUNT) throw new Malformed(`an array of ${count} items`);
        if (itemType === 6) {
          const out = new Float32Array(count);
          for (let i = 0; i < count; i++) out[i] = this.value(6) as number;
          return out;
        }
        return Array.from({ length: count }, () => this.value(itemType));
      }
      case 10:
      case 11: {
        const big = read(
          8,
          (at) => type === 10 ? v.getBigUint64(at, true) : v.getBigInt64(at, true),
        );
        return big >= BigInt(Number.MIN_SAFE_INTEGER) && big <= BigInt(Number.MAX_SAFE_INTEGER)
          ? Number(big)
          : big;
      }
      case 12:
        return read(8, (at) => v.getFloat64(at, true));
      default:
        throw new Malformed(`unknown metadata value type ${type}`);
    }
  }
}

/** The header, metadata and tensor infos in `bytes` (a prefix of the file of `size` bytes). */
const parse = (file: string, bytes: Uint8Array, size: number): GgufFile => {
  const c = new Cursor(bytes);
  const magic = c.u32();
  if (magic !== GGUF_MAGIC) throw new Malformed("not a GGUF file (bad magic)");
  const version = c.u32();
  if (version !== 2 && version !== 3) {
    throw new Malformed(`GGUF version ${version} is not supported (only 2 and 3)`);
  }
  const tensorCount = c.u64();
  const kvCount = c.u64();
  if (tensorCount > MAX_COUNT || kvCount > MAX_COUNT) {
    throw new Malformed(`${tensorCount} tensors and ${kvCount} metadata keys are implausible`);
  }
  const metadata = new Map<string, GgufValue>();
  for (let i = 0; i < kvCount; i++) {
    const key = c.string();
    metadata.set(key, c.value(c.u32()));
  }
  const infos: { name: string; dims: number[]; typeId: number; offset: number }[] = [];
  for (let i = 0; i < tensorCount; i++) {
    const name = c.string();
    const nDims = c.u32();
    if (nDims < 1 || nDims > MAX_DIMS) throw new Malformed(`${nDims} dimensions`, name);
    const dims = Array.from({ length: nDims }, () => c.u64());
    infos.push({ name, dims, typeId: c.u32(), offset: c.u64() });
  }
  const alignment = metadata.get("general.alignment") ?? 32;
  if (!(typeof alignment === "number" && alignment > 0 && (alignment & (alignment - 1)) === 0)) {
    throw new Malformed(`general.alignment = ${alignment} is not a power of two`);
  }
  const dataStart = Math.ceil(c.at / alignment) * alignment;
  const tensors = new Map<string, GgufTensor>();
  for (const { name, dims, typeId, offset } of infos) {
    const type = GGML_TYPES.get(typeId);
    if (type === undefined) {
      const known = OTHER_GGML_TYPES[typeId];
      throw new Malformed(
        `tensor type ${known ?? `#${typeId}`} is not supported (Tessera reads ` +
          `${[...GGML_TYPES.values()].map((t) => t.name).join(", ")})`,
        name,
      );
    }
    if (dims.slice(2).some((d) => d !== 1)) {
      throw new Malformed(`dims [${dims}] have more than two that are not 1`, name);
    }
    const [cols, rows = 1] = dims;
    if (cols % type.blockElements !== 0) {
      throw new Malformed(
        `${cols} columns are not whole ${type.name} blocks of ${type.blockElements}`,
        name,
      );
    }
    const rowBytes = (cols / type.blockElements) * type.blockBytes;
    const start = dataStart + offset;
    if (offset % alignment !== 0) throw new Malformed(`offset ${offset} is not aligned`, name);
    if (start + rows * rowBytes > size) {
      throw new Malformed(
        `data ends at byte ${start + rows * rowBytes}, past the end of the ${size}-byte file`,
        name,
      );
    }
    tensors.set(name, { name, dims, type, offset: start, rows, cols, rowBytes });
  }
  return { file, version, metadata, tensors };
};

/** True when `bytes` start with the GGUF magic. */
export const isGguf = (bytes: Uint8Array): boolean =>
  bytes.length >= 4 &&
  new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0, true) === GGUF_MAGIC;

/** Reads and parses a GGUF header from an open file; never reads the data section. */
export const readGgufHeader = (
  handle: Deno.FsFile,
  file: string,
): Effect.Effect<GgufFile, LoadError> =>
  Effect.gen(function* () {
    const size = yield* fileSize(handle, file);
    let length = Math.min(size, 1 << 20);
    while (true) {
      const bytes = new Uint8Array(length);
      yield* readBytesAt(handle, file, 0, bytes);
      try {
        return parse(file, bytes, size);
      } catch (e) {
        if (e instanceof Malformed) return yield* Effect.fail(loadError(file, e.reason, e.tensor));
        if (!(e instanceof NeedMore)) throw e;
        if (length >= size) {
          return yield* Effect.fail(loadError(file, "file is truncated inside the GGUF header"));
        }
        if (length >= MAX_HEADER_BYTES) {
          return yield* Effect.fail(loadError(file, `GGUF header over ${MAX_HEADER_BYTES} bytes`));
        }
        length = Math.min(size, length * 4);
      }
    }
  });
