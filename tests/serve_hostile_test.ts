/**
 * The service against hostile input, on the real stories260K model (tp 1, in-process) and real
 * sockets: a huge prompt (refused by its length while /health keeps answering), slow or idle
 * connections (closed by the header, body and idle timeouts, seen over raw TCP), deeply nested
 * JSON, a malformed path escape, a non-JSON Content-Type, CORS off and on, a model whose weights
 * hold a NaN, and a named pipe given as the model.
 *
 * Every wait is bounded; none asserts a duration. A bound only turns a hang into a failure.
 * The long prompt goes to `deno task serve` in its own process (with the new flags), so a
 * server blocked tokenizing cannot also block the test's own bound.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { Effect, Exit, Layer, Scope } from "effect";
import { InProcessTransport } from "../ranks/transports.ts";
import { STORIES260K_PATH, TOK512_PATH } from "../assets/paths.ts";
import { InferenceEngine } from "../engine/engine.ts";
import { makeInferenceEngine } from "../engine/scheduler.ts";
import { planLlama2cLayout } from "../models/llama2c.ts";
import { ChatTemplate, defaultChatTemplate } from "../serve/chat_template.ts";
import { PROMPT_BYTES_PER_CONTEXT_TOKEN } from "../serve/generation.ts";
import { type RunningServer, type ServerOptions, startServer } from "../serve/server.ts";
import { HF_TEST_CONFIG, llama2cBytes, makeWeights } from "./fixtures/hf_model.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const MODEL_ID = "stories260K";
/** A bound on any one wait: long enough for a loaded 2-core machine, short of a hang. */
const BOUND_MILLIS = 60_000;
const ORIGIN = "http://app.example";

/** Short timeouts set by these tests, so a closed socket shows up quickly. */
const TIMEOUTS = {
  headerTimeoutMillis: 400,
  bodyTimeoutMillis: 800,
  idleTimeoutMillis: 600,
} satisfies ServerOptions;

/** An engine for `modelPath` and servers over it, all kept until `close`. */
const startServices = async (modelPath: string, servers: readonly ServerOptions[]) => {
  const scope = Effect.runSync(Scope.make());
  const running = await Effect.runPromise(
    Effect.gen(function* () {
      const engine = yield* makeInferenceEngine({
        modelPath,
        tokenizerPath: TOK512_PATH,
        tp: 1,
        maxSequences: 2,
        modelId: MODEL_ID,
      });
      return yield* Effect.forEach(servers, (options) =>
        startServer({ port: 0, ...options }).pipe(
          Effect.provideService(InferenceEngine, engine),
          Effect.provideService(ChatTemplate, defaultChatTemplate),
        ));
    }).pipe(Effect.provide(Layer.fresh(InProcessTransport())), Scope.extend(scope)),
  );
  return { servers: running, close: () => Effect.runPromise(Scope.close(scope, Exit.void)) };
};

