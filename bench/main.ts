/**
 * `deno task bench`: measures on this machine, in one run, and writes docs/BENCHMARKS.md (and
 * docs/benchmarks.json). Timings live here, never in tests.
 */
import { Effect } from "effect";
import { InProcessTransport } from "../actors/inprocess.ts";
import { Supervisor } from "../actors/supervisor.ts";
import { WorkersTransport } from "../actors/workers.ts";
import { LlamaModel } from "../models/llama.ts";
import { fileURLToPath } from "node:url";
import { stepCommunicator } from "../collectives/communicator.ts";
import { InProcessGroup } from "../collectives/inprocess.ts";
import { tensor } from "../collectives/tensor.ts";
import { createStorageBuffer, submitAndWait } from "../gpu/buffers.ts";
import { acquireGpu } from "../gpu/device.ts";
import { encodeDispatches } from "../gpu/dispatch.ts";
import { matmul } from "../kernels/matmul.ts";
import { collectivesBench } from "./collectives.ts";
import { writeSection } from "./report.ts";

const percentile = (samples: number[], p: number) => {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
};

const time = <A, E>(runs: number, body: () => Effect.Effect<A, E>) =>
  Effect.gen(function* () {
    yield* body(); // warm-up: pipelines, buffers
    const samples: number[] = [];
    for (let i = 0; i < runs; i++) {
      const t0 = performance.now();
      yield* body();
      samples.push(performance.now() - t0);
    }
    return { p50: percentile(samples, 0.5), p99: percentile(samples, 0.99) };
  });

const hostMemcpy = () => {
  const a = new Float32Array(16 << 20), b = new Float32Array(16 << 20);
  b.set(a);
  const t0 = performance.now();
  for (let i = 0; i < 10; i++) b.set(a);
  return (10 * a.byteLength) / ((performance.now() - t0) / 1000) / 1e9;
};

const matmulRows = Effect.scoped(Effect.gen(function* () {
  const gpu = yield* acquireGpu({ label: "bench" });
  const rows = [];
  for (const [m, k, n] of [[1, 1024, 4096], [1, 4096, 1024], [64, 1024, 4096], [128, 768, 2048]]) {
    const a = createStorageBuffer(gpu, "a", m * k * 4);
    const b = createStorageBuffer(gpu, "b", k * n * 4);
    const out = createStorageBuffer(gpu, "out", m * n * 4);
    const d = matmul(gpu, { a, b, out, m, k, n });
    const t = yield* time(20, () => {
      const encoder = gpu.device.createCommandEncoder();
      encodeDispatches(encoder, [d]);
      return submitAndWait(gpu, encoder);
    });
    rows.push({
      shape: `${m}×${k}·${k}×${n}`,
      ms: t.p50,
      gflops: (2 * m * k * n) / (t.p50 / 1000) / 1e9,
      weightGBs: (k * n * 4) / (t.p50 / 1000) / 1e9,
    });
    [a, b, out].forEach((x) => x.destroy());
  }
  return { adapter: `${gpu.backend}: ${gpu.adapterName}`, rows };
}));

const collectiveRows = Effect.gen(function* () {
  const rows = [];
  for (const world of [2, 4]) {
    for (const bytes of [4 << 10, 64 << 10, 1 << 20, 4 << 20]) {
      const group = new InProcessGroup(world);
      let step = 0;
      const data = Array.from(
        { length: world },
        () => tensor([bytes / 4], new Float32Array(bytes / 4)),
      );
      const run = (op: "allReduce" | "allGather") => () =>
        Effect.all(
          data.map((t, r) => {
            const c = stepCommunicator(group, r, step);
            return op === "allReduce" ? c.allReduce(t) : c.allGather(t, 0);
          }),
          { concurrency: "unbounded" },
        ).pipe(Effect.tap(() => step++));
      const reduce = yield* time(30, run("allReduce"));
      const gather = yield* time(30, run("allGather"));
      rows.push({ world, bytes, allReduce: reduce, allGather: gather });
    }
  }
  return rows;
});

const mlpRows = Effect.gen(function* () {
  const [rows, dim, hidden] = [64, 1024, 4096];
  const out = [];
  const x = tensor([rows, dim], new Float32Array(rows * dim).fill(0.01));
  const a = tensor([dim, hidden], new Float32Array(dim * hidden).fill(0.01));
  const b = tensor([hidden, dim], new Float32Array(hidden * dim).fill(0.01));
  for (
    const [transport, tp] of [["inprocess", 1], ["inprocess", 2], ["workers", 2], [
      "workers",
      4,
    ]] as const
  ) {
    const layer = transport === "inprocess" ? InProcessTransport() : WorkersTransport();
    const t = yield* Effect.scoped(Effect.gen(function* () {
      const s = yield* Supervisor.make({ tp });
      yield* s.load({ _tag: "ParallelMlp", name: "mlp", dim, hidden, activation: "gelu" }, [a, b]);
      return yield* time(5, () => s.forward("mlp", x));
    })).pipe(Effect.provide(layer));
    out.push({ transport, tp, ...t });
  }
  return out;
});

