/** /metrics' text shows Tessera's metrics only, never the Effect runtime's internals. */
import assert from "node:assert/strict";
import { Effect, Metric } from "effect";
import { prometheusText } from "../serve/prometheus.ts";

Deno.test("prometheus: only tessera_* metrics are exposed, runtime internals are not", async () => {
  const ours = Metric.counter("tessera_test_exposed_total", { description: "exposed" });
  const internal = Metric.counter("effect_fiber_test_hidden_total");
  const text = await Effect.runPromise(
    Effect.gen(function* () {
      yield* Metric.increment(ours);
      yield* Metric.increment(internal);
      // A fiber, so the runtime's own fiber metrics exist in the snapshot as well.
      yield* Effect.fork(Effect.void);
      return yield* prometheusText;
    }),
  );
  assert.match(text, /^tessera_test_exposed_total 1$/m);
  assert.doesNotMatch(text, /effect_fiber_test_hidden_total/);
  for (const line of text.split("\n").filter((l) => l !== "" && !l.startsWith("#"))) {
    assert.ok(line.startsWith("tessera_"), `non-Tessera sample exposed: ${line}`);
  }
});
