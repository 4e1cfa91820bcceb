import assert from "node:assert/strict";
import { Either } from "effect";
import { combine } from "../collectives/combine.ts";
import type { CollectiveOp } from "../collectives/protocol.ts";
import { createSharedRegion, markRankDead } from "../collectives/shared_memory.ts";
import { type HostTensor, tensor } from "../collectives/tensor.ts";
import type { Job } from "./fixtures/shared_memory_rank.ts";
import { randomFloats } from "./tolerance.ts";

type Outcome =
  | { ok: true; shape: number[]; data: Uint8Array }
  | { ok: false; tag: string; message: string };

interface Call {
  op: CollectiveOp;
  arg: number;
  /** The shape rank r contributes. */
  shape: (rank: number) => number[];
}

const size = (shape: number[]) => shape.reduce((a, b) => a * b, 1);
const input = (call: Call, index: number, rank: number) =>
  tensor(call.shape(rank), randomFloats(size(call.shape(rank)), 1000 * index + rank));

/**
 * Runs `calls` on ranks `running` of a region, each rank in its own Worker: two per step, or
 * with `perStep: 1` one per step (every collective then has seq 0, as a pipeline of one-
 * collective steps gives).
 */
const runRanks = async (
  buffer: SharedArrayBuffer,
  world: number,
  calls: readonly Call[],
  { running = [...Array(world).keys()], timeoutMs = 10_000, perStep = 2 } = {},
): Promise<Outcome[][]> => {
  const workers = running.map(() =>
    new Worker(new URL("./fixtures/shared_memory_rank.ts", import.meta.url), { type: "module" })
  );
  try {
    const outcomes = await Promise.all(workers.map((worker, i) => {
      const rank = running[i];
      const results: Outcome[] = [];
      return new Promise<Outcome[]>((resolve, reject) => {
        worker.onerror = (e) => {
          e.preventDefault();
          reject(new Error(e.message));
        };
        worker.onmessage = (e: MessageEvent<Outcome>) => {
          results.push(e.data);
          if (results.length === calls.length) resolve(results);
        };
        const job: Job = {
          buffer,
          worldSize: world,
          rank,
          timeoutMs,
          calls: calls.map((call, index) => ({
            step: Math.floor(index / perStep),
            seq: index % perStep,
            op: call.op,
            arg: call.arg,
            shape: call.shape(rank),
            data: input(call, index, rank).data,
          })),
        };
        worker.postMessage(job);
      });
    }));
    return outcomes;
  } finally {
    for (const w of workers) w.terminate();
  }
};

const expected = (call: Call, index: number, world: number): readonly HostTensor[] => {
  const tensors = Array.from({ length: world }, (_, r) => input(call, index, r));
  return Either.getOrThrow(combine({ op: call.op, arg: call.arg, tensors }));
};

const CALLS: readonly Call[] = [
  { op: "allReduce", arg: 0, shape: () => [2, 24] }, // one-shot
  { op: "allReduce", arg: 0, shape: () => [1, 100_003] }, // 400 KB: reduce-scatter + all-gather
  { op: "allGather", arg: 1, shape: (r) => [3, 5 + r] }, // uneven parts
  { op: "reduceScatter", arg: 0, shape: () => [10, 3] },
  { op: "broadcast", arg: 1, shape: () => [7] },
  { op: "barrier", arg: 0, shape: () => [0] },
  { op: "allReduce", arg: 0, shape: () => [4096] },
  { op: "allReduce", arg: 0, shape: () => [300_000] },
];

Deno.test("shared-memory collectives equal the reference combine, bit for bit (2, 3, 4 ranks)", async () => {
  for (const world of [2, 3, 4]) {
    const buffer = createSharedRegion(world, { slotBytes: 2 * 1024 * 1024 });
    const outcomes = await runRanks(buffer, world, CALLS);
    CALLS.forEach((call, index) => {
      const want = expected(call, index, world);
      for (let r = 0; r < world; r++) {
        const got = outcomes[r][index];
        assert.ok(got.ok, `world ${world} rank ${r} ${call.op}: ${!got.ok && got.message}`);
        assert.deepEqual(got.shape, [...want[r].shape], `${call.op} shape`);
        assert.deepEqual(
          new Float32Array(got.data.slice().buffer),
          want[r].data,
          `world ${world} rank ${r} call ${index} ${call.op}`,
        );
      }
    });
  }
});

