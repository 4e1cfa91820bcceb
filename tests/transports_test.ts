/**
 * The same model, the same tokens over every transport: in-process fibers, one Worker per rank
 * (shared-memory collectives), and rank processes over loopback TCP. And liveness on each: a
 * rank killed during generation fails the step with `RankDied` naming it within 2 s, and
 * nothing hangs (the test's scope closes).
 */
import assert from "node:assert/strict";
import { Effect, Either, type Layer, type Scope } from "effect";
import { InProcessTransport } from "../ranks/transports.ts";
import { startLocalRanks } from "../actors/local_ranks.ts";
import { TcpTransport } from "../actors/tcp.ts";
import { importSecret } from "../wire/handshake.ts";
import type { Transport } from "../actors/transport.ts";
import { WorkersTransport } from "../ranks/transports.ts";
import { LlamaModel } from "../models/llama.ts";
import { BOS_ID } from "../models/tokenizer.ts";
import type { GreedyFixture } from "./fixtures/make_stories260K_greedy.ts";
import { STORIES260K_PATH } from "../assets/paths.ts";

const MODEL = STORIES260K_PATH;
const FIXTURE = new URL("./fixtures/stories260K_greedy.json", import.meta.url);
const fixture = async (): Promise<GreedyFixture> => JSON.parse(await Deno.readTextFile(FIXTURE));

const stories = (tp: number) => LlamaModel.load({ source: { format: "llama2c", path: MODEL }, tp });

const greedyStep = (model: LlamaModel, token: number, pos: number) =>
  Effect.zipRight(model.forward([token], pos), model.candidates(1, 0)).pipe(
    Effect.map((c) => c.indices[0]),
  );

const greedy = (model: LlamaModel, steps: number) =>
  Effect.gen(function* () {
    const out: number[] = [];
    let token = BOS_ID;
    for (let pos = 0; pos < steps; pos++) out.push(token = yield* greedyStep(model, token, pos));
    return out;
  });

const runWith = <A, E>(
  transport: Layer.Layer<Transport, E>,
  effect: Effect.Effect<A, E, Scope.Scope | Transport>,
) => Effect.runPromise(effect.pipe(Effect.scoped, Effect.provide(transport)));

const TRANSPORTS: ReadonlyArray<[string, (tp: number) => Layer.Layer<Transport>, number]> = [
  ["inprocess", () => InProcessTransport(), 64],
  ["workers", () => WorkersTransport(), 64],
  ["tcp", () => TcpTransport(), 64],
];

for (const [name, transport, steps] of TRANSPORTS) {
  for (const tp of [2, 4]) {
    Deno.test(`${name} tp ${tp}: stories260K greedy tokens equal the fixture`, async () => {
      const f = await fixture();
      const tokens = await runWith(
        transport(tp),
        Effect.flatMap(stories(tp), (m) => greedy(m, steps)),
      );
      assert.deepEqual(tokens, f.tokens.slice(0, steps), `${name} tp ${tp}`);
    });
  }
}

/**
 * Generates until step 6, kills rank 1, and times how long the next step takes to fail; the
 * failure must be RankDied naming rank 1.
 */
const killDuringGeneration = (kill: (model: LlamaModel) => Effect.Effect<void>) =>
  Effect.gen(function* () {
    const model = yield* stories(2);
    let token = BOS_ID;
    for (let pos = 0; pos < 6; pos++) token = yield* greedyStep(model, token, pos);
    yield* kill(model);
    const killedAt = performance.now();
    let failure: Either.Either<number, unknown> = Either.right(0);
    // The first steps after the kill may still succeed while the death is being noticed.
    for (let pos = 6; pos < 200 && Either.isRight(failure); pos++) {
      failure = yield* Effect.either(greedyStep(model, token, pos));
    }
    return { failure, noticedMs: performance.now() - killedAt };
  });

