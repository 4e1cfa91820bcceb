/**
 * The OpenAI-compatible service (serve/) end to end on the real stories260K model, through the
 * official `openai` npm client and plain fetch: completions, chat, SSE streams, stop strings,
 * errors in OpenAI's shape (400 naming the field, 401, 404, 405, 413, 429), /health, /metrics,
 * a client that disconnects, and, as a subprocess of `deno task serve`, graceful shutdown.
 *
 * Expected texts are never written here: greedy text from BOS comes from the stories260K greedy
 * fixture, and greedy text for other prompts from `cli/generate.ts --json` (engine/generate.ts
 * `generate`) run as a subprocess. Fast unit tests of the pieces (stop scanner, Prometheus
 * format, chat templates, token budget) come first.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { Template } from "@huggingface/jinja";
import { Effect, Either, Exit, Layer, Metric, MetricBoundaries, Scope } from "effect";
import OpenAI from "openai";
import { InProcessTransport } from "../ranks/transports.ts";
import { WorkersTransport } from "../ranks/transports.ts";
import { InferenceEngine } from "../engine/engine.ts";
import { loadTokenizer } from "../models/files.ts";
import { BOS_ID } from "../models/tokenizer.ts";
import { ChatTemplate, defaultChatTemplate, jinjaChatTemplate } from "../serve/chat_template.ts";
import { planRequest } from "../serve/generation.ts";
import { decodeCompletionRequest } from "../serve/openai_schema.ts";
import { renderPrometheus } from "../serve/prometheus.ts";
import { type RunningServer, startServer } from "../serve/server.ts";
import { StopScanner } from "../serve/stop_strings.ts";
import { makeInferenceEngine } from "../engine/scheduler.ts";
import type { GreedyFixture } from "./fixtures/make_stories260K_greedy.ts";
import { BATCH_PROMPTS } from "./fixtures/batch_prompts.ts";
import { STORIES260K_PATH, TOK512_PATH } from "../assets/paths.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const MODEL = STORIES260K_PATH;
const TOKENIZER = TOK512_PATH;
const FIXTURE = new URL("./fixtures/stories260K_greedy.json", import.meta.url);
const MODEL_ID = "stories260K";
const API_KEY = "sk-tessera-test";

// ---------------------------------------------------------------------------------------------
// Units

Deno.test("serve: the stop scanner cuts at the first stop string, even across pieces", () => {
  const scanner = new StopScanner(["Lily", "\n\n"]);
  const pieces = ["Once", " a girl named L", "i", "ly played"];
  const out = pieces.map((p) => scanner.push(p));
  assert.deepEqual(out.map((o) => o.text), ["Once", " a girl named ", "", ""]);
  assert.deepEqual(out.map((o) => o.stopped), [false, false, false, true]);
  // A held tail that turns out not to be a stop string is released, and flushed at the end.
  const other = new StopScanner(["abc"]);
  assert.deepEqual(other.push("xab"), { text: "x", stopped: false });
  assert.deepEqual(other.push("d a"), { text: "abd ", stopped: false });
  assert.equal(other.flush(), "a");
  assert.deepEqual(new StopScanner([]).push("any"), { text: "any", stopped: false });
});

Deno.test("serve: Prometheus text has HELP/TYPE, escaped labels and cumulative buckets", async () => {
  const counter = Metric.counter("serve_test_requests_total", {
    description: "Requests\nseen",
    incremental: true,
  });
  const histogram = Metric.histogram(
    "serve_test_seconds",
    MetricBoundaries.fromIterable([0.1, 1]),
    "Latency",
  );
  const text = await Effect.runPromise(Effect.gen(function* () {
    yield* Metric.incrementBy(Metric.tagged(counter, "path", 'a"b\\c\nd'), 3);
    for (const v of [0.05, 0.5, 0.7, 5]) yield* Metric.update(histogram, v);
    return renderPrometheus(
      (yield* Metric.snapshot).filter((p) => p.metricKey.name.startsWith("serve_test_")),
    );
  }));
  assert.equal(
    text,
    [
      "# HELP serve_test_requests_total Requests\\nseen",
      "# TYPE serve_test_requests_total counter",
      'serve_test_requests_total{path="a\\"b\\\\c\\nd"} 3',
      "# HELP serve_test_seconds Latency",
      "# TYPE serve_test_seconds histogram",
      'serve_test_seconds_bucket{le="0.1"} 1',
      'serve_test_seconds_bucket{le="1"} 3',
      'serve_test_seconds_bucket{le="+Inf"} 4',
      "serve_test_seconds_sum 6.25",
      "serve_test_seconds_count 4",
      "",
    ].join("\n"),
  );
});

Deno.test("serve: chat templates: the plain default, and Jinja without a second BOS", async () => {
  const messages = [
    { role: "system", content: "Be brief." },
    { role: "user", content: "Hi" },
  ] as const;
  assert.deepEqual(Either.getOrThrow(defaultChatTemplate.render(messages)), {
    text: "system: Be brief.\nuser: Hi\nassistant:",
    addBos: true,
  });
  const template = jinjaChatTemplate(
    new Template(
      "{{ bos_token }}{% for m in messages %}{% if m.role == 'system' %}" +
        "{{ raise_exception('no system messages') }}{% endif %}[{{ m.role }}] {{ m.content }}\n" +
        "{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}",
    ),
    { bos: "<s>", eos: "</s>" },
  );
  assert.deepEqual(Either.getOrThrow(template.render([{ role: "user", content: "Hi" }])), {
    text: "<s>[user] Hi\n[assistant]",
    addBos: false,
  });
  const refused = template.render(messages);
  assert.ok(Either.isLeft(refused) && refused.left.status === 400);
  assert.match(Either.isLeft(refused) ? refused.left.message : "", /no system messages/);
  // The llama2.c tokenizer encodes the default template's text with exactly one BOS.
  const tokenizer = await Effect.runPromise(loadTokenizer(MODEL, TOKENIZER));
  const ids = tokenizer.encode("user: Hi\nassistant:", { bos: true, eos: false });
  assert.equal(ids.filter((t) => t === BOS_ID).length, 1);
});

Deno.test("serve: token budget: the server limit, the context, and the default", () => {
  const params = Either.getOrThrow(
    decodeCompletionRequest({ model: "m", prompt: "x", max_tokens: 100 }),
  );
  const limits = { contextLength: 512, maxTokensLimit: 64 };
  const tooMany = planRequest(params, [1, 2, 3], limits, "prompt");
  assert.ok(Either.isLeft(tooMany) && tooMany.left.param === "max_tokens");
  const noMax = Either.getOrThrow(decodeCompletionRequest({ model: "m", prompt: "x" }));
  const planned = Either.getOrThrow(planRequest(noMax, [1, 2, 3], limits, "prompt"));
  assert.equal(planned.maxTokens, 64);
  const nearlyFull = Array.from({ length: 500 }, () => 5);
  assert.equal(Either.getOrThrow(planRequest(noMax, nearlyFull, limits, "prompt")).maxTokens, 12);
  const full = planRequest(noMax, Array.from({ length: 512 }, () => 5), limits, "prompt");
  assert.ok(Either.isLeft(full) && full.left.code === "context_length_exceeded");
  assert.equal(noMax.stream, false);
  assert.equal(noMax.temperature, 1); // OpenAI's default
});

// ---------------------------------------------------------------------------------------------
// The service in this isolate

/** Greedy `generate` output for a prompt, from the generate CLI (its own process and GPU). */
const referenceGeneration = async (prompt: string, maxTokens: number) => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--v8-flags=--expose-gc",
      "cli/generate.ts",
      "--model",
      MODEL,
      "--tokenizer",
      TOKENIZER,
      "--prompt",
      prompt,
      "--max-tokens",
      String(maxTokens),
      "--json",
    ],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return JSON.parse(new TextDecoder().decode(out.stdout)) as { tokens: number[]; text: string };
};

