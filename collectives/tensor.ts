/** Host tensors as collectives see them: a dtype, a shape and the bytes. */

/** Element type of a host tensor (only f32 so far). */
export type DType = "f32";

/** A tensor in host memory: row-major f32 data and its shape. */
export interface HostTensor {
  /** Element type. */
  readonly dtype: DType;
  /** Dimensions, outermost first. */
  readonly shape: readonly number[];
  /** The elements, row-major; length is the product of `shape`. */
  readonly data: Float32Array;
}

/** Makes a host tensor; throws a `RangeError` when `data.length` does not match `shape`. */
export const tensor = (shape: readonly number[], data: Float32Array): HostTensor => {
  const n = elementCount(shape);
  if (n !== data.length) {
    throw new RangeError(`tensor shape [${shape}] needs ${n} elements, got ${data.length}`);
  }
  return { dtype: "f32", shape: [...shape], data };
};

export const elementCount = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

export const describe = (t: { dtype: string; shape: readonly number[] }): string =>
  `${t.dtype}[${t.shape.join("×")}]`;

/**
 * Sizes of `world` contiguous parts of `total`: the first `total % world` parts get one extra.
 * Every rank can compute every other rank's part, so uneven splits need no negotiation.
 */
export const splitSizes = (total: number, world: number): number[] =>
  Array.from({ length: world }, (_, r) => Math.floor(total / world) + (r < total % world ? 1 : 0));

/** The [start, start + size) part of `total` owned by `rank`. */
export const partRange = (
  total: number,
  rank: number,
  world: number,
): { start: number; size: number } => {
  const sizes = splitSizes(total, world);
  const start = sizes.slice(0, rank).reduce((a, b) => a + b, 0);
  return { start, size: sizes[rank] };
};

/** Concatenates tensors along `axis`; all other dimensions must agree (checked by the caller). */
export const concat = (parts: readonly HostTensor[], axis: number): HostTensor => {
  const shape = [...parts[0].shape];
  shape[axis] = parts.reduce((n, p) => n + p.shape[axis], 0);
  const outer = elementCount(shape.slice(0, axis));
  const inner = elementCount(shape.slice(axis + 1));
  const out = new Float32Array(elementCount(shape));
  let offset = 0;
  for (let o = 0; o < outer; o++) {
    for (const p of parts) {
      const span = p.shape[axis] * inner;
      out.set(p.data.subarray(o * span, (o + 1) * span), offset);
      offset += span;
    }
  }
  return tensor(shape, out);
};

/** Part `rank` of `t` split along `axis` by `splitSizes`. */
export const slice = (t: HostTensor, axis: number, rank: number, world: number): HostTensor => {
  const { start, size } = partRange(t.shape[axis], rank, world);
  return sliceRange(t, axis, start, size);
};

/** Elements [start, start + size) of `t` along `axis`. */
export const sliceRange = (
  t: HostTensor,
  axis: number,
  start: number,
  size: number,
): HostTensor => {
  const shape = [...t.shape];
  shape[axis] = size;
  const outer = elementCount(t.shape.slice(0, axis));
  const inner = elementCount(t.shape.slice(axis + 1));
  const out = new Float32Array(elementCount(shape));
  for (let o = 0; o < outer; o++) {
    const from = (o * t.shape[axis] + start) * inner;
    out.set(t.data.subarray(from, from + size * inner), o * size * inner);
  }
  return tensor(shape, out);
};

/** Views a tensor's bytes (no copy), for binary payloads. */
export const toBytes = (t: HostTensor): Uint8Array =>
  new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);

/** Reads f32 elements from payload bytes, copying when unaligned. */
export const f32FromBytes = (bytes: Uint8Array): Float32Array =>
  bytes.byteOffset % 4 === 0
    ? new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4)
    : new Float32Array(bytes.slice().buffer);

/** Reads i32 elements from payload bytes (a copy, so alignment never matters). */
export const i32FromBytes = (bytes: Uint8Array): Int32Array => new Int32Array(bytes.slice().buffer);
