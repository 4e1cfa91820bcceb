/**
 * GPU waits leave nothing behind: no reaction on the device's loss promise per wait, and (on
 * Dawn) no unbounded pile of dead Dawn objects for one long collection pause (gpu/collector.ts).
 */
import assert from "node:assert/strict";
import { Effect, Either } from "effect";
import { acquireGpu } from "../gpu/device.ts";
import { createStorageBuffer, Readback } from "../gpu/buffers.ts";
import {
  canCollect,
  COLLECT_AFTER_OBJECTS,
  collectorState,
  OBJECTS_PER_ENCODER,
} from "../gpu/collector.ts";

const readbacks = (backend: "dawn" | "deno", count: number) =>
  Effect.gen(function* () {
    const gpu = yield* acquireGpu({ backend, label: `${backend} waits` });
    const source = createStorageBuffer(
      gpu,
      "source",
      Float32Array.from({ length: 64 }, (_, i) => i),
    );
    const readback = new Readback(gpu, 256);
    const target = new Uint8Array(256);
    for (let i = 0; i < count; i++) yield* readback.read(source, target);
    return { gpu, values: [...new Float32Array(target.buffer)] };
  });

for (const backend of ["dawn", "deno"] as const) {
  Deno.test(`${backend}: settled waits leave no loss watcher registered`, async () => {
    const { pending, values } = await Effect.runPromise(Effect.scoped(Effect.gen(function* () {
      const { gpu, values } = yield* readbacks(backend, backend === "dawn" ? 300 : 30);
      return { pending: gpu.pendingWaits(), values };
    })));
    assert.deepEqual(values, Array.from({ length: 64 }, (_, i) => i));
    assert.equal(pending, 0);
  });

  Deno.test(`${backend}: a wait pending when the device is lost fails with DeviceLostError`, async () => {
    const outcome = await Effect.runPromise(Effect.scoped(Effect.gen(function* () {
      const gpu = yield* acquireGpu({ backend, label: `${backend} lost` });
      const source = createStorageBuffer(gpu, "source", new Float32Array(1 << 20));
      const readback = new Readback(gpu, 4 << 20);
      const read = readback.read(source, new Uint8Array(4 << 20));
      const waiting = Effect.runPromise(Effect.either(read));
      gpu.device.destroy();
      const result = yield* Effect.promise(() => waiting);
      return { result, pending: gpu.pendingWaits() };
    })));
    assert.ok(Either.isLeft(outcome.result), "the read must fail");
    assert.equal(outcome.result.left._tag, "DeviceLostError");
    assert.equal(outcome.pending, 0);
  });
}

Deno.test("dawn: dead Dawn objects are collected in small batches, never piled up", async () => {
  assert.ok(canCollect(), "the test task runs Deno with --v8-flags=--expose-gc");
  const before = collectorState();
  await Effect.runPromise(Effect.scoped(readbacks("dawn", 6000)));
  // FinalizationRegistry callbacks run in a later task.
  await new Promise((resolve) => setTimeout(resolve, 20));
  const after = collectorState();
  // ~4 Dawn objects per readback, one collection every COLLECT_AFTER_OBJECTS.
  const bound = COLLECT_AFTER_OBJECTS / OBJECTS_PER_ENCODER;
  assert.ok(
    after.uncollectedEncoders <= bound,
    `${after.uncollectedEncoders} encoders await collection (bound ${bound})`,
  );
  assert.ok(after.collections - before.collections >= 20, `collections: ${after.collections}`);
});