/** Starts the engine (tp 1, in-process) and the server on a free port, kept until `close`. */
const startService = async () => {
  const scope = Effect.runSync(Scope.make());
  const server = await Effect.runPromise(
    Effect.gen(function* () {
      const engine = yield* makeInferenceEngine({
        modelPath: MODEL,
        tokenizerPath: TOKENIZER,
        tp: 1,
        maxSequences: 4,
        maxQueue: 8,
        modelId: MODEL_ID,
      });
      return yield* startServer({ port: 0, apiKey: API_KEY, maxBodyBytes: 64 * 1024 }).pipe(
        Effect.provideService(InferenceEngine, engine),
        Effect.provideService(ChatTemplate, defaultChatTemplate),
      );
    }).pipe(Effect.provide(Layer.fresh(InProcessTransport())), Scope.extend(scope)),
  );
  return { server, close: () => Effect.runPromise(Scope.close(scope, Exit.void)) };
};

const clientFor = (server: RunningServer, apiKey = API_KEY) =>
  new OpenAI({ baseURL: `${server.url}/v1`, apiKey, maxRetries: 0 });

const post = (
  server: RunningServer,
  path: string,
  body: unknown,
  apiKey: string | null = API_KEY,
) =>
  fetch(`${server.url}${path}`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      ...(apiKey === null ? {} : { authorization: `Bearer ${apiKey}` }),
    },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });

