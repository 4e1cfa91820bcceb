/**
 * Dense matmul, out[m×n] = a[m×k] · b[k×n], with b stored [k, n] row-major ("in × out"
 * weights). Two kernels: a shared-memory tiled kernel for prefill-sized m, and a GEMV-style kernel
 * for decode (m ≤ 8) where the tiled kernel would waste almost all of each 64-row tile.
 * Activations and sums are f32; the weights b are f32, or f16 (`weights: "f16"`, needs the
 * adapter's shader-f16) to halve the bytes a decode step streams.
 */
import type { Gpu } from "../gpu/device.ts";
import { type Dispatch, prepareDispatch } from "../gpu/dispatch.ts";
import { grid1d, LINEAR_WORKGROUP_WGSL, u32Param } from "./grid.ts";
import { groupWords, QUANT_BLOCK, SCALE_WORDS } from "./quantized.ts";

export interface MatmulArgs {
  /** [m, k] row-major. */
  readonly a: GPUBuffer;
  /** [k, n] row-major. */
  readonly b: GPUBuffer;
  /** [m, n] row-major; must not alias `a` or `b`. */
  readonly out: GPUBuffer;
  readonly m: number;
  readonly k: number;
  readonly n: number;
  /** Element type of `b` (default f32). */
  readonly weights?: WeightType;
  /** How `b` is stored (default row-major [k, n]). */
  readonly layout?: WeightLayout;
  /** How the input row is read (default "plain"); see {@link MatmulInput}. */
  readonly input?: MatmulInput;
  /**
   * Q8_0: widen the bytes with WGSL's unpack4xI8 (packed_4x8_integer_dot_product) rather than
   * shifts; default: where the device has it. Either gives the same bits.
   */
  readonly unpack4xI8?: boolean;
  readonly label?: string;
}

/**
 * "plain": `a` is [m, k]. "swiglu" and "geglu" (blocked layout only): `a` is [m, 2k], each row
 * gate | up, and the input row is act(gate)·up (silu, or GELU's tanh form as Gemma uses),
 * computed as it is read, so the down projection needs no kernel before it.
 */
export type MatmulInput = "plain" | "swiglu" | "geglu";

/** The WGSL expression of a gated input element kk of row r (`a` rows are gate | up). */
const gatedInputWgsl = (input: MatmulInput): string => {
  switch (input) {
    case "plain":
      return "let av = a[aRow[r] + kk];";
    case "swiglu":
      return "let gate = a[aRow[r] + kk];\n      let av = gate / (1.0 + exp(-gate)) * a[aRow[r] + k + kk];";
    case "geglu":
      // tanh saturates in f32 beyond |u| ≈ 9; clamping keeps its exp from overflowing.
      return "let gate = a[aRow[r] + kk];\n      let u = clamp(0.7978845608028654 * (gate + 0.044715 * gate * gate * gate), -10.0, 10.0);\n      let av = 0.5 * gate * (1.0 + tanh(u)) * a[aRow[r] + k + kk];";
  }
};

/**
 * Element type of matmul weights on the device: f32, f16 stored as packed halves, or Q8_0 / Q4_0
 * (blocked layout only): llama.cpp's 32-element blocks along k (kernels/quantized.ts).
 */
export type WeightType = "f32" | "f16" | "q8_0" | "q4_0";

/**
 * "rowMajor": b[kk, col] at kk·n + col. "blocked": the columns in blocks of WEIGHT_BLOCK, each
 * block [k, WEIGHT_BLOCK] row-major and stored whole, so one workgroup's share of b is one
 * contiguous run of memory. A decode GEMV streams every weight once; row-major makes each
 * workgroup touch a new page per k (a row is n·4 bytes away), which lavapipe pays for dearly.
 */
export type WeightLayout = "rowMajor" | "blocked";

/** Columns per block of the blocked layout. */
export const WEIGHT_BLOCK = 128;

