/**
 * Observability on the real stories260K: a `--trace` from the CLI over 2 Worker ranks parses as
 * Chrome trace JSON with a row per rank holding kernel, transfer, wait and step spans that agree
 * with the supervisor's steps, while the generated tokens stay the fixture's; every log line
 * names its rank; load progress prints one line per rank off a terminal; and an engine's trace
 * has a span per request on its slot's track. Units: progress lines, the token-rate window, log
 * levels and the rank start message's defaults.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { Chunk, Effect, Schema, Stream } from "effect";
import { InProcessTransport } from "../ranks/transports.ts";
import { ToRank } from "../actors/remote_protocol.ts";
import { TokenRate } from "../engine/token_rate.ts";
import { makeInferenceEngine } from "../engine/scheduler.ts";
import type { ChromeTrace, TraceEvent, TraceFile } from "../observe/chrome_trace.ts";
import { parseLogLevel } from "../observe/logging.ts";
import { barProgress, lineProgress } from "../observe/progress.ts";
import type { LoadProgress } from "../observe/rank_events.ts";
import { telemetryLayer } from "../observe/telemetry.ts";
import type { GreedyFixture } from "./fixtures/make_stories260K_greedy.ts";
import { STORIES260K_PATH, TOK512_PATH } from "../assets/paths.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const MODEL = STORIES260K_PATH;
const TOKENIZER = TOK512_PATH;
const FIXTURE = new URL("./fixtures/stories260K_greedy.json", import.meta.url);
const LAYERS = 5; // stories260K

const spansOf = (trace: TraceFile, pid: number) =>
  trace.traceEvents.filter((e) => e.ph === "X" && e.pid === pid);
const processNames = (trace: TraceFile) =>
  new Map(
    trace.traceEvents.filter((e) => e.name === "process_name").map((e) => [e.pid, e.args?.name]),
  );
const countBy = (events: readonly TraceEvent[], key: (e: TraceEvent) => string) => {
  const counts = new Map<string, number>();
  for (const e of events) counts.set(key(e), (counts.get(key(e)) ?? 0) + 1);
  return counts;
};

Deno.test("trace: --trace over 2 Worker ranks is Chrome trace JSON with every rank's spans; logs name ranks", async () => {
  const fixture: GreedyFixture = JSON.parse(await Deno.readTextFile(FIXTURE));
  const dir = await Deno.makeTempDir();
  const tracePath = `${dir}/trace.json`;
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        ...[
          "run",
          "-A",
          "--v8-flags=--expose-gc",
          "cli/generate.ts",
          "--model",
          MODEL,
          "--tokenizer",
          TOKENIZER,
        ],
        ...["--tp", "2", "--share-adapter", "--prompt", "", "--max-tokens", "12", "--json"],
        ...["--trace", tracePath, "--log-level", "debug"],
      ],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, stderr);
    // Tracing adds waits, never changes results.
    const { tokens } = JSON.parse(new TextDecoder().decode(out.stdout));
    assert.deepEqual(tokens, fixture.tokens.slice(0, 12));

    const trace: TraceFile = JSON.parse(await Deno.readTextFile(tracePath));
    assert.deepEqual(
      [...processNames(trace).entries()].sort(),
      [[0, "supervisor"], [1, "rank 0"], [2, "rank 1"]],
    );
    for (const e of trace.traceEvents.filter((e) => e.ph === "X")) {
      assert.ok(Number.isFinite(e.ts) && Number.isFinite(e.dur) && e.dur! >= 0, JSON.stringify(e));
    }
    const supervisorSteps = countBy(spansOf(trace, 0), (e) => e.name);
    for (const pid of [1, 2]) {
      const spans = spansOf(trace, pid);
      const categories = countBy(spans, (e) => e.cat!);
      for (const category of ["step", "kernels", "transfer", "wait"]) {
        assert.ok((categories.get(category) ?? 0) > 0, `rank ${pid - 1} has no ${category} span`);
      }
      // Each rank ran every step the supervisor drove, and each layer step has its kernels.
      const steps = countBy(spans.filter((e) => e.cat === "step"), (e) => e.name);
      assert.deepEqual(steps, supervisorSteps);
      const kernels = countBy(spans.filter((e) => e.cat === "kernels"), (e) => e.name);
      const layerSteps = supervisorSteps.get("layer 0")!;
      for (let l = 0; l < LAYERS; l++) {
        assert.equal(kernels.get(`attention ${l}`), layerSteps);
        assert.equal(kernels.get(`mlp ${l}`), layerSteps);
      }
      // Two all-reduces per layer plus the embedding's, each a wait between two transfers.
      const waits = spans.filter((e) => e.cat === "wait").length;
      assert.equal(waits, layerSteps * (2 * LAYERS + 1));
      assert.equal(spans.filter((e) => e.cat === "transfer").length, 2 * waits);
    }

    const logLines = stderr.split("\n").filter((l) => l.startsWith("timestamp="));
    assert.ok(logLines.length > 0, stderr);
    for (const line of logLines) assert.match(line, /\brank=(supervisor|\d+)\b/, line);
    const named = new Set(logLines.map((l) => l.match(/\brank=(\w+)/)![1]));
    assert.deepEqual([...named].sort(), ["0", "1", "supervisor"]);
    // Off a terminal: exactly one progress line per rank.
    const progress = stderr.split("\n").filter((l) => /^rank \d: read [\d.]+ MB of shards/.test(l));
    assert.deepEqual(progress.map((l) => l.slice(0, 6)).sort(), ["rank 0", "rank 1"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("trace: an engine's trace has a span per request on its slot's track", async () => {
  let captured: ChromeTrace | undefined;
  const telemetry = telemetryLayer({
    trace: { onTrace: (trace) => Effect.sync(() => (captured = trace)) },
  });
  const generated = await Effect.runPromise(
    Effect.gen(function* () {
      const engine = yield* makeInferenceEngine({
        modelPath: MODEL,
        tokenizerPath: TOKENIZER,
        tp: 1,
        maxSequences: 2,
      });
      const request = (prompt: string) =>
        Effect.flatMap(
          engine.submit({
            promptTokens: engine.tokenizer.encode(prompt, { bos: true, eos: false }),
            maxTokens: 6,
            temperature: 0,
            topP: 0.9,
            stopAtEos: false,
          }),
          (s) => Effect.map(Stream.runCollect(s), Chunk.size),
        );
      return yield* Effect.all([request("Once upon"), request("The cat")], {
        concurrency: "unbounded",
      });
    }).pipe(Effect.scoped, Effect.provide(InProcessTransport()), Effect.provide(telemetry)),
  );
  assert.deepEqual(generated, [6, 6]);
  const trace = captured!.toJSON();
  const requests = spansOf(trace, 0).filter((e) => e.cat === "request");
  assert.equal(requests.length, 2);
  assert.deepEqual(requests.map((e) => e.args?.slot).sort(), [0, 1]);
  assert.deepEqual(requests.map((e) => e.args?.generatedTokens), [6, 6]);
  assert.equal(new Set(requests.map((e) => e.tid)).size, 2, "one track per slot");
  assert.ok(spansOf(trace, 1).some((e) => e.cat === "kernels"), "rank 0 recorded kernels");
});

/** Rank `rank` of a 2-rank group has read `bytesRead` of `bytesPlanned`. */
const loaded = (rank: number, bytesRead: number, bytesPlanned: number): LoadProgress => ({
  _tag: "LoadProgress",
  ranks: 2,
  rank,
  bytesRead,
  bytesPlanned,
});

