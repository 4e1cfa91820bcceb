/**
 * The long-running service against stalls and restarts that do not come back, on the real
 * stories260K model and real sockets:
 *
 * - the admin drill routes: 404 without an admin key, 401 without the right one, 400 for a bad
 *   rank or duration, 405 for a wrong method;
 * - a rank paused (alive, silent) mid-stream over 2 Worker ranks: /health turns 503 "stalled",
 *   the watchdog restarts the group, and the streams end with the same greedy text as
 *   unpaused runs; a killed rank (the other drill) is restarted too;
 * - a rank killed while the model file is gone: the reloads fail, in-flight requests end within
 *   the restart timeout with a retriable error (503 + Retry-After; an SSE error event), a
 *   streamed one gets keep-alive comments meanwhile, and the engine comes back once the file
 *   does;
 * - failed reloads count against a request's resume budget;
 * - the serve CLI's --admin-key, --stall-seconds and --restart-timeout-seconds.
 *
 * Every wait is bounded; none asserts a duration. A bound only turns a hang into a failure.
 */
import assert from "node:assert/strict";
import { Chunk, Effect, Exit, Layer, Scope, Stream } from "effect";
import OpenAI from "openai";
import { InProcessTransport } from "../ranks/transports.ts";
import { WorkersTransport } from "../ranks/transports.ts";
import { STORIES260K_PATH, TOK512_PATH } from "../assets/paths.ts";
import { InferenceEngine } from "../engine/engine.ts";
import { makeInferenceEngine } from "../engine/scheduler.ts";
import { ChatTemplate, defaultChatTemplate } from "../serve/chat_template.ts";
import { type RunningServer, type ServerOptions, startServer } from "../serve/server.ts";
import { BATCH_PROMPTS } from "./fixtures/batch_prompts.ts";

const MODEL_ID = "stories260K";
const API_KEY = "sk-tessera-test";
const ADMIN_KEY = "admin-tessera-test";
/** A bound on any one wait: long enough for a loaded 2-core machine, short of a hang. */
const BOUND_MILLIS = 60_000;

type EngineOptions = Parameters<typeof makeInferenceEngine>[0];

/** An engine over 2 Worker ranks (or what `transport` gives) and servers over it. */
const startServices = async (
  engineOptions: Partial<EngineOptions>,
  servers: readonly ServerOptions[],
  transport = WorkersTransport(),
) => {
  const scope = Effect.runSync(Scope.make());
  const { engine, running } = await Effect.runPromise(
    Effect.gen(function* () {
      const engine = yield* makeInferenceEngine({
        modelPath: STORIES260K_PATH,
        tokenizerPath: TOK512_PATH,
        tp: 2,
        maxSequences: 4,
        modelId: MODEL_ID,
        restartBackoff: { initialMillis: 50, maxMillis: 500 },
        ...engineOptions,
      });
      const running = yield* Effect.forEach(
        servers,
        (options) =>
          startServer({ port: 0, apiKey: API_KEY, ...options }).pipe(
            Effect.provideService(InferenceEngine, engine),
            Effect.provideService(ChatTemplate, defaultChatTemplate),
          ),
      );
      return { engine, running };
    }).pipe(Effect.provide(Layer.fresh(transport)), Scope.extend(scope)),
  );
  return {
    engine,
    servers: running,
    close: () => Effect.runPromise(Scope.close(scope, Exit.void)),
  };
};

const bearer = (key: string | null): Record<string, string> =>
  key === null ? {} : { authorization: `Bearer ${key}` };

const request = (
  server: RunningServer,
  method: string,
  path: string,
  key: string | null,
  body?: unknown,
) =>
  fetch(`${server.url}${path}`, {
    method,
    headers: { "content-type": "application/json", ...bearer(key) },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(BOUND_MILLIS),
  });

const errorOf = async (res: Response, status: number) => {
  const body = await res.json();
  assert.equal(res.status, status, JSON.stringify(body));
  return body.error as { message: string; type: string; param: string | null; code: string };
};

const health = async (server: RunningServer) => {
  const res = await fetch(`${server.url}/health`, { signal: AbortSignal.timeout(BOUND_MILLIS) });
  return { status: res.status, body: await res.json() };
};

/** Polls /health until `done` holds for it; fails at the bound. */
const waitForHealth = async (
  server: RunningServer,
  done: (h: Awaited<ReturnType<typeof health>>) => boolean,
  what: string,
) => {
  const until = Date.now() + BOUND_MILLIS;
  while (Date.now() < until) {
    const h = await health(server);
    if (done(h)) return h;
    await new Promise((r) => setTimeout(r, 10));
  }
  return assert.fail(`/health never showed ${what}`);
};

const metricsText = async (server: RunningServer) =>
  await (await fetch(`${server.url}/metrics`, { headers: bearer(API_KEY) })).text();