/** [k, n] row-major → the blocked layout, the last block zero-padded to WEIGHT_BLOCK columns. */
export const blockColumns = (b: Float32Array, k: number, n: number): Float32Array => {
  const blocks = Math.ceil(n / WEIGHT_BLOCK);
  const out = new Float32Array(blocks * k * WEIGHT_BLOCK);
  for (let blk = 0; blk < blocks; blk++) {
    const c0 = blk * WEIGHT_BLOCK;
    const width = Math.min(WEIGHT_BLOCK, n - c0);
    for (let kk = 0; kk < k; kk++) {
      out.set(b.subarray(kk * n + c0, kk * n + c0 + width), (blk * k + kk) * WEIGHT_BLOCK);
    }
  }
  return out;
};

/** The WGSL preamble and element type for weights of type `w`. */
const weightWgsl = (w: WeightType) => ({
  enable: w === "f16" ? "enable f16;" : "",
  scalar: w,
  vec4: `vec4<${w}>`,
});

/**
 * Largest m served by the row-major GEMV kernel; above it the tiled kernel takes over. A row's
 * sums are the same whatever m ≤ SMALL_M_MAX is. (The model uses the blocked layout, whose one
 * kernel keeps that property for every m.)
 */
export const SMALL_M_MAX = 8;

/** Output tile per workgroup (rows and columns): 16×16 invocations × 4×4 outputs each. */
const TILE = 64;

/**
 * Tiled kernel: each workgroup stages a 64×16 slice of `a` and a 16×64 slice of `b` in shared
 * memory per k-step; invocation (tx, ty) owns rows ty+16i and columns tx+16j (i, j < 4), so
 * neighbouring invocations read neighbouring shared floats and write neighbouring outputs.
 * Out-of-range loads read as zero and out-of-range stores are skipped, so any m, k, n works.
 */
export const matmulTiledWgsl = (weights: WeightType = "f32"): string => /* wgsl */ `
${weightWgsl(weights).enable}
struct Params { m: u32, k: u32, n: u32 }
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<${weightWgsl(weights).scalar}>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

const TILE: u32 = 64u;
const TK: u32 = 16u;
// tileA is stored transposed, [TK][TILE], so the inner loop indexes both tiles the same way.
var<workgroup> tileA: array<f32, 1024>;
var<workgroup> tileB: array<f32, 1024>;

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let m = params.m;
  let k = params.k;
  let n = params.n;
  let row0 = wid.y * TILE;
  let col0 = wid.x * TILE;
  let tid = lid.y * 16u + lid.x;
  var acc: array<vec4<f32>, 4>;
  let kTiles = (k + TK - 1u) / TK;
  for (var t = 0u; t < kTiles; t++) {
    let k0 = t * TK;
    for (var r = 0u; r < 4u; r++) {
      let l = tid + 256u * r;
      let aRow = row0 + l / TK;
      let aCol = k0 + l % TK;
      var av = 0.0;
      if (aRow < m && aCol < k) { av = a[aRow * k + aCol]; }
      tileA[(l % TK) * TILE + l / TK] = av;
      let bRow = k0 + l / TILE;
      let bCol = col0 + l % TILE;
      var bv = 0.0;
      if (bRow < k && bCol < n) { bv = f32(b[bRow * n + bCol]); }
      tileB[l] = bv;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < TK; kk++) {
      let base = kk * TILE;
      let bv = vec4<f32>(
        tileB[base + lid.x],
        tileB[base + lid.x + 16u],
        tileB[base + lid.x + 32u],
        tileB[base + lid.x + 48u],
      );
      acc[0] += tileA[base + lid.y] * bv;
      acc[1] += tileA[base + lid.y + 16u] * bv;
      acc[2] += tileA[base + lid.y + 32u] * bv;
      acc[3] += tileA[base + lid.y + 48u] * bv;
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    let row = row0 + lid.y + 16u * i;
    if (row >= m) { break; }
    for (var j = 0u; j < 4u; j++) {
      let col = col0 + lid.x + 16u * j;
      if (col < n) { out[row * n + col] = acc[i][j]; }
    }
  }
}
`;

