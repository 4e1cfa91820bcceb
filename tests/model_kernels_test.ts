/** Phase 2 (Llama) kernels against their CPU references in kernels/reference.ts. */
import assert from "node:assert/strict";
import { Effect } from "effect";
import { acquireGpu, type Gpu } from "../gpu/device.ts";
import { createStorageBuffer, readF32, submitAndWait, writeBuffer } from "../gpu/buffers.ts";
import { type Dispatch, encodeDispatches } from "../gpu/dispatch.ts";
import { rmsnorm } from "../kernels/rmsnorm.ts";
import { blockColumns, matmul } from "../kernels/matmul.ts";
import { quantizeColumns } from "../kernels/quantized.ts";
import { transpose } from "../layers/blocks/weights.ts";
import { GGML_TYPES } from "../models/gguf/quants.ts";
import { quantizeQ4_0, quantizeQ8_0 } from "../models/gguf/quantize.ts";
import { f16ToF32, f32ToF16 } from "../util/f16.ts";
import { rope, type RopeLayout } from "../kernels/rope.ts";
import { ropeKvCache } from "../kernels/rope_kv_cache.ts";
import { attention, writeKvCache } from "../kernels/attention.ts";
import { embedding } from "../kernels/embedding.ts";
import { argmax, decodeCandidates, MAX_TOPK, topk } from "../kernels/topk.ts";
import { contiguousRows, createPositionBuffer, writePositions } from "../kernels/position.ts";
import * as reference from "../kernels/reference.ts";
import { assertClose, randomFloats } from "./tolerance.ts";

/** Runs `body` with one device for the whole file, destroyed when it finishes. */
const withGpu = (body: (gpu: Gpu) => Promise<void>) =>
  Effect.runPromise(
    Effect.scoped(
      Effect.flatMap(acquireGpu({ label: "test" }), (gpu) => Effect.promise(() => body(gpu))),
    ),
  );

/** Encodes prepared dispatches, runs them and fails on any WebGPU validation error. */
const run = async (gpu: Gpu, dispatches: readonly Dispatch[]): Promise<void> => {
  gpu.device.pushErrorScope("validation");
  const encoder = gpu.device.createCommandEncoder();
  encodeDispatches(encoder, dispatches);
  await Effect.runPromise(submitAndWait(gpu, encoder));
  const error = await gpu.device.popErrorScope();
  assert.equal(error?.message ?? null, null, "WebGPU validation error");
};

/** Prepares under a validation error scope, so a bad shader fails here rather than later. */
const prepare = async <A>(gpu: Gpu, build: () => A): Promise<A> => {
  gpu.device.pushErrorScope("validation");
  const result = build();
  const error = await gpu.device.popErrorScope();
  assert.equal(error?.message ?? null, null, "WebGPU validation error");
  return result;
};

const read = (gpu: Gpu, buffer: GPUBuffer, length: number) =>
  Effect.runPromise(readF32(gpu, buffer, length));

const upload = (gpu: Gpu, data: ArrayBufferView) => createStorageBuffer(gpu, "data", data);

