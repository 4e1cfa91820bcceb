/**
 * The kernel profile (gpu/kernel_profile.ts): stamped dispatches are summed per label, give the
 * same results as unstamped ones, and a full query set or a second profile is reported, not
 * hidden. GPU times are only checked to be finite and non-negative: how long a kernel takes
 * belongs to the benchmark.
 */
import assert from "node:assert/strict";
import { Effect } from "effect";
import { acquireGpu, type Gpu } from "../gpu/device.ts";
import { createStorageBuffer, readF32, submitAndWait } from "../gpu/buffers.ts";
import { type Dispatch, encodeDispatches, prepareDispatch } from "../gpu/dispatch.ts";
import { KernelProfile } from "../gpu/kernel_profile.ts";

const ADD_ONE = /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>) { x[g.x] = x[g.x] * 2.0 + 1.0; }`;

const runAll = (gpu: Gpu, dispatches: Dispatch[]) => {
  const encoder = gpu.device.createCommandEncoder();
  encodeDispatches(encoder, dispatches);
  return submitAndWait(gpu, encoder);
};

Deno.test("kernel profile: per-label sums, unchanged results, full sets and a second profile reported", () =>
  Effect.runPromise(Effect.scoped(Effect.gen(function* () {
    const gpu = yield* acquireGpu({ label: "profile test" });
    if (!gpu.features.timestampQuery) {
      // The adapter cannot stamp: starting must say so, typed.
      const failure = yield* Effect.flip(KernelProfile.start(gpu));
      assert.match(failure.message, /timestamp-query/);
      return;
    }
    const buffers = [0, 1].map(() => createStorageBuffer(gpu, "x", new Float32Array(64).fill(1)));
    const step = (x: GPUBuffer, label: string) =>
      prepareDispatch(gpu, { label, code: ADD_ONE, buffers: [x], workgroups: [1] });
    const sequence = (x: GPUBuffer) => [step(x, "a"), step(x, "b"), step(x, "a")];

    // Unprofiled on buffer 0, profiled on buffer 1: the same three steps, the same values.
    yield* runAll(gpu, sequence(buffers[0]));
    const profile = yield* KernelProfile.start(gpu, 3);
    const again = yield* Effect.flip(KernelProfile.start(gpu));
    assert.match(again.message, /already running/);
    yield* runAll(gpu, sequence(buffers[1]));
    const { kernels, dropped } = yield* profile.collect();
    assert.deepEqual(kernels.map((k) => [k.label, k.dispatches]), [["a", 2], ["b", 1]]);
    for (const k of kernels) assert.ok(Number.isFinite(k.millis) && k.millis >= 0, k.label);
    assert.equal(dropped, 0);
    const [plain, stamped] = [
      yield* readF32(gpu, buffers[0], 64),
      yield* readF32(gpu, buffers[1], 64),
    ];
    assert.deepEqual(stamped, plain);
    assert.equal(plain[0], 15); // ((1·2 + 1)·2 + 1)·2 + 1

    // A collect starts over; past the capacity dispatches still run, unstamped, and are counted.
    yield* runAll(gpu, [...sequence(buffers[1]), step(buffers[1], "c")]);
    const full = yield* profile.collect();
    assert.deepEqual(full.kernels.map((k) => [k.label, k.dispatches]), [["a", 2], ["b", 1]]);
    assert.equal(full.dropped, 1);
    assert.equal((yield* readF32(gpu, buffers[1], 64))[0], 255);
    profile.stop();
    // Stopped: nothing is stamped any more, and a new profile may start.
    yield* runAll(gpu, [step(buffers[1], "a")]);
    const next = yield* KernelProfile.start(gpu);
    assert.deepEqual((yield* next.collect()).kernels, []);
    next.stop();
    for (const b of buffers) b.destroy();
  }))));
