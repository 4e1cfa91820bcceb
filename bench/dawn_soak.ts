/**
 * Soak test for the Dawn backend under Deno: one device, a copy and an async wait per iteration.
 * It runs clean for as long as the `GPU` object from `create()` stays reachable (gpu/device.ts
 * keeps it for the isolate's life). With `--drop-gpu` the script lets it be collected, and
 * dawn.node then crashes within a few hundred waits: its event polling (scheduled through
 * setImmediate) calls into the freed instance. `--gc` collects every 100 waits to show it sooner.
 *
 *   deno run -A --v8-flags=--expose-gc bench/dawn_soak.ts [--gc] [--done] [--drop-gpu] [--iterations N]
 */
import { parseArgs } from "node:util";
import { create } from "webgpu";
import { withoutDawnLimitNotices } from "../gpu/dawn_limit_notices.ts";

const { values } = parseArgs({
  options: {
    gc: { type: "boolean", default: false },
    done: { type: "boolean", default: false },
    iterations: { type: "string", default: "10000" },
    "drop-gpu": { type: "boolean", default: false },
  },
});
const gpu: GPU | undefined = values["drop-gpu"] ? undefined : create([]);
const adapter = await withoutDawnLimitNotices(() => (gpu ?? create([])).requestAdapter());
if (!adapter) throw new Error("no Dawn adapter");
const device = await adapter.requestDevice();
const source = device.createBuffer({ size: 4096, usage: 0x0080 | 0x0004 | 0x0008 });
const staging = device.createBuffer({ size: 4096, usage: 0x0001 | 0x0008 });
const collect = (globalThis as { gc?: () => void }).gc;
for (let i = 1; i <= Number(values.iterations); i++) {
  const encoder = device.createCommandEncoder();
  encoder.copyBufferToBuffer(source, 0, staging, 0, 4096);
  device.queue.submit([encoder.finish()]);
  if (values.done) {
    await device.queue.onSubmittedWorkDone();
  } else {
    await staging.mapAsync(1);
    staging.unmap();
  }
  if (values.gc && i % 100 === 0) collect?.();
  if (i % 500 === 0) console.log(`${i} waits`);
}
console.log(`done${gpu ? "" : " (GPU object dropped)"}`);
device.destroy();