/**
 * GEMV kernel for m ≤ 8 rows (baked in as M): a workgroup owns 32 columns and splits k over 8
 * slices; slice s sums k ≡ s (mod 8), so each 32-wide row of invocations reads one contiguous
 * 128-byte run of `b`. The 8 partial sums of each row meet in shared memory, one row at a time. Works for any n.
 */
export const matmulSmallMWgsl = (m: number, weights: WeightType = "f32"): string => /* wgsl */ `
${weightWgsl(weights).enable}
struct Params { m: u32, k: u32, n: u32 }
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<${weightWgsl(weights).scalar}>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

const M: u32 = ${m}u;
const COLS: u32 = 32u;
const SLICES: u32 = 8u;
var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(32, 8)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
  @builtin(local_invocation_id) lid: vec3<u32>,
) {
  let k = params.k;
  let n = params.n;
  let col = ${LINEAR_WORKGROUP_WGSL} * COLS + lid.x;
  var acc: array<f32, M>;
  if (col < n) {
    for (var kk = lid.y; kk < k; kk += SLICES) {
      let bv = f32(b[kk * n + col]);
      for (var r = 0u; r < M; r++) { acc[r] += a[r * k + kk] * bv; }
    }
  }
  for (var r = 0u; r < M; r++) {
    partial[lid.y * COLS + lid.x] = acc[r];
    workgroupBarrier();
    if (lid.y == 0u && col < n) {
      var sum = 0.0;
      for (var s = 0u; s < SLICES; s++) { sum += partial[s * COLS + lid.x]; }
      out[r * n + col] = sum;
    }
    workgroupBarrier();
  }
}
`;

/**
 * GEMV kernel for m ≤ 8 when n % 4 == 0: as above, but each invocation owns 4 adjacent columns
 * (one vec4 load of `b` per k) and slice s sums a contiguous k-range. 3-5× faster than the
 * scalar kernel on lavapipe, where per-lane scalar loads dominate.
 */
export const matmulSmallMVec4Wgsl = (m: number, weights: WeightType = "f32"): string => /* wgsl */ `
${weightWgsl(weights).enable}
struct Params { m: u32, k: u32, n: u32 }
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<${weightWgsl(weights).vec4}>;
@group(0) @binding(2) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(3) var<uniform> params: Params;

const M: u32 = ${m}u;
const COLS: u32 = 32u;
const SLICES: u32 = 8u;
var<workgroup> partial: array<vec4<f32>, 256>;

@compute @workgroup_size(32, 8)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
  @builtin(local_invocation_id) lid: vec3<u32>,
) {
  let k = params.k;
  let n4 = params.n / 4u;
  let col4 = ${LINEAR_WORKGROUP_WGSL} * COLS + lid.x;
  let chunk = (k + SLICES - 1u) / SLICES;
  let kBegin = lid.y * chunk;
  let kEnd = min(kBegin + chunk, k);
  var acc: array<vec4<f32>, M>;
  if (col4 < n4) {
    for (var kk = kBegin; kk < kEnd; kk++) {
      let bv = vec4<f32>(b[kk * n4 + col4]);
      for (var r = 0u; r < M; r++) { acc[r] += a[r * k + kk] * bv; }
    }
  }
  for (var r = 0u; r < M; r++) {
    partial[lid.y * COLS + lid.x] = acc[r];
    workgroupBarrier();
    if (lid.y == 0u && col4 < n4) {
      var sum = vec4<f32>();
      for (var s = 0u; s < SLICES; s++) { sum += partial[s * COLS + lid.x]; }
      out[r * n4 + col4] = sum;
    }
    workgroupBarrier();
  }
}
`;

/**
 * Rows per workgroup of the blocked kernel; more rows take more workgroups along y. 16 rows make
 * each weight load feed twice the rows: on lavapipe plain GEMMs gain 10-15% (`deno task bench
 * matmul`) and 110M prefill went from 78 to 87 tok/s. The SwiGLU input recomputes silu per row
 * on every lane, and at 16 rows it made prefill a third slower, so it keeps 8. Quantized weights
 * keep 8 too: their widened vec4s beside 16 rows of accumulators made a 64-row GEMM 6× slower.
 */
