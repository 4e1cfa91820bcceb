/**
 * `deno task bench collectives`: all-reduce and all-gather latency (p50/p99, as rank 0 sees it)
 * for 4 KiB … 4 MiB at 2 and 4 ranks over each transport, beside a host memcpy of the same size
 * measured in the same run; the shared-memory one-shot vs reduce-scatter/all-gather crossover
 * (which sets `DEFAULT_ONE_SHOT_MAX_BYTES`); and greedy decode tok/s at tp 1, 2, 4 per transport.
 */
import { Effect, type Layer } from "effect";
import { InProcessTransport } from "../ranks/transports.ts";
import { expectReplies, Supervisor } from "../actors/supervisor.ts";
import { TcpTransport } from "../actors/tcp.ts";
import type { Transport } from "../actors/transport.ts";
import { WorkersTransport } from "../ranks/transports.ts";
import { LlamaModel } from "../models/llama.ts";
import { machine, writeSection } from "./report.ts";
import { STORIES260K_PATH } from "../assets/paths.ts";

const SIZES = [4 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20];
const WORLDS = [2, 4];
const TRANSPORTS: ReadonlyArray<[string, () => Layer.Layer<Transport>]> = [
  ["inprocess", () => InProcessTransport()],
  ["workers", () => WorkersTransport()],
  ["tcp", () => TcpTransport()],
];

const percentile = (xs: readonly number[], p: number) => {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
};
const stats = (xs: readonly number[]) => ({ p50: percentile(xs, 0.5), p99: percentile(xs, 0.99) });
const iterationsFor = (bytes: number) => (bytes >= 1 << 20 ? 20 : 100);

/** p50 of copying `bytes` once on the host: the floor under any host-combined collective. */
const memcpy = (bytes: number) => {
  const a = new Uint8Array(bytes).fill(1), b = new Uint8Array(bytes);
  const xs = Array.from({ length: 50 }, () => {
    const t = performance.now();
    b.set(a);
    return performance.now() - t;
  });
  return percentile(xs, 0.5);
};

const timeCollectives = (layer: Layer.Layer<Transport>, world: number) =>
  Effect.gen(function* () {
    const supervisor = yield* Supervisor.make({ tp: world });
    const rows = [];
    for (const bytes of SIZES) {
      const row = {} as { allReduce: Stats; allGather: Stats };
      for (const op of ["allReduce", "allGather"] as const) {
        const iterations = iterationsFor(bytes);
        const [rank0] = yield* supervisor.step((_, step) => ({
          _tag: "TimeCollective",
          step,
          op,
          bytes,
          iterations: iterations + 3,
        })).pipe(Effect.flatMap(expectReplies("Timings")));
        row[op] = stats(rank0.millis.slice(3)); // the first calls warm up buffers and JIT
      }
      rows.push({ bytes, ...row });
    }
    return rows;
  }).pipe(Effect.scoped, Effect.provide(layer));

const decodeTokPerS = (layer: Layer.Layer<Transport>, tp: number) =>
  Effect.gen(function* () {
    const path = STORIES260K_PATH;
    const model = yield* LlamaModel.load({ source: { format: "llama2c", path }, tp });
    let token = 1, started = 0;
    const steps = 48;
    for (let pos = 0; pos < steps + 8; pos++) {
      if (pos === 8) started = performance.now(); // the first steps compile pipelines
      yield* model.forward([token], pos);
      token = (yield* model.candidates(1, 0)).indices[0];
    }
    return steps / ((performance.now() - started) / 1000);
  }).pipe(Effect.scoped, Effect.provide(layer));

type Stats = { p50: number; p99: number };
type LatencyRow = {
  transport: string;
  world: number;
  bytes: number;
  allReduce: Stats;
  allGather: Stats;
};

const size = (b: number) => (b >= 1 << 20 ? `${b >> 20} MiB` : `${b >> 10} KiB`);
const ms = (s: { p50: number; p99: number }) => `${s.p50.toFixed(3)} / ${s.p99.toFixed(3)}`;

export const collectivesBench = Effect.gen(function* () {
  const floor = Object.fromEntries(SIZES.map((b) => [b, memcpy(b)]));
  const latency: LatencyRow[] = [];
  for (const [transport, layer] of TRANSPORTS) {
    for (const world of WORLDS) {
      console.error(`collectives: ${transport}, ${world} ranks`);
      for (const row of yield* timeCollectives(layer(), world)) {
        latency.push({ transport, world, ...row });
      }
    }
  }
  const crossover: { world: number; bytes: number; oneShot: Stats; twoPass: Stats }[] = [];
  for (const world of WORLDS) {
    console.error(`collectives: shared-memory crossover, ${world} ranks`);
    const oneShot = yield* timeCollectives(
      WorkersTransport({ sharedMemory: { oneShotMaxBytes: 2 ** 31 - 1 } }),
      world,
    );
    const twoPass = yield* timeCollectives(
      WorkersTransport({ sharedMemory: { oneShotMaxBytes: 0 } }),
      world,
    );
    oneShot.forEach((row, i) =>
      crossover.push({
        world,
        bytes: row.bytes,
        oneShot: row.allReduce,
        twoPass: twoPass[i].allReduce,
      })
    );
  }
  const decode: { transport: string; tp: number; tokPerS: number }[] = [];
  for (const [transport, layer] of TRANSPORTS) {
    for (const tp of [1, 2, 4]) {
      console.error(`decode: ${transport}, tp ${tp}`);
      decode.push({ transport, tp, tokPerS: yield* decodeTokPerS(layer(), tp) });
    }
  }

  const markdown = [
    "## Collectives (`deno task bench collectives`)",
    "",
    `Measured ${machine()}. Latency as rank 0 sees it, p50 / p99 ms; the floor is one host`,
    "memcpy of the same size in the same run. Every rank shares the same cores.",
    "",
    "| transport | ranks | size | allReduce | allGather | memcpy floor |",
    "| --- | --- | --- | --- | --- | --- |",
    ...latency.map((r) =>
      `| ${r.transport} | ${r.world} | ${size(r.bytes)} | ${ms(r.allReduce)} | ` +
      `${ms(r.allGather)} | ${(floor[r.bytes] * 1000).toFixed(1)} µs |`
    ),
    "",
    "Shared memory (Workers), all-reduce: one-shot (every rank sums every slot) against",
    "reduce-scatter + all-gather (each rank sums 1/N, then copies the result), p50 / p99 ms:",
    "",
    "| ranks | size | one-shot | reduce-scatter + all-gather |",
    "| --- | --- | --- | --- |",
    ...crossover.map((r) =>
      `| ${r.world} | ${size(r.bytes)} | ${ms(r.oneShot)} | ${ms(r.twoPass)} |`
    ),
    "",
    "Greedy decode, stories260K (48 tokens after 8 warm-up steps), tok/s:",
    "",
    "| transport | tp 1 | tp 2 | tp 4 |",
    "| --- | --- | --- | --- |",
    ...TRANSPORTS.map(([t]) =>
      `| ${t} | ${
        decode.filter((d) => d.transport === t).map((d) => d.tokPerS.toFixed(1)).join(" | ")
      } |`
    ),
  ].join("\n");
  yield* Effect.promise(() =>
    writeSection("collectives", markdown, { floor, latency, crossover, decode })
  );
  console.log(markdown);
});