const assertRankDied = (
  outcome: { failure: Either.Either<number, unknown>; noticedMs: number },
  what: string,
) => {
  const error = Either.isLeft(outcome.failure) ? outcome.failure.left : undefined;
  assert.equal((error as { _tag?: string })?._tag, "RankDied", `${what}: ${String(error)}`);
  assert.equal((error as { rank: number }).rank, 1, `${what}: names rank 1`);
  assert.ok(outcome.noticedMs < 2000, `${what}: noticed after ${outcome.noticedMs} ms`);
};

for (const [name, transport] of TRANSPORTS) {
  const killHow = name === "inprocess"
    ? "its fiber interrupted"
    : name === "workers"
    ? "its Worker killed"
    : "kill -9 of its process";
  Deno.test(`${name}: a rank killed during generation (${killHow}) fails the step with RankDied`, async () => {
    const outcome = await runWith(
      transport(2),
      killDuringGeneration((model) => model.supervisor.kill(1)),
    );
    assertRankDied(outcome, name);
  });
}

Deno.test("tcp: a dropped connection to a rank fails the step with RankDied", async () => {
  const outcome = await Effect.runPromise(
    Effect.gen(function* () {
      // Ranks started apart from the supervisor, as on other hosts: kill() drops the connection.
      const ranks = yield* startLocalRanks(2);
      return yield* killDuringGeneration((model) => model.supervisor.kill(1)).pipe(
        Effect.provide(TcpTransport({ ranks: ranks.addresses, key: ranks.key })),
      );
    }).pipe(Effect.scoped),
  );
  assertRankDied(outcome, "dropped connection");
});

Deno.test("tcp: a frozen rank (SIGSTOP, connection open) is declared dead by heartbeat silence", async () => {
  const outcome = await Effect.runPromise(
    Effect.gen(function* () {
      const ranks = yield* startLocalRanks(2);
      // Nothing closes: the process just stops answering and stops sending heartbeats.
      return yield* killDuringGeneration(() => ranks.kill(1, "SIGSTOP")).pipe(
        Effect.provide(TcpTransport({ ranks: ranks.addresses, key: ranks.key })),
      );
    }).pipe(Effect.scoped),
  );
  assertRankDied(outcome, "frozen rank");
});

Deno.test("tcp: silent, malformed and wrong-secret peers are refused; the ranks still serve", async () => {
  const f = await fixture();
  const outcome = await Effect.runPromise(
    Effect.gen(function* () {
      const ranks = yield* startLocalRanks(2);
      const [host, port] = ranks.addresses[0].split(":");
      const target = { hostname: host, port: Number(port) };
      // One peer connects and says nothing; another speaks HTTP instead of the handshake.
      const silent = yield* Effect.promise(() => Deno.connect(target));
      const garbage = yield* Effect.promise(() => Deno.connect(target));
      yield* Effect.promise(() =>
        garbage.write(new TextEncoder().encode("GET / HTTP/1.1\r\n\r\n"))
      );
      const wrongKey = yield* importSecret(
        new TextEncoder().encode("not the shared secret at all"),
      );
      const refused = yield* Effect.either(
        Effect.scoped(stories(2)).pipe(
          Effect.provide(TcpTransport({ ranks: ranks.addresses, key: wrongKey })),
        ),
      );
      const tokens = yield* Effect.scoped(Effect.flatMap(stories(2), (m) => greedy(m, 8))).pipe(
        Effect.provide(TcpTransport({ ranks: ranks.addresses, key: ranks.key })),
      );
      silent.close();
      garbage.close();
      return { refused, tokens };
    }).pipe(Effect.scoped),
  );
  const error = Either.isLeft(outcome.refused) ? outcome.refused.left : undefined;
  assert.equal(error?._tag, "TransportError");
  assert.match(error?.message ?? "", /secret/);
  assert.deepEqual(outcome.tokens, f.tokens.slice(0, 8));
});
