import assert from "node:assert/strict";
import { Effect, Either } from "effect";
import { InProcessGroup } from "../collectives/inprocess.ts";
import { type Communicator, stepCommunicator } from "../collectives/communicator.ts";
import { concat, type HostTensor, slice, splitSizes, tensor } from "../collectives/tensor.ts";
import { assertClose, randomFloats } from "./tolerance.ts";

/** Runs `body` on every rank of a fresh in-process group concurrently. */
const onAllRanks = <A, E>(
  world: number,
  body: (comm: Communicator) => Effect.Effect<A, E>,
  group = new InProcessGroup(world, { timeout: "2 seconds" }),
) =>
  Effect.runPromise(
    Effect.all(
      Array.from({ length: world }, (_, r) => body(stepCommunicator(group, r, 0))),
      { concurrency: "unbounded" },
    ),
  );

const rankTensor = (rank: number, shape: number[]) =>
  tensor(shape, randomFloats(shape.reduce((a, b) => a * b, 1), 100 + rank));

const WORLDS = [1, 2, 3, 4, 5, 6, 7, 8];

Deno.test("allReduce sums every rank's tensor, identical on all ranks (world 1–8)", async () => {
  for (const world of WORLDS) {
    const shape = [3, 37]; // 111 elements: not divisible by most world sizes
    const inputs = Array.from({ length: world }, (_, r) => rankTensor(r, shape));
    const expected = new Float32Array(111);
    for (const t of inputs) t.data.forEach((v, i) => (expected[i] += v));
    const results = await onAllRanks(world, (c) => c.allReduce(inputs[c.rank]));
    for (const out of results) {
      assert.deepEqual(out.shape, shape);
      assertClose(out.data, expected, { atol: 1e-6, what: `world ${world}` });
      assert.deepEqual(out.data, results[0].data, "all ranks bit-identical");
    }
  }
});

Deno.test("allGather concatenates along any axis, uneven parts allowed (world 1–8)", async () => {
  for (const world of WORLDS) {
    for (const axis of [0, 1]) {
      const sizes = splitSizes(13, world);
      const inputs = sizes.map((n, r) => rankTensor(r, axis === 0 ? [n, 5] : [5, n]));
      const expected = concat(inputs, axis);
      const results = await onAllRanks(world, (c) => c.allGather(inputs[c.rank], axis));
      for (const out of results) {
        assert.deepEqual(out.shape, expected.shape);
        assert.deepEqual(out.data, expected.data);
      }
    }
  }
});

Deno.test("reduceScatter gives rank r its uneven part of the sum (world 1–8)", async () => {
  for (const world of WORLDS) {
    const shape = [17, 3];
    const inputs = Array.from({ length: world }, (_, r) => rankTensor(r, shape));
    const total = new Float32Array(51);
    for (const t of inputs) t.data.forEach((v, i) => (total[i] += v));
    const results = await onAllRanks(world, (c) => c.reduceScatter(inputs[c.rank], 0));
    results.forEach((out, r) => {
      const want = slice(tensor(shape, total), 0, r, world);
      assert.deepEqual(out.shape, want.shape);
      assertClose(out.data, want.data, { atol: 1e-6 });
    });
  }
});

Deno.test("broadcast copies the root's tensor to all ranks; barrier returns on all", async () => {
  for (const world of WORLDS) {
    const root = world - 1;
    const inputs = Array.from({ length: world }, (_, r) => rankTensor(r, [9]));
    const results = await onAllRanks(
      world,
      (c) => Effect.zipLeft(c.broadcast(inputs[c.rank], root), c.barrier()),
    );
    for (const out of results) assert.deepEqual(out.data, inputs[root].data);
  }
});

Deno.test("collectives in sequence within a step pair up by call order", async () => {
  const results = await onAllRanks(3, (c) =>
    Effect.gen(function* () {
      const a = yield* c.allReduce(tensor([2], new Float32Array([c.rank, 1])));
      const b = yield* c.allGather(tensor([1], new Float32Array([a.data[0] * 10 + c.rank])), 0);
      return b.data;
    }));
  for (const r of results) assert.deepEqual([...r], [30, 31, 32]);
});

const failureOf = async (
  world: number,
  body: (c: Communicator) => Effect.Effect<HostTensor, unknown>,
) => {
  const group = new InProcessGroup(world, { timeout: "1 second" });
  const outcomes = await Effect.runPromise(
    Effect.all(
      Array.from({ length: world }, (_, r) => Effect.either(body(stepCommunicator(group, r, 0)))),
      { concurrency: "unbounded" },
    ),
  );
  return outcomes.map((o) => Either.isLeft(o) ? o.left : undefined);
};

Deno.test("a shape mismatch is a CollectiveError on every rank naming ranks and shapes", async () => {
  const errors = await failureOf(
    3,
    (c) => c.allReduce(tensor(c.rank === 1 ? [4] : [5], new Float32Array(c.rank === 1 ? 4 : 5))),
  );
  for (const e of errors) {
    assert.equal((e as { _tag: string })._tag, "CollectiveError");
    const message = (e as Error).message;
    assert.match(message, /allReduce: shapes differ/);
    assert.match(message, /rank 1: f32\[4\]/);
    assert.match(message, /rank 0: f32\[5\]/);
  }
});

Deno.test("allGather rejects mismatch off the gather axis", async () => {
  const errors = await failureOf(
    2,
    (c) =>
      c.allGather(
        tensor(c.rank === 0 ? [2, 3] : [2, 4], new Float32Array(c.rank === 0 ? 6 : 8)),
        0,
      ),
  );
  for (const e of errors) {
    assert.match((e as Error).message, /shapes differ.*f32\[2×3\].*f32\[2×4\]/);
  }
});

Deno.test("ranks calling different collectives fail instead of pairing up wrongly", async () => {
  const t = tensor([2], new Float32Array(2));
  const errors = await failureOf(2, (c) => c.rank === 0 ? c.allReduce(t) : c.broadcast(t, 0));
  for (const e of errors) assert.match((e as Error).message, /disagree on order/);
});

Deno.test("a rank that never arrives times the collective out, naming it", async () => {
  const errors = await failureOf(
    3,
    (c) =>
      c.rank === 2
        ? Effect.succeed(tensor([1], new Float32Array(1)))
        : c.allReduce(tensor([1], new Float32Array(1))),
  );
  assert.equal(errors[2], undefined);
  for (const e of errors.slice(0, 2)) {
    assert.equal((e as { _tag: string })._tag, "CollectiveError");
    assert.match((e as Error).message, /timed out .* waiting for ranks 2/);
  }
});

Deno.test("a dead rank fails pending and later collectives with RankDied", async () => {
  const group = new InProcessGroup(2, { timeout: "10 seconds" });
  const pending = Effect.runPromise(Effect.either(stepCommunicator(group, 0, 0).barrier()));
  setTimeout(() => group.rankDied(1, "rank 1 crashed"), 20);
  const outcome = await pending;
  assert.ok(Either.isLeft(outcome));
  assert.equal(outcome.left._tag, "RankDied");
  const later = await Effect.runPromise(Effect.either(stepCommunicator(group, 0, 1).barrier()));
  assert.ok(Either.isLeft(later) && later.left._tag === "RankDied" && later.left.rank === 1);
});