const blockedRows = (input: MatmulArgs["input"], weights?: WeightType) =>
  input === "swiglu" || input === "geglu" || weights === "q8_0" || weights === "q4_0" ? 8 : 16;
/** vec4 columns per invocation of the blocked kernel. */
const BLOCKED_VEC4S = 4;

/** The blocked kernel's k loop over f32 or f16 weights: one row of the block per step. */
const floatLoopWgsl = (weights: WeightType, input: MatmulInput) => /* wgsl */ `
  var at = block * k * BLOCK4 + lid.x;
  for (var kk = 0u; kk < k; kk++) {
    var bv: array<vec4<f32>, V>;
    for (var v = 0u; v < V; v++) {
      ${
  weights === "f16"
    ? "let packed = b[at + v * LANES];\n      bv[v] = vec4<f32>(unpack2x16float(packed.x), unpack2x16float(packed.y));"
    : "bv[v] = b[at + v * LANES];"
}
    }
    for (var r = 0u; r < ROWS; r++) {
      ${gatedInputWgsl(input)}
      for (var v = 0u; v < V; v++) { acc[r * V + v] += av * bv[v]; }
    }
    at += BLOCK4;
  }`;

/**
 * The k loop over quantized weights (kernels/quantized.ts): per group of 32 rows the lane loads
 * its 16 columns' scales, then its quants, one vec4<u32> per row (Q8_0) or per pair of rows
 * (Q4_0), widened and scaled in registers (q·d is exact in f32, so a row's sums are those of the
 * dequantized f32 weights). On lavapipe every load instruction costs a per-lane bounds check and
 * a scalar load, so loading 16 bytes at once rather than 4 made the decode GEMVs 20-30% faster.
 */
const quantizedLoopWgsl = (type: "q8_0" | "q4_0", input: MatmulInput, unpack4xI8: boolean) => {
  const accumulate = (kk: string) => `
        for (var r = 0u; r < ROWS; r++) {
          let kk = ${kk};
          ${gatedInputWgsl(input)}
          for (var v = 0u; v < V; v++) { acc[r * V + v] += av * bv[v]; }
        }`;
  // The vector components are unrolled by hand: indexing `words` at run time kept lavapipe from
  // unrolling the prefill kernel's 16-row accumulation, which then ran at a third of the speed.
  const lane = ["x", "y", "z", "w"];
  const widenQ8 = (word: string) =>
    unpack4xI8 ? `unpack4xI8(${word})` : `vec4<i32>(bitcast<i32>(${word} << 24u), ` +
      `bitcast<i32>(${word} << 16u), bitcast<i32>(${word} << 8u), bitcast<i32>(${word})) ` +
      `>> vec4<u32>(24u)`;
  const nibbles = (word: string, high: boolean) =>
    `(vec4<f32>((vec4<u32>(${word}${high ? " >> 16u" : ""}) >> vec4<u32>(0u, 4u, 8u, 12u)) & ` +
    `vec4<u32>(15u)) - 8.0)`;
  const steps = type === "q8_0"
    ? /* wgsl */ `
    for (var step = 0u; step < ${QUANT_BLOCK}u; step++) {
      let words = b[base + SCALE4 + step * LANES + lid.x];
      var bv: array<vec4<f32>, V>;
      ${
      lane.map((c, v) => `bv[${v}u] = vec4<f32>(${widenQ8(`words.${c}`)}) * scale[${v}u];`)
        .join("\n      ")
    }${accumulate(`g * ${QUANT_BLOCK}u + step`)}
    }`
    : /* wgsl */ `
    for (var pair = 0u; pair < ${QUANT_BLOCK / 2}u; pair++) {
      let words = b[base + SCALE4 + pair * LANES + lid.x];${
      [0, 1].map((half) => `
      {
        var bv: array<vec4<f32>, V>;
        ${
        [0, 1].flatMap((p) => {
          const word = `words.${lane[2 * half + p]}`;
          return [
            `bv[${2 * p}u] = ${nibbles(word, false)} * scale[${2 * p}u];`,
            `bv[${2 * p + 1}u] = ${nibbles(word, true)} * scale[${2 * p + 1}u];`,
          ];
        }).join("\n        ")
      }${accumulate(`g * ${QUANT_BLOCK}u + 2u * pair + ${half}u`)}
      }`).join("")
    }
    }`;
  return /* wgsl */ `
  let groups = k / ${QUANT_BLOCK}u;
  for (var g = 0u; g < groups; g++) {
    let base = (block * groups + g) * ${groupWords(type) / 4}u;
    const SCALE4 = ${SCALE_WORDS / 4}u;
    var scale: array<vec4<f32>, V>;
    for (var s = 0u; s < V / 2u; s++) {
      let halves = b[base + s * LANES + lid.x];
      scale[2u * s] = vec4<f32>(unpack2x16float(halves.x), unpack2x16float(halves.y));
      scale[2u * s + 1u] = vec4<f32>(unpack2x16float(halves.z), unpack2x16float(halves.w));
    }${steps}
  }`;
};

