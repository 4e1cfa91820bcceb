/** Sharded equals unsharded: every parallel layer at tp 1, 2, 3 (uneven), 4 and 8 vs the CPU. */
import assert from "node:assert/strict";
import { Effect, Either } from "effect";
import { InProcessTransport, WorkersTransport } from "../ranks/transports.ts";
import { loadParallelLayer } from "../layers/load.ts";
import { Supervisor } from "../actors/supervisor.ts";
import type { RankCommand } from "../actors/protocol.ts";
import { fromPayload, toPayload } from "../collectives/protocol.ts";
import { concat, type HostTensor, tensor } from "../collectives/tensor.ts";
import * as reference from "../kernels/reference.ts";
import { assertClose, randomFloats } from "./tolerance.ts";

const M = 5, K = 48, N = 40, HIDDEN = 70;
const x = tensor([M, K], randomFloats(M * K, 1));
const w = tensor([K, N], randomFloats(K * N, 2, 0.2));
const wRow = tensor([N, K], randomFloats(N * K, 3, 0.2));
const mlpA = tensor([K, HIDDEN], randomFloats(K * HIDDEN, 4, 0.2));
const mlpB = tensor([HIDDEN, K], randomFloats(HIDDEN * K, 5, 0.2));

const y = reference.matmul(x.data, w.data, M, K, N); // [M, N]
const yRow = reference.matmul(y, wRow.data, M, N, K); // [M, K]
const mlpRef = reference.matmul(
  reference.gelu(reference.matmul(x.data, mlpA.data, M, K, HIDDEN)),
  mlpB.data,
  M,
  HIDDEN,
  K,
);

const TRANSPORTS = {
  inprocess: InProcessTransport({ collectiveTimeout: "20 seconds" }),
  workers: WorkersTransport({ collectiveTimeout: "20 seconds" }),
};
type TransportName = keyof typeof TRANSPORTS;

const run = <A, E>(
  tp: number,
  body: (s: Supervisor) => Effect.Effect<A, E>,
  transport: TransportName = "inprocess",
) =>
  Effect.runPromise(
    Effect.scoped(Supervisor.make({ tp }).pipe(Effect.flatMap(body))).pipe(
      Effect.provide(TRANSPORTS[transport]),
    ),
  );

for (
  const [transport, tp] of [
    ...[1, 2, 3, 4, 8].map((tp) => ["inprocess", tp] as const),
    ...[2, 3].map((tp) => ["workers", tp] as const),
  ]
) {
  Deno.test(`${transport} tp=${tp}: column (gather and not), row (parallel and not) and MLP equal the unsharded CPU result`, async () => {
    await run(tp, (s) =>
      Effect.gen(function* () {
        yield* loadParallelLayer(s, {
          _tag: "ColumnParallelLinear",
          name: "col",
          inFeatures: K,
          outFeatures: N,
          gatherOutput: false,
        }, [w]);
        yield* loadParallelLayer(s, {
          _tag: "ColumnParallelLinear",
          name: "colGather",
          inFeatures: K,
          outFeatures: N,
          gatherOutput: true,
        }, [w]);
        yield* loadParallelLayer(s, {
          _tag: "RowParallelLinear",
          name: "row",
          inFeatures: N,
          outFeatures: K,
          inputIsParallel: true,
        }, [wRow]);
        yield* loadParallelLayer(s, {
          _tag: "RowParallelLinear",
          name: "rowFull",
          inFeatures: N,
          outFeatures: K,
          inputIsParallel: false,
        }, [wRow]);
        yield* loadParallelLayer(s, {
          _tag: "ParallelMlp",
          name: "mlp",
          dim: K,
          hidden: HIDDEN,
          activation: "gelu",
        }, [mlpA, mlpB]);

        const slices = yield* s.forward("col", x);
        assert.equal(slices.length, tp);
        const widths = slices.map((t) => t.shape[1]);
        assert.equal(widths.reduce((a, b) => a + b), N);
        assert.ok(
          Math.max(...widths) - Math.min(...widths) <= 1,
          `even-as-possible split ${widths}`,
        );
        assertClose(concat(slices, 1).data, y, { atol: 1e-4, what: "column slices" });

        for (const gathered of yield* s.forward("colGather", x)) {
          assert.deepEqual(gathered.shape, [M, N]);
          assertClose(gathered.data, y, { atol: 1e-4, what: "column gathered" });
        }
        for (const out of yield* s.forward("row", slices)) {
          assertClose(out.data, yRow, { atol: 1e-4, what: "row (parallel input)" });
        }
        for (const out of yield* s.forward("rowFull", tensor([M, N], y))) {
          assertClose(out.data, yRow, { atol: 1e-4, what: "row (scattered input)" });
        }
        const mlpOut = yield* s.forward("mlp", x);
        for (const out of mlpOut) assertClose(out.data, mlpRef, { atol: 1e-4, what: "mlp" });
        for (const out of mlpOut) {
          assert.deepEqual(out.data, mlpOut[0].data, "replicated output is identical");
        }

        const ops = Object.fromEntries(s.collectiveStats().map((e) => [e.op, e.calls]));
        // One gather (colGather) and three reduces (row, rowFull, mlp): nothing else communicates.
        assert.deepEqual(ops, { allGather: 1, allReduce: 3 });
      }), transport);
  });
}