Deno.test("progress: off a terminal, one line per rank once it has read everything", () => {
  const lines: string[] = [];
  const view = lineProgress((line) => lines.push(line));
  view.update(loaded(1, 0, 2_000_000));
  view.update(loaded(0, 1_000_000, 2_000_000));
  view.update(loaded(1, 2_000_000, 2_000_000));
  view.update(loaded(1, 2_000_000, 2_000_000));
  assert.equal(lines.length, 1);
  assert.match(lines[0], /^rank 1: read 2\.0 MB of shards in \d+\.\d s$/);
  view.update(loaded(0, 2_000_000, 2_000_000));
  assert.equal(lines.length, 2);
  assert.match(lines[1], /^rank 0: read 2\.0 MB/);
});

Deno.test("progress: on a terminal, one line summing the ranks that stops once all have read", () => {
  const written: string[] = [];
  const terminal = {
    isTTY: true,
    columns: 100,
    write: (chunk: string) => written.push(String(chunk)) > 0,
    on: () => terminal,
    removeListener: () => terminal,
  };
  const view = barProgress(terminal as unknown as NodeJS.WriteStream);
  view.update(loaded(0, 0, 4_000_000));
  view.update(loaded(1, 0, 4_000_000));
  view.update(loaded(0, 4_000_000, 4_000_000));
  const escapes = new RegExp(`${String.fromCharCode(27)}(\\[[0-9;?]*[A-Za-z]|[78])`, "g");
  const frame = () => written.join("").replace(escapes, "").replace(/\[.*\]/, "[bar]");
  assert.ok(!written.join("").includes(`${String.fromCharCode(27)}[1A`), "never moves up");
  view.update(loaded(1, 4_000_000, 4_000_000));
  assert.match(frame(), /loading shards \[bar\] 100% \| 8\.0\/8\.0 MB \| 2\/2 ranks\s*$/);
  // Stopped by the last rank: later events and timers draw nothing more.
  const drawn = written.length;
  view.update(loaded(1, 4_000_000, 4_000_000));
  view.stop();
  assert.equal(written.length, drawn);
});

Deno.test("token rate: per-second counts over a sliding window, idle seconds zero", () => {
  let now = 10_000;
  const rate = new TokenRate(3, () => now);
  rate.add(2);
  rate.add(1);
  now += 1000;
  rate.add(5);
  now += 1000;
  assert.deepEqual(rate.lastSeconds(), [0, 3, 5]);
  now += 2500; // second 11's tokens are still in the window, second 10's are not
  assert.deepEqual(rate.lastSeconds(), [5, 0, 0]);
  rate.add(4);
  now += 1000;
  assert.deepEqual(rate.lastSeconds(), [0, 0, 4]);
  now += 60_000;
  assert.deepEqual(rate.lastSeconds(), [0, 0, 0]);
});

Deno.test("logging: levels parse case-insensitively; a rank's start message defaults to no tracing at info", () => {
  assert.equal(parseLogLevel("DEBUG"), "debug");
  assert.equal(parseLogLevel("warning"), "warning");
  assert.equal(parseLogLevel("verbose"), undefined);
  const start = Schema.decodeUnknownSync(ToRank)({
    _tag: "Start",
    rank: 0,
    tp: 1,
    backend: "auto",
    collectiveTimeoutMs: 1000,
  });
  assert.ok(start._tag === "Start" && start.tracing === false && start.logLevel === "info");
  assert.throws(() =>
    Schema.decodeUnknownSync(ToRank)({
      _tag: "Start",
      rank: 0,
      tp: 1,
      backend: "auto",
      collectiveTimeoutMs: 1000,
      logLevel: "loud",
    })
  );
});