/**
 * Matmul over blocked weights, for any m: a workgroup owns one block of 128 columns and up to
 * `rows` rows (workgroup y picks them); each of its 8 lanes owns 4 vec4 columns, strided by the
 * lane count so each load instruction reads one contiguous run, and walks all of k. The row
 * loop has a constant bound (rows past m read the last row and are not stored), so the
 * compiler unrolls it and no accumulator is indexed at run time; each b load feeds every row.
 * A row's arithmetic (one sum over k in order) is the same whatever m and whichever rows share
 * its workgroup, so a row's bits do not depend on the batch, in decode or in prefill.
 * (Measured on lavapipe: 7-9 GB/s of weights at m = 1; twice the previous kernel's GFLOP/s at
 * m = 8-64, which split k into 4 slices summed through shared memory; the shared-memory tiled
 * kernel was 14x slower at m = 16.) f16 weights are read as pairs of packed halves and widened
 * with unpack2x16float: no shader-f16 needed, and on lavapipe 13% faster than f16 loads.
 */
export const matmulBlockedWgsl = (
  rows: number,
  weights: WeightType = "f32",
  input: MatmulInput = "plain",
  unpack4xI8 = false,
): string => /* wgsl */ `
struct Params { m: u32, k: u32, n: u32 }
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<${
  weights === "f16" ? "vec2<u32>" : weights === "f32" ? "vec4<f32>" : "vec4<u32>"
}>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

const ROWS: u32 = ${rows}u;
const V: u32 = ${BLOCKED_VEC4S}u;
const BLOCK4: u32 = ${WEIGHT_BLOCK / 4}u;
const LANES: u32 = ${WEIGHT_BLOCK / 4 / BLOCKED_VEC4S}u;

@compute @workgroup_size(${WEIGHT_BLOCK / 4 / BLOCKED_VEC4S})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let m = params.m;
  let k = params.k;
  let n = params.n;
  let block = wid.x;
  let row0 = wid.y * ROWS;
  var aRow: array<u32, ROWS>;
  for (var r = 0u; r < ROWS; r++) { aRow[r] = min(row0 + r, m - 1u) * ${
  input === "plain" ? "k" : "2u * k"
}; }
  var acc: array<vec4<f32>, ${rows * BLOCKED_VEC4S}>;
${
  weights === "q8_0" || weights === "q4_0"
    ? quantizedLoopWgsl(weights, input, unpack4xI8)
    : floatLoopWgsl(weights, input)
}
  let rows = min(ROWS, m - row0);
  for (var r = 0u; r < rows; r++) {
    for (var v = 0u; v < V; v++) {
      let col = (block * BLOCK4 + v * LANES + lid.x) * 4u;
      for (var i = 0u; i < 4u; i++) {
        if (col + i < n) { out[(row0 + r) * n + col + i] = acc[r * V + v][i]; }
      }
    }
  }
}
`;

