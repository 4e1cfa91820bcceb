/**
 * Restarting a rank group leaves nothing behind, read from /proc: after the first restart, ten
 * more leave the process's threads, open files and memfds where they were, and its RSS within a
 * generous bound. Over Workers the engine restarts its group after a killed rank; a rank process
 * (tcp) serves one supervisor session after another.
 */
import assert from "node:assert/strict";
import { Effect, Schedule } from "effect";
import { startLocalRanks } from "../actors/local_ranks.ts";
import { TcpTransport } from "../actors/tcp.ts";
import { WorkersTransport } from "../ranks/transports.ts";
import { makeInferenceEngine } from "../engine/scheduler.ts";
import { LlamaModel } from "../models/llama.ts";
import { STORIES260K_PATH, TOK512_PATH } from "../assets/paths.ts";

const RESTARTS = 10;
/** Threads and fds may differ by a few at any moment (a timer, a connection being closed). */
const MARGIN = 2;
/** Allocator and V8 heap growth is not a leak; a leaked group costs 20 to 60 MB. */
const RSS_MARGIN_MB = 120;

interface ProcessState {
  readonly threads: number;
  readonly fds: number;
  readonly memfds: number;
  readonly rssMB: number;
}

/**
 * One process's threads, fds, memfds and RSS. Threads of Deno's blocking-I/O pool
 * ("tokio-runtime-worker") are left out: the pool grows with file reads and drops a thread
 * after 10 s idle, so its size says nothing about leaks.
 */
const processState = (pid: number | "self"): ProcessState => {
  const dir = `/proc/${pid}`;
  let threads = 0;
  for (const task of Deno.readDirSync(`${dir}/task`)) {
    try {
      const name = Deno.readTextFileSync(`${dir}/task/${task.name}/comm`).trim();
      if (name !== "tokio-runtime-w") threads++;
    } catch { /* the thread ended while we looked */ }
  }
  let fds = 0;
  let memfds = 0;
  for (const fd of Deno.readDirSync(`${dir}/fd`)) {
    fds++;
    try {
      if (Deno.readLinkSync(`${dir}/fd/${fd.name}`).startsWith("/memfd:")) memfds++;
    } catch { /* closed while we looked */ }
  }
  const rssKB = Number(/VmRSS:\s+(\d+)/.exec(Deno.readTextFileSync(`${dir}/status`))?.[1]);
  return { threads, fds, memfds, rssMB: Math.round(rssKB / 1024) };
};

/** Compares the last sample with the one after the first restart, each figure in turn. */
const assertNothingLeft = (what: string, samples: readonly ProcessState[]) => {
  const first = samples[0];
  const last = samples[samples.length - 1];
  const history = samples.map((s) => JSON.stringify(s)).join("\n");
  assert.ok(last.threads - first.threads <= MARGIN, `${what}: threads\n${history}`);
  assert.ok(last.fds - first.fds <= MARGIN, `${what}: fds\n${history}`);
  assert.ok(last.memfds <= first.memfds, `${what}: memfds\n${history}`);
  assert.ok(last.rssMB - first.rssMB <= RSS_MARGIN_MB, `${what}: RSS\n${history}`);
};

Deno.test("workers: 10 engine restarts after a killed rank leave threads, fds, memfds and RSS where the first left them", async () => {
  const samples = await Effect.runPromise(
    Effect.gen(function* () {
      const engine = yield* makeInferenceEngine({
        modelPath: STORIES260K_PATH,
        tokenizerPath: TOK512_PATH,
        tp: 2,
        healthCheckMillis: 50,
        restartBackoff: { initialMillis: 10, maxMillis: 100 },
      });
      const samples: ProcessState[] = [];
      for (let restart = 1; restart <= 1 + RESTARTS; restart++) {
        yield* engine.killRank(1);
        // The idle engine's health check finds the dead rank and restarts the group.
        yield* engine.health.pipe(
          Effect.repeat({
            schedule: Schedule.spaced("50 millis"),
            until: (h) => h.restarts === restart && h.state === "ready",
          }),
        );
        // Give Workers stopped in the background time to finish, then collect.
        yield* Effect.sleep("300 millis");
        (globalThis as { gc?: () => void }).gc?.();
        samples.push(processState("self"));
      }
      return samples;
    }).pipe(Effect.scoped, Effect.provide(WorkersTransport())),
  );
  assertNothingLeft("this process", samples);
});

Deno.test("tcp: a rank process serving 11 supervisor sessions leaves threads, fds, memfds and RSS where the first left them", async () => {
  const samples = await Effect.runPromise(
    Effect.gen(function* () {
      const ranks = yield* startLocalRanks(2);
      const transport = TcpTransport({ ranks: ranks.addresses, key: ranks.key });
      const session = Effect.gen(function* () {
        const model = yield* LlamaModel.load({
          source: { format: "llama2c", path: STORIES260K_PATH },
          tp: 2,
        });
        yield* model.forward([1], 0);
      }).pipe(Effect.scoped, Effect.provide(transport));
      const samples: ProcessState[][] = [];
      for (let i = 0; i < 1 + RESTARTS; i++) {
        yield* session;
        // The rank frees its device once the connection is gone: give it a moment.
        yield* Effect.sleep("500 millis");
        samples.push(ranks.pids.map(processState));
      }
      return samples;
    }).pipe(Effect.scoped),
  );
  for (const rank of [0, 1]) assertNothingLeft(`rank ${rank}`, samples.map((s) => s[rank]));
});
