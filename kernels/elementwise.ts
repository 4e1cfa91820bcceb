/**
 * Elementwise f32 kernels over flat buffers. WebGPU forbids binding one buffer both read-only and
 * read_write in a dispatch, so `out` must not alias an input; the `*InPlace` variants bind the
 * target once, read_write, instead.
 */
import type { Gpu } from "../gpu/device.ts";
import { type Dispatch, prepareDispatch } from "../gpu/dispatch.ts";
import { f32Bits, grid1d, LINEAR_WORKGROUP_WGSL, u32Param } from "./grid.ts";

const WORKGROUP = 256;

/** WGSL helpers shared by the activation kernels. */
const ACTIVATIONS_WGSL = /* wgsl */ `
fn gelu(x: f32) -> f32 {
  // tanh saturates to ±1 in f32 beyond |u| ≈ 9; clamping first keeps tanh's exp from overflowing.
  let u = clamp(0.7978845608028654 * (x + 0.044715 * x * x * x), -10.0, 10.0);
  return 0.5 * x * (1.0 + tanh(u));
}
fn silu(x: f32) -> f32 {
  // exp(-x) overflows to inf for x << 0, giving x / inf = -0, the correct limit.
  return x / (1.0 + exp(-x));
}
`;

/**
 * A kernel binding `bindings` in order and running `statement` for each index `i < length`;
 * `extraParams` are further u32 uniforms after `length`.
 */
const elementwiseWgsl = (
  bindings: readonly string[],
  statement: string,
  extraParams: readonly string[] = [],
): string => /* wgsl */ `
struct Params { length: u32, ${extraParams.map((p) => `${p}: u32`).join(", ")} }
${bindings.map((b, i) => `@group(0) @binding(${i}) var<storage, ${b};`).join("\n")}
@group(0) @binding(${bindings.length}) var<uniform> params: Params;
${ACTIVATIONS_WGSL}
@compute @workgroup_size(${WORKGROUP})
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = ${LINEAR_WORKGROUP_WGSL} * ${WORKGROUP}u + lid;
  if (i >= params.length) { return; }
  ${statement}
}
`;

export const GELU_WGSL = elementwiseWgsl(
  ["read> input: array<f32>", "read_write> out: array<f32>"],
  "out[i] = gelu(input[i]);",
);
export const GELU_IN_PLACE_WGSL = elementwiseWgsl(
  ["read_write> values: array<f32>"],
  "values[i] = gelu(values[i]);",
);
export const SILU_WGSL = elementwiseWgsl(
  ["read> input: array<f32>", "read_write> out: array<f32>"],
  "out[i] = silu(input[i]);",
);
export const SILU_IN_PLACE_WGSL = elementwiseWgsl(
  ["read_write> values: array<f32>"],
  "values[i] = silu(values[i]);",
);
export const ADD_WGSL = elementwiseWgsl(
  ["read> a: array<f32>", "read> b: array<f32>", "read_write> out: array<f32>"],
  "out[i] = a[i] + b[i];",
);
export const ADD_IN_PLACE_WGSL = elementwiseWgsl(
  ["read_write> values: array<f32>", "read> other: array<f32>"],
  "values[i] = values[i] + other[i];",
);
export const SILU_MUL_WGSL = elementwiseWgsl(
  ["read> gate: array<f32>", "read> up: array<f32>", "read_write> out: array<f32>"],
  "out[i] = silu(gate[i]) * up[i];",
);

export const SOFTCAP_IN_PLACE_WGSL = elementwiseWgsl(
  ["read_write> values: array<f32>"],
  // tanh saturates in f32 beyond |u| ≈ 9; clamping keeps its exp from overflowing.
  "let cap = bitcast<f32>(params.capBits);\n  values[i] = cap * tanh(clamp(values[i] / cap, -10.0, 10.0));",
  ["capBits"],
);

const prepare = (
  gpu: Gpu,
  label: string,
  code: string,
  buffers: readonly GPUBuffer[],
  length: number,
): Dispatch =>
  prepareDispatch(gpu, {
    label,
    code,
    buffers,
    params: [u32Param("length", length)],
    workgroups: grid1d(gpu, Math.ceil(length / WORKGROUP)),
  });

export interface UnaryArgs {
  readonly input: GPUBuffer;
  /** Must differ from `input`; use the `*InPlace` variant to overwrite `input`. */
  readonly out: GPUBuffer;
  readonly length: number;
  readonly label?: string;
}

export interface InPlaceArgs {
  readonly target: GPUBuffer;
  readonly length: number;
  readonly label?: string;
}

/** out = GELU(input), tanh approximation as in GPT-2/Megatron. */
export const gelu = (gpu: Gpu, { input, out, length, label }: UnaryArgs): Dispatch =>
  prepare(gpu, label ?? "gelu", GELU_WGSL, [input, out], length);

/** target = GELU(target). */
export const geluInPlace = (gpu: Gpu, { target, length, label }: InPlaceArgs): Dispatch =>
  prepare(gpu, label ?? "gelu.inPlace", GELU_IN_PLACE_WGSL, [target], length);

/** out = x·sigmoid(x). */
export const silu = (gpu: Gpu, { input, out, length, label }: UnaryArgs): Dispatch =>
  prepare(gpu, label ?? "silu", SILU_WGSL, [input, out], length);

/** target = x·sigmoid(x), in place. */
export const siluInPlace = (gpu: Gpu, { target, length, label }: InPlaceArgs): Dispatch =>
  prepare(gpu, label ?? "silu.inPlace", SILU_IN_PLACE_WGSL, [target], length);

/** out = a + b (distinct buffers). */
export const add = (
  gpu: Gpu,
  { a, b, out, length, label }: {
    readonly a: GPUBuffer;
    readonly b: GPUBuffer;
    readonly out: GPUBuffer;
    readonly length: number;
    readonly label?: string;
  },
): Dispatch => prepare(gpu, label ?? "add", ADD_WGSL, [a, b, out], length);

/** target += other: the residual add. */
export const addInPlace = (
  gpu: Gpu,
  { target, other, length, label }: {
    readonly target: GPUBuffer;
    readonly other: GPUBuffer;
    readonly length: number;
    readonly label?: string;
  },
): Dispatch => prepare(gpu, label ?? "add.inPlace", ADD_IN_PLACE_WGSL, [target, other], length);

/** out = silu(gate)·up: the Llama SwiGLU feed-forward gate (out must not alias gate or up). */
export const siluMul = (
  gpu: Gpu,
  { gate, up, out, length, label }: {
    readonly gate: GPUBuffer;
    readonly up: GPUBuffer;
    readonly out: GPUBuffer;
    readonly length: number;
    readonly label?: string;
  },
): Dispatch => prepare(gpu, label ?? "siluMul", SILU_MUL_WGSL, [gate, up, out], length);

/** target = cap·tanh(target / cap), in place: Gemma 2's soft-capping of the final logits. */
export const softcapInPlace = (
  gpu: Gpu,
  { target, length, cap, label }: InPlaceArgs & { readonly cap: number },
): Dispatch =>
  prepareDispatch(gpu, {
    label: label ?? "softcap.inPlace",
    code: SOFTCAP_IN_PLACE_WGSL,
    buffers: [target],
    params: [u32Param("length", length), f32Bits(cap)],
    workgroups: grid1d(gpu, Math.ceil(length / WORKGROUP)),
  });
