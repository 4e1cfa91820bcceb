/**
 * `deno task bench matmul`: the model's blocked matmul beside the alternatives tried against
 * it, on this adapter, in one run: each variant's time on a decode GEMV and a prefill GEMM, and
 * its largest difference from the blocked kernel's output (every variant computes the same
 * product). It backs the "what bounds decode and prefill" notes in the README: on lavapipe the
 * blocked kernel is the fastest form found, and the rest are slower. With
 * `MESA_SHADER_CACHE_DISABLE=true GALLIVM_DEBUG=asm` set, lavapipe prints each kernel's x86 code.
 */
import { Effect } from "effect";
import { createStorageBuffer, readF32, submitAndWait } from "../gpu/buffers.ts";
import { acquireGpu, type Gpu } from "../gpu/device.ts";
import { type Dispatch, encodeDispatches, prepareDispatch } from "../gpu/dispatch.ts";
import { blockColumns, matmul, matmulBlockedWgsl, WEIGHT_BLOCK } from "../kernels/matmul.ts";
import { machine, writeSection } from "./report.ts";

const count = (n: number) => Array.from({ length: n }, (_, i) => i);
const BLOCK4 = WEIGHT_BLOCK / 4;

/** The bindings every variant on blocked weights shares with the model's kernel. */
const MATMUL_BINDINGS = /* wgsl */ `struct Params { m: u32, k: u32, n: u32 }
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;`;

/** The blocked kernel's loop with k unrolled by 4: one accumulator update per 4 products. */
const unrolledWgsl = (rows: number) => /* wgsl */ `
${MATMUL_BINDINGS}
@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let k = params.k; let n = params.n; let m = params.m;
  let row0 = wid.y * ${rows}u;
  ${count(rows).map((r) => `let ar${r} = min(row0 + ${r}u, m - 1u) * k;`).join(" ")}
  ${count(rows).flatMap((r) => count(4).map((v) => `var c${r}_${v} = vec4<f32>();`)).join(" ")}
  var at = wid.x * k * ${BLOCK4}u + lid.x;
  for (var kk = 0u; kk < k; kk += 4u) {
    ${
  count(4).flatMap((u) => count(4).map((v) => `let b${u}_${v} = b[at + ${u * BLOCK4 + v * 8}u];`))
    .join("\n    ")
}
    ${
  count(rows).flatMap((r) => count(4).map((u) => `let a${r}_${u} = a[ar${r} + kk + ${u}u];`))
    .join("\n    ")
}
    ${
  count(rows).flatMap((r) =>
    count(4).map((v) =>
      `c${r}_${v} += ${count(4).map((u) => `a${r}_${u} * b${u}_${v}`).join(" + ")};`
    )
  ).join("\n    ")
}
    at += ${4 * BLOCK4}u;
  }
  let rows = min(${rows}u, m - row0);
  ${
  count(rows).flatMap((r) =>
    count(4).map((v) =>
      `if (${r}u < rows) { let col = (wid.x * ${BLOCK4}u + ${v * 8}u + lid.x) * 4u; ` +
      `for (var i = 0u; i < 4u; i++) { if (col + i < n) { ` +
      `out[(row0 + ${r}u) * n + col + i] = c${r}_${v}[i]; } } }`
    )
  ).join("\n  ")
}
}`;

/** Lane = row: every lane of a workgroup reads the same weights (one address for all lanes). */
const laneRowWgsl = (vec4s: number) => /* wgsl */ `
${MATMUL_BINDINGS}
@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let m = params.m; let k = params.k; let n = params.n;
  let part = wid.x;
  let block = part / ${BLOCK4 / vec4s}u;
  let sub = part % ${BLOCK4 / vec4s}u;
  let row = wid.y * 8u + lid.x;
  let aBase = min(row, m - 1u) * k;
  var acc: array<vec4<f32>, ${vec4s}>;
  var at = block * k * ${BLOCK4}u + sub * ${vec4s}u;
  for (var kk = 0u; kk < k; kk++) {
    let av = a[aBase + kk];
    for (var v = 0u; v < ${vec4s}u; v++) { acc[v] += av * b[at + v]; }
    at += ${BLOCK4}u;
  }
  if (row < m) {
    for (var v = 0u; v < ${vec4s}u; v++) {
      let col = (block * ${BLOCK4}u + sub * ${vec4s}u + v) * 4u;
      for (var i = 0u; i < 4u; i++) { if (col + i < n) { out[row * n + col + i] = acc[v][i]; } }
    }
  }
}`;

/** One invocation per workgroup (GEMV): every load is the same for all lanes of the vector. */
const singleLaneWgsl = (vec4s: number) => /* wgsl */ `
${MATMUL_BINDINGS}
@compute @workgroup_size(1)
fn main(@builtin(workgroup_id) wid: vec3<u32>) {
  let k = params.k; let n = params.n;
  let block = wid.x / ${BLOCK4 / vec4s}u;
  let sub = wid.x % ${BLOCK4 / vec4s}u;
  var acc: array<vec4<f32>, ${vec4s}>;
  var at = block * k * ${BLOCK4}u + sub * ${vec4s}u;
  for (var kk = 0u; kk < k; kk++) {
    let av = a[kk];
    for (var v = 0u; v < ${vec4s}u; v++) { acc[v] += av * b[at + v]; }
    at += ${BLOCK4}u;
  }
  for (var v = 0u; v < ${vec4s}u; v++) {
    let col = (block * ${BLOCK4}u + sub * ${vec4s}u + v) * 4u;
    for (var i = 0u; i < 4u; i++) { if (col + i < n) { out[col + i] = acc[v][i]; } }
  }
}`;