const postJson = (
  server: Pick<RunningServer, "url">,
  path: string,
  body: unknown,
  init: RequestInit = {},
) =>
  fetch(`${server.url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: typeof body === "string" ? body : JSON.stringify(body),
    signal: AbortSignal.timeout(BOUND_MILLIS),
    ...init,
  });

const errorOf = async (res: Response, status: number) => {
  const body = await res.json();
  assert.equal(res.status, status, JSON.stringify(body));
  return body.error as { message: string; type: string; param: string | null; code: string };
};

/**
 * Opens a raw TCP connection, lets `send` write to it, and reads until the server closes it.
 * `closedByServer` is false when the bound ran out first (the socket was still open).
 */
const rawConnection = async (
  server: Pick<RunningServer, "port">,
  send: (conn: Deno.Conn, received: (pattern: RegExp) => Promise<void>) => Promise<void>,
) => {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  // `received(pattern)` resolves once the bytes read so far match: a step waits for an answer
  // instead of guessing how long a loaded machine takes to send it.
  const decoder = new TextDecoder();
  let textSoFar = "";
  const waiters: { pattern: RegExp; resolve: () => void }[] = [];
  const wake = () => {
    for (const waiter of waiters.filter((w) => w.pattern.test(textSoFar))) {
      waiters.splice(waiters.indexOf(waiter), 1);
      waiter.resolve();
    }
  };
  const received = (pattern: RegExp) =>
    new Promise<void>((resolve) => {
      waiters.push({ pattern, resolve });
      wake();
    });
  let closedByServer = true;
  const bound = setTimeout(() => {
    closedByServer = false;
    conn.close();
  }, BOUND_MILLIS);
  const sending = send(conn, received).catch(() => {}); // writes fail once the server has closed
  const chunks: Uint8Array[] = [];
  const buffer = new Uint8Array(16 * 1024);
  try {
    for (let n = await conn.read(buffer); n !== null; n = await conn.read(buffer)) {
      chunks.push(buffer.slice(0, n));
      textSoFar += decoder.decode(buffer.slice(0, n), { stream: true });
      wake();
    }
  } catch { /* reset by the server, or closed by the bound */ }
  clearTimeout(bound);
  for (const waiter of waiters.splice(0)) waiter.resolve(); // the connection is over
  try {
    conn.close();
  } catch { /* already closed */ }
  await sending;
  const text = new TextDecoder().decode(
    chunks.reduce((all, part) => new Uint8Array([...all, ...part]), new Uint8Array()),
  );
  return { closedByServer, text };
};

const write = (conn: Deno.Conn, text: string) => conn.write(new TextEncoder().encode(text));
const sleep = (millis: number) => new Promise((r) => setTimeout(r, millis));

Deno.test({
  name: "serve: hostile requests get clear answers, slow and idle sockets are closed",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const { servers: [plain, cors, draining, patientHeaders], close } = await startServices(
      STORIES260K_PATH,
      [
        TIMEOUTS,
        { ...TIMEOUTS, allowedOrigins: [ORIGIN, "http://other.example"] },
        // Idle longer than the bound: only the shutdown can close its kept-alive connection.
        { ...TIMEOUTS, idleTimeoutMillis: 10 * BOUND_MILLIS },
        // Headers may take longer than the bound: only a 408's `connection: close` ends it.
        { ...TIMEOUTS, headerTimeoutMillis: 10 * BOUND_MILLIS },
      ],
    );
    try {
      await t.step("a header trickle gets 408 and is closed", async () => {
        const { closedByServer, text } = await rawConnection(plain, async (conn) => {
          await write(conn, "GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n");
          for (let i = 0; i < 300; i++) {
            await sleep(100);
            await write(conn, `x-trickle-${i}: 1\r\n`);
          }
        });
        assert.ok(closedByServer, "the connection was still open");
        assert.match(text, /^HTTP\/1\.1 408 /);
      });

      await t.step("a connection that sends nothing is closed", async () => {
        const { closedByServer, text } = await rawConnection(plain, () => Promise.resolve());
        assert.ok(closedByServer, "the connection was still open");
        assert.equal(text, "");
      });

      await t.step(
        "a kept-alive connection serves requests, then is closed when idle",
        async () => {
          const request = "GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n";
          const { closedByServer, text } = await rawConnection(plain, async (conn, received) => {
            await write(conn, request);
            await received(/HTTP\/1\.1 200 OK/); // well within the idle timeout: reuse it
            await write(conn, request);
          });
          assert.ok(closedByServer, "the connection was still open");
          assert.equal(text.match(/HTTP\/1\.1 200 OK/g)?.length, 2, text);
        },
      );

      await t.step(
        "a server that stops accepting closes its idle kept-alive connections at once",
        async () => {
          // A stream in flight keeps the server draining (as SIGTERM's drain would).
          const stream = await postJson(draining, "/v1/completions", {
            model: MODEL_ID,
            prompt: "",
            max_tokens: 200,
            stream: true,
          });
          const reader = stream.body!.getReader();
          await reader.read();
          let stopped: Promise<void> | undefined;
          const { closedByServer, text } = await rawConnection(draining, async (conn, received) => {
            await write(conn, "GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n");
            await received(/\r\n\r\n[\s\S]*\}/); // answered (headers and JSON body): idle now
            stopped = Effect.runPromise(draining.shutdown);
          });
          await reader.cancel();
          await stopped;
          assert.ok(closedByServer, "the idle connection stayed open while the server drained");
          assert.equal(text.match(/HTTP\/1\.1 200 OK/g)?.length, 1, text);
        },
      );

      await t.step("a body trickle gets 408 and is closed", async () => {
        const { closedByServer, text } = await rawConnection(plain, async (conn) => {
          await write(
            conn,
            "POST /v1/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n" +
              "content-type: application/json\r\ncontent-length: 1000\r\n\r\n{",
          );
          for (let i = 0; i < 300; i++) {
            await sleep(100);
            await write(conn, " ");
          }
        });
        assert.ok(closedByServer, "the connection was still open");
        assert.match(text, /^HTTP\/1\.1 408 /);
        assert.match(text, /"code":"request_timeout"/);
      });

      await t.step("a body trickle is closed right after its 408, still sending", async () => {
        const { closedByServer, text } = await rawConnection(patientHeaders, async (conn) => {
          await write(
            conn,
            "POST /v1/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n" +
              "content-type: application/json\r\ncontent-length: 100000\r\n\r\n{",
          );
          for (let i = 0; i < 3000; i++) {
            await sleep(50);
            await write(conn, " ");
          }
        });
        assert.ok(closedByServer, "the connection stayed open after the 408");
        assert.match(text, /^HTTP\/1\.1 408 /);
      });

      await t.step("JSON nested 3000 deep is a 400 naming the depth", async () => {
        const deep = '{"model":"x","prompt":' + "[".repeat(3000) + "]".repeat(3000) + "}";
        const error = await errorOf(await postJson(plain, "/v1/completions", deep), 400);
        assert.match(error.message, /nested more than 64 levels/);
        // Brackets inside strings are text, not nesting.
        const res = await postJson(plain, "/v1/completions", {
          model: MODEL_ID,
          prompt: "[".repeat(100),
          max_tokens: 1,
        });
        assert.equal(res.status, 200);
        await res.body?.cancel();
      });

      await t.step("a malformed escape in a model id is 404 model_not_found", async () => {
        const res = await fetch(`${plain.url}/v1/models/%ZZ`);
        const error = await errorOf(res, 404);
        assert.equal(error.code, "model_not_found");
        const wrongMethod = await fetch(`${plain.url}/v1/models/${MODEL_ID}`, { method: "DELETE" });
        assert.equal((await errorOf(wrongMethod, 405)).code, "method_not_allowed");
      });

      await t.step("a Content-Type other than JSON is 415", async () => {
        const res = await postJson(plain, "/v1/completions", { model: MODEL_ID, prompt: "x" }, {
          headers: { "content-type": "text/plain" },
        });
        assert.equal((await errorOf(res, 415)).code, "unsupported_media_type");
        const charset = await postJson(plain, "/v1/completions", {
          model: MODEL_ID,
          prompt: "x",
          max_tokens: 1,
        }, { headers: { "content-type": "application/json; charset=utf-8" } });
        assert.equal(charset.status, 200);
        await charset.body?.cancel();
      });

      await t.step(
        "no CORS headers unless origins are allowed; then preflight and echo",
        async () => {
          const preflightOf = (server: RunningServer, origin: string) =>
            fetch(`${server.url}/v1/chat/completions`, {
              method: "OPTIONS",
              headers: {
                origin,
                "access-control-request-method": "POST",
                "access-control-request-headers": "authorization, content-type",
              },
            });
          const off = await preflightOf(plain, ORIGIN);
          assert.equal(off.headers.get("access-control-allow-origin"), null);
          assert.notEqual(off.status, 204);
          await off.body?.cancel();
          const health = await fetch(`${plain.url}/health`, { headers: { origin: ORIGIN } });
          assert.equal(health.headers.get("access-control-allow-origin"), null);
          await health.body?.cancel();

          const on = await preflightOf(cors, ORIGIN);
          assert.equal(on.status, 204);
          assert.equal(on.headers.get("access-control-allow-origin"), ORIGIN);
          assert.equal(on.headers.get("access-control-allow-methods"), "POST");
          assert.equal(
            on.headers.get("access-control-allow-headers"),
            "authorization, content-type",
          );
          await on.body?.cancel();
          const models = await fetch(`${cors.url}/v1/models`, { headers: { origin: ORIGIN } });
          assert.equal(models.status, 200);
          assert.equal(models.headers.get("access-control-allow-origin"), ORIGIN);
          assert.match(models.headers.get("vary") ?? "", /origin/i);
          await models.body?.cancel();
          const stranger = await preflightOf(cors, "http://evil.example");
          assert.equal(stranger.headers.get("access-control-allow-origin"), null);
          assert.notEqual(stranger.status, 204);
          await stranger.body?.cancel();
        },
      );
    } finally {
      await close();
    }
  },
});

/** `deno task serve` with `flags`, on a free port; its URL once it listens. */
const spawnServe = async (flags: readonly string[]) => {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--v8-flags=--expose-gc",
      "cli/serve.ts",
      "--model",
      STORIES260K_PATH,
      "--tokenizer",
      TOK512_PATH,
      "--port",
      "0",
      "--model-id",
      MODEL_ID,
      ...flags,
    ],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!out.includes("\n")) {
    const { value, done } = await lines.read();
    if (done) break;
    out += value;
  }
  const stop = async () => {
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
    await child.status;
    await lines.cancel();
    return await stderr;
  };
  const match = /^listening on (http:\/\/127\.0\.0\.1:(\d+))\n/.exec(out);
  if (match === null) assert.fail(`stdout: ${out}\nstderr: ${await stop()}`);
  return { url: match[1], port: Number(match[2]), stop };
};

Deno.test({
  name: "serve: the CLI refuses a 100k-character prompt by its length while /health answers",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    // Its own process: a server stuck tokenizing must not also stall this test's timers.
    const serve = await spawnServe([
      "--idle-timeout-seconds",
      "1",
      "--header-timeout-seconds",
      "1",
      "--body-timeout-seconds",
      "2",
      "--allowed-origins",
      `${ORIGIN},http://other.example`,
    ]);
    const server = { url: serve.url, port: serve.port };
    try {
      const prompt = "Once upon a time there was a dog. ".repeat(3000).slice(0, 100_000);
      const long = postJson(server, "/v1/completions", { model: MODEL_ID, prompt });
      long.catch(() => {}); // awaited below; a failed /health must not leave it unhandled
      // Sent while the long request is in the server: its event loop must still answer.
      const health = await fetch(`${server.url}/health`, {
        headers: { origin: ORIGIN },
        signal: AbortSignal.timeout(BOUND_MILLIS),
      });
      assert.equal(health.status, 200);
      assert.equal(health.headers.get("access-control-allow-origin"), ORIGIN); // the flag took
      await health.body?.cancel();
      const refused = await errorOf(await long, 400);
      assert.equal(refused.param, "prompt");
      assert.equal(refused.code, "context_length_exceeded");
      assert.match(refused.message, /100000 bytes/);
      const chat = await errorOf(
        await postJson(server, "/v1/chat/completions", {
          model: MODEL_ID,
          messages: [{ role: "user", content: prompt }],
        }),
        400,
      );
      assert.equal(chat.param, "messages");
      // Within the byte bound but over the context: refused by its token count.
      const bytes = 512 * PROMPT_BYTES_PER_CONTEXT_TOKEN - 64;
      const tokens = await errorOf(
        await postJson(server, "/v1/completions", {
          model: MODEL_ID,
          prompt: "a ".repeat(bytes / 2),
        }),
        400,
      );
      assert.equal(tokens.code, "context_length_exceeded");
      assert.match(tokens.message, /tokens, leaving no room/);
      // --idle-timeout-seconds: a silent connection is closed.
      const idle = await rawConnection(server, () => Promise.resolve());
      assert.ok(idle.closedByServer, "the connection was still open");
    } finally {
      await serve.stop();
    }
  },
});