const getJson = async (server: RunningServer, path: string, auth = true) => {
  const res = await fetch(`${server.url}${path}`, {
    headers: auth ? { authorization: `Bearer ${API_KEY}` } : {},
  });
  return { status: res.status, body: await res.json() };
};

const metricsText = async (server: RunningServer) =>
  await (await fetch(`${server.url}/metrics`, { headers: { authorization: `Bearer ${API_KEY}` } }))
    .text();

/** A sample's value in exposition text, or 0 when the series is absent. */
const sampleOf = (text: string, series: string): number => {
  const line = text.split("\n").find((l) => l.startsWith(series + " "));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
};

/** Polls /health until nothing runs or waits (the engine lets a request go at its next turn). */
const waitIdle = async (server: RunningServer, timeoutMillis = 10_000) => {
  const started = Date.now();
  let health = await getJson(server, "/health", false);
  while (health.body.running + health.body.waiting > 0 && Date.now() - started < timeoutMillis) {
    await new Promise((r) => setTimeout(r, 20));
    health = await getJson(server, "/health", false);
  }
  return health.body;
};

const expectApiError = async (
  res: Response,
  status: number,
  fields: { param?: string | null; code?: string | null; type?: string },
) => {
  assert.equal(res.status, status);
  assert.match(res.headers.get("content-type") ?? "", /application\/json/);
  const body = await res.json();
  assert.equal(typeof body.error?.message, "string");
  assert.deepEqual(Object.keys(body.error).sort(), ["code", "message", "param", "type"]);
  for (const [key, value] of Object.entries(fields)) assert.equal(body.error[key], value, key);
  return body.error;
};

