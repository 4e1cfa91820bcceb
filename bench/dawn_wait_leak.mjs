/**
 * Native memory per GPU wait, under Deno and under Node (the same file runs in both): a loop of
 * readbacks (encoder, empty pass, copy, submit, mapAsync, unmap) on one Dawn device, with a
 * full GC every 300, counting dawn.node's polls (its calls to `setImmediate`). Prints the RSS
 * growth per readback and per poll after a warm-up of 6000.
 *
 *   deno run -A --v8-flags=--expose-gc bench/dawn_wait_leak.mjs [readbacks]
 *   node --expose-gc bench/dawn_wait_leak.mjs [readbacks]      (needs node_modules/webgpu)
 */
import { create } from "webgpu";

const runtime = globalThis.Deno ? `deno ${Deno.version.deno}` : `node ${process.versions.node}`;
const rssMB = () => (globalThis.Deno ? Deno.memoryUsage() : process.memoryUsage()).rss / 1e6;
const total = Number((globalThis.Deno ? Deno.args : process.argv.slice(2))[0] ?? 30000);
const WARMUP = 6000;

let polls = 0;
const setImmediateOriginal = globalThis.setImmediate;
globalThis.setImmediate = (fn, ...args) => {
  polls++;
  return setImmediateOriginal(fn, ...args);
};

const gpu = create([]); // kept: dawn.node crashes once its instance is collected (bench/dawn_soak.ts)
const adapter = await gpu.requestAdapter();
const device = await adapter.requestDevice();
const source = device.createBuffer({ size: 4096, usage: 0x0080 | 0x0004 | 0x0008 });
const staging = device.createBuffer({ size: 4096, usage: 0x0001 | 0x0008 });
let rssAtWarmup = 0, pollsAtWarmup = 0;
for (let i = 1; i <= total; i++) {
  const encoder = device.createCommandEncoder();
  encoder.beginComputePass().end();
  encoder.copyBufferToBuffer(source, 0, staging, 0, 4096);
  device.queue.submit([encoder.finish()]);
  await staging.mapAsync(1);
  staging.unmap();
  if (i % 300 === 0) {
    globalThis.gc();
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
  if (i === WARMUP) [rssAtWarmup, pollsAtWarmup] = [rssMB(), polls];
}
globalThis.gc();
const grown = (rssMB() - rssAtWarmup) * 1e6;
const counted = total - WARMUP, pollsCounted = polls - pollsAtWarmup;
console.log(
  `${runtime}: ${counted} readbacks, ${pollsCounted} polls: RSS +${(grown / 1e6).toFixed(1)} MB, ` +
    `${(grown / counted).toFixed(0)} B per readback, ${
      (grown / pollsCounted).toFixed(0)
    } B per poll`,
);
(globalThis.Deno ?? process).exit(0);