/** A sample's value in exposition text, or 0 when the series is absent. */
const sampleOf = (text: string, series: string): number => {
  const line = text.split("\n").find((l) => l.startsWith(series + " "));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
};

/** Reads an SSE body to its end, calling `onEvent` with each event (data or comment) as it comes. */
const readSse = async (res: Response, onEvent: (event: string) => void = () => {}) => {
  const events: string[] = [];
  let buffered = "";
  for await (const text of res.body!.pipeThrough(new TextDecoderStream())) {
    buffered += text;
    const parts = buffered.split("\n\n");
    buffered = parts.pop()!;
    for (const event of parts) {
      events.push(event);
      onEvent(event);
    }
  }
  assert.equal(buffered, "", "the stream ended mid-event");
  return events;
};

Deno.test({
  name: "watchdog: admin drills; a paused rank stalls the group, which restarts and resumes",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const { engine, servers: [admin, plain], close } = await startServices(
      { stallMillis: 1500 },
      // Keep-alives every 300 ms: the stalled streams get some, and the client must skip them.
      [{ adminKey: ADMIN_KEY, keepAliveMillis: 300 }, {}],
    );
    const client = new OpenAI({ baseURL: `${admin.url}/v1`, apiKey: API_KEY, maxRetries: 0 });
    const MAX = 80;
    const prompts = BATCH_PROMPTS.slice(0, 3);
    const complete = async (prompt: string) =>
      (await client.completions.create({
        model: MODEL_ID,
        prompt,
        max_tokens: MAX,
        temperature: 0,
      })).choices[0].text;
    const streamText = async (prompt: string, onChunk: (chunks: number) => void) => {
      const stream = await client.completions.create({
        model: MODEL_ID,
        prompt,
        max_tokens: MAX,
        temperature: 0,
        stream: true,
      });
      let text = "";
      let chunks = 0;
      for await (const chunk of stream) {
        text += chunk.choices.map((c) => c.text).join("");
        onChunk(++chunks);
      }
      return text;
    };
    try {
      const unpaused: string[] = [];
      for (const prompt of prompts) unpaused.push(await complete(prompt));

      await t.step("without --admin-key the admin routes do not exist", async () => {
        for (const key of [null, ADMIN_KEY, API_KEY]) {
          const res = await request(plain, "POST", "/admin/ranks/1/kill", key);
          assert.equal((await errorOf(res, 404)).code, "unknown_url");
        }
        const get = await request(plain, "GET", "/admin/ranks/1/pause?seconds=1", ADMIN_KEY);
        assert.equal((await errorOf(get, 404)).code, "unknown_url");
      });

      await t.step("the admin key is required, and only it", async () => {
        const missing = await request(admin, "POST", "/admin/ranks/1/kill", null);
        assert.match((await errorOf(missing, 401)).message, /admin key/);
        assert.equal(missing.headers.get("www-authenticate"), "Bearer");
        const apiKey = await request(admin, "POST", "/admin/ranks/1/kill", API_KEY);
        assert.equal((await errorOf(apiKey, 401)).code, "invalid_admin_key");
        // And the admin key is not an API key.
        const models = await request(admin, "GET", "/v1/models", ADMIN_KEY);
        assert.equal((await errorOf(models, 401)).code, "invalid_api_key");
      });

      await t.step("a bad rank or duration is a 400 naming it; a wrong method 405", async () => {
        const bad = async (path: string, param: string) => {
          const error = await errorOf(await request(admin, "POST", path, ADMIN_KEY), 400);
          assert.equal(error.param, param, `${path}: ${error.message}`);
          return error.message;
        };
        assert.match(await bad("/admin/ranks/x/kill", "rank"), /'x' is not a rank/);
        assert.match(await bad("/admin/ranks/-1/kill", "rank"), /not a rank/);
        assert.match(await bad("/admin/ranks/2/kill", "rank"), /ranks are 0 to 1/);
        assert.match(await bad("/admin/ranks/7/pause?seconds=1", "rank"), /no rank 7/);
        assert.match(await bad("/admin/ranks/1/pause", "seconds"), /needs \?seconds=N/);
        for (const seconds of ["0", "601", "abc", "-3", "1e3"]) {
          assert.match(
            await bad(`/admin/ranks/1/pause?seconds=${seconds}`, "seconds"),
            new RegExp(`not '${seconds}'`),
          );
        }
        const get = await request(admin, "GET", "/admin/ranks/1/kill", ADMIN_KEY);
        assert.equal(get.headers.get("allow"), "POST");
        await errorOf(get, 405);
        // None of that touched the ranks.
        const h = await health(admin);
        assert.deepEqual([h.status, h.body.state, h.body.restarts], [200, "ready", 0]);
      });

      await t.step(
        "a rank paused mid-stream: 503 'stalled', restart, same greedy text",
        async () => {
          let pause: Promise<Response> | undefined;
          const chunksSeen = prompts.map(() => 0);
          const streams = prompts.map((p, i) =>
            streamText(p, (chunks) => {
              chunksSeen[i] = chunks;
              // Once all three decode, rank 1 goes quiet for far longer than the stall bound.
              if (pause === undefined && chunksSeen.every((n) => n >= 2)) {
                pause = request(admin, "POST", "/admin/ranks/1/pause?seconds=20", ADMIN_KEY);
              }
            })
          );
          const stalled = await waitForHealth(admin, (h) => h.body.state === "stalled", "stalled");
          assert.equal(stalled.status, 503);
          assert.equal(stalled.body.status, "unavailable");
          const paused = await pause!;
          assert.equal(paused.status, 202);
          assert.deepEqual(await paused.json(), { action: "pause", rank: 1, seconds: 20 });
          assert.deepEqual(await Promise.all(streams), unpaused);
          const after = await health(admin);
          assert.deepEqual(
            [after.status, after.body.state, after.body.stalls, after.body.restarts],
            [200, "ready", 1, 1],
          );
          const status = await (await fetch(`${admin.url}/status`, { headers: bearer(API_KEY) }))
            .json();
          assert.match(status.recentRestarts[0].reason, /^stalled: no step completed for/);
          const metrics = await metricsText(admin);
          assert.equal(sampleOf(metrics, "tessera_engine_stalls_total"), 1);
          assert.equal(sampleOf(metrics, "tessera_rank_restarts_total"), 1);
          // The restarted group serves as before.
          assert.equal(await complete(prompts[1]), unpaused[1]);
        },
      );

      await t.step("the kill drill: 202, the group restarts and serves the same text", async () => {
        const killed = await request(admin, "POST", "/admin/ranks/0/kill", ADMIN_KEY);
        assert.equal(killed.status, 202);
        assert.deepEqual(await killed.json(), { action: "kill", rank: 0 });
        // The idle group is pinged, so the death is found without traffic.
        await waitForHealth(admin, (h) => h.body.restarts === 2, "a second restart");
        await waitForHealth(admin, (h) => h.body.state === "ready", "ready again");
        assert.equal(await complete(prompts[2]), unpaused[2]);
        assert.equal((await health(admin)).body.stalls, 1);
      });
      // The engine's own drill API refuses what the route would.
      const refused = await Effect.runPromise(Effect.flip(engine.pauseRank(1, 0)));
      assert.deepEqual([refused._tag, "param" in refused && refused.param], [
        "RequestRejected",
        "millis",
      ]);
    } finally {
      await close();
    }
  },
});

