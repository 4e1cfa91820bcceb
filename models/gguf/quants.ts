/**
 * ggml's tensor element types as GGUF stores them: plain floats, and the block formats of
 * llama.cpp's ggml-quants.c. A block holds a run of consecutive elements of one row, so a row is
 * whole blocks and a slice of rows is one contiguous byte range; a slice of columns must start
 * and end on block boundaries. Dequantization follows ggml's reference `dequantize_row_*` in f32
 * arithmetic (each product rounded to f32, as C float does), so it gives llama.cpp's values.
 */
import { bf16ToF32, f16ToF32 } from "../safetensors.ts";

/** A ggml type: its id in GGUF, elements per block, bytes per block, and its dequantization. */
export interface GgmlType {
  readonly name: string;
  readonly id: number;
  readonly blockElements: number;
  readonly blockBytes: number;
  /** Decodes whole blocks `src` into `out` (out.length = blocks × blockElements). */
  readonly dequantize: (src: Uint8Array, out: Float32Array) => void;
}

const f32 = Math.fround;

/** The f16 at byte `at` of `src`. */
const half = (src: Uint8Array, at: number) => f16ToF32(src[at] | (src[at + 1] << 8));

/** Q4_0: d (f16), 16 bytes of nibbles; x = d·(q − 8), low nibbles first, then high. */
const q4_0 = (src: Uint8Array, out: Float32Array) => {
  for (let b = 0, o = 0; o < out.length; b += 18, o += 32) {
    const d = half(src, b);
    for (let j = 0; j < 16; j++) {
      const q = src[b + 2 + j];
      out[o + j] = f32(((q & 0xf) - 8) * d);
      out[o + j + 16] = f32(((q >> 4) - 8) * d);
    }
  }
};

/** Q4_1: d, m (f16), 16 bytes of nibbles; x = d·q + m. */
const q4_1 = (src: Uint8Array, out: Float32Array) => {
  for (let b = 0, o = 0; o < out.length; b += 20, o += 32) {
    const d = half(src, b), m = half(src, b + 2);
    for (let j = 0; j < 16; j++) {
      const q = src[b + 4 + j];
      out[o + j] = f32(f32((q & 0xf) * d) + m);
      out[o + j + 16] = f32(f32((q >> 4) * d) + m);
    }
  }
};

/** The u32 at byte `at`, little-endian. */
const u32 = (src: Uint8Array, at: number) =>
  (src[at] | (src[at + 1] << 8) | (src[at + 2] << 16) | (src[at + 3] << 24)) >>> 0;

/** Q5_0: d (f16), qh (32 fifth bits), 16 bytes of nibbles; x = d·(q − 16). */
const q5_0 = (src: Uint8Array, out: Float32Array) => {
  for (let b = 0, o = 0; o < out.length; b += 22, o += 32) {
    const d = half(src, b);
    const qh = u32(src, b + 2);
    for (let j = 0; j < 16; j++) {
      const q = src[b + 6 + j];
      const h0 = ((qh >>> j) << 4) & 0x10;
      const h1 = (qh >>> (j + 12)) & 0x10;
      out[o + j] = f32((((q & 0xf) | h0) - 16) * d);
      out[o + j + 16] = f32((((q >> 4) | h1) - 16) * d);
    }
  }
};

/** Q5_1: d, m (f16), qh, 16 bytes of nibbles; x = d·q + m. */
const q5_1 = (src: Uint8Array, out: Float32Array) => {
  for (let b = 0, o = 0; o < out.length; b += 24, o += 32) {
    const d = half(src, b), m = half(src, b + 2);
    const qh = u32(src, b + 4);
    for (let j = 0; j < 16; j++) {
      const q = src[b + 8 + j];
      const h0 = ((qh >>> j) << 4) & 0x10;
      const h1 = (qh >>> (j + 12)) & 0x10;
      out[o + j] = f32(f32(((q & 0xf) | h0) * d) + m);
      out[o + j + 16] = f32(f32(((q >> 4) | h1) * d) + m);
    }
  }
};

/** Q8_0: d (f16), 32 signed bytes; x = d·q. */
const q8_0 = (src: Uint8Array, out: Float32Array) => {
  for (let b = 0, o = 0; o < out.length; b += 34, o += 32) {
    const d = half(src, b);
    for (let j = 0; j < 32; j++) out[o + j] = f32(((src[b + 2 + j] << 24) >> 24) * d);
  }
};

/** get_scale_min_k4: the 6-bit scale and min of sub-block j from the 12 packed bytes at `s`. */
const scaleMin = (src: Uint8Array, s: number, j: number): [number, number] =>
  j < 4 ? [src[s + j] & 63, src[s + j + 4] & 63] : [
    (src[s + j + 4] & 0xf) | ((src[s + j - 4] >> 6) << 4),
    (src[s + j + 4] >> 4) | ((src[s + j] >> 6) << 4),
  ];

/** Q4_K: 256 elements, d and dmin (f16), 8 sub-blocks of 32 with 6-bit scales and mins. */
const q4_K = (src: Uint8Array, out: Float32Array) => {
  for (let b = 0, o = 0; o < out.length; b += 144, o += 256) {
    const d = half(src, b), min = half(src, b + 2);
    let q = b + 16, y = o;
    for (let is = 0; is < 8; is += 2, q += 32) {
      const [sc1, m1] = scaleMin(src, b + 4, is);
      const [sc2, m2] = scaleMin(src, b + 4, is + 1);
      const d1 = f32(d * sc1), min1 = f32(min * m1);
      const d2 = f32(d * sc2), min2 = f32(min * m2);
      for (let l = 0; l < 32; l++) out[y++] = f32(f32(d1 * (src[q + l] & 0xf)) - min1);
      for (let l = 0; l < 32; l++) out[y++] = f32(f32(d2 * (src[q + l] >> 4)) - min2);
    }
  }
};

