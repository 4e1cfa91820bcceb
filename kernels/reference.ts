/**
 * Plain CPU references for every kernel: straightforward loops over row-major Float32Arrays,
 * accumulating in f64, used by the tests as the ground truth.
 */

/** out[m×n] = a[m×k] · b[k×n], with b stored [k, n] row-major. */
export const matmul = (a: Float32Array, b: Float32Array, m: number, k: number, n: number) => {
  const out = new Float32Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let sum = 0;
      for (let p = 0; p < k; p++) sum += a[i * k + p] * b[p * n + j];
      out[i * n + j] = sum;
    }
  }
  return out;
};

/** GELU, tanh approximation: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))). */
export const gelu = (input: Float32Array) =>
  input.map((x) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3))));

/** SiLU: x·sigmoid(x). */
export const silu = (input: Float32Array) => input.map((x) => x / (1 + Math.exp(-x)));

/** Elementwise a + b. */
export const add = (a: Float32Array, b: Float32Array) => a.map((x, i) => x + b[i]);

/** silu(gate)·up, the SwiGLU gate. */
export const siluMul = (gate: Float32Array, up: Float32Array) =>
  gate.map((g, i) => (g / (1 + Math.exp(-g))) * up[i]);
