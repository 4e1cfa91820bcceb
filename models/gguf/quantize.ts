/**
 * llama.cpp's reference quantizers (`quantize_row_q8_0_ref`, `quantize_row_q4_0_ref`), with their
 * rounding, so a checkpoint quantized here holds the blocks llama.cpp would write.
 */
import { quantizeQ8_0Block } from "../../kernels/q8_0.ts";
import { f32ToF16 } from "../../util/f16.ts";

const f32 = Math.fround;

/** Elements per Q8_0 / Q4_0 block. */
export const QK = 32;


/** Q8_0: per block d = max|x| / 127 (as f16), q = round(x / d). `values.length` % 32 = 0. */
export const quantizeQ8_0 = (values: Float32Array): Uint8Array => {
  const blocks = values.length / QK;
  const out = new Uint8Array(blocks * 34);
  for (let b = 0; b < blocks; b++) {
    const h = quantizeQ8_0Block(
      (j) => values[b * QK + j],
      (j, q) => (out[b * 34 + 2 + j] = q & 0xff),
    );
    out[b * 34] = h & 0xff;
    out[b * 34 + 1] = h >> 8;
  }
  return out;
};

/**
 * Q4_0: per block d = m / −8 where m is the element of largest magnitude (sign kept), and
 * q = min(15, trunc(x / d + 8.5)), low nibbles the first 16 elements.
 */
export const quantizeQ4_0 = (values: Float32Array): Uint8Array => {
  const blocks = values.length / QK;
  const out = new Uint8Array(blocks * 18);
  for (let b = 0; b < blocks; b++) {
    let amax = 0, max = 0;
    for (let j = 0; j < QK; j++) {
      const v = values[b * QK + j];
      if (amax < Math.abs(v)) {
        amax = Math.abs(v);
        max = v;
      }
    }
    const d = f32(max / -8);
    const id = d !== 0 ? f32(1 / d) : 0;
    const h = f32ToF16(d);
    out[b * 18] = h & 0xff;
    out[b * 18 + 1] = h >> 8;
    const q = (x: number) => Math.min(15, Math.trunc(f32(f32(x * id) + 8.5)));
    for (let j = 0; j < QK / 2; j++) {
      out[b * 18 + 2 + j] = q(values[b * QK + j]) | (q(values[b * QK + QK / 2 + j]) << 4);
    }
  }
  return out;
};