Deno.test("the MLP costs exactly one all-reduce and no all-gather", async () => {
  await run(4, (s) =>
    Effect.gen(function* () {
      yield* loadParallelLayer(s, {
        _tag: "ParallelMlp",
        name: "mlp",
        dim: K,
        hidden: HIDDEN,
        activation: "gelu",
      }, [mlpA, mlpB]);
      yield* s.forward("mlp", x);
      assert.deepEqual(s.collectiveStats().map((e) => [e.op, e.calls]), [["allReduce", 1]]);
    }));
});

Deno.test("a plan that cannot split is a PlanError before any weight moves", async () => {
  const outcome = await run(
    8,
    (s) =>
      Effect.either(
        loadParallelLayer(s, {
          _tag: "ColumnParallelLinear",
          name: "narrow",
          inFeatures: K,
          outFeatures: 5,
          gatherOutput: true,
        }, [tensor([K, 5], new Float32Array(K * 5))]),
      ),
  );
  assert.ok(Either.isLeft(outcome));
  assert.equal(outcome.left._tag, "PlanError");
  assert.match(outcome.left.message, /narrow: cannot split out_features = 5 over tp = 8/);
});

for (const transport of ["inprocess", "workers"] as const) {
  Deno.test(`${transport}: a wrong input shape fails the step with a typed error naming the rank`, async () => {
    const outcome = await run(2, (s) =>
      Effect.gen(function* () {
        yield* loadParallelLayer(s, {
          _tag: "ParallelMlp",
          name: "mlp",
          dim: K,
          hidden: HIDDEN,
          activation: "gelu",
        }, [mlpA, mlpB]);
        return yield* Effect.either(
          s.forward("mlp", tensor([M, K - 1], new Float32Array(M * (K - 1)))),
        );
      }), transport);
    assert.ok(Either.isLeft(outcome));
    assert.equal(outcome.left._tag, "RankFailed");
    assert.equal(outcome.left.reason, "InvalidInput");
    assert.match(
      outcome.left.message,
      /^rank \d: mlp: expected an input of f32\[M×48\], got f32\[5×47\]/,
    );
  });
}

const mlpSpec = {
  _tag: "ParallelMlp",
  name: "mlp",
  dim: K,
  hidden: HIDDEN,
  activation: "gelu",
} as const;
const forwardStep = (input: HostTensor) => (_rank: number, step: number): RankCommand => ({
  _tag: "Forward",
  step,
  layer: "mlp",
  input: toPayload(input),
});
const inputs = [1, 2, 3, 4].map((seed) => tensor([M, K], randomFloats(M * K, 10 + seed)));