Deno.test({
  name: "serve: OpenAI API over the real model, in-process",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const fixture: GreedyFixture = JSON.parse(await Deno.readTextFile(FIXTURE));
    const tokenizer = await Effect.runPromise(loadTokenizer(MODEL, TOKENIZER));
    const chatMessages = [{ role: "user" as const, content: "Tell me a story." }];
    const chatPrompt = Either.getOrThrow(defaultChatTemplate.render(chatMessages)).text;
    // References in their own processes while this one loads the model.
    const [story, chat, service] = await Promise.all([
      referenceGeneration("Once upon a time", 40),
      referenceGeneration(chatPrompt, 30),
      startService(),
    ]);
    const { server } = service;
    const client = clientFor(server);
    /** Greedy text from BOS alone: the fixture's first n tokens. */
    const fromBos = (n: number) => tokenizer.decode([BOS_ID, ...fixture.tokens.slice(0, n)]);

    try {
      await t.step("a completion from BOS equals the greedy fixture", async () => {
        const res = await client.completions.create({
          model: MODEL_ID,
          prompt: "",
          max_tokens: 48,
          temperature: 0,
        });
        assert.equal(res.object, "text_completion");
        assert.match(res.id, /^cmpl-/);
        assert.equal(res.model, MODEL_ID);
        assert.equal(typeof res.created, "number");
        assert.equal(res.choices.length, 1);
        assert.deepEqual({ ...res.choices[0], text: undefined }, {
          text: undefined,
          index: 0,
          logprobs: null,
          finish_reason: "length",
        });
        assert.equal(res.choices[0].text, fromBos(48));
        assert.deepEqual(res.usage, { prompt_tokens: 1, completion_tokens: 48, total_tokens: 49 });
      });

      await t.step("a completion equals generate() for the same prompt", async () => {
        const res = await client.completions.create({
          model: MODEL_ID,
          prompt: ["Once upon a time"],
          max_tokens: 40,
          temperature: 0,
        });
        assert.equal(res.choices[0].text, story.text);
        assert.equal(res.usage?.completion_tokens, story.tokens.length);
        assert.equal(
          res.usage?.prompt_tokens,
          tokenizer.encode("Once upon a time", { bos: true, eos: false }).length,
        );
      });

      await t.step("a chat completion equals generate() on the templated prompt", async () => {
        const res = await client.chat.completions.create({
          model: MODEL_ID,
          messages: chatMessages,
          max_completion_tokens: 30,
          temperature: 0,
        });
        assert.equal(res.object, "chat.completion");
        assert.match(res.id, /^chatcmpl-/);
        assert.deepEqual(res.choices[0].message, { role: "assistant", content: chat.text });
        assert.equal(res.choices[0].finish_reason, "length");
        assert.equal(res.usage?.completion_tokens, 30);
      });

      await t.step("a completion stream concatenates to the same text, then usage", async () => {
        const stream = await client.completions.create({
          model: MODEL_ID,
          prompt: "Once upon a time",
          max_tokens: 40,
          temperature: 0,
          stream: true,
          stream_options: { include_usage: true },
        });
        const chunks: OpenAI.Completion[] = [];
        for await (const chunk of stream) chunks.push(chunk);
        const last = chunks.at(-1)!;
        assert.deepEqual(last.choices, []);
        assert.equal(last.usage?.completion_tokens, story.tokens.length);
        const choices = chunks.flatMap((c) => c.choices);
        assert.ok(chunks.every((c) => c.object === "text_completion" && c.id === chunks[0].id));
        assert.equal(choices.map((c) => c.text).join(""), story.text);
        assert.equal(choices.at(-1)!.finish_reason, "length");
        assert.ok(choices.slice(0, -1).every((c) => c.finish_reason === null));
        assert.ok(chunks.slice(0, -1).every((c) => c.usage === null));
      });

      await t.step("a chat stream: role first, content deltas, finish, [DONE]", async () => {
        const res = await post(server, "/v1/chat/completions", {
          model: MODEL_ID,
          messages: chatMessages,
          max_tokens: 30,
          temperature: 0,
          stream: true,
        });
        assert.equal(res.status, 200);
        assert.equal(res.headers.get("content-type"), "text/event-stream");
        assert.equal(res.headers.get("cache-control"), "no-cache");
        const events = (await res.text()).split("\n\n");
        assert.equal(events.pop(), "");
        assert.equal(events.pop(), "data: [DONE]");
        const chunks = events.map((e) => {
          assert.ok(e.startsWith("data: "), e);
          return JSON.parse(e.slice("data: ".length));
        });
        assert.ok(chunks.every((c) => c.object === "chat.completion.chunk" && !("usage" in c)));
        assert.deepEqual(chunks[0].choices[0].delta, { role: "assistant", content: "" });
        assert.deepEqual(chunks.at(-1).choices[0], {
          index: 0,
          delta: {},
          logprobs: null,
          finish_reason: "length",
        });
        const text = chunks.slice(1, -1).map((c) => c.choices[0].delta.content).join("");
        assert.equal(text, chat.text);
      });

      await t.step("stop strings cut the text, finish with 'stop', and free the slot", async () => {
        const full = fromBos(40);
        const stop = " named";
        const expected = full.slice(0, full.indexOf(stop));
        assert.ok(expected.length > 0 && full.includes(stop), full);
        const res = await client.completions.create({
          model: MODEL_ID,
          prompt: "",
          max_tokens: 40,
          temperature: 0,
          stop: ["zzz", stop],
        });
        assert.equal(res.choices[0].text, expected);
        assert.equal(res.choices[0].finish_reason, "stop");
        assert.ok(res.usage!.completion_tokens < 40);
        const stream = await client.completions.create({
          model: MODEL_ID,
          prompt: "",
          max_tokens: 40,
          temperature: 0,
          stop,
          stream: true,
        });
        const choices: OpenAI.CompletionChoice[] = [];
        for await (const chunk of stream) choices.push(...chunk.choices);
        assert.equal(choices.map((c) => c.text).join(""), expected);
        assert.equal(choices.at(-1)!.finish_reason, "stop");
        const idle = await waitIdle(server);
        assert.equal(idle.running + idle.waiting, 0);
      });

      await t.step("bad bodies are 400s naming the field", async () => {
        const base = { model: MODEL_ID, prompt: "hi" };
        await expectApiError(
          await post(server, "/v1/completions", { ...base, max_tokens: "x" }),
          400,
          {
            param: "max_tokens",
            type: "invalid_request_error",
            code: null,
          },
        );
        await expectApiError(
          await post(server, "/v1/completions", { ...base, temperature: 5 }),
          400,
          { param: "temperature" },
        );
        await expectApiError(
          await post(server, "/v1/chat/completions", { model: MODEL_ID }),
          400,
          { param: "messages" },
        );
        await expectApiError(
          await post(server, "/v1/chat/completions", {
            model: MODEL_ID,
            messages: [{ role: "robot", content: "x" }],
          }),
          400,
          { param: "messages[0].role" },
        );
        await expectApiError(await post(server, "/v1/completions", { ...base, n: 2 }), 400, {
          param: "n",
        });
        await expectApiError(
          await post(server, "/v1/completions", { ...base, stop: ["a", "b", "c", "d", "e"] }),
          400,
          { param: "stop" },
        );
        await expectApiError(
          await post(server, "/v1/completions", { ...base, max_tokens: 100000 }),
          400,
          { param: "max_tokens" },
        );
        await expectApiError(await post(server, "/v1/completions", "{not json"), 400, {
          param: null,
        });
        // Unknown fields are ignored, as OpenAI does.
        const ok = await post(server, "/v1/completions", {
          ...base,
          max_tokens: 1,
          user: "u",
          frequency_penalty: 0,
          some_future_field: { x: 1 },
        });
        assert.equal(ok.status, 200);
        await ok.body?.cancel();
        // The client reports the field too.
        await assert.rejects(
          client.completions.create({ model: MODEL_ID, prompt: "hi", temperature: 5 }),
          (e: unknown) => e instanceof OpenAI.BadRequestError && e.param === "temperature",
        );
      });

      await t.step("API key: missing or wrong is 401; /health stays open", async () => {
        await expectApiError(
          await post(server, "/v1/completions", { model: MODEL_ID }, null),
          401,
          {
            type: "invalid_request_error",
          },
        );
        await expectApiError(
          await post(server, "/v1/completions", { model: MODEL_ID }, "sk-wrong"),
          401,
          { code: "invalid_api_key" },
        );
        await assert.rejects(
          clientFor(server, "sk-wrong").models.list(),
          (e: unknown) => e instanceof OpenAI.AuthenticationError && e.status === 401,
        );
        const metrics = await fetch(`${server.url}/metrics`);
        await expectApiError(metrics, 401, {});
        assert.equal((await getJson(server, "/health", false)).status, 200);
      });

      await t.step("bodies over the limit are 413, counted while reading", async () => {
        const big = JSON.stringify({ model: MODEL_ID, prompt: "x".repeat(100 * 1024) });
        await expectApiError(await post(server, "/v1/completions", big), 413, {});
        // Chunked, without Content-Length: the bound holds on the bytes themselves.
        const bytes = new TextEncoder().encode(big);
        const body = new ReadableStream<Uint8Array>({
          start(controller) {
            for (let at = 0; at < bytes.length; at += 8192) {
              controller.enqueue(bytes.slice(at, at + 8192));
            }
            controller.close();
          },
        });
        const res = await fetch(`${server.url}/v1/completions`, {
          method: "POST",
          headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
          body,
        });
        await expectApiError(res, 413, {});
      });

      await t.step("unknown model 404, unknown route 404, wrong method 405", async () => {
        await assert.rejects(
          client.completions.create({ model: "gpt-4", prompt: "hi" }),
          (e: unknown) => e instanceof OpenAI.NotFoundError && e.code === "model_not_found",
        );
        const route = await fetch(`${server.url}/v1/nothing`, {
          headers: { authorization: `Bearer ${API_KEY}` },
        });
        await expectApiError(route, 404, {});
        const method = await fetch(`${server.url}/v1/completions`, {
          headers: { authorization: `Bearer ${API_KEY}` },
        });
        assert.equal(method.headers.get("allow"), "POST");
        await expectApiError(method, 405, {});
      });

      await t.step("/v1/models and /health", async () => {
        const models = await client.models.list();
        assert.deepEqual(models.data.map((m) => [m.id, m.object, m.owned_by]), [
          [MODEL_ID, "model", "tessera"],
        ]);
        assert.equal((await client.models.retrieve(MODEL_ID)).id, MODEL_ID);
        const health = await getJson(server, "/health", false);
        assert.equal(health.status, 200);
        assert.equal(health.body.status, "ok");
        assert.equal(health.body.state, "ready");
        assert.deepEqual(health.body.ranks.map((r: { rank: number }) => r.rank), [0]);
      });

      await t.step("a disconnecting client interrupts its generation", async () => {
        const before = sampleOf(await metricsText(server), "tessera_generation_tokens_total");
        const res = await post(server, "/v1/completions", {
          model: MODEL_ID,
          prompt: "",
          max_tokens: 400,
          temperature: 0,
          stream: true,
        });
        const reader = res.body!.getReader();
        await reader.read(); // the first event: the stream is flowing
        // It streams: the generation is still running when its first tokens are here.
        assert.equal((await getJson(server, "/health", false)).body.running, 1);
        await reader.cancel();
        const idle = await waitIdle(server);
        assert.equal(idle.running + idle.waiting, 0);
        const generated = sampleOf(await metricsText(server), "tessera_generation_tokens_total") -
          before;
        assert.ok(generated < 400, `${generated} tokens were generated for a client that left`);
      });

      await t.step(
        "/metrics: requests by route and status, tokens, time to first token",
        async () => {
          const text = await metricsText(server);
          assert.ok(text.includes("# TYPE tessera_http_requests_total counter"), text);
          assert.ok(
            sampleOf(text, 'tessera_http_requests_total{route="/v1/completions",status="200"}') >=
              4,
          );
          assert.ok(
            sampleOf(text, 'tessera_http_requests_total{route="/v1/completions",status="400"}') >=
              1,
          );
          assert.ok(sampleOf(text, "tessera_generation_tokens_total") > 200);
          assert.ok(text.includes("# TYPE tessera_time_to_first_token_seconds histogram"));
          const count = sampleOf(text, "tessera_time_to_first_token_seconds_count");
          assert.ok(count >= 6);
          assert.equal(
            sampleOf(text, 'tessera_time_to_first_token_seconds_bucket{le="+Inf"}'),
            count,
          );
          assert.ok(sampleOf(text, "tessera_time_to_first_token_seconds_sum") > 0);
        },
      );
    } finally {
      await service.close();
    }
  },
});