/** Q5_K: as Q4_K with a fifth bit per element from qh[32]. */
const q5_K = (src: Uint8Array, out: Float32Array) => {
  for (let b = 0, o = 0; o < out.length; b += 176, o += 256) {
    const d = half(src, b), min = half(src, b + 2);
    const qh = b + 16;
    let ql = b + 48, y = o, u1 = 1, u2 = 2;
    for (let is = 0; is < 8; is += 2, ql += 32, u1 <<= 2, u2 <<= 2) {
      const [sc1, m1] = scaleMin(src, b + 4, is);
      const [sc2, m2] = scaleMin(src, b + 4, is + 1);
      const d1 = f32(d * sc1), min1 = f32(min * m1);
      const d2 = f32(d * sc2), min2 = f32(min * m2);
      for (let l = 0; l < 32; l++) {
        out[y++] = f32(f32(d1 * ((src[ql + l] & 0xf) + (src[qh + l] & u1 ? 16 : 0))) - min1);
      }
      for (let l = 0; l < 32; l++) {
        out[y++] = f32(f32(d2 * ((src[ql + l] >> 4) + (src[qh + l] & u2 ? 16 : 0))) - min2);
      }
    }
  }
};

/** Q6_K: 256 elements, 4 low bits (ql) and 2 high bits (qh), 16 signed 8-bit scales, d (f16). */
const q6_K = (src: Uint8Array, out: Float32Array) => {
  for (let b = 0, o = 0; o < out.length; b += 210, o += 256) {
    const d = half(src, b + 208);
    let ql = b, qh = b + 128, sc = b + 192, y = o;
    for (let n = 0; n < 256; n += 128, ql += 64, qh += 32, sc += 8, y += 128) {
      for (let l = 0; l < 32; l++) {
        const is = l >> 4;
        const h = src[qh + l];
        const q1 = ((src[ql + l] & 0xf) | ((h & 3) << 4)) - 32;
        const q2 = ((src[ql + l + 32] & 0xf) | (((h >> 2) & 3) << 4)) - 32;
        const q3 = ((src[ql + l] >> 4) | (((h >> 4) & 3) << 4)) - 32;
        const q4 = ((src[ql + l + 32] >> 4) | (((h >> 6) & 3) << 4)) - 32;
        const scale = (k: number) => (src[sc + is + k] << 24) >> 24;
        out[y + l] = f32(f32(d * scale(0)) * q1);
        out[y + l + 32] = f32(f32(d * scale(2)) * q2);
        out[y + l + 64] = f32(f32(d * scale(4)) * q3);
        out[y + l + 96] = f32(f32(d * scale(6)) * q4);
      }
    }
  }
};

const floats = (
  name: string,
  id: number,
  bytes: number,
  read: (view: DataView, at: number) => number,
): GgmlType => ({
  name,
  id,
  blockElements: 1,
  blockBytes: bytes,
  dequantize: (src, out) => {
    const view = new DataView(src.buffer, src.byteOffset, src.byteLength);
    for (let i = 0; i < out.length; i++) out[i] = read(view, i * bytes);
  },
});

const block = (
  name: string,
  id: number,
  blockElements: number,
  blockBytes: number,
  dequantize: GgmlType["dequantize"],
): GgmlType => ({ name, id, blockElements, blockBytes, dequantize });

/** The types Tessera reads, by GGUF id. */
export const GGML_TYPES: ReadonlyMap<number, GgmlType> = new Map(
  [
    floats("F32", 0, 4, (v, at) => v.getFloat32(at, true)),
    floats("F16", 1, 2, (v, at) => f16ToF32(v.getUint16(at, true))),
    floats("BF16", 30, 2, (v, at) => bf16ToF32(v.getUint16(at, true))),
    block("Q4_0", 2, 32, 18, q4_0),
    block("Q4_1", 3, 32, 20, q4_1),
    block("Q5_0", 6, 32, 22, q5_0),
    block("Q5_1", 7, 32, 24, q5_1),
    block("Q8_0", 8, 32, 34, q8_0),
    block("Q4_K", 12, 256, 144, q4_K),
    block("Q5_K", 13, 256, 176, q5_K),
    block("Q6_K", 14, 256, 210, q6_K),
  ].map((t) => [t.id, t]),
);

/** ggml's names of the types it has and Tessera does not read, for the error message. */
export const OTHER_GGML_TYPES: Readonly<Record<number, string>> = {
  9: "Q8_1",
  10: "Q2_K",
  11: "Q3_K",
  15: "Q8_K",
  16: "IQ2_XXS",
  17: "IQ2_XS",
  18: "IQ3_XXS",
  19: "IQ1_S",
  20: "IQ4_NL",
  21: "IQ3_S",
  22: "IQ2_S",
  23: "IQ4_XS",
  24: "I8",
  25: "I16",
  26: "I32",
  27: "I64",
  28: "F64",
  29: "IQ1_M",
  34: "TQ1_0",
  35: "TQ2_0",
};
