/**
 * The safetensors file format: a little-endian u64 header length N, N bytes of UTF-8 JSON
 * `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?: {..}}`, then the tensor
 * data, offsets counted from the end of the header. The header is validated as strictly as the
 * reference (Rust) implementation does — spans must tile the data exactly — so a truncated,
 * padded or corrupt file fails at open naming the tensor, not later with garbage. Reads are
 * ranged through an open handle, so a rank reads only its own rows or columns; F16 and BF16 are
 * widened to f32 as they are read.
 */
import { f16Lookup, f32ToBf16, f32ToF16 } from "../util/f16.ts";
import { Effect } from "effect";
import { type LoadError, loadError } from "./errors.ts";
import { checkRange, fileSize, readBytesAt } from "./tensor_reader.ts";

/** Element sizes of every dtype the format defines; only F32/F16/BF16 can be read as f32. */
const DTYPE_BYTES = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E5M2: 1,
  F8_E4M3: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  F64: 8,
  I64: 8,
  U64: 8,
} as const;

export type SafetensorsDtype = keyof typeof DTYPE_BYTES;

/** The dtypes this reader converts to f32. */
export const READABLE_DTYPES: readonly SafetensorsDtype[] = ["F32", "F16", "BF16"];

/** One tensor of a safetensors file, with its absolute position in the file. */
export interface SafetensorsEntry {
  readonly name: string;
  readonly dtype: SafetensorsDtype;
  readonly shape: readonly number[];
  /** Byte offset of element 0 from the start of the file (8 + N + data_offsets[0]). */
  readonly offset: number;
  readonly byteLength: number;
}

export interface SafetensorsHeader {
  readonly file: string;
  readonly fileSize: number;
  /** Byte offset where the data section starts: 8 + N. */
  readonly dataStart: number;
  readonly tensors: ReadonlyMap<string, SafetensorsEntry>;
  /** The optional `__metadata__` string map (e.g. `{format: "pt"}`). */
  readonly metadata?: Readonly<Record<string, string>>;
}

/** The safetensors crate refuses headers over 100 MB; anything larger is not a header. */
export const MAX_HEADER_BYTES = 100_000_000;

const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

const describe = (e: unknown): string => (e instanceof Error ? e.message : String(e));

const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

/**
 * Validates the JSON header of a file of `size` bytes whose header is `headerBytes` long, and
 * lays out every tensor. Pure, so every rejection can be tested without writing files.
 */
export const parseSafetensorsHeader = (
  file: string,
  size: number,
  headerBytes: Uint8Array,
): Effect.Effect<SafetensorsHeader, LoadError> =>
  Effect.suspend(() => {
    const fail = (reason: string, tensor?: string) =>
      Effect.fail(loadError(file, `bad safetensors header: ${reason}`, tensor));
    const dataStart = 8 + headerBytes.length;
    const dataBytes = size - dataStart;
    let json: unknown;
    try {
      json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(headerBytes));
    } catch (e) {
      return fail(`the ${headerBytes.length}-byte header is not valid JSON (${describe(e)})`);
    }
    if (!isRecord(json)) return fail("the header is not a JSON object");
    let metadata: Record<string, string> | undefined;
    const spans: { name: string; begin: number; end: number }[] = [];
    const tensors = new Map<string, SafetensorsEntry>();
    for (const [name, value] of Object.entries(json)) {
      if (name === "__metadata__") {
        if (!isRecord(value) || !Object.values(value).every((v) => typeof v === "string")) {
          return fail("__metadata__ must be an object of strings");
        }
        metadata = value as Record<string, string>;
        continue;
      }
      if (!isRecord(value)) return fail("entry is not an object", name);
      const { dtype, shape, data_offsets: offsets } = value;
      if (typeof dtype !== "string" || !Object.hasOwn(DTYPE_BYTES, dtype)) {
        return fail(`unknown dtype ${JSON.stringify(dtype)}`, name);
      }
      if (!Array.isArray(shape) || !shape.every(isCount)) {
        return fail(`shape ${JSON.stringify(shape)} is not a list of non-negative integers`, name);
      }
      if (
        !Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount) ||
        offsets[0] > offsets[1]
      ) {
        return fail(`data_offsets ${JSON.stringify(offsets)} is not [begin, end]`, name);
      }
      const [begin, end] = offsets as [number, number];
      const elements = (shape as number[]).reduce((a, b) => a * b, 1);
      const byteLength = elements * DTYPE_BYTES[dtype as SafetensorsDtype];
      if (!Number.isSafeInteger(byteLength) || end - begin !== byteLength) {
        return fail(
          `data_offsets [${begin}, ${end}] span ${end - begin} bytes but ${dtype} ` +
            `[${shape.join(", ")}] needs ${byteLength}`,
          name,
        );
      }
      if (end > dataBytes) {
        return fail(
          `data_offsets [${begin}, ${end}] run past the end of the data: the file has ` +
            `${Math.max(dataBytes, 0)} data bytes after the ${headerBytes.length}-byte header ` +
            `(truncated file?)`,
          name,
        );
      }
      spans.push({ name, begin, end });
      tensors.set(name, {
        name,
        dtype: dtype as SafetensorsDtype,
        shape: shape as number[],
        offset: dataStart + begin,
        byteLength,
      });
    }
    // Like the reference implementation: spans in offset order tile the data with no gap,
    // overlap or trailing bytes.
    spans.sort((a, b) => a.begin - b.begin || a.end - b.end);
    let at = 0;
    for (const s of spans) {
      if (s.begin !== at) {
        return fail(
          s.begin < at
            ? `data_offsets [${s.begin}, ${s.end}] overlap the previous tensor (ends at ${at})`
            : `${s.begin - at} unaccounted bytes before this tensor (at ${at}..${s.begin})`,
          s.name,
        );
      }
      at = s.end;
    }
    if (at !== dataBytes) {
      return fail(
        `${dataBytes - at} trailing bytes after the last tensor (data is ${dataBytes} bytes, ` +
          `tensors cover ${at})`,
        spans.length > 0 ? spans[spans.length - 1].name : undefined,
      );
    }
    return Effect.succeed({ file, fileSize: size, dataStart, tensors, metadata });
  });