for (const transport of ["inprocess", "workers"] as const) {
  Deno.test(`${transport}: a pipeline of steps gives each step the bits it gives alone`, async () => {
    const { alone, pipelined } = await run(2, (s) =>
      Effect.gen(function* () {
        yield* loadParallelLayer(s, mlpSpec, [mlpA, mlpB]);
        const alone = yield* Effect.forEach(inputs, (input) => s.forward("mlp", input));
        const pipelined = yield* s.pipeline(inputs.map(forwardStep));
        return { alone, pipelined };
      }), transport);
    assert.equal(pipelined.length, inputs.length);
    pipelined.forEach((replies, i) => {
      assert.equal(replies.length, 2);
      replies.forEach((reply, rank) => {
        assert.equal(reply._tag, "Output");
        const got = reply._tag === "Output" ? fromPayload(reply.output) : undefined;
        assert.deepEqual(got?.data, alone[i][rank].data, `step ${i} rank ${rank}`);
      });
    });
  });

  Deno.test(`${transport}: a step failing inside a pipeline fails it at once; the ranks serve on`, async () => {
    const outcome = await run(2, (s) =>
      Effect.gen(function* () {
        yield* loadParallelLayer(s, mlpSpec, [mlpA, mlpB]);
        const started = performance.now();
        const failed = yield* Effect.either(s.pipeline([
          forwardStep(inputs[0]),
          forwardStep(tensor([M, K - 1], new Float32Array(M * (K - 1)))),
          forwardStep(inputs[1]),
          forwardStep(inputs[2]),
        ]));
        const ms = performance.now() - started;
        const after = yield* s.forward("mlp", inputs[3]);
        return { failed, ms, after };
      }), transport);
    assert.ok(Either.isLeft(outcome.failed));
    assert.equal(outcome.failed.left._tag, "RankFailed");
    assert.equal(outcome.failed.left.reason, "InvalidInput");
    // The later steps' collectives were aborted, not left to their 20 s timeout.
    assert.ok(outcome.ms < 10_000, `took ${outcome.ms} ms`);
    const want = reference.matmul(
      reference.gelu(reference.matmul(inputs[3].data, mlpA.data, M, K, HIDDEN)),
      mlpB.data,
      M,
      HIDDEN,
      K,
    );
    for (const out of outcome.after) assertClose(out.data, want, { atol: 1e-4, what: "after" });
  });
}

Deno.test("a rank whose device is lost fails the step naming it; the others do not hang", async () => {
  const outcome = await run(3, (s) =>
    Effect.gen(function* () {
      yield* loadParallelLayer(s, {
        _tag: "ParallelMlp",
        name: "mlp",
        dim: K,
        hidden: HIDDEN,
        activation: "gelu",
      }, [mlpA, mlpB]);
      yield* s.forward("mlp", x);
      s.localGpu(1)?.device.destroy();
      const started = performance.now();
      const result = yield* Effect.either(s.forward("mlp", x));
      return { result, ms: performance.now() - started };
    }));
  assert.ok(Either.isLeft(outcome.result));
  assert.equal(outcome.result.left._tag, "RankFailed");
  assert.equal(outcome.result.left.rank, 1);
  assert.equal(outcome.result.left.reason, "DeviceLostError");
  assert.ok(outcome.ms < 20_000, "failed fast, well before the collective timeout");
});

Deno.test("closing the supervisor's scope destroys every rank's device", async () => {
  const gpus = await run(3, (s) => Effect.succeed([0, 1, 2].map((r) => s.localGpu(r)!)));
  const reasons = await Promise.all(gpus.map((g) => g.whenLost.then((e) => e.reason)));
  assert.deepEqual(reasons, ["destroyed", "destroyed", "destroyed"]);
});