/** Weights in an rgba32float texture [k rows, n/4 texels]; lane = one texel column. */
const TEXTURE_WGSL = /* wgsl */ `
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var w: texture_2d<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<vec4<f32>>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let dims = textureDimensions(w);
  if (gid.x >= dims.x) { return; }
  var acc = vec4<f32>(0.0);
  for (var kk = 0u; kk < dims.y; kk++) { acc += x[kk] * textureLoad(w, vec2<u32>(gid.x, kk), 0); }
  out[gid.x] = acc;
}`;

interface Shape {
  readonly m: number;
  readonly k: number;
  readonly n: number;
}
const SHAPES: readonly Shape[] = [
  { m: 1, k: 768, n: 4096 },
  { m: 1, k: 768, n: 32000 },
  { m: 128, k: 768, n: 4096 },
  { m: 64, k: 2048, n: 768 }, // a 64-token prefill chunk's down projection
];

/** A variant prepared on one shape: its dispatch (or encoder hook) and where it writes. */
interface Prepared {
  readonly encode: (encoder: GPUCommandEncoder) => void;
  readonly out: GPUBuffer;
}

interface Variant {
  readonly name: string;
  readonly why: string;
  /** Undefined where the variant does not apply to the shape. */
  prepare(
    gpu: Gpu,
    shape: Shape,
    a: GPUBuffer,
    weights: Float32Array<ArrayBuffer>,
  ): Prepared | undefined;
}

const viaDispatch = (gpu: Gpu, shape: Shape, build: (out: GPUBuffer) => Dispatch): Prepared => {
  const out = createStorageBuffer(gpu, "out", shape.m * shape.n * 4);
  const dispatch = build(out);
  return { out, encode: (encoder) => encodeDispatches(encoder, [dispatch]) };
};

const blockedB = (gpu: Gpu, { k, n }: Shape, weights: Float32Array) =>
  createStorageBuffer(gpu, "b", blockColumns(weights, k, n));

/** A variant kernel on blocked weights, bound like the model's: a, b, out, then (m, k, n). */
const onBlocked = (
  gpu: Gpu,
  shape: Shape,
  a: GPUBuffer,
  weights: Float32Array,
  label: string,
  code: string,
  workgroups: readonly [number, number],
) =>
  viaDispatch(gpu, shape, (out) =>
    prepareDispatch(gpu, {
      label,
      code,
      buffers: [a, blockedB(gpu, shape, weights), out],
      params: [shape.m, shape.k, shape.n],
      workgroups,
    }));

const blocks = (shape: Shape) => Math.ceil(shape.n / WEIGHT_BLOCK);

const VARIANTS: readonly Variant[] = [
  {
    name: "blocked (the model's)",
    why: "8 lanes × 4 vec4 columns, up to 16 rows, all of k",
    prepare: (gpu, shape, a, weights) =>
      viaDispatch(
        gpu,
        shape,
        (out) =>
          matmul(gpu, { a, b: blockedB(gpu, shape, weights), out, ...shape, layout: "blocked" }),
      ),
  },
  {
    name: "8 rows per workgroup",
    why: "each weight load feeds half the rows (what the down projection's SwiGLU input uses)",
    prepare: (gpu, shape, a, weights) =>
      shape.m < 16 ? undefined : onBlocked(gpu, shape, a, weights, "rows8", matmulBlockedWgsl(8), [
        blocks(shape),
        Math.ceil(shape.m / 8),
      ]),
  },
  {
    name: "k unrolled by 4",
    why: "one accumulator update per 4 products",
    prepare: (gpu, shape, a, weights) =>
      onBlocked(gpu, shape, a, weights, "unrolled", unrolledWgsl(Math.min(8, shape.m)), [
        blocks(shape),
        Math.ceil(shape.m / 8),
      ]),
  },
  {
    name: "lane = row, shared weight loads",
    why: "8 rows per workgroup read each weight once, at one address",
    prepare: (gpu, shape, a, weights) =>
      shape.m < 8 ? undefined : onBlocked(gpu, shape, a, weights, "laneRow", laneRowWgsl(16), [
        blocks(shape) * (BLOCK4 / 16),
        Math.ceil(shape.m / 8),
      ]),
  },
  {
    name: "one lane per workgroup",
    why: "GEMV with every load the same for the whole vector (scalar load, broadcast)",
    prepare: (gpu, shape, a, weights) =>
      shape.m !== 1
        ? undefined
        : onBlocked(gpu, shape, a, weights, "singleLane", singleLaneWgsl(16), [
          blocks(shape) * (BLOCK4 / 16),
          1,
        ]),
  },
  {
    name: "texture weights",
    why: "rgba32float [k, n/4] read with textureLoad, lane = texel column",
    prepare: (gpu, shape, a, weights) => {
      if (shape.m !== 1 || shape.n / 4 > gpu.device.limits.maxTextureDimension2D) return undefined;
      const texture = gpu.device.createTexture({
        size: [shape.n / 4, shape.k],
        format: "rgba32float",
        usage: GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.COPY_DST,
      });
      gpu.device.queue.writeTexture({ texture }, weights, { bytesPerRow: shape.n * 4 }, [
        shape.n / 4,
        shape.k,
      ]);
      const out = createStorageBuffer(gpu, "out", shape.n * 4);
      const module = gpu.device.createShaderModule({ code: TEXTURE_WGSL });
      const pipeline = gpu.device.createComputePipeline({
        layout: "auto",
        compute: { module, entryPoint: "main" },
      });
      const bindGroup = gpu.device.createBindGroup({
        layout: pipeline.getBindGroupLayout(0),
        entries: [
          { binding: 0, resource: { buffer: a } },
          { binding: 1, resource: texture.createView() },
          { binding: 2, resource: { buffer: out } },
        ],
      });
      return {
        out,
        encode: (encoder) => {
          const pass = encoder.beginComputePass();
          pass.setPipeline(pipeline);
          pass.setBindGroup(0, bindGroup);
          pass.dispatchWorkgroups(Math.ceil(shape.n / 4 / 64));
          pass.end();
        },
      };
    },
  },
];

