/**
 * What loading one rank's weights costs in host memory, run in a process of its own so the
 * figures are the load's alone:
 *
 *   deno run -A --v8-flags=--expose-gc bench/load_memory.ts MODEL TP RANK [WEIGHTS]
 *
 * prints one JSON line: the rank's share of the file (the bytes of the slices it reads, each
 * tensor counted once), the device bytes it uploaded, and the growth of resident memory while
 * `RankLlama.load` ran. Memory is the process's anonymous and shared pages (`RssAnon` +
 * `RssShmem`), sampled every few milliseconds: the data a load makes. File-backed pages (the
 * runtime's own code, paged in as new paths run) are left out, and reported apart as the kernel's
 * whole-RSS high-water mark. On lavapipe device buffers are shared host memory, so the growth
 * includes them; on a discrete GPU only the rest (growth − device bytes) stays on the host. The
 * model loads with a 16-position context, so its KV cache does not count.
 */
import { Effect } from "effect";
import { acquireGpu } from "../gpu/device.ts";
import type { WeightType } from "../kernels/matmul.ts";
import { modelSourceOf } from "../models/files.ts";
import { ggufTensorOf, openGguf } from "../models/gguf/open.ts";
import { RankLlama } from "../models/llama_rank.ts";
import { planLlama } from "../models/plan.ts";
import type { WeightSource } from "../models/shards.ts";
import { openModelSource } from "../models/source.ts";

/** One line of the child's output. */
export interface LoadMemory {
  readonly shareBytes: number;
  readonly deviceBytes: number;
  /** Peak growth of anonymous + shared resident pages during the load (sampled). */
  readonly peakGrowthBytes: number;
  /** Growth of anonymous + shared resident pages once the load is done. */
  readonly retainedBytes: number;
  /** Growth of the kernel's whole-RSS high-water mark (file-backed pages included). */
  readonly hwmGrowthBytes: number;
  readonly weightType: WeightType;
  readonly loadMs: number;
}

const SAMPLE_MS = 2;

/** kB fields of /proc/self/status. */
const status = (): Record<string, number> =>
  Object.fromEntries(
    Deno.readTextFileSync("/proc/self/status").split("\n").flatMap((line) => {
      const match = /^(\w+):\s+(\d+) kB/.exec(line);
      return match ? [[match[1], Number(match[2]) * 1024]] : [];
    }),
  );

const dataBytes = (s = status()) => s.RssAnon + s.RssShmem;

/** The source, counting per tensor the elements the rank reads. */
const countingSource = (source: WeightSource) => {
  const elements = new Map<string, number>();
  const count = <E>(name: string, read: Effect.Effect<Float32Array, E>) =>
    Effect.tap(read, (d) => {
      elements.set(name, (elements.get(name) ?? 0) + d.length);
    });
  const counted: WeightSource = {
    rows: (name, start, n) => count(name, source.rows(name, start, n)),
    columns: (name, start, n, rows) => count(name, source.columns(name, start, n, rows)),
    vector: (name, length) => count(name, source.vector(name, length)),
  };
  return { counted, elements };
};

/** A GGUF file's bytes per element by our tensor name; f32 for other formats. */
const fileBytesPerElement = (path: string, format: string) =>
  format !== "gguf" ? Effect.succeed(() => 4) : Effect.map(
    openGguf(path),
    ({ gguf, config }) => (name: string) => {
      const t = ggufTensorOf(gguf, name, config);
      return t ? t.type.blockBytes / t.type.blockElements : 4;
    },
  );

const measure = (path: string, tp: number, rank: number, weights?: WeightType) =>
  Effect.scoped(Effect.gen(function* () {
    const modelSource = yield* modelSourceOf(path);
    const opened = yield* openModelSource(modelSource);
    const { config } = opened;
    const plan = (yield* planLlama(config, tp))[rank];
    const gpu = yield* acquireGpu({ label: "load memory" });
    const weightType = weights ?? opened.defaultWeights ?? "f32";
    const { counted, elements } = countingSource(opened.source);
    const bytesPerElement = yield* fileBytesPerElement(modelSource.path, modelSource.format);
    (globalThis as { gc?: () => void }).gc?.();
    Deno.writeTextFileSync("/proc/self/clear_refs", "5"); // resets VmHWM
    const before = status();
    let peak = dataBytes(before);
    const sampler = setInterval(() => (peak = Math.max(peak, dataBytes())), SAMPLE_MS);
    const started = performance.now();
    // A 16-position context, so the KV cache (sized by the context) is not what is measured.
    const model = yield* RankLlama.load(gpu, { ...config, seqLen: 16 }, plan, counted, {
      maxTokens: 1,
      maxSequences: 1,
      weights: weightType,
    }).pipe(Effect.ensuring(Effect.sync(() => clearInterval(sampler))));
    const loadMs = performance.now() - started;
    const after = status();
    peak = Math.max(peak, dataBytes(after));
    // A tied classifier reads the embedding's rows again: the file holds them once.
    if (config.sharedClassifier) elements.delete("output");
    let shareBytes = 0;
    for (const [name, n] of elements) shareBytes += n * bytesPerElement(name);
    const result: LoadMemory = {
      shareBytes,
      deviceBytes: model.weightBytes,
      peakGrowthBytes: peak - dataBytes(before),
      retainedBytes: dataBytes(after) - dataBytes(before),
      hwmGrowthBytes: after.VmHWM - before.VmRSS,
      weightType,
      loadMs,
    };
    return result;
  }));

if (import.meta.main) {
  const [path, tp, rank, weights] = Deno.args;
  const result = await Effect.runPromise(
    measure(path, Number(tp), Number(rank), weights as WeightType | undefined),
  );
  console.log(JSON.stringify(result));
  Deno.exit(0);
}