Deno.test("model kernels", (t) =>
  withGpu(async (gpu) => {
    // Both sums where the device has subgroups: subgroupAdd, and the shared-memory fallback.
    const sums = gpu.features.subgroups ? [true, false] : [false];
    await t.step("rmsnorm, with each workgroup sum the device has", async () => {
      const cases = [[1, 1], [1, 4097], [3, 64], [33, 300], [7, 256], [2, 5000]];
      for (const [rows, dim] of cases) {
        for (
          const [eps, subgroups] of [1e-5, 1e-6].flatMap((e) => sums.map((s) => [e, s] as const))
        ) {
          const x = randomFloats(rows * dim, rows * 31 + dim, 3);
          const w = randomFloats(dim, dim + 5, 2);
          const [xBuf, wBuf] = [upload(gpu, x), upload(gpu, w)];
          const out = createStorageBuffer(gpu, "out", rows * dim * 4);
          const d = await prepare(
            gpu,
            () => rmsnorm(gpu, { input: xBuf, weight: wBuf, out, rows, dim, eps, subgroups }),
          );
          await run(gpu, [d]);
          assertClose(await read(gpu, out, rows * dim), reference.rmsnorm(x, w, rows, dim, eps), {
            atol: 1e-5,
            rtol: 1e-5,
            what: `rmsnorm ${rows}×${dim}${subgroups ? " (subgroups)" : ""}`,
          });
          for (const b of [xBuf, wBuf, out]) b.destroy();
        }
      }
    });

    await t.step(
      "rmsnorm fused with the residual add: x += r in place, then the norm",
      async () => {
        for (
          const [rows, dim, subgroups] of [[1, 288], [5, 768], [3, 1000]].flatMap(([r, d]) =>
            sums.map((s) => [r, d, s] as const)
          )
        ) {
          const x = randomFloats(rows * dim, rows + dim, 3);
          const r = randomFloats(rows * dim, rows + dim + 1, 3);
          const w = randomFloats(dim, dim + 7, 2);
          const [xBuf, rBuf, wBuf] = [upload(gpu, x), upload(gpu, r), upload(gpu, w)];
          const out = createStorageBuffer(gpu, "out", rows * dim * 4);
          await run(gpu, [
            await prepare(gpu, () =>
              rmsnorm(gpu, {
                input: xBuf,
                residual: rBuf,
                weight: wBuf,
                out,
                rows,
                dim,
                subgroups,
              })),
          ]);
          const sum = x.map((v, i) => v + r[i]);
          assert.deepEqual(await read(gpu, xBuf, sum.length), sum, "x holds x + r exactly");
          assertClose(
            await read(gpu, out, sum.length),
            reference.rmsnorm(sum, w, rows, dim, 1e-5),
            {
              atol: 1e-5,
              rtol: 1e-5,
              what: `add + rmsnorm ${rows}×${dim}`,
            },
          );
          for (const b of [xBuf, rBuf, wBuf, out]) b.destroy();
        }
      },
    );

    await t.step(
      "down projection over silu·mul of the merged gate|up rows, rows batch-invariant",
      async () => {
        for (const weights of ["f32", "f16"] as const) {
          const [rows, hidden, dim] = [9, 300, 70];
          const gateUp = randomFloats(rows * 2 * hidden, 91, 4);
          const w2 = randomFloats(hidden * dim, 17);
          const blocked = blockColumns(w2, hidden, dim);
          const gateUpBuf = upload(gpu, gateUp);
          const w2Buf = createStorageBuffer(
            gpu,
            "w2",
            weights === "f16" ? Float16Array.from(blocked) : blocked,
          );
          const out = createStorageBuffer(gpu, "out", rows * dim * 4);
          const down = (a: GPUBuffer, m: number) =>
            matmul(gpu, {
              a,
              b: w2Buf,
              out,
              m,
              k: hidden,
              n: dim,
              weights,
              layout: "blocked",
              input: "swiglu",
            });
          await run(gpu, [await prepare(gpu, () => down(gateUpBuf, rows))]);
          const act = new Float32Array(rows * hidden);
          for (let r = 0; r < rows; r++) {
            const gate = gateUp.subarray(r * 2 * hidden, r * 2 * hidden + hidden);
            const up = gateUp.subarray(r * 2 * hidden + hidden, (r + 1) * 2 * hidden);
            const silu = reference.silu(gate);
            for (let j = 0; j < hidden; j++) act[r * hidden + j] = silu[j] * up[j];
          }
          const exact = weights === "f16" ? Float32Array.from(Float16Array.from(w2)) : w2;
          const batched = await read(gpu, out, rows * dim);
          // Sums of 300 terms up to ~16 in size: f32 rounding alone reaches a few 1e-5.
          assertClose(batched, reference.matmul(act, exact, rows, hidden, dim), {
            atol: 1e-4,
            rtol: 1e-5,
            what: `swiglu matmul (${weights})`,
          });
          // The last row alone gives the same bits as in the batch.
          const last = upload(gpu, gateUp.slice((rows - 1) * 2 * hidden));
          await run(gpu, [await prepare(gpu, () => down(last, 1))]);
          assert.deepEqual(await read(gpu, out, dim), batched.slice((rows - 1) * dim));
          for (const b of [gateUpBuf, w2Buf, out, last]) b.destroy();
        }
      },
    );

    await t.step("rope, both layouts, position rewritten without re-preparing", async () => {
      const positions = createPositionBuffer(gpu, 128);
      const cases = [
        { rows: 1, nHeads: 4, headDim: 64, theta: 10000 },
        { rows: 5, nHeads: 3, headDim: 128, theta: 500000 },
        { rows: 17, nHeads: 2, headDim: 6, theta: 10000 },
        { rows: 2, nHeads: 32, headDim: 128, theta: 10000 },
      ];
      for (const { rows, nHeads, headDim, theta } of cases) {
        for (const layout of ["interleaved", "half"] as RopeLayout[]) {
          const x = randomFloats(rows * nHeads * headDim, headDim + rows);
          const qk = upload(gpu, x);
          const d = await prepare(
            gpu,
            () => rope(gpu, { qk, positions, rows, nHeads, headDim, theta, layout }),
          );
          for (const start of [0, 7, 4000]) {
            writeBuffer(gpu, qk, x);
            writePositions(gpu, positions, contiguousRows(start, rows));
            await run(gpu, [d]);
            const expected = reference.rope(x, start, rows, nHeads, headDim, theta, layout);
            // The angle start·freq is rounded to f32, so error grows with the position.
            assertClose(await read(gpu, qk, x.length), expected, {
              atol: 2e-5 + (start + rows) * 2e-7,
              rtol: 1e-5,
              what: `rope.${layout} ${rows}×${nHeads}×${headDim} @${start}`,
            });
          }
          qk.destroy();
        }
      }
      // Position 0 is the identity in either layout.
      const x = randomFloats(64, 9);
      const qk = upload(gpu, x);
      writePositions(gpu, positions, contiguousRows(0, 1));
      await run(gpu, [
        rope(gpu, { qk, positions, rows: 1, nHeads: 1, headDim: 64, layout: "half" }),
      ]);
      assertClose(await read(gpu, qk, 64), x, { what: "rope @0" });
      // The layouts differ, so mixing them up would be caught.
      writePositions(gpu, positions, contiguousRows(3, 1));
      await run(gpu, [
        rope(gpu, { qk, positions, rows: 1, nHeads: 1, headDim: 64, layout: "half" }),
      ]);
      const halfRotated = await read(gpu, qk, 64);
      assert.throws(() =>
        assertClose(halfRotated, reference.rope(x, 3, 1, 1, 64, 10000, "interleaved"))
      );
      qk.destroy();
      positions.destroy();
    });

    await t.step("ropeKvCache: the same bits as rope then writeKvCache", async () => {
      // Rows of three sequences, GQA, and one row past maxSeq (it must write no K or V).
      const [nHeads, nKvHeads, headDim, maxSeq, sequences] = [4, 2, 16, 40, 3];
      const rows = [
        { sequence: 2, position: 0 },
        { sequence: 0, position: 17 },
        { sequence: 1, position: 39 },
        { sequence: 2, position: 1 },
        { sequence: 0, position: 40 },
      ];
      const T = rows.length;
      const [qWidth, kvWidth] = [nHeads * headDim, nKvHeads * headDim];
      const cacheFloats = sequences * maxSeq * kvWidth;
      const positions = createPositionBuffer(gpu, T);
      writePositions(gpu, positions, rows);
      for (const layout of ["interleaved", "half"] as const) {
        for (const theta of [10000, 500000]) {
          const q = randomFloats(T * qWidth, theta + 1, 3);
          const k = randomFloats(T * kvWidth, theta + 2, 3);
          const v = randomFloats(T * kvWidth, theta + 3, 3);
          const qkv = new Float32Array(T * (qWidth + 2 * kvWidth));
          for (let r = 0; r < T; r++) {
            const at = r * (qWidth + 2 * kvWidth);
            qkv.set(q.subarray(r * qWidth, (r + 1) * qWidth), at);
            qkv.set(k.subarray(r * kvWidth, (r + 1) * kvWidth), at + qWidth);
            qkv.set(v.subarray(r * kvWidth, (r + 1) * kvWidth), at + qWidth + kvWidth);
          }
          const cache = randomFloats(cacheFloats, theta + 4);
          const [qBuf, kBuf, vBuf, qkvBuf] = [
            upload(gpu, q),
            upload(gpu, k),
            upload(gpu, v),
            upload(gpu, qkv),
          ];
          const [kSplit, vSplit, kFused, vFused] = [0, 1, 2, 3].map(() => upload(gpu, cache));
          const shape = { positions, rows: T, headDim, theta, layout };
          const cacheShape = { positions, rows: T, nKvHeads, headDim, maxSeq, sequences };
          await run(gpu, [
            await prepare(gpu, () => rope(gpu, { qk: qBuf, nHeads, ...shape })),
            await prepare(gpu, () => rope(gpu, { qk: kBuf, nHeads: nKvHeads, ...shape })),
            await prepare(
              gpu,
              () =>
                writeKvCache(gpu, {
                  k: kBuf,
                  v: vBuf,
                  kCache: kSplit,
                  vCache: vSplit,
                  ...cacheShape,
                }),
            ),
            await prepare(gpu, () =>
              ropeKvCache(gpu, {
                qkv: qkvBuf,
                kCache: kFused,
                vCache: vFused,
                nHeads,
                ...cacheShape,
                theta,
                layout,
              })),
          ]);
          const what = `${layout}, theta ${theta}`;
          const fusedRows = await read(gpu, qkvBuf, qkv.length);
          const splitQ = await read(gpu, qBuf, q.length);
          for (let r = 0; r < T; r++) {
            const at = r * (qWidth + 2 * kvWidth);
            assert.deepEqual(
              fusedRows.subarray(at, at + qWidth),
              splitQ.subarray(r * qWidth, (r + 1) * qWidth),
              `q of row ${r}, ${what}`,
            );
          }
          assert.deepEqual(
            await read(gpu, kFused, cacheFloats),
            await read(gpu, kSplit, cacheFloats),
            `kCache, ${what}`,
          );
          assert.deepEqual(
            await read(gpu, vFused, cacheFloats),
            await read(gpu, vSplit, cacheFloats),
            `vCache, ${what}`,
          );
          // The caches did change, so their equality above is not vacuous.
          assert.notDeepEqual(
            await read(gpu, kFused, cacheFloats),
            cache,
            `kCache written, ${what}`,
          );
          for (const b of [qBuf, kBuf, vBuf, qkvBuf, kSplit, vSplit, kFused, vFused]) b.destroy();
        }
      }
      positions.destroy();
    });

    await t.step("writeKvCache + attention: decode steps with GQA", async () => {
      const configs = [
        { nHeads: 4, nKvHeads: 4, headDim: 16 },
        { nHeads: 8, nKvHeads: 2, headDim: 64 },
        { nHeads: 6, nKvHeads: 1, headDim: 80 },
        { nHeads: 2, nKvHeads: 1, headDim: 128 },
      ];
      const maxSeq = 150;
      const steps = 140; // crosses the 64-key tiles twice
      for (const { nHeads, nKvHeads, headDim } of configs) {
        const rowWidth = nKvHeads * headDim;
        const kAll = randomFloats(steps * rowWidth, headDim + 1, 2);
        const vAll = randomFloats(steps * rowWidth, headDim + 2);
        const qAll = randomFloats(steps * nHeads * headDim, headDim + 3, 2);
        const kCache = createStorageBuffer(gpu, "kCache", maxSeq * rowWidth * 4);
        const vCache = createStorageBuffer(gpu, "vCache", maxSeq * rowWidth * 4);
        const [k, v] = [
          createStorageBuffer(gpu, "k", rowWidth * 4),
          createStorageBuffer(gpu, "v", rowWidth * 4),
        ];
        const q = createStorageBuffer(gpu, "q", nHeads * headDim * 4);
        const out = createStorageBuffer(gpu, "out", nHeads * headDim * 4);
        const positions = createPositionBuffer(gpu, 128);
        const shape = { rows: 1, nKvHeads, headDim, maxSeq };
        const dispatches = await prepare(gpu, () => [
          writeKvCache(gpu, { k, v, kCache, vCache, positions, ...shape }),
          attention(gpu, { q, kCache, vCache, positions, out, nHeads, ...shape }),
        ]);
        const kRef = new Float32Array(maxSeq * rowWidth);
        const vRef = new Float32Array(maxSeq * rowWidth);
        for (let pos = 0; pos < steps; pos++) {
          const kRow = kAll.subarray(pos * rowWidth, (pos + 1) * rowWidth);
          const vRow = vAll.subarray(pos * rowWidth, (pos + 1) * rowWidth);
          const qRow = qAll.subarray(pos * nHeads * headDim, (pos + 1) * nHeads * headDim);
          writeBuffer(gpu, k, kRow);
          writeBuffer(gpu, v, vRow);
          writeBuffer(gpu, q, qRow);
          writePositions(gpu, positions, contiguousRows(pos, 1));
          await run(gpu, dispatches);
          reference.writeKvCache(kRow, vRow, kRef, vRef, pos, 1, rowWidth, maxSeq);
          if (pos % 23 !== 0 && pos !== 63 && pos !== 64 && pos !== steps - 1) continue;
          const expected = reference.attention(qRow, kRef, vRef, {
            start: pos,
            rows: 1,
            nHeads,
            nKvHeads,
            headDim,
          });
          assertClose(await read(gpu, out, nHeads * headDim), expected, {
            atol: 2e-5,
            rtol: 1e-4,
            what: `attention ${nHeads}/${nKvHeads}×${headDim} @${pos}`,
          });
        }
        assertClose(await read(gpu, kCache, maxSeq * rowWidth), kRef, { what: "kCache" });
        assertClose(await read(gpu, vCache, maxSeq * rowWidth), vRef, { what: "vCache" });
        for (const b of [kCache, vCache, k, v, q, out, positions]) b.destroy();
      }
    });

    await t.step(
      "ropeKvCache + attention with an f16 cache: K and V rounded to halves, attention over them",
      async () => {
        assert.ok(gpu.features.shaderF16, "an f16 KV cache needs shader-f16 (lavapipe has it)");
        const [nHeads, nKvHeads, headDim, maxSeq, T] = [8, 2, 64, 40, 32];
        const kvWidth = nKvHeads * headDim;
        const rowWidth = (nHeads + 2 * nKvHeads) * headDim;
        const qkv = randomFloats(T * rowWidth, 77, 2);
        const positions = createPositionBuffer(gpu, T);
        writePositions(gpu, positions, contiguousRows(0, T));
        const [qkv32, qkv16] = [upload(gpu, qkv), upload(gpu, qkv)];
        const [k32, v32] = [0, 1].map(() => createStorageBuffer(gpu, "c32", maxSeq * kvWidth * 4));
        const [k16, v16] = [0, 1].map(() => createStorageBuffer(gpu, "c16", maxSeq * kvWidth * 2));
        const out = createStorageBuffer(gpu, "out", T * nHeads * headDim * 4);
        const shape = {
          positions,
          rows: T,
          nHeads,
          nKvHeads,
          headDim,
          maxSeq,
          layout: "interleaved" as const,
        };
        await run(gpu, [
          await prepare(gpu, () =>
            ropeKvCache(gpu, { qkv: qkv32, kCache: k32, vCache: v32, ...shape })),
          await prepare(gpu, () =>
            ropeKvCache(gpu, {
              qkv: qkv16,
              kCache: k16,
              vCache: v16,
              cacheElement: "f16",
              ...shape,
            })),
          await prepare(gpu, () =>
            attention(gpu, {
              q: qkv16,
              qRowStride: rowWidth,
              kCache: k16,
              vCache: v16,
              out,
              cacheElement: "f16",
              ...shape,
            })),
        ]);
        const widen = async (buffer: GPUBuffer) => {
          const words = await read(gpu, buffer, (maxSeq * kvWidth) / 2);
          return Float32Array.from(
            new Uint16Array(words.buffer, words.byteOffset, maxSeq * kvWidth),
            f16ToF32,
          );
        };
        for (const [half, full, what] of [[k16, k32, "K"], [v16, v32, "V"]] as const) {
          const widened = await widen(half);
          const exact = await read(gpu, full, maxSeq * kvWidth);
          // Each element is the f32 one rounded to a half: within half an f16 ulp (2^-11 relative).
          for (let i = 0; i < exact.length; i++) {
            const bound = Math.abs(exact[i]) * 2 ** -11 + 2 ** -25;
            assert.ok(
              Math.abs(widened[i] - exact[i]) <= bound,
              `${what}[${i}]: ${widened[i]} vs ${exact[i]}`,
            );
          }
          assert.ok(
            widened.some((x, i) =>
              x !== exact[i]
            ),
            `${what} was not rounded`,
          );
        }
        // Attention over the halves, against the CPU over the same (widened) values.
        const rows = await read(gpu, qkv16, T * rowWidth);
        const q = new Float32Array(T * nHeads * headDim);
        for (let r = 0; r < T; r++) {
          q.set(rows.subarray(r * rowWidth, r * rowWidth + nHeads * headDim), r * nHeads * headDim);
        }
        const expected = reference.attention(q, await widen(k16), await widen(v16), {
          start: 0,
          rows: T,
          nHeads,
          nKvHeads,
          headDim,
        });
        assertClose(await read(gpu, out, T * nHeads * headDim), expected, {
          atol: 2e-5,
          rtol: 1e-4,
          what: "attention over an f16 cache",
        });
        for (const b of [qkv32, qkv16, k32, v32, k16, v16, out, positions]) {
          b.destroy();
        }
      },
    );

    await t.step("writeKvCache + attention: prefill, chunked prefill, custom scale", async () => {
      const [nHeads, nKvHeads, headDim, maxSeq] = [8, 4, 32, 100];
      const rowWidth = nKvHeads * headDim;
      const kRef = new Float32Array(maxSeq * rowWidth);
      const vRef = new Float32Array(maxSeq * rowWidth);
      const kCache = createStorageBuffer(gpu, "kCache", kRef.byteLength);
      const vCache = createStorageBuffer(gpu, "vCache", vRef.byteLength);
      const positions = createPositionBuffer(gpu, 128);
      // A 70-token prompt, then a 23-token chunk continuing it, then 7 rows filling the cache.
      const chunks: Array<{ start: number; rows: number; scale?: number }> = [
        { start: 0, rows: 70 },
        { start: 70, rows: 23, scale: 0.3 },
        { start: 93, rows: 7 },
      ];
      for (const { start, rows, scale } of chunks) {
        const kNew = randomFloats(rows * rowWidth, start + 1);
        const vNew = randomFloats(rows * rowWidth, start + 2);
        const qNew = randomFloats(rows * nHeads * headDim, start + 3, 2);
        const [k, v, q] = [upload(gpu, kNew), upload(gpu, vNew), upload(gpu, qNew)];
        const out = createStorageBuffer(gpu, "out", qNew.byteLength);
        const shape = { rows, nKvHeads, headDim, maxSeq };
        writePositions(gpu, positions, contiguousRows(start, rows));
        await run(
          gpu,
          await prepare(gpu, () => [
            writeKvCache(gpu, { k, v, kCache, vCache, positions, ...shape }),
            attention(gpu, { q, kCache, vCache, positions, out, nHeads, scale, ...shape }),
          ]),
        );
        reference.writeKvCache(kNew, vNew, kRef, vRef, start, rows, rowWidth, maxSeq);
        const expected = reference.attention(qNew, kRef, vRef, {
          start,
          rows,
          nHeads,
          nKvHeads,
          headDim,
          scale,
        });
        assertClose(await read(gpu, out, qNew.length), expected, {
          atol: 2e-5,
          rtol: 1e-4,
          what: `prefill ${rows} @${start}`,
        });
        for (const b of [k, v, q, out]) b.destroy();
      }
      assertClose(await read(gpu, kCache, kRef.length), kRef, { what: "kCache" });
      assertClose(await read(gpu, vCache, vRef.length), vRef, { what: "vCache" });
      // The overflowing write kept its first 7 rows and dropped nothing else into the cache.
      const overflow = createStorageBuffer(gpu, "k", 20 * rowWidth * 4);
      writePositions(gpu, positions, contiguousRows(maxSeq - 3, 20));
      await run(gpu, [
        writeKvCache(gpu, {
          k: overflow,
          v: overflow,
          kCache,
          vCache,
          positions,
          rows: 20,
          nKvHeads,
          headDim,
          maxSeq,
        }),
      ]);
      reference.writeKvCache(
        new Float32Array(20 * rowWidth),
        new Float32Array(20 * rowWidth),
        kRef,
        vRef,
        maxSeq - 3,
        20,
        rowWidth,
        maxSeq,
      );
      assertClose(await read(gpu, kCache, kRef.length), kRef, { what: "kCache after overflow" });
      for (const b of [kCache, vCache, positions, overflow]) b.destroy();
    });

    await t.step(
      "rope + writeKvCache + attention: a batch of sequences in their own slots",
      async () => {
        // Three sequences prefilled one by one into slots 2, 0 and 1 (lengths 70, 5, 1), then one
        // batched decode row each, in a shuffled order: every row must see only its own slot.
        const [nHeads, nKvHeads, headDim, maxSeq, sequences] = [4, 2, 16, 80, 3];
        const rowWidth = nKvHeads * headDim;
        const shape = { nKvHeads, headDim, maxSeq, sequences };
        const slotFloats = maxSeq * rowWidth;
        const kCache = createStorageBuffer(gpu, "kCache", sequences * slotFloats * 4);
        const vCache = createStorageBuffer(gpu, "vCache", sequences * slotFloats * 4);
        const positions = createPositionBuffer(gpu, 128);
        const refs = Array.from({ length: sequences }, () => ({
          k: new Float32Array(slotFloats),
          v: new Float32Array(slotFloats),
        }));
        const step = async (rows: { sequence: number; position: number }[], seed: number) => {
          const T = rows.length;
          const kNew = randomFloats(T * rowWidth, seed + 1);
          const vNew = randomFloats(T * rowWidth, seed + 2);
          const qNew = randomFloats(T * nHeads * headDim, seed + 3, 2);
          const [k, v, q] = [upload(gpu, kNew), upload(gpu, vNew), upload(gpu, qNew)];
          const out = createStorageBuffer(gpu, "out", qNew.byteLength);
          writePositions(gpu, positions, rows);
          const layout = "interleaved" as const;
          await run(gpu, [
            rope(gpu, { qk: q, positions, rows: T, nHeads, headDim, layout }),
            rope(gpu, { qk: k, positions, rows: T, nHeads: nKvHeads, headDim, layout }),
            writeKvCache(gpu, { k, v, kCache, vCache, positions, rows: T, ...shape }),
            attention(gpu, { q, kCache, vCache, positions, out, rows: T, nHeads, ...shape }),
          ]);
          const got = await read(gpu, out, qNew.length);
          for (const [r, { sequence, position }] of rows.entries()) {
            const row = (a: Float32Array, width: number) => a.subarray(r * width, (r + 1) * width);
            const qRow = reference.rope(
              row(qNew, nHeads * headDim),
              position,
              1,
              nHeads,
              headDim,
              10000,
              layout,
            );
            const kRow = reference.rope(
              row(kNew, rowWidth),
              position,
              1,
              nKvHeads,
              headDim,
              10000,
              layout,
            );
            const ref = refs[sequence];
            reference.writeKvCache(
              kRow,
              row(vNew, rowWidth),
              ref.k,
              ref.v,
              position,
              1,
              rowWidth,
              maxSeq,
            );
            const expected = reference.attention(qRow, ref.k, ref.v, {
              start: position,
              rows: 1,
              nHeads,
              nKvHeads,
              headDim,
            });
            assertClose(row(got, nHeads * headDim), expected, {
              atol: 2e-5,
              rtol: 1e-4,
              what: `sequence ${sequence} @${position}`,
            });
          }
          for (const b of [k, v, q, out]) b.destroy();
        };
        await step(contiguousRows(0, 70, 2), 10);
        await step(contiguousRows(0, 5, 0), 20);
        await step(contiguousRows(0, 1, 1), 30);
        await step([
          { sequence: 1, position: 1 },
          { sequence: 2, position: 70 },
          { sequence: 0, position: 5 },
        ], 40);
        const kAll = await read(gpu, kCache, sequences * slotFloats);
        for (const [s, ref] of refs.entries()) {
          assertClose(kAll.subarray(s * slotFloats, (s + 1) * slotFloats), ref.k, {
            atol: 2e-5,
            rtol: 1e-5,
            what: `kCache slot ${s}`,
          });
        }
        for (const b of [kCache, vCache, positions]) b.destroy();
      },
    );

    await t.step("attention rejects heads that do not divide into kv heads, and odd heads", () => {
      const b = createStorageBuffer(gpu, "b", 4);
      const buffers = { q: b, kCache: b, vCache: b, positions: b, out: b, rows: 1, maxSeq: 1 };
      assert.throws(
        () => attention(gpu, { ...buffers, nHeads: 6, nKvHeads: 4, headDim: 8 }),
        /nHeads 6 is not a multiple of nKvHeads 4/,
      );
      assert.throws(
        () => attention(gpu, { ...buffers, nHeads: 4, nKvHeads: 4, headDim: 7 }),
        /headDim 7 must be even/,
      );
      b.destroy();
    });

    await t.step(
      "embedding, vocab-parallel, from the blocked table of every weight type",
      async () => {
        const vocab = 150; // two 128-column blocks, the second partial
        const ids = Uint32Array.from([0, 149, 10, 127, 128, 99, 100, 5, 0xffffffff, 25]);
        for (const [type, dim] of [["f32", 37], ["f16", 37], ["q8_0", 64], ["q4_0", 64]] as const) {
          const table = randomFloats(vocab * dim, 77); // [vocab, dim] as stored in a file
          // What the device holds, per row, from the file format's own specification: a row is
          // quantized along dim in 32-element blocks, as a GGUF token_embd row is.
          const ggml = type === "q8_0" ? GGML_TYPES.get(8)! : GGML_TYPES.get(2)!;
          const values = type === "f32"
            ? table
            : type === "f16"
            ? table.map((x) => f16ToF32(f32ToF16(x)))
            : (() => {
              const out = new Float32Array(table.length);
              ggml.dequantize(type === "q8_0" ? quantizeQ8_0(table) : quantizeQ4_0(table), out);
              return out;
            })();
          const idsBuf = upload(gpu, ids);
          const out = createStorageBuffer(gpu, "out", ids.length * dim * 4);
          const sum = new Float32Array(ids.length * dim);
          for (const [vocabStart, vocabCount] of [[0, 100], [100, 50], [0, vocab]]) {
            const shard = transpose(
              table.slice(vocabStart * dim, (vocabStart + vocabCount) * dim),
              vocabCount,
              dim,
            ); // [dim, vocab_r]
            const stored = type === "q8_0" || type === "q4_0"
              ? quantizeColumns(type, shard, dim, vocabCount)
              : type === "f16"
              ? Float16Array.from(blockColumns(shard, dim, vocabCount))
              : blockColumns(shard, dim, vocabCount);
            const tableBuf = upload(gpu, stored);
            await run(gpu, [
              await prepare(gpu, () =>
                embedding(gpu, {
                  table: tableBuf,
                  type,
                  ids: idsBuf,
                  out,
                  rows: ids.length,
                  dim,
                  vocabStart,
                  vocabCount,
                })),
            ]);
            const actual = await read(gpu, out, ids.length * dim);
            const owned = values.slice(vocabStart * dim, (vocabStart + vocabCount) * dim);
            const expected = reference.embedding(owned, ids, dim, vocabStart, vocabCount);
            assertClose(actual, expected, {
              atol: 0,
              rtol: 0,
              what: `${type} embedding @${vocabStart}`,
            });
            if (vocabCount < vocab) actual.forEach((x, i) => sum[i] += x);
            tableBuf.destroy();
          }
          // Summing the two shards' outputs (the all-reduce) gives the full lookup.
          assertClose(sum, reference.embedding(values, ids, dim, 0, vocab), {
            what: `${type} shard sum`,
          });
          idsBuf.destroy();
          out.destroy();
        }
      },
    );

    await t.step("topk and argmax", async () => {
      const cases = [
        { rows: 1, n: 1, k: 1 },
        { rows: 2, n: 5, k: 8 }, // padded
        { rows: 3, n: 300, k: 5 },
        { rows: 2, n: 32000, k: 40 },
        { rows: 1, n: 50257, k: MAX_TOPK },
        { rows: 4, n: 1000, k: 1 },
      ];
      for (const [c, { rows, n, k }] of cases.entries()) {
        for (const ties of [false, true]) {
          // With ties, values are coarse so many repeat: exercises the lower-index tie-break.
          const logits = randomFloats(rows * n, c * 13 + n, 10).map((x) =>
            ties ? Math.round(x) : x
          );
          if (n > 3) logits[1] = -Infinity;
          const indexOffset = c * 1000;
          const logitsBuf = upload(gpu, logits);
          const out = createStorageBuffer(gpu, "out", rows * k * 8);
          const d = await prepare(
            gpu,
            () => topk(gpu, { logits: logitsBuf, out, rows, n, k, indexOffset }),
          );
          await run(gpu, [d]);
          const actual = decodeCandidates(await read(gpu, out, rows * k * 2));
          const expected = reference.topk(logits, rows, n, k, indexOffset);
          const what = `topk rows=${rows} n=${n} k=${k} ties=${ties}`;
          assert.deepEqual(actual.indices, expected.indices, what);
          assert.deepEqual(actual.values, expected.values, what);
          await run(gpu, [argmax(gpu, { logits: logitsBuf, out, rows, n, indexOffset })]);
          const best = decodeCandidates(await read(gpu, out, rows * 2));
          const expectedBest = reference.argmax(logits, rows, n, indexOffset);
          assert.deepEqual(best.indices, expectedBest.indices, `argmax: ${what}`);
          assert.deepEqual(best.values, expectedBest.values, `argmax: ${what}`);
          logitsBuf.destroy();
          out.destroy();
        }
      }
      assert.throws(() =>
        topk(gpu, {
          logits: createStorageBuffer(gpu, "x", 4),
          out: createStorageBuffer(gpu, "x", 4),
          rows: 1,
          n: 1,
          k: MAX_TOPK + 1,
        }), RangeError);
    });
  }));