/** Reads and validates the header of an open safetensors file: 8 + N bytes, no tensor data. */
export const readSafetensorsHeader = (
  handle: Deno.FsFile,
  file: string,
): Effect.Effect<SafetensorsHeader, LoadError> =>
  Effect.gen(function* () {
    const size = yield* fileSize(handle, file);
    if (size < 8) {
      return yield* Effect.fail(
        loadError(file, `file is ${size} bytes, too short for the 8-byte safetensors header size`),
      );
    }
    const lengthBytes = new Uint8Array(8);
    yield* readBytesAt(handle, file, 0, lengthBytes);
    const n = new DataView(lengthBytes.buffer).getBigUint64(0, true);
    if (n > BigInt(size - 8)) {
      return yield* Effect.fail(
        loadError(file, `header length ${n} runs past the end of the ${size}-byte file`),
      );
    }
    if (n > BigInt(MAX_HEADER_BYTES)) {
      return yield* Effect.fail(
        loadError(file, `header length ${n} is implausibly large (limit ${MAX_HEADER_BYTES})`),
      );
    }
    const headerBytes = new Uint8Array(Number(n));
    yield* readBytesAt(handle, file, 8, headerBytes);
    return yield* parseSafetensorsHeader(file, size, headerBytes);
  });

// ---------------------------------------------------------------------------------------------
// Element conversion

export { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from "../util/f16.ts";

/** Little-endian elements of `dtype` → f32. */
export const decodeElements = (dtype: "F32" | "F16" | "BF16", bytes: Uint8Array): Float32Array => {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = bytes.byteLength / DTYPE_BYTES[dtype];
  const out = new Float32Array(n);
  if (dtype === "F32") {
    for (let i = 0; i < n; i++) out[i] = view.getFloat32(i * 4, true);
  } else if (dtype === "F16") {
    const table = f16Lookup();
    for (let i = 0; i < n; i++) out[i] = table[view.getUint16(i * 2, true)];
  } else {
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < n; i++) bits[i] = view.getUint16(i * 2, true) << 16;
  }
  return out;
};

/** f32 values → little-endian elements of `dtype` (rounded to nearest even), for writing. */
export const encodeElements = (dtype: "F32" | "F16" | "BF16", values: Float32Array): Uint8Array => {
  const size = DTYPE_BYTES[dtype];
  const bytes = new Uint8Array(values.length * size);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < values.length; i++) {
    if (dtype === "F32") view.setFloat32(i * 4, values[i], true);
    else view.setUint16(i * 2, dtype === "F16" ? f32ToF16(values[i]) : f32ToBf16(values[i]), true);
  }
  return bytes;
};

// ---------------------------------------------------------------------------------------------
// Ranged reads

/** Rows and columns of a vector (one row) or a matrix; `undefined` for any other rank. */
const matrixOf = (entry: SafetensorsEntry): { rows: number; cols: number } | undefined =>
  entry.shape.length === 1
    ? { rows: 1, cols: entry.shape[0] }
    : entry.shape.length === 2
    ? { rows: entry.shape[0], cols: entry.shape[1] }
    : undefined;

