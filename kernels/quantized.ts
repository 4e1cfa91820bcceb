/**
 * Quantized weights for the blocked matmul (kernels/matmul.ts): llama.cpp's reference quantizers
 * applied along k, 32 elements of one column per block, and the device layout the kernel reads.
 *
 * - Q8_0 (`quantize_row_q8_0_ref`): d = max|x| / 127 stored as f16, q = round(x / d) with the
 *   unrounded d; x = q·d.
 * - Q4_0 (`quantize_row_q4_0_ref`): d = m / −8 where m is the element of largest magnitude (sign
 *   kept), q = min(15, trunc(x / d + 8.5)); x = (q − 8)·d.
 *
 * Layout: per 128-column block and per 32-row group, the 128 columns' f16 scales (64 words, two
 * 16-byte loads per lane: `scaleHalf`), then the group's quants, arranged so that each of the
 * kernel's 8 lanes reads its 16 columns (vec4s l, 8 + l, 16 + l, 24 + l for lane l) with one
 * 16-byte load; a group is then exactly as many bytes as llama.cpp's blocks of it:
 * - Q8_0: 32 words per row; word 4l + v holds vec4 8v + l's 4 columns, one signed byte each.
 * - Q4_0: 32 words per pair of rows; word 4l + 2h + p, for row 2·pair + h, holds vec4 16p + l's
 *   4 columns in its low half and vec4 16p + 8 + l's in its high half, 4 bits each.
 * Every q·d is exact in f32, so the kernel's sums are those of the dequantized f32 weights, bit
 * for bit.
 */
import { f32ToF16 } from "../util/f16.ts";

/** The quantized types the blocked matmul reads. */
export type QuantizedType = "q8_0" | "q4_0";

/** Elements along k that share one scale. */
export const QUANT_BLOCK = 32;

/** Columns per block of the blocked layout (kernels/matmul.ts's WEIGHT_BLOCK). */
const COLUMNS = 128;

/** u32 words of the 128 f16 scales at the start of a group. */
export const SCALE_WORDS = COLUMNS / 2;

/** u32 words of one 32-row group of a 128-column block: scales, then the rows' quants. */
export const groupWords = (type: QuantizedType): number =>
  SCALE_WORDS + QUANT_BLOCK * (type === "q8_0" ? COLUMNS / 4 : COLUMNS / 8);

/**
 * Where column c's f16 scale sits in its group: lane l reads two vec4<u32>s of scales (words
 * 4(8s + l) .. +3 for s = 0, 1), word i of them holding vec4 2s + (i >> 1)'s components
 * 2(i & 1) and 2(i & 1) + 1, the even one in the low half.
 */
export const scaleHalf = (c: number): number => {
  const u = c >> 2, lane = u & 7, v = u >> 3;
  return (((v >> 1) * 8 + lane) * 4 + (v & 1) * 2 + ((c & 3) >> 1)) * 2 + (c & 1);
};

const f32 = Math.fround;

/** C's roundf: half away from zero. */
const roundf = (x: number) => Math.sign(x) * Math.round(Math.abs(x));

/**
 * One Q8_0 block: `get(j)` the 32 values; stores each q with `put(j, q)` and returns the scale's
 * f16 bits.
 */
export const quantizeQ8_0Block = (
  get: (j: number) => number,
  put: (j: number, q: number) => void,
): number => {
  let amax = 0;
  for (let j = 0; j < QUANT_BLOCK; j++) amax = Math.max(amax, Math.abs(get(j)));
  const d = f32(amax / 127);
  const id = d !== 0 ? f32(1 / d) : 0;
  for (let j = 0; j < QUANT_BLOCK; j++) put(j, roundf(f32(get(j) * id)));
  return f32ToF16(d);
};

/** One Q4_0 block, as {@link quantizeQ8_0Block}; each q is 0..15. */
export const quantizeQ4_0Block = (
  get: (j: number) => number,
  put: (j: number, q: number) => void,
): number => {
  let amax = 0, max = 0;
  for (let j = 0; j < QUANT_BLOCK; j++) {
    const v = get(j);
    if (amax < Math.abs(v)) {
      amax = Math.abs(v);
      max = v;
    }
  }
  const d = f32(max / -8);
  const id = d !== 0 ? f32(1 / d) : 0;
  for (let j = 0; j < QUANT_BLOCK; j++) {
    put(j, Math.min(15, Math.trunc(f32(f32(get(j) * id) + 8.5))));
  }
  return f32ToF16(d);
};

/**
 * A [k, n] row-major f32 weight (k a multiple of 32) quantized along k, in the blocked layout:
 * no f32 copy is made, only the scales and quants, into `out` if given (zeroed, of the size).
 */
export const quantizeColumns = (
  type: QuantizedType,
  b: Float32Array,
  k: number,
  n: number,
  into?: Uint32Array,
): Uint32Array => {
  const blocks = Math.ceil(n / COLUMNS), groups = k / QUANT_BLOCK, words = groupWords(type);
  const out = into ?? new Uint32Array(blocks * groups * words);
  const bytes = new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
  const halves = new Uint16Array(out.buffer, out.byteOffset, out.length * 2);
  const quantize = type === "q8_0" ? quantizeQ8_0Block : quantizeQ4_0Block;
  for (let blk = 0; blk < blocks; blk++) {
    const c0 = blk * COLUMNS, width = Math.min(COLUMNS, n - c0);
    for (let g = 0; g < groups; g++) {
      const base = (blk * groups + g) * words;
      for (let c = 0; c < width; c++) {
        const col = c0 + c;
        // Column c is component c % 4 of vec4 u = c / 4, which lane u % 8 reads.
        const u = c >> 2, lane = u & 7, v = u >> 3;
        const put = type === "q8_0"
          ? (
            j: number,
            q: number,
          ) => (bytes[(base + SCALE_WORDS + j * 32 + lane * 4 + v) * 4 + (c & 3)] = q & 0xff)
          : (j: number, q: number) => {
            const word = base + SCALE_WORDS + (j >> 1) * 32 + lane * 4 + (j & 1) * 2 + (v >> 1);
            const shift = (v & 1) * 16 + (c & 3) * 4;
            out[word] = (out[word] | (q << shift)) >>> 0;
          };
        const h = quantize((j) => b[(g * QUANT_BLOCK + j) * n + col], put);
        halves[base * 2 + scaleHalf(c)] = h;
      }
    }
  }
  return out;
};