/** The blocked kernel (used by `matmul` for every m when `layout` is "blocked"). */
export const matmulBlocked = (gpu: Gpu, args: MatmulArgs): Dispatch => {
  checkShape(args);
  const { a, b, out, m, k, n } = args;
  if ((args.weights === "q8_0" || args.weights === "q4_0") && k % QUANT_BLOCK !== 0) {
    throw new RangeError(
      `matmul: ${args.weights} weights need k a multiple of ${QUANT_BLOCK}, got ${k}`,
    );
  }
  const blocks = Math.ceil(n / WEIGHT_BLOCK);
  const rows = blockedRows(args.input, args.weights);
  const groups = Math.ceil(m / rows);
  const max = gpu.limits.maxComputeWorkgroupsPerDimension;
  if (blocks > max || groups > max) {
    throw new RangeError(`matmul ${m}×${k}×${n} needs more than ${max} workgroups per dimension`);
  }
  return prepareDispatch(gpu, {
    label: args.label ?? "matmul.blocked",
    code: matmulBlockedWgsl(
      Math.min(m, rows),
      args.weights,
      args.input,
      args.unpack4xI8 ?? gpu.features.packedIntegerDot,
    ),
    buffers: [a, b, out],
    params: [m, k, n],
    workgroups: [blocks, groups],
  });
};

const checkShape = ({ m, k, n }: MatmulArgs) => {
  for (const [name, value] of [["m", m], ["k", k], ["n", n]] as const) {
    if (u32Param(name, value) === 0) throw new RangeError(`matmul: ${name} must be ≥ 1`);
  }
};

/** The tiled kernel, for any shape (used by `matmul` when m > SMALL_M_MAX). */
export const matmulTiled = (gpu: Gpu, args: MatmulArgs): Dispatch => {
  checkShape(args);
  const { a, b, out, m, k, n } = args;
  const rowTiles = Math.ceil(m / TILE);
  const max = gpu.limits.maxComputeWorkgroupsPerDimension;
  if (rowTiles > max || Math.ceil(n / TILE) > max) {
    throw new RangeError(`matmul ${m}×${k}×${n} needs more than ${max} tiles per dimension`);
  }
  return prepareDispatch(gpu, {
    label: args.label ?? "matmul.tiled",
    code: matmulTiledWgsl(args.weights),
    buffers: [a, b, out],
    params: [m, k, n],
    workgroups: [Math.ceil(n / TILE), rowTiles],
  });
};

/**
 * The GEMV kernel for 1 ≤ m ≤ SMALL_M_MAX (decode steps); the vec4 variant when n % 4 == 0
 * unless `vec4: false`.
 */
export const matmulSmallM = (
  gpu: Gpu,
  args: MatmulArgs & { readonly vec4?: boolean },
): Dispatch => {
  checkShape(args);
  const { a, b, out, m, k, n } = args;
  if (m > SMALL_M_MAX) throw new RangeError(`matmulSmallM: m=${m} > ${SMALL_M_MAX}`);
  const vec4 = (args.vec4 ?? true) && n % 4 === 0;
  return prepareDispatch(gpu, {
    label: args.label ?? (vec4 ? "matmul.gemv4" : "matmul.gemv"),
    code: vec4 ? matmulSmallMVec4Wgsl(m, args.weights) : matmulSmallMWgsl(m, args.weights),
    buffers: [a, b, out],
    params: [m, k, n],
    workgroups: grid1d(gpu, Math.ceil(n / (vec4 ? 128 : 32))),
  });
};

/**
 * out = a · b (or silu(gate)·up · b, see `input`): the blocked kernel for blocked weights; for
 * row-major weights the GEMV kernel for m ≤ SMALL_M_MAX and the tiled kernel otherwise.
 */
export const matmul = (gpu: Gpu, args: MatmulArgs): Dispatch => {
  if ((args.input ?? "plain") !== "plain" && args.layout !== "blocked") {
    throw new RangeError(`matmul: a ${args.input} input needs blocked weights`);
  }
  if ((args.weights === "q8_0" || args.weights === "q4_0") && args.layout !== "blocked") {
    throw new RangeError(`matmul: ${args.weights} weights need the blocked layout`);
  }
  return args.layout === "blocked"
    ? matmulBlocked(gpu, args)
    : args.m <= SMALL_M_MAX
    ? matmulSmallM(gpu, args)
    : matmulTiled(gpu, args);
};