Deno.test("back-to-back steps of one collective each (same slot parity) stay exact on every rank", async () => {
  // Steps are pipelined, so a rank can start step s+1's collective (seq 0 again, the same
  // slots) while another still reads step s's: the writer must wait until it has been consumed.
  const calls: Call[] = Array.from(
    { length: 60 },
    (_, i) =>
      i % 3 === 2
        ? { op: "allReduce", arg: 0, shape: () => [200_000] } // two passes: the shared result too
        : { op: "allReduce", arg: 0, shape: () => [768 + i] },
  );
  for (const world of [2, 4]) {
    const buffer = createSharedRegion(world, { slotBytes: 1024 * 1024 });
    const outcomes = await runRanks(buffer, world, calls, { perStep: 1, timeoutMs: 5_000 });
    calls.forEach((call, index) => {
      const want = expected(call, index, world);
      for (let r = 0; r < world; r++) {
        const got = outcomes[r][index];
        assert.ok(got.ok, `world ${world} rank ${r} step ${index}: ${!got.ok && got.message}`);
        assert.deepEqual(
          new Float32Array(got.data.slice().buffer),
          want[r].data,
          `world ${world} rank ${r} step ${index}`,
        );
      }
    });
  }
});

Deno.test("shared-memory collectives reject mismatched shapes and order on every rank", async () => {
  const buffer = createSharedRegion(2, { slotBytes: 64 * 1024 });
  const outcomes = await runRanks(buffer, 2, [
    { op: "allReduce", arg: 0, shape: (r) => [4 + r] },
    { op: "allGather", arg: 0, shape: () => [2] },
  ]);
  for (const rank of outcomes) {
    assert.equal(rank[0].ok, false);
    assert.match(!rank[0].ok ? rank[0].message : "", /shapes differ.*f32\[4\].*f32\[5\]/);
    assert.equal(rank[1].ok, true);
  }
});

Deno.test("contributions larger than a slot go through the fallback on every rank together", async () => {
  const buffer = createSharedRegion(3, { slotBytes: 1024 });
  // Rank 2's part alone is too large: all three must leave shared memory for this collective.
  const outcomes = await runRanks(buffer, 3, [
    { op: "allGather", arg: 0, shape: (r) => [r === 2 ? 400 : 10] },
    { op: "allReduce", arg: 0, shape: () => [16] },
  ]);
  for (const rank of outcomes) {
    assert.equal(!rank[0].ok && rank[0].message, "fallback");
    assert.equal(rank[1].ok, true);
  }
});

Deno.test("a dead rank fails the survivors' pending collective with RankDied at once", async () => {
  const buffer = createSharedRegion(3, { slotBytes: 1024 });
  const started = performance.now();
  setTimeout(() => markRankDead(buffer, 3, 2), 300);
  // Rank 2 never arrives; without the mark the ranks would wait for the 60 s timeout.
  const outcomes = await runRanks(buffer, 3, [{ op: "allReduce", arg: 0, shape: () => [8] }], {
    running: [0, 1],
    timeoutMs: 60_000,
  });
  const elapsed = performance.now() - started;
  assert.ok(elapsed < 5_000, `took ${elapsed} ms`);
  for (const rank of outcomes) {
    assert.equal(!rank[0].ok && rank[0].tag, "RankDied");
    assert.match(!rank[0].ok ? rank[0].message : "", /rank 2 died/);
  }
});

Deno.test("a missing rank makes a shared-memory collective time out naming it", async () => {
  const buffer = createSharedRegion(2, { slotBytes: 1024 });
  const outcomes = await runRanks(buffer, 2, [{ op: "allReduce", arg: 0, shape: () => [8] }], {
    running: [0],
    timeoutMs: 300,
  });
  assert.equal(!outcomes[0][0].ok && outcomes[0][0].tag, "CollectiveError");
  assert.match(!outcomes[0][0].ok ? outcomes[0][0].message : "", /waiting for ranks 1/);
});
