/**
 * Q8_0 weights for the blocked matmul (kernels/matmul.ts): llama.cpp's Q8_0 quantizer
 * (`quantize_row_q8_0_ref`: d = max|x| / 127 stored as f16, q = round(x / d) with the unrounded
 * d) applied along k, 32 elements of one column per block, and the device layout the kernel
 * reads.
 */
import { f16ToF32, f32ToF16 } from "../util/f16.ts";

/** Elements along k that share one Q8_0 scale. */
export const Q8_0_BLOCK = 32;

/** Columns per block of the blocked layout (as kernels/matmul.ts's WEIGHT_BLOCK). */
const COLUMNS = 128;

const f32 = Math.fround;

/** C's roundf: half away from zero. */
const roundf = (x: number) => Math.sign(x) * Math.round(Math.abs(x));

/**
 * One Q8_0 block: `get(j)` the 32 values; returns the scale's f16 bits and stores each q with
 * `put(j, q)`.
 */
export const quantizeQ8_0Block = (
  get: (j: number) => number,
  put: (j: number, q: number) => void,
): number => {
  let amax = 0;
  for (let j = 0; j < Q8_0_BLOCK; j++) amax = Math.max(amax, Math.abs(get(j)));
  const d = f32(amax / 127);
  const id = d !== 0 ? f32(1 / d) : 0;
  for (let j = 0; j < Q8_0_BLOCK; j++) put(j, roundf(f32(get(j) * id)));
  return f32ToF16(d);
};

/**
 * Q8_0 blocks of a [k, n] weight (k a multiple of 32) → the blocked Q8_0 layout, as u32 words:
 * per 128-column block and per 32-row group, the 128 columns' scales (f32 bits), then 32 rows of
 * 128 signed bytes (4 per word, column 4w + i in byte i of word w). `scales` is [k/32, n] and
 * `quants` [k, n], row-major; missing columns of the last block are zero.
 */
export const blockColumnsQ8_0 = (
  scales: Float32Array,
  quants: Int8Array,
  k: number,
  n: number,
): Uint32Array => {
  const blocks = Math.ceil(n / COLUMNS), groups = k / Q8_0_BLOCK;
  const groupWords = COLUMNS + Q8_0_BLOCK * (COLUMNS / 4);
  const out = new Uint32Array(blocks * groups * groupWords);
  const scaleBits = new Uint32Array(scales.buffer, scales.byteOffset, scales.length);
  const bytes = new Uint8Array(out.buffer);
  for (let blk = 0; blk < blocks; blk++) {
    const c0 = blk * COLUMNS, width = Math.min(COLUMNS, n - c0);
    for (let g = 0; g < groups; g++) {
      const base = (blk * groups + g) * groupWords;
      out.set(scaleBits.subarray(g * n + c0, g * n + c0 + width), base);
      for (let r = 0; r < Q8_0_BLOCK; r++) {
        const kk = g * Q8_0_BLOCK + r;
        const at = (base + COLUMNS + r * (COLUMNS / 4)) * 4;
        for (let c = 0; c < width; c++) bytes[at + c] = quants[kk * n + c0 + c] & 0xff;
      }
    }
  }
  return out;
};

/**
 * A [k, n] row-major f32 weight (k a multiple of 32) quantized to Q8_0 along k, in the blocked
 * layout: no f32 copy is made, only the scales and bytes.
 */
export const quantizeColumnsQ8_0 = (b: Float32Array, k: number, n: number): Uint32Array => {
  const scales = new Float32Array((k / Q8_0_BLOCK) * n);
  const quants = new Int8Array(k * n);
  for (let g = 0; g < k / Q8_0_BLOCK; g++) {
    for (let c = 0; c < n; c++) {
      const row = (j: number) => (g * Q8_0_BLOCK + j) * n + c;
      const h = quantizeQ8_0Block((j) => b[row(j)], (j, q) => (quants[row(j)] = q));
      scales[g * n + c] = f16ToF32(h);
    }
  }
  return blockColumnsQ8_0(scales, quants, k, n);
};