Deno.test({
  name: "watchdog: reloads that keep failing end in-flight requests retriably, with keep-alives",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    // The model is a copy, so it can go away after the load (and come back).
    const dir = await Deno.makeTempDir({ prefix: "tessera_watchdog_" });
    const modelPath = `${dir}/stories260K.bin`;
    await Deno.copyFile(STORIES260K_PATH, modelPath);
    const { engine, servers: [server], close } = await startServices(
      {
        modelPath,
        restartTimeoutMillis: 3000,
        // Only the restart timeout may end these requests, not their resume budget.
        maxResumes: 1000,
        restartBackoff: { initialMillis: 200, maxMillis: 400 },
      },
      [{ keepAliveMillis: 300 }],
    );
    try {
      // From BOS, greedy stories260K runs 256 tokens without a stop token (the fixture).
      const body = { model: MODEL_ID, prompt: "", max_tokens: 250, temperature: 0 };
      const whole = request(server, "POST", "/v1/completions", API_KEY, body);
      await waitForHealth(server, (h) => h.body.running === 1, "the first request running");
      const streamed = await request(server, "POST", "/v1/completions", API_KEY, {
        ...body,
        stream: true,
      });
      assert.equal(streamed.status, 200);
      let broken = false;
      const events = readSse(streamed, (event) => {
        if (!broken && event.startsWith("data: {")) {
          // Both requests decode: take the model file away and crash a rank.
          broken = true;
          Deno.renameSync(modelPath, `${modelPath}.gone`);
          Effect.runFork(engine.killRank(1));
        }
      });

      const failed = await whole;
      const error = await errorOf(failed, 503);
      assert.deepEqual([error.type, error.code], ["service_unavailable", "generation_failed"]);
      assert.match(error.message, /could not be restarted within 3 s/);
      assert.ok(Number(failed.headers.get("retry-after")) >= 1);

      const all = await events;
      const tokens = all.filter((e) => e.startsWith("data: {") && !e.includes('"error"'));
      assert.ok(tokens.length >= 1);
      const afterTokens = all.slice(all.indexOf(tokens.at(-1)!) + 1);
      // Quiet while the group was down: comments kept the stream visibly alive...
      assert.ok(afterTokens.filter((e) => e === ": keep-alive").length >= 1, all.join("\n"));
      // ...and it ends with OpenAI's error event, no [DONE].
      const last = JSON.parse(afterTokens.at(-1)!.slice("data: ".length));
      assert.equal(last.error.code, "generation_failed");
      assert.match(last.error.message, /could not be restarted within 3 s/);
      assert.ok(!all.includes("data: [DONE]"));

      const down = await health(server);
      assert.deepEqual([down.status, down.body.state, down.body.running], [503, "restarting", 0]);
      const metrics = await metricsText(server);
      assert.ok(sampleOf(metrics, "tessera_failed_reloads_total") >= 1);
      assert.equal(sampleOf(metrics, "tessera_restart_timeout_failures_total"), 2);

      // The file is back: the engine, still restarting, gets the group up and serves again.
      await Deno.rename(`${modelPath}.gone`, modelPath);
      await waitForHealth(server, (h) => h.body.state === "ready", "ready after the file is back");
      const again = await request(server, "POST", "/v1/completions", API_KEY, {
        ...body,
        max_tokens: 8,
      });
      assert.equal(again.status, 200);
      assert.equal((await again.json()).usage.completion_tokens, 8);
    } finally {
      await close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "watchdog: failed reloads count against a request's resume budget",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "tessera_budget_" });
    const modelPath = `${dir}/stories260K.bin`;
    await Deno.copyFile(STORIES260K_PATH, modelPath);
    // One rank in this isolate; the restart timeout is far away, so only the budget can act.
    const { engine, close } = await startServices(
      { modelPath, tp: 1, maxResumes: 1, restartTimeoutMillis: 600_000 },
      [],
      InProcessTransport(),
    );
    try {
      const outcome = await Effect.runPromise(
        Effect.gen(function* () {
          const pieces = yield* engine.submit({
            promptTokens: engine.tokenizer.encode("Once upon a time", { bos: true, eos: false }),
            maxTokens: 200,
            temperature: 0,
            topP: 0.9,
            stopAtEos: false,
          });
          let broken = false;
          return yield* Stream.runCollect(Stream.tap(pieces, () => {
            if (broken) return Effect.void;
            broken = true;
            Deno.renameSync(modelPath, `${modelPath}.gone`);
            return engine.killRank(0);
          })).pipe(Effect.map(Chunk.size), Effect.either);
        }).pipe(Effect.timeout(BOUND_MILLIS)),
      );
      // The restart itself is resume 1; the first failed reload is 2, over the budget of 1.
      assert.equal(outcome._tag, "Left");
      const failure = outcome._tag === "Left" ? outcome.left : undefined;
      assert.equal(failure?._tag, "GenerationFailed");
      assert.equal(failure?.retriable, true);
      assert.match(failure?.message ?? "", /failed 2 times .*failed reloads included/);
      assert.equal((await Effect.runPromise(engine.health)).state, "restarting");
    } finally {
      await Deno.rename(`${modelPath}.gone`, modelPath).catch(() => {});
      await close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("watchdog: the serve CLI's flags: --help shows them, bad values are usage errors", async () => {
  const serve = async (args: string[], env: Record<string, string> = {}) => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "cli/serve.ts", ...args],
      cwd: new URL("..", import.meta.url),
      env: { NO_COLOR: "1", ...env },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
    return { code: out.code, stdout: text(out.stdout), stderr: text(out.stderr) };
  };
  const help = await serve(["--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /--admin-key KEY .*\(default: env TESSERA_ADMIN_KEY, else no admin/);
  assert.match(help.stdout, /--stall-seconds S .*\(default: 30\)/);
  assert.match(help.stdout, /--restart-timeout-seconds S .*\(default: 60\)/);
  const model = ["--model", STORIES260K_PATH, "--tokenizer", TOK512_PATH];
  const refused = [
    { args: ["--stall-seconds", "0"], error: /--stall-seconds must be an integer in \[1, 86400\]/ },
    {
      args: ["--restart-timeout-seconds", "soon"],
      error: /--restart-timeout-seconds must be an integer/,
    },
    { args: ["--admin-key", " "], error: /--admin-key \(or TESSERA_ADMIN_KEY\) must not be empty/ },
    { args: ["--api-key", "same-key"], env: { TESSERA_ADMIN_KEY: "same-key" }, error: /differ/ },
  ];
  for (const { args, env, error } of refused) {
    const out = await serve([...model, ...args], env);
    assert.equal(out.code, 2, `${args.join(" ")}: ${out.stderr}`);
    assert.match(out.stderr, error);
  }
});