/** Greedy decode of the shared stories260K: tok/s per tp and transport (prefill excluded). */
const decodeRows = Effect.gen(function* () {
  const path = fileURLToPath(new URL("../../shared/models/stories260K.bin", import.meta.url));
  const rows = [];
  for (
    const [transport, tp] of [["inprocess", 1], ["workers", 1], ["workers", 2], [
      "workers",
      4,
    ]] as const
  ) {
    const layer = transport === "inprocess" ? InProcessTransport() : WorkersTransport();
    const tokPerS = yield* Effect.scoped(Effect.gen(function* () {
      const model = yield* LlamaModel.load({ source: { format: "llama2c", path }, tp });
      let token = 1;
      const steps = 64;
      let started = 0;
      for (let pos = 0; pos < steps + 8; pos++) {
        if (pos === 8) started = performance.now(); // the first steps compile pipelines
        yield* model.forward([token], pos);
        token = (yield* model.candidates(1, 0)).indices[0];
      }
      return steps / ((performance.now() - started) / 1000);
    })).pipe(Effect.provide(layer));
    rows.push({ transport, tp, tokPerS });
  }
  return rows;
});

const program = Effect.gen(function* () {
  const memcpy = hostMemcpy();
  const decode = yield* decodeRows;
  const mm = yield* matmulRows;
  const coll = yield* collectiveRows;
  const mlp = yield* mlpRows;
  const kb = (b: number) => (b >= 1 << 20 ? `${b >> 20} MiB` : `${b >> 10} KiB`);
  const md = [
    "## Kernels, collectives in one isolate, MLP, decode (`deno task bench`)",
    "",
    `Written by \`deno task bench\` on ${
      new Date().toISOString().slice(0, 10)
    }: ${Deno.build.os}/${Deno.build.arch}, ` +
    `${navigator.hardwareConcurrency} cores, adapter ${mm.adapter}. Host memcpy: ${
      memcpy.toFixed(1)
    } GB/s.`,
    "",
    "### Matmul (one dispatch, submit + wait, p50)",
    "",
    "| shape | ms | GFLOP/s | weight GB/s |",
    "| --- | --- | --- | --- |",
    ...mm.rows.map((r) =>
      `| ${r.shape} | ${r.ms.toFixed(2)} | ${r.gflops.toFixed(1)} | ${r.weightGBs.toFixed(2)} |`
    ),
    "",
    "### In-process collectives (host combine, all ranks, p50 / p99 ms)",
    "",
    "| ranks | size | allReduce | allGather |",
    "| --- | --- | --- | --- |",
    ...coll.map((r) =>
      `| ${r.world} | ${kb(r.bytes)} | ${r.allReduce.p50.toFixed(3)} / ${
        r.allReduce.p99.toFixed(3)
      } | ` +
      `${r.allGather.p50.toFixed(3)} / ${r.allGather.p99.toFixed(3)} |`
    ),
    "",
    "### Parallel MLP forward, X 64×1024, A 1024×4096, B 4096×1024 (p50 / p99 ms)",
    "",
    "| transport | tp | ms |",
    "| --- | --- | --- |",
    ...mlp.map((r) => `| ${r.transport} | ${r.tp} | ${r.p50.toFixed(1)} / ${r.p99.toFixed(1)} |`),
    "",
    "### Greedy decode, stories260K (dim 64, 5 layers; 64 tokens after 8 warm-up steps)",
    "",
    "| transport | tp | tok/s |",
    "| --- | --- | --- |",
    ...decode.map((r) => `| ${r.transport} | ${r.tp} | ${r.tokPerS.toFixed(1)} |`),
    "",
    "All ranks share one physical adapter here (lavapipe on the CPU cores), so tp > 1 splits",
    "the same cores: these figures show overheads, not a multi-GPU speed-up.",
    "",
  ].join("\n");
  yield* Effect.promise(() => writeSection("main", md, { memcpy, mm, coll, mlp, decode }));
  console.log(md);
});

if (Deno.args[0] === "collectives") await Effect.runPromise(collectivesBench);
else await Effect.runPromise(program);
