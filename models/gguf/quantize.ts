/**
 * llama.cpp's reference quantizers (`quantize_row_q8_0_ref`, `quantize_row_q4_0_ref`), with their
 * rounding, so a checkpoint quantized here holds the blocks llama.cpp would write.
 */
import { QUANT_BLOCK, quantizeQ4_0Block, quantizeQ8_0Block } from "../../kernels/quantized.ts";

/** Q8_0: per block d = max|x| / 127 (as f16), q = round(x / d). `values.length` % 32 = 0. */
export const quantizeQ8_0 = (values: Float32Array): Uint8Array => {
  const blocks = values.length / QUANT_BLOCK;
  const out = new Uint8Array(blocks * 34);
  for (let b = 0; b < blocks; b++) {
    const h = quantizeQ8_0Block(
      (j) => values[b * QUANT_BLOCK + j],
      (j, q) => (out[b * 34 + 2 + j] = q & 0xff),
    );
    out[b * 34] = h & 0xff;
    out[b * 34 + 1] = h >> 8;
  }
  return out;
};

/** Q4_0: llama.cpp's block (see kernels/quantized.ts), low nibbles the first 16 elements. */
export const quantizeQ4_0 = (values: Float32Array): Uint8Array => {
  const blocks = values.length / QUANT_BLOCK;
  const out = new Uint8Array(blocks * 18);
  for (let b = 0; b < blocks; b++) {
    const h = quantizeQ4_0Block(
      (j) => values[b * QUANT_BLOCK + j],
      (j, q) => (out[b * 18 + 2 + (j % 16)] |= j < 16 ? q : q << 4),
    );
    out[b * 18] = h & 0xff;
    out[b * 18 + 1] = h >> 8;
  }
  return out;
};