// ---------------------------------------------------------------------------------------------
// deno task serve as a process

Deno.test({
  name: "serve: the CLI refuses work beyond its queue (429) and drains on SIGTERM, then exits 0",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--v8-flags=--expose-gc",
        "cli/serve.ts",
        "--model",
        MODEL,
        "--tokenizer",
        TOKENIZER,
        "--port",
        "0",
        "--max-sequences",
        "1",
        "--max-queue",
        "1",
        "--model-id",
        MODEL_ID,
        // Generous: other processes may share these cores; the stream must finish, not time out.
        "--drain-seconds",
        "120",
      ],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
      env: { TESSERA_API_KEY: API_KEY },
    }).spawn();
    const stderr = new Response(child.stderr).text();
    try {
      const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
      let out = "";
      while (!out.includes("\n")) {
        const { value, done } = await lines.read();
        if (done) break;
        out += value;
      }
      const match = /^listening on (http:\/\/127\.0\.0\.1:(\d+))\n/.exec(out);
      if (match === null) assert.fail(`stdout: ${out}\nstderr: ${await stderr}`);
      const url = match[1];
      const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: API_KEY, maxRetries: 0 });

      // As long as the fixture, so that it is still running when the third request comes,
      // however slowly this test's process is scheduled.
      const stream = await client.completions.create({
        model: MODEL_ID,
        prompt: "",
        max_tokens: 256,
        temperature: 0,
        stream: true,
      });
      const iterator = stream[Symbol.asyncIterator]();
      const first = await iterator.next();
      assert.equal(first.done, false);
      let text = first.value.choices[0].text;

      // One slot, taken; one place in the queue, which the next request takes...
      // Greedy (OpenAI's default temperature is 1), so its one token is the fixture's first.
      const queued = client.completions.create({
        model: MODEL_ID,
        prompt: "",
        max_tokens: 1,
        temperature: 0,
      }).then((res) => res.choices[0].text, (e: unknown) => e);
      const health = async () => await (await fetch(`${url}/health`)).json();
      while ((await health()).waiting < 1) await new Promise((r) => setTimeout(r, 10));
      // ...so the one after is refused.
      await assert.rejects(
        client.completions.create({ model: MODEL_ID, prompt: "hi", max_tokens: 1 }),
        (e: unknown) => e instanceof OpenAI.RateLimitError && e.status === 429,
      );

      child.kill("SIGTERM");
      // The signal takes a moment on a loaded machine; within a bound, /health is refused
      // while the stream is still being served.
      const refusedBy = Date.now() + 30_000;
      let refused = false;
      while (!refused && Date.now() < refusedBy) {
        refused = await fetch(`${url}/health`).then(
          async (res) => (await res.body?.cancel(), false),
          () => true,
        );
        if (!refused) await new Promise((r) => setTimeout(r, 50));
      }
      assert.ok(refused, "new connections are refused while draining");

      let finish: string | null = null;
      for (let next = await iterator.next(); !next.done; next = await iterator.next()) {
        text += next.value.choices[0].text;
        finish = next.value.choices[0].finish_reason ?? finish;
      }
      const fixture: GreedyFixture = JSON.parse(await Deno.readTextFile(FIXTURE));
      const tokenizer = await Effect.runPromise(loadTokenizer(MODEL, TOKENIZER));
      assert.equal(finish, "length");
      // The queued request was in flight too: it ran during the drain.
      assert.equal(await queued, tokenizer.decode([BOS_ID, fixture.tokens[0]]));
      assert.equal(text, tokenizer.decode([BOS_ID, ...fixture.tokens]));
      const status = await child.status;
      assert.equal(status.code, 0, await stderr);
    } finally {
      try {
        child.kill("SIGKILL");
      } catch { /* already gone */ }
      await child.status;
      await stderr;
    }
  },
});

