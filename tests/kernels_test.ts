/** Phase 1 kernels (matmul, elementwise) against their CPU references in kernels/reference.ts. */
import assert from "node:assert/strict";
import { Effect } from "effect";
import { acquireGpu, type Gpu } from "../gpu/device.ts";
import { createStorageBuffer, Readback, readF32, submitAndWait } from "../gpu/buffers.ts";
import { type Dispatch, encodeDispatches } from "../gpu/dispatch.ts";
import { blockColumns, matmul, matmulSmallM, matmulTiled, SMALL_M_MAX } from "../kernels/matmul.ts";
import {
  add,
  addInPlace,
  gelu,
  geluInPlace,
  silu,
  siluInPlace,
  siluMul,
} from "../kernels/elementwise.ts";
import { grid1d } from "../kernels/grid.ts";
import * as reference from "../kernels/reference.ts";
import { quantizeColumns } from "../kernels/quantized.ts";
import { GGML_TYPES } from "../models/gguf/quants.ts";
import { quantizeQ4_0, quantizeQ8_0 } from "../models/gguf/quantize.ts";

import { assertClose, randomFloats } from "./tolerance.ts";

/** Runs `body` with one device for the whole file, destroyed when it finishes. */
const withGpu = (body: (gpu: Gpu) => Promise<void>) =>
  Effect.runPromise(
    Effect.scoped(
      Effect.flatMap(acquireGpu({ label: "test" }), (gpu) => Effect.promise(() => body(gpu))),
    ),
  );

/** Builds dispatches, runs them once and fails on any WebGPU validation error. */
const run = async (gpu: Gpu, build: () => Dispatch[]): Promise<void> => {
  gpu.device.pushErrorScope("validation");
  const encoder = gpu.device.createCommandEncoder();
  encodeDispatches(encoder, build());
  await Effect.runPromise(submitAndWait(gpu, encoder));
  const error = await gpu.device.popErrorScope();
  assert.equal(error?.message ?? null, null, "WebGPU validation error");
};

const read = (gpu: Gpu, buffer: GPUBuffer, length: number) =>
  Effect.runPromise(readF32(gpu, buffer, length));

/** Deterministic integer in [lo, hi] from `seed`. */
const randomInt = (seed: number, lo: number, hi: number) =>
  lo + Math.floor(((randomFloats(1, seed)[0] + 1) / 2) * (hi - lo + 1));

/** Runs `kernel` on a random a[m×k], b[k×n] and checks against reference.matmul. */
const checkMatmul = async (
  gpu: Gpu,
  m: number,
  k: number,
  n: number,
  kernel = matmul,
): Promise<void> => {
  const a = randomFloats(m * k, m * 7919 + k);
  const b = randomFloats(k * n, n * 104729 + k);
  const aBuf = createStorageBuffer(gpu, "a", a);
  const bBuf = createStorageBuffer(gpu, "b", b);
  const outBuf = createStorageBuffer(gpu, "out", m * n * 4);
  try {
    await run(gpu, () => [kernel(gpu, { a: aBuf, b: bBuf, out: outBuf, m, k, n })]);
    // Products of values in [-1, 1): f32 rounding grows roughly with √k.
    assertClose(await read(gpu, outBuf, m * n), reference.matmul(a, b, m, k, n), {
      atol: 2e-6 * Math.sqrt(k) + 1e-6,
      rtol: 1e-5,
      what: `matmul ${m}×${k}×${n}`,
    });
  } finally {
    for (const buffer of [aBuf, bBuf, outBuf]) buffer.destroy();
  }
};

const uploadRandom = (gpu: Gpu, length: number, seed: number, scale = 1) => {
  const data = randomFloats(length, seed, scale);
  return { data, buffer: createStorageBuffer(gpu, `random${seed}`, data) };
};

/** Lengths around the 256-wide workgroup and past 65535 workgroups (grid spread over x and y). */
const LENGTHS = [1, 255, 257, 100_003, 65535 * 256 + 77];

/**
 * Index ranges worth reading back: all of a small buffer, but for huge ones (whose 64 MiB
 * readback takes seconds on lavapipe) the start, the first row boundary of the x/y grid, and the
 * tail.
 */
