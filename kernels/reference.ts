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

/** RMSNorm per row: x / sqrt(mean(x²) + eps) · weight. */
export const rmsnorm = (
  input: Float32Array,
  weight: Float32Array,
  rows: number,
  dim: number,
  eps: number,
) => {
  const out = new Float32Array(rows * dim);
  for (let r = 0; r < rows; r++) {
    let sumSquares = 0;
    for (let i = 0; i < dim; i++) sumSquares += input[r * dim + i] ** 2;
    const scale = 1 / Math.sqrt(sumSquares / dim + eps);
    for (let i = 0; i < dim; i++) out[r * dim + i] = input[r * dim + i] * scale * weight[i];
  }
  return out;
};

/** RoPE on [rows, nHeads, headDim]; row r at position start + r; pairs per `layout`. */
export const rope = (
  qk: Float32Array,
  start: number,
  rows: number,
  nHeads: number,
  headDim: number,
  theta: number,
  layout: "interleaved" | "half",
) => {
  const out = qk.slice();
  const half = headDim / 2;
  for (let r = 0; r < rows; r++) {
    for (let h = 0; h < nHeads; h++) {
      const base = (r * nHeads + h) * headDim;
      for (let i = 0; i < half; i++) {
        const angle = (start + r) * theta ** (-2 * i / headDim);
        const [i0, i1] = layout === "interleaved"
          ? [base + 2 * i, base + 2 * i + 1]
          : [base + i, base + i + half];
        const [x0, x1] = [qk[i0], qk[i1]];
        out[i0] = x0 * Math.cos(angle) - x1 * Math.sin(angle);
        out[i1] = x0 * Math.sin(angle) + x1 * Math.cos(angle);
      }
    }
  }
  return out;
};

/** Copies k, v [rows, nKvHeads·headDim] into the caches at positions start.. (dropping overflow). */
export const writeKvCache = (
  k: Float32Array,
  v: Float32Array,
  kCache: Float32Array,
  vCache: Float32Array,
  start: number,
  rows: number,
  rowWidth: number,
  maxSeq: number,
) => {
  for (let r = 0; r < rows && start + r < maxSeq; r++) {
    kCache.set(k.subarray(r * rowWidth, (r + 1) * rowWidth), (start + r) * rowWidth);
    vCache.set(v.subarray(r * rowWidth, (r + 1) * rowWidth), (start + r) * rowWidth);
  }
};

/**
 * Causal GQA attention: q [rows, nHeads, headDim] at positions start.., caches
 * [maxSeq, nKvHeads, headDim]; row t attends to positions 0..start+t.
 */
export const attention = (
  q: Float32Array,
  kCache: Float32Array,
  vCache: Float32Array,
  { start, rows, nHeads, nKvHeads, headDim, scale = 1 / Math.sqrt(headDim) }: {
    start: number;
    rows: number;
    nHeads: number;
    nKvHeads: number;
    headDim: number;
    scale?: number;
  },
) => {
  const out = new Float32Array(rows * nHeads * headDim);
  for (let t = 0; t < rows; t++) {
    for (let h = 0; h < nHeads; h++) {
      const kvHead = Math.floor(h / (nHeads / nKvHeads));
      const qBase = (t * nHeads + h) * headDim;
      const length = start + t + 1;
      const scores = new Float64Array(length);
      for (let j = 0; j < length; j++) {
        const kBase = (j * nKvHeads + kvHead) * headDim;
        let dot = 0;
        for (let d = 0; d < headDim; d++) dot += q[qBase + d] * kCache[kBase + d];
        scores[j] = dot * scale;
      }
      const max = Math.max(...scores);
      let sum = 0;
      for (let j = 0; j < length; j++) sum += scores[j] = Math.exp(scores[j] - max);
      for (let d = 0; d < headDim; d++) {
        let value = 0;
        for (let j = 0; j < length; j++) {
          value += scores[j] * vCache[(j * nKvHeads + kvHead) * headDim + d];
        }
        out[qBase + d] = value / sum;
      }
    }
  }
  return out;
};

/** Vocab-parallel embedding gather: rows for ids in [vocabStart, vocabStart+vocabCount), else 0. */
export const embedding = (
  table: Float32Array,
  ids: Uint32Array,
  dim: number,
  vocabStart: number,
  vocabCount: number,
) => {
  const out = new Float32Array(ids.length * dim);
  ids.forEach((id, r) => {
    const local = id - vocabStart;
    if (local >= 0 && local < vocabCount) {
      out.set(table.subarray(local * dim, (local + 1) * dim), r * dim);
    }
  });
  return out;
};

/**
 * Top-k per row of logits [rows, n]: (value, index + indexOffset) sorted by value descending,
 * ties to the lower index, padded with (-Infinity, 0xFFFFFFFF) when n < k.
 */
export const topk = (logits: Float32Array, rows: number, n: number, k: number, indexOffset = 0) => {
  const values = new Float32Array(rows * k).fill(-Infinity);
  const indices = new Uint32Array(rows * k).fill(0xffffffff);
  for (let r = 0; r < rows; r++) {
    const order = Array.from({ length: n }, (_, c) => c)
      .sort((a, b) => logits[r * n + b] - logits[r * n + a] || a - b)
      .slice(0, k);
    order.forEach((c, rank) => {
      values[r * k + rank] = logits[r * n + c];
      indices[r * k + rank] = c + indexOffset;
    });
  }
  return { values, indices };
};

/** Argmax per row: top-1. */
export const argmax = (logits: Float32Array, rows: number, n: number, indexOffset = 0) =>
  topk(logits, rows, n, 1, indexOffset);