/** The entry's matrix shape and f32-convertible dtype, or a `LoadError` naming what is wrong. */
const readable = (file: string, entry: SafetensorsEntry) => {
  const m = matrixOf(entry);
  if (m === undefined) {
    return Effect.fail(
      loadError(file, `shape [${entry.shape.join(", ")}] is not a vector or matrix`, entry.name),
    );
  }
  if (!READABLE_DTYPES.includes(entry.dtype)) {
    return Effect.fail(
      loadError(
        file,
        `dtype ${entry.dtype} is not supported (only ${READABLE_DTYPES.join(", ")})`,
        entry.name,
      ),
    );
  }
  return Effect.succeed({ ...m, dtype: entry.dtype as "F32" | "F16" | "BF16" });
};

/** Fails unless `entry` can be read as an f32 vector or matrix (checked once at open). */
export const checkReadable = (
  file: string,
  entry: SafetensorsEntry,
): Effect.Effect<void, LoadError> => Effect.asVoid(readable(file, entry));

/** Rows `[start, start + count)` of a tensor as f32 `[count, cols]`: one contiguous read. */
export const readSafetensorsRows = (
  handle: Deno.FsFile,
  file: string,
  entry: SafetensorsEntry,
  start: number,
  count: number,
): Effect.Effect<Float32Array, LoadError> =>
  Effect.gen(function* () {
    const { rows, cols, dtype } = yield* readable(file, entry);
    yield* checkRange(file, entry, "rows", start, count, rows);
    const size = DTYPE_BYTES[dtype];
    const bytes = new Uint8Array(count * cols * size);
    yield* readBytesAt(handle, file, entry.offset + start * cols * size, bytes, entry.name);
    return decodeElements(dtype, bytes);
  });

/**
 * Columns `[start, start + count)` of every row (or of the rows `rowSpan`) as f32
 * `[rows, count]`: one read of that span per row (a single read when the span is the whole row).
 */
export const readSafetensorsColumns = (
  handle: Deno.FsFile,
  file: string,
  entry: SafetensorsEntry,
  start: number,
  count: number,
  rowSpan?: { readonly start: number; readonly count: number },
): Effect.Effect<Float32Array, LoadError> =>
  Effect.gen(function* () {
    const { rows, cols, dtype } = yield* readable(file, entry);
    yield* checkRange(file, entry, "columns", start, count, cols);
    const { start: r0, count: rowCount } = rowSpan ?? { start: 0, count: rows };
    yield* checkRange(file, entry, "rows", r0, rowCount, rows);
    if (count === cols) return yield* readSafetensorsRows(handle, file, entry, r0, rowCount);
    const size = DTYPE_BYTES[dtype];
    const span = count * size;
    const bytes = new Uint8Array(rowCount * span);
    for (let r = 0; r < rowCount; r++) {
      const position = entry.offset + ((r0 + r) * cols + start) * size;
      yield* readBytesAt(
        handle,
        file,
        position,
        bytes.subarray(r * span, (r + 1) * span),
        entry.name,
      );
    }
    return decodeElements(dtype, bytes);
  });

// ---------------------------------------------------------------------------------------------
// Writing (tests and tools)

/** A tensor to write: f32 values stored as `dtype`. */
export interface SafetensorsInput {
  readonly name: string;
  readonly dtype: "F32" | "F16" | "BF16";
  readonly shape: readonly number[];
  readonly data: Float32Array;
}

/**
 * A complete safetensors file of `tensors`, in the given order, with the header padded with
 * spaces to a multiple of 8 bytes as the reference writer does.
 */
export const encodeSafetensors = (
  tensors: readonly SafetensorsInput[],
  metadata?: Readonly<Record<string, string>>,
): Uint8Array => {
  const header: Record<string, unknown> = {};
  if (metadata !== undefined) header.__metadata__ = metadata;
  const chunks: Uint8Array[] = [];
  let at = 0;
  for (const t of tensors) {
    const bytes = encodeElements(t.dtype, t.data);
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [at, at + bytes.length] };
    chunks.push(bytes);
    at += bytes.length;
  }
  let json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.length / 8) * 8;
  if (padded !== json.length) {
    const p = new Uint8Array(padded).fill(0x20);
    p.set(json);
    json = p;
  }
  const out = new Uint8Array(8 + json.length + at);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  let pos = 8 + json.length;
  for (const c of chunks) {
    out.set(c, pos);
    pos += c.length;
  }
  return out;
};