Deno.test({
  name: "serve: a model with a NaN weight fails its requests with 'non-finite logits', no restart",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const config = { ...HF_TEST_CONFIG, vocabSize: 512 }; // tok512's vocabulary
    const weights = makeWeights(config, "F32");
    assert.ok(planLlama2cLayout(config).stored.some((e) => e.name === "norm"));
    weights.get("norm")![0] = NaN; // the final norm: every logit sees it
    const dir = await Deno.makeTempDir();
    const modelPath = `${dir}/nan.bin`;
    await Deno.writeFile(modelPath, llama2cBytes(config, weights));
    const { servers: [server], close } = await startServices(modelPath, [{}]);
    try {
      for (const temperature of [0, 1]) {
        const res = await postJson(server, "/v1/completions", {
          model: MODEL_ID,
          prompt: "Once",
          max_tokens: 4,
          temperature,
        });
        const error = await errorOf(res, 500);
        assert.match(error.message, /non-finite logits/);
        assert.equal(error.type, "server_error");
      }
      // The request failed, not the ranks: the engine is ready and never restarted.
      const health = await (await fetch(`${server.url}/health`)).json();
      assert.equal(health.state, "ready");
      assert.equal(health.restarts, 0);
    } finally {
      await close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("serve: a named pipe as --model or tokenizer is a LoadError, not a hang", async () => {
  const dir = await Deno.makeTempDir();
  const fifo = `${dir}/model.fifo`;
  try {
    const made = await new Deno.Command("mkfifo", { args: [fifo] }).output();
    assert.equal(made.code, 0, new TextDecoder().decode(made.stderr));
    const loadWith = (modelPath: string, tokenizerPath: string) =>
      Effect.runPromise(
        Effect.scoped(makeInferenceEngine({ modelPath, tokenizerPath, tp: 1 })).pipe(
          Effect.provide(Layer.fresh(InProcessTransport())),
          Effect.timeoutFail({ duration: BOUND_MILLIS, onTimeout: () => new Error("it hung") }),
          Effect.flip,
        ),
      );
    for (const [model, tokenizer] of [[fifo, TOK512_PATH], [STORIES260K_PATH, fifo]]) {
      const error = await loadWith(model, tokenizer);
      assert.ok("_tag" in error && error._tag === "LoadError", String(error));
      assert.match(error.message, /not a regular file/);
      assert.ok(error.message.includes(fifo), error.message);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
