/**
 * A GGUF writer (llama.cpp's gguf.md, version 3 by default): the header alone, so large files
 * stream their tensors after it, or a whole small file in memory.
 */

/** A metadata value with its GGUF type. */
export type GgufMeta =
  | { readonly u32: number }
  | { readonly i32: number }
  | { readonly f32: number }
  | { readonly bool: boolean }
  | { readonly string: string }
  | { readonly strings: readonly string[] }
  | { readonly f32s: ArrayLike<number> }
  | { readonly i32s: ArrayLike<number> };

/** A tensor to write: GGUF dims (contiguous first), ggml type id and its raw bytes. */
export interface GgufTensorInput {
  readonly name: string;
  readonly dims: readonly number[];
  readonly type: number;
  readonly data: Uint8Array;
}

class Writer {
  private parts: Uint8Array[] = [];
  length = 0;
  bytes(b: Uint8Array) {
    this.parts.push(b);
    this.length += b.length;
  }
  private scalar(n: number, set: (v: DataView) => void) {
    const b = new Uint8Array(n);
    set(new DataView(b.buffer));
    this.bytes(b);
  }
  u32 = (v: number) => this.scalar(4, (d) => d.setUint32(0, v, true));
  i32 = (v: number) => this.scalar(4, (d) => d.setInt32(0, v, true));
  f32 = (v: number) => this.scalar(4, (d) => d.setFloat32(0, v, true));
  u64 = (v: number) => this.scalar(8, (d) => d.setBigUint64(0, BigInt(v), true));
  u8 = (v: number) => this.scalar(1, (d) => d.setUint8(0, v));
  string(s: string) {
    const b = new TextEncoder().encode(s);
    this.u64(b.length);
    this.bytes(b);
  }
  pad(alignment: number) {
    const n = (alignment - (this.length % alignment)) % alignment;
    this.bytes(new Uint8Array(n));
  }
  finish(): Uint8Array {
    const out = new Uint8Array(this.length);
    let at = 0;
    for (const p of this.parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }
}

const writeMeta = (w: Writer, value: GgufMeta) => {
  if ("u32" in value) return (w.u32(4), w.u32(value.u32));
  if ("i32" in value) return (w.u32(5), w.i32(value.i32));
  if ("f32" in value) return (w.u32(6), w.f32(value.f32));
  if ("bool" in value) return (w.u32(7), w.u8(value.bool ? 1 : 0));
  if ("string" in value) return (w.u32(8), w.string(value.string));
  const [itemType, items, write] = "strings" in value
    ? [8, value.strings, (v: string) => w.string(v)] as const
    : "f32s" in value
    ? [6, Array.from(value.f32s), (v: number) => w.f32(v)] as const
    : [5, Array.from(value.i32s), (v: number) => w.i32(v)] as const;
  w.u32(9);
  w.u32(itemType);
  w.u64(items.length);
  for (const item of items) (write as (v: unknown) => void)(item);
};

/** A tensor's entry in the header: its data follows at the aligned offset the header assigns. */
export interface GgufTensorInfo {
  readonly name: string;
  /** GGUF dims, contiguous first. */
  readonly dims: readonly number[];
  /** ggml type id ({@link GGML}). */
  readonly type: number;
  readonly byteLength: number;
}

/**
 * The header of a GGUF file of `metadata` and `tensors`, padded to `alignment`: each tensor's
 * data then follows in order, padded to `alignment` too (a writer can stream them one by one).
 */
export const encodeGgufHeader = (
  metadata: Readonly<Record<string, GgufMeta>>,
  tensors: readonly GgufTensorInfo[],
  { version = 3, alignment = 32 }: { version?: number; alignment?: number } = {},
): Uint8Array => {
  const w = new Writer();
  w.u32(0x46554747);
  w.u32(version);
  w.u64(tensors.length);
  // A reader assumes 32 unless the metadata says otherwise.
  const alignmentKey = alignment !== 32 && !("general.alignment" in metadata);
  w.u64(Object.keys(metadata).length + (alignmentKey ? 1 : 0));
  for (const [key, value] of Object.entries(metadata)) {
    w.string(key);
    writeMeta(w, value);
  }
  if (alignmentKey) {
    w.string("general.alignment");
    writeMeta(w, { u32: alignment });
  }
  let offset = 0;
  for (const t of tensors) {
    w.string(t.name);
    w.u32(t.dims.length);
    for (const d of t.dims) w.u64(d);
    w.u32(t.type);
    w.u64(offset);
    offset += paddedLength(t.byteLength, alignment);
  }
  w.pad(alignment);
  return w.finish();
};

/** `length` rounded up to `alignment`. */
export const paddedLength = (length: number, alignment: number): number =>
  Math.ceil(length / alignment) * alignment;

/** A whole GGUF file of `metadata` and `tensors` in memory (small files: tests, fixtures). */
export const encodeGguf = (
  metadata: Readonly<Record<string, GgufMeta>>,
  tensors: readonly GgufTensorInput[],
  options: { version?: number; alignment?: number } = {},
): Uint8Array => {
  const alignment = options.alignment ?? 32;
  const header = encodeGgufHeader(
    metadata,
    tensors.map((t) => ({ ...t, byteLength: t.data.length })),
    options,
  );
  const out = new Uint8Array(
    header.length + tensors.reduce((n, t) => n + paddedLength(t.data.length, alignment), 0),
  );
  out.set(header);
  let at = header.length;
  for (const t of tensors) {
    out.set(t.data, at);
    at += paddedLength(t.data.length, alignment);
  }
  return out;
};

/** ggml type ids. */
export const GGML = {
  F32: 0,
  F16: 1,
  Q4_0: 2,
  Q4_1: 3,
  Q5_0: 6,
  Q5_1: 7,
  Q8_0: 8,
  Q2_K: 10,
  Q4_K: 12,
  Q5_K: 13,
  Q6_K: 14,
  BF16: 30,
} as const;