// ---------------------------------------------------------------------------------------------
// Batching and supervision through the API, over 2 Worker ranks

Deno.test({
  name: "serve: 8 concurrent streams equal single requests; a rank killed mid-stream resumes",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const scope = Effect.runSync(Scope.make());
    const { server, engine } = await Effect.runPromise(
      Effect.gen(function* () {
        const engine = yield* makeInferenceEngine({
          modelPath: MODEL,
          tokenizerPath: TOKENIZER,
          tp: 2,
          maxSequences: 8,
          modelId: MODEL_ID,
          restartBackoff: { initialMillis: 400, maxMillis: 2000 },
        });
        const server = yield* startServer({ port: 0, apiKey: API_KEY }).pipe(
          Effect.provideService(InferenceEngine, engine),
          Effect.provideService(ChatTemplate, defaultChatTemplate),
        );
        return { server, engine };
      }).pipe(Effect.provide(Layer.fresh(WorkersTransport())), Scope.extend(scope)),
    );
    const client = clientFor(server);
    const prompts = BATCH_PROMPTS;
    const complete = async (prompt: string, maxTokens: number) =>
      (await client.completions.create({
        model: MODEL_ID,
        prompt,
        max_tokens: maxTokens,
        temperature: 0,
      })).choices[0].text;
    const streamText = async (prompt: string, maxTokens: number, onChunk = (_: number) => {}) => {
      const stream = await client.completions.create({
        model: MODEL_ID,
        prompt,
        max_tokens: maxTokens,
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
      const alone: string[] = [];
      for (const prompt of prompts) alone.push(await complete(prompt, 32));

      await t.step("eight concurrent streams equal the single-request runs", async () => {
        const before = await metricsText(server);
        const together = await Promise.all(prompts.map((p) => streamText(p, 32)));
        assert.deepEqual(together, alone);
        // They really were decoded together: some steps carried more than 4 rows.
        const after = await metricsText(server);
        const delta = (series: string) => sampleOf(after, series) - sampleOf(before, series);
        assert.ok(
          delta('tessera_batch_size_bucket{le="4"}') < delta("tessera_batch_size_count"),
          "no decode step batched more than 4 sequences",
        );
      });

      await t.step("a rank killed mid-stream: 503 while restarting, streams resume", async () => {
        let killed = false;
        const streams = prompts.slice(0, 3).map((p, i) =>
          streamText(p, 32, (chunks) => {
            if (i === 0 && chunks === 5 && !killed) {
              killed = true;
              Effect.runFork(engine.killRank(1));
            }
          })
        );
        // While the group restarts, new work is refused with 503 and Retry-After.
        const started = Date.now();
        let refused: Response | undefined;
        while (refused === undefined && Date.now() - started < 30_000) {
          const health = await getJson(server, "/health", false);
          if (health.body.state === "restarting") {
            assert.equal(health.status, 503);
            const res = await post(server, "/v1/completions", {
              model: MODEL_ID,
              prompt: "x",
              max_tokens: 1,
            });
            if (res.status === 503) refused = res;
            else await res.body?.cancel();
          } else await new Promise((r) => setTimeout(r, 5));
        }
        assert.ok(refused, "no request was refused while the group restarted");
        assert.ok(Number(refused.headers.get("retry-after")) >= 1);
        await refused.body?.cancel();
        assert.deepEqual(await Promise.all(streams), alone.slice(0, 3));
        const health = await getJson(server, "/health", false);
        assert.equal(health.status, 200);
        assert.equal(health.body.restarts, 1);
        const text = await metricsText(server);
        assert.equal(sampleOf(text, "tessera_rank_restarts_total"), 1);
        assert.ok(text.includes('tessera_rank_step_seconds_count{rank="1"}'));
        assert.ok(text.includes('tessera_collective_seconds_count{rank="0"}'));
        assert.equal(await complete(prompts[0], 32), alone[0]);
      });
    } finally {
      await Effect.runPromise(Scope.close(scope, Exit.void));
    }
  },
});