const windows = (gpu: Gpu, length: number): Array<[number, number]> => {
  if (length <= 1 << 20) return [[0, length]];
  const rowStart = grid1d(gpu, Math.ceil(length / 256))[0] * 256;
  return [[0, 4096], [rowStart - 2048, rowStart + 2048], [length - 4096, length]];
};

/** Compares `buffer` with `expected(start, end)` on each of `windows(length)`. */
const checkWindows = async (
  gpu: Gpu,
  buffer: GPUBuffer,
  length: number,
  expected: (start: number, end: number) => Float32Array,
  options: { atol?: number; rtol?: number; what: string },
): Promise<void> => {
  for (const [start, end] of windows(gpu, length)) {
    const actual = new Float32Array(end - start);
    const readback = new Readback(gpu, actual.byteLength);
    await Effect.runPromise(
      readback.read(buffer, new Uint8Array(actual.buffer), { sourceOffset: start * 4 }),
    );
    readback.destroy();
    assertClose(actual, expected(start, end), { ...options, what: `${options.what}@${start}` });
  }
};

Deno.test("kernels", (t) =>
  withGpu(async (gpu) => {
    await t.step("matmul: degenerate and odd shapes", async () => {
      for (const [m, k, n] of [[1, 1, 1], [1, 37, 1], [1, 1, 91], [3, 1, 5], [37, 91, 53]]) {
        await checkMatmul(gpu, m, k, n);
      }
    });

    await t.step("matmul: every small m takes the GEMV path and matches", async () => {
      for (let m = 1; m <= SMALL_M_MAX; m++) {
        await checkMatmul(gpu, m, 300, 129); // scalar GEMV (n odd)
        await checkMatmul(gpu, m, 301, 132); // vec4 GEMV (n % 4 == 0)
      }
      await checkMatmul(gpu, SMALL_M_MAX + 1, 300, 129);
    });

    await t.step("matmul: both kernels agree on shapes the other would take", async () => {
      await checkMatmul(gpu, 1, 200, 70, matmulTiled);
      await checkMatmul(gpu, 4, 129, 65, matmulTiled);
      await checkMatmul(gpu, 3, 1024, 33, matmulSmallM);
      await checkMatmul(gpu, 2, 77, 68, (g, args) => matmulSmallM(g, { ...args, vec4: false }));
      await checkMatmul(gpu, 2, 7, 8, matmulSmallM); // k < 8 slices: some slices are empty
      assert.throws(() =>
        matmulSmallM(gpu, {
          a: createStorageBuffer(gpu, "x", 4),
          b: createStorageBuffer(gpu, "x", 4),
          out: createStorageBuffer(gpu, "x", 4),
          m: SMALL_M_MAX + 1,
          k: 1,
          n: 1,
        }), RangeError);
    });

    await t.step(
      "matmul: a row's GEMV result does not depend on the batch (bit-exact)",
      async () => {
        // The service batches decode rows of different requests; each must get the bits it
        // would get alone, so greedy outputs cannot change with the batch.
        for (const n of [129, 132]) {
          const [m, k] = [SMALL_M_MAX, 300];
          const a = randomFloats(m * k, 5);
          const b = randomFloats(k * n, 6);
          const [aBuf, bBuf] = [createStorageBuffer(gpu, "a", a), createStorageBuffer(gpu, "b", b)];
          const out = createStorageBuffer(gpu, "out", m * n * 4);
          await run(gpu, () => [matmulSmallM(gpu, { a: aBuf, b: bBuf, out, m, k, n })]);
          const batched = await read(gpu, out, m * n);
          for (let r = 0; r < m; r++) {
            const rowBuf = createStorageBuffer(gpu, "row", a.slice(r * k, (r + 1) * k));
            await run(gpu, () => [matmulSmallM(gpu, { a: rowBuf, b: bBuf, out, m: 1, k, n })]);
            assert.deepEqual(
              await read(gpu, out, n),
              batched.slice(r * n, (r + 1) * n),
              `row ${r}`,
            );
            rowBuf.destroy();
          }
          for (const buf of [aBuf, bBuf, out]) buf.destroy();
        }
      },
    );

    await t.step({
      name: "matmul: f16 weights, every kernel, against f16-rounded weights",
      ignore: !gpu.device.features.has("shader-f16"),
      fn: async () => {
        for (const [m, k, n] of [[1, 300, 129], [3, 301, 132], [8, 768, 256], [37, 91, 53]]) {
          const a = randomFloats(m * k, m + k);
          const b = randomFloats(k * n, k + n);
          // f16 storage must be whole 4-byte words: pad an odd element count.
          const b16 = new Float16Array(b.length + (b.length % 2));
          b16.set(b);
          const [aBuf, bBuf] = [
            createStorageBuffer(gpu, "a", a),
            createStorageBuffer(gpu, "b", b16),
          ];
          const out = createStorageBuffer(gpu, "out", m * n * 4);
          await run(gpu, () => [matmul(gpu, { a: aBuf, b: bBuf, out, m, k, n, weights: "f16" })]);
          const rounded = Float32Array.from(b16.subarray(0, b.length));
          assertClose(await read(gpu, out, m * n), reference.matmul(a, rounded, m, k, n), {
            atol: 2e-6 * Math.sqrt(k) + 1e-6,
            rtol: 1e-5,
            what: `f16 matmul ${m}×${k}×${n}`,
          });
          for (const buf of [aBuf, bBuf, out]) buf.destroy();
        }
      },
    });

    await t.step(
      "matmul: blocked weights, any m and n, f32 and f16, rows batch-invariant",
      async () => {
        for (
          const [m, k, n] of [[1, 1, 1], [1, 300, 129], [3, 7, 8], [8, 768, 200], [9, 91, 53], [
            20,
            130,
            300,
          ]]
        ) {
          // Blocked f16 weights are packed halves: any adapter, no shader-f16 needed.
          for (const weights of ["f32", "f16"] as const) {
            const a = randomFloats(m * k, m * 3 + k);
            const b = randomFloats(k * n, k * 5 + n);
            const blocked = blockColumns(b, k, n);
            const stored = weights === "f16" ? Float16Array.from(blocked) : blocked;
            const [aBuf, bBuf] = [
              createStorageBuffer(gpu, "a", a),
              createStorageBuffer(gpu, "b", stored),
            ];
            const out = createStorageBuffer(gpu, "out", m * n * 4);
            await run(gpu, () => [
              matmul(gpu, { a: aBuf, b: bBuf, out, m, k, n, weights, layout: "blocked" }),
            ]);
            const exact = weights === "f16" ? Float32Array.from(Float16Array.from(b)) : b;
            assertClose(await read(gpu, out, m * n), reference.matmul(a, exact, m, k, n), {
              atol: 2e-6 * Math.sqrt(k) + 1e-6,
              rtol: 1e-5,
              what: `blocked ${weights} matmul ${m}×${k}×${n}`,
            });
            // Batch invariance: each row alone gives the same bits (decode = prefill rows).
            if (m > 1) {
              const batched = await read(gpu, out, m * n);
              for (const r of [0, m - 1]) {
                const row = createStorageBuffer(gpu, "row", a.slice(r * k, (r + 1) * k));
                await run(gpu, () => [
                  matmul(gpu, { a: row, b: bBuf, out, m: 1, k, n, weights, layout: "blocked" }),
                ]);
                assert.deepEqual(await read(gpu, out, n), batched.slice(r * n, (r + 1) * n));
                row.destroy();
              }
            }
            for (const buf of [aBuf, bBuf, out]) buf.destroy();
          }
        }
      },
    );

    await t.step(
      "matmul: Q8_0 and Q4_0 blocked weights give the bits of their dequantized f32 weights, any m",
      async () => {
        const formats = [
          { type: "q8_0", id: 8, quantize: quantizeQ8_0, share: 0.3 },
          { type: "q4_0", id: 2, quantize: quantizeQ4_0, share: 0.17 },
        ] as const;
        for (const { type, id, quantize, share } of formats) {
          for (const [m, k, n] of [[1, 32, 1], [1, 96, 130], [5, 64, 300], [20, 128, 256]]) {
            const a = randomFloats(m * k, m * 11 + k);
            const b = randomFloats(k * n, k * 13 + n);
            const packed = quantizeColumns(type, b, k, n);
            // What the blocks mean: column c's 32-run of k is one llama.cpp block, as GGUF's
            // dequantization (tests/gguf_test.ts) reads it.
            const dequantized = new Float32Array(k * n);
            for (let c = 0; c < n; c++) {
              for (let g = 0; g < k / 32; g++) {
                const run = Float32Array.from({ length: 32 }, (_, j) => b[(g * 32 + j) * n + c]);
                const block = new Float32Array(32);
                GGML_TYPES.get(id)!.dequantize(quantize(run), block);
                block.forEach((v, j) => (dequantized[(g * 32 + j) * n + c] = v));
              }
            }
            const aBuf = createStorageBuffer(gpu, "a", a);
            const qBuf = createStorageBuffer(gpu, type, packed);
            const f32 = createStorageBuffer(gpu, "f32", blockColumns(dequantized, k, n));
            const [outQ, outF, outShift] = [0, 1, 2].map(() =>
              createStorageBuffer(gpu, "out", m * n * 4)
            );
            const quantized = (out: GPUBuffer, unpack4xI8?: boolean) =>
              matmul(gpu, {
                a: aBuf,
                b: qBuf,
                out,
                m,
                k,
                n,
                weights: type,
                layout: "blocked",
                unpack4xI8,
              });
            await run(gpu, () => [
              quantized(outQ),
              quantized(outShift, false), // the fallback where unpack4xI8 is the default
              matmul(gpu, { a: aBuf, b: f32, out: outF, m, k, n, layout: "blocked" }),
            ]);
            const got = await read(gpu, outQ, m * n);
            assert.deepEqual(got, await read(gpu, outF, m * n), `${type} ${m}×${k}×${n}`);
            assert.deepEqual(await read(gpu, outShift, m * n), got, `${type} by shifts`);
            assertClose(got, reference.matmul(a, dequantized, m, k, n), {
              atol: 2e-6 * Math.sqrt(k) + 1e-6,
              rtol: 1e-5,
              what: `${type} matmul ${m}×${k}×${n}`,
            });
            // A quarter (an eighth) of f32's bytes, plus the scales.
            assert.ok(packed.byteLength < share * blockColumns(b, k, n).byteLength);
            for (const buf of [aBuf, qBuf, f32, outQ, outF, outShift]) buf.destroy();
          }
        }
        const dummy = createStorageBuffer(gpu, "dummy", 4096);
        assert.throws(
          () =>
            matmul(gpu, {
              a: dummy,
              b: dummy,
              out: dummy,
              m: 1,
              k: 40,
              n: 4,
              weights: "q8_0",
              layout: "blocked",
            }),
          /k a multiple of 32/,
        );
        dummy.destroy();
      },
    );

    await t.step("matmul: tile-boundary and decode-sized shapes", async () => {
      await checkMatmul(gpu, 64, 1024, 257);
      await checkMatmul(gpu, 65, 17, 63);
      await checkMatmul(gpu, 1, 1024, 4096);
    });

    await t.step("matmul: large-ish", async () => {
      await checkMatmul(gpu, 200, 512, 384);
    });

    await t.step("matmul: seeded random shapes", async () => {
      for (let seed = 1; seed <= 8; seed++) {
        const m = seed % 3 === 0 ? randomInt(seed, 1, SMALL_M_MAX) : randomInt(seed, 1, 150);
        await checkMatmul(gpu, m, randomInt(seed * 31, 1, 300), randomInt(seed * 97, 1, 200));
      }
    });

    await t.step("gelu / silu, out of place and in place", async () => {
      const tol = { atol: 1e-5, rtol: 1e-5 };
      for (const length of LENGTHS) {
        const { data, buffer } = uploadRandom(gpu, length, length, 6);
        const out = createStorageBuffer(gpu, "out", length * 4);
        const part = (start: number, end: number) => data.subarray(start, end);
        await run(gpu, () => [gelu(gpu, { input: buffer, out, length })]);
        await checkWindows(gpu, out, length, (s, e) => reference.gelu(part(s, e)), {
          ...tol,
          what: `gelu[${length}]`,
        });
        await run(gpu, () => [silu(gpu, { input: buffer, out, length })]);
        await checkWindows(gpu, out, length, (s, e) => reference.silu(part(s, e)), {
          ...tol,
          what: `silu[${length}]`,
        });
        await run(gpu, () => [geluInPlace(gpu, { target: buffer, length })]);
        await checkWindows(gpu, buffer, length, (s, e) => reference.gelu(part(s, e)), {
          ...tol,
          what: `geluInPlace[${length}]`,
        });
        await run(gpu, () => [siluInPlace(gpu, { target: buffer, length })]);
        await checkWindows(
          gpu,
          buffer,
          length,
          (s, e) => reference.silu(reference.gelu(part(s, e))),
          { ...tol, what: `siluInPlace[${length}]` },
        );
        buffer.destroy();
        out.destroy();
      }
    });

    await t.step("gelu / silu stay finite and exact at extreme inputs", async () => {
      const data = new Float32Array([
        0,
        -0,
        1e-30,
        -1e-30,
        9,
        -9,
        50,
        -50,
        100,
        -100,
        1e4,
        -1e4,
        1e20,
        -1e20,
        3e38,
        -3e38,
      ]);
      const input = createStorageBuffer(gpu, "extreme", data);
      const out = createStorageBuffer(gpu, "out", data.byteLength);
      await run(gpu, () => [gelu(gpu, { input, out, length: data.length })]);
      const gelued = await read(gpu, out, data.length);
      assert.ok(gelued.every(Number.isFinite), `gelu produced non-finite values: ${gelued}`);
      assertClose(gelued, reference.gelu(data), { atol: 1e-6, rtol: 1e-6, what: "gelu" });
      await run(gpu, () => [silu(gpu, { input, out, length: data.length })]);
      const silued = await read(gpu, out, data.length);
      assert.ok(silued.every(Number.isFinite), `silu produced non-finite values: ${silued}`);
      assertClose(silued, reference.silu(data), { atol: 1e-6, rtol: 1e-6, what: "silu" });
    });

    await t.step("add, addInPlace and siluMul", async () => {
      for (const length of LENGTHS) {
        const a = uploadRandom(gpu, length, length + 1, 3);
        const b = uploadRandom(gpu, length, length + 2, 3);
        const out = createStorageBuffer(gpu, "out", length * 4);
        const sum = (s: number, e: number) =>
          reference.add(a.data.subarray(s, e), b.data.subarray(s, e));
        await run(gpu, () => [add(gpu, { a: a.buffer, b: b.buffer, out, length })]);
        await checkWindows(gpu, out, length, sum, { what: `add[${length}]` });
        await run(gpu, () => [siluMul(gpu, { gate: a.buffer, up: b.buffer, out, length })]);
        await checkWindows(
          gpu,
          out,
          length,
          (s, e) => reference.siluMul(a.data.subarray(s, e), b.data.subarray(s, e)),
          { atol: 1e-5, rtol: 1e-5, what: `siluMul[${length}]` },
        );
        await run(gpu, () => [addInPlace(gpu, { target: a.buffer, other: b.buffer, length })]);
        await checkWindows(gpu, a.buffer, length, sum, { what: `addInPlace[${length}]` });
        for (const buffer of [a.buffer, b.buffer, out]) buffer.destroy();
      }
    });

    await t.step("binding one buffer as both input and out is a validation error", async () => {
      // Documents why the in-place variants exist.
      const { buffer } = uploadRandom(gpu, 16, 5);
      gpu.device.pushErrorScope("validation");
      const encoder = gpu.device.createCommandEncoder();
      encodeDispatches(encoder, [gelu(gpu, { input: buffer, out: buffer, length: 16 })]);
      gpu.device.queue.submit([encoder.finish()]);
      const error = await gpu.device.popErrorScope();
      assert.ok(error, "expected WebGPU to reject aliased read/read_write bindings");
      buffer.destroy();
    });
  }));
