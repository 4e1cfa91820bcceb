/**
 * The Megatron MLP, Y = GeLU(X·A)·B, with A column-split and B row-split over `--tp` ranks:
 * prints each rank's shards, the collectives that ran, and the error against the CPU result.
 *
 *   deno run -A examples/column_row_mlp.ts --tp 4
 */
import { parseArgs } from "node:util";
import { Effect } from "effect";
import { InProcessTransport, loadParallelLayer, Supervisor, tensor } from "../mod.ts";
import * as reference from "../kernels/reference.ts";

const { values } = parseArgs({
  options: {
    tp: { type: "string", default: "4" },
    rows: { type: "string", default: "64" },
    dim: { type: "string", default: "1024" },
    hidden: { type: "string", default: "4096" },
  },
});
const [tp, rows, dim, hidden] = [values.tp, values.rows, values.dim, values.hidden].map(Number);
if (![tp, rows, dim, hidden].every((n) => Number.isInteger(n) && n > 0)) {
  console.error(
    "usage: column_row_mlp.ts [--tp N] [--rows M] [--dim K] [--hidden H] (positive integers)",
  );
  Deno.exit(2);
}

/** Seeded uniform values in [-scale, scale), so runs are reproducible. */
const random = (length: number, seed: number, scale: number) => {
  let s = seed;
  return Float32Array.from({ length }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s / 2 ** 32 * 2 - 1) * scale;
  });
};

const x = tensor([rows, dim], random(rows * dim, 1, 1));
const a = tensor([dim, hidden], random(dim * hidden, 2, 1 / Math.sqrt(dim)));
const b = tensor([hidden, dim], random(hidden * dim, 3, 1 / Math.sqrt(hidden)));
const mb = (bytes: number) => `${(bytes / 2 ** 20).toFixed(2)} MiB`;

const program = Effect.gen(function* () {
  const supervisor = yield* Supervisor.make({ tp });
  for (const r of yield* supervisor.ranks()) {
    console.log(`rank ${r.rank}: ${r.backend} on ${r.adapter}`);
  }

  const loaded = yield* loadParallelLayer(supervisor, {
    _tag: "ParallelMlp",
    name: "mlp",
    dim,
    hidden,
    activation: "gelu",
  }, [a, b]);
  for (const { rank, shardShapes, bytes } of loaded) {
    const [aShape, bShape] = shardShapes.map((s) => s.join("×"));
    console.log(
      `rank ${rank}: A shard ${aShape} (column-split), B shard ${bShape} (row-split), ${mb(bytes)}`,
    );
  }

  const started = performance.now();
  const [y] = yield* supervisor.forward("mlp", x);
  const ms = performance.now() - started;

  console.log(`\nforward of X ${rows}×${dim} took ${ms.toFixed(1)} ms; collectives:`);
  for (const { op, calls, bytes } of supervisor.collectiveStats()) {
    console.log(
      `  ${op} × ${calls}: ${mb(bytes)} moved (device→host partials + host→device results)`,
    );
  }

  const expected = reference.matmul(
    reference.gelu(reference.matmul(x.data, a.data, rows, dim, hidden)),
    b.data,
    rows,
    hidden,
    dim,
  );
  const maxDiff = y.data.reduce((m, v, i) => Math.max(m, Math.abs(v - expected[i])), 0);
  console.log(`\nmax |Y_tp${tp} - Y_cpu| = ${maxDiff.toExponential(2)} (limit 1e-4)`);
  if (!(maxDiff <= 1e-4)) yield* Effect.fail(new Error(`error ${maxDiff} exceeds 1e-4`));
});

await Effect.runPromise(Effect.scoped(program).pipe(Effect.provide(InProcessTransport()))).catch(
  (e) => {
    console.error(`error: ${e.message ?? e}`);
    Deno.exit(1);
  },
);
