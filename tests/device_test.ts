import assert from "node:assert/strict";
import { Effect, Either } from "effect";
import { acquireGpu } from "../gpu/device.ts";
import { createStorageBuffer, readF32 } from "../gpu/buffers.ts";
import { computePipeline } from "../gpu/pipelines.ts";

Deno.test("no adapter is a NoAdapterError that says what to install", async () => {
  const gpu = navigator.gpu;
  const original = gpu.requestAdapter;
  gpu.requestAdapter = () => Promise.resolve(null);
  try {
    const outcome = await Effect.runPromise(
      Effect.either(Effect.scoped(acquireGpu({ backend: "deno", label: "none" }))),
    );
    assert.ok(Either.isLeft(outcome));
    assert.equal(outcome.left._tag, "NoAdapterError");
    assert.match(outcome.left.message, /bookworm-backports/);
    assert.match(outcome.left.message, /mesa-vulkan-drivers/);
  } finally {
    gpu.requestAdapter = original;
  }
});

for (const backend of ["dawn", "deno"] as const) {
  Deno.test(`${backend}: a device uploads and reads back, and is destroyed with its scope`, async () => {
    const { data, lost } = await Effect.runPromise(Effect.scoped(Effect.gen(function* () {
      const gpu = yield* acquireGpu({ backend, label: backend });
      assert.equal(gpu.backend, backend);
      const buffer = createStorageBuffer(gpu, "x", new Float32Array([1.5, -2, 3]));
      return { data: yield* readF32(gpu, buffer, 3), lost: gpu.whenLost };
    })));
    assert.deepEqual([...data], [1.5, -2, 3]);
    assert.equal((await lost).reason, "destroyed");
  });
}

Deno.test("a device error (a kernel that does not compile) fails the next wait with its message", async () => {
  const outcome = await Effect.runPromise(Effect.scoped(Effect.gen(function* () {
    const gpu = yield* acquireGpu({ label: "broken kernel" });
    const buffer = createStorageBuffer(gpu, "x", new Float32Array([1, 2]));
    const good = yield* readF32(gpu, buffer, 2);
    computePipeline(gpu, "broken", "fn main( {");
    return { good: [...good], after: yield* Effect.either(readF32(gpu, buffer, 2)) };
  })));
  assert.deepEqual(outcome.good, [1, 2]);
  assert.ok(Either.isLeft(outcome.after), "the read after the error must fail");
  assert.equal(outcome.after.left._tag, "GpuOperationError");
  assert.match(outcome.after.left.message, /the GPU device reported an error: .*WGSL/s);
});