/** Best of three timings of `iterations` back-to-back runs in one submit, ms per run. */
const time = (gpu: Gpu, prepared: Prepared, iterations: number) =>
  Effect.gen(function* () {
    const warm = gpu.device.createCommandEncoder();
    prepared.encode(warm);
    yield* submitAndWait(gpu, warm);
    let best = Infinity;
    for (let trial = 0; trial < 3; trial++) {
      const started = performance.now();
      const encoder = gpu.device.createCommandEncoder();
      for (let i = 0; i < iterations; i++) prepared.encode(encoder);
      yield* submitAndWait(gpu, encoder);
      best = Math.min(best, (performance.now() - started) / iterations);
    }
    return best;
  });

interface Row {
  readonly variant: string;
  readonly shape: string;
  readonly ms: number;
  readonly rate: string;
  readonly vsBlocked: number;
  readonly maxDiff: number;
}

export const matmulVariantsBench = Effect.scoped(Effect.gen(function* () {
  const gpu = yield* acquireGpu({ label: "matmul variants" });
  const rows: Row[] = [];
  for (const shape of SHAPES) {
    const { m, k, n } = shape;
    const a = createStorageBuffer(
      gpu,
      "a",
      Float32Array.from({ length: m * k }, (_, i) => Math.sin(i) * 0.1),
    );
    const weights: Float32Array<ArrayBuffer> = Float32Array.from(
      { length: k * n },
      (_, i) => Math.cos(i * 0.7) * 0.1,
    );
    let blocked: { ms: number; out: Float32Array } | undefined;
    for (const variant of VARIANTS) {
      const prepared = variant.prepare(gpu, shape, a, weights);
      if (!prepared) continue;
      console.error(`matmul: ${variant.name}, ${m}×${k}×${n}`);
      const ms = yield* time(gpu, prepared, m === 1 ? 20 : 4);
      const out = yield* readF32(gpu, prepared.out, m * n);
      blocked ??= { ms, out };
      let maxDiff = 0;
      for (let i = 0; i < out.length; i++) {
        maxDiff = Math.max(maxDiff, Math.abs(out[i] - blocked.out[i]));
      }
      rows.push({
        variant: variant.name,
        shape: `${m}×${k}×${n}`,
        ms,
        rate: m === 1
          ? `${(k * n * 4 / ms / 1e6).toFixed(1)} GB/s`
          : `${(2 * m * k * n / ms / 1e6).toFixed(1)} GFLOP/s`,
        vsBlocked: blocked.ms / ms,
        maxDiff,
      });
    }
  }
  const markdown = [
    "## Matmul variants (`deno task bench matmul`)",
    "",
    `Measured ${machine(gpu.adapterName)}. Each variant computes the same product as the model's`,
    "blocked kernel (max |diff| against its output); time is the best of three submits of",
    "back-to-back runs. GB/s counts the f32 weights streamed (decode GEMV), GFLOP/s the prefill GEMM.",
    "",
    ...VARIANTS.map((v) => `- ${v.name}: ${v.why}.`),
    "",
    "| variant | shape (m×k×n) | ms | rate | speed vs blocked | max \\|diff\\| |",
    "| --- | --- | --- | --- | --- | --- |",
    ...rows.map((r) =>
      `| ${r.variant} | ${r.shape} | ${r.ms.toFixed(2)} | ${r.rate} | ${
        r.vsBlocked.toFixed(2)
      }× | ${r.maxDiff.toExponential(1)} |`
    ),
  ].join("\n");
  yield* Effect.promise(() => writeSection("matmul", markdown, { adapter: gpu.adapterName, rows }));
  console.log(markdown);
}));
