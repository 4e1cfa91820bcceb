/**
 * The status page (`GET /`) in headless Chromium against a live service on the real stories260K
 * over 2 Worker ranks, after some traffic and a rank killed and restarted: the page's script
 * renders both ranks with their adapter and device memory, the tokens/s of the last minute and
 * the restart. The screenshot is kept in tests/output/ (README's picture comes from it).
 * Chromium is Debian's `chromium` package (scripts/setup.sh installs it).
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { Effect, Exit, Layer, Scope } from "effect";
import { WorkersTransport } from "../ranks/transports.ts";
import { InferenceEngine } from "../engine/engine.ts";
import { makeInferenceEngine } from "../engine/scheduler.ts";
import { ChatTemplate, defaultChatTemplate } from "../serve/chat_template.ts";
import { startServer } from "../serve/server.ts";
import { STORIES260K_PATH, TOK512_PATH } from "../assets/paths.ts";

const MODEL = STORIES260K_PATH;
const TOKENIZER = TOK512_PATH;
const OUTPUT = fileURLToPath(new URL("./output/", import.meta.url));
const API_KEY = "sk-status-test";

const chromium = async (...args: string[]) => {
  const command = new Deno.Command("chromium", {
    args: [
      ...["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"],
      ...["--no-first-run", "--window-size=1100,860", "--virtual-time-budget=5000"],
      ...args,
    ],
    stdout: "piped",
    stderr: "piped",
  });
  try {
    const out = await command.output();
    const decode = (b: Uint8Array) => new TextDecoder().decode(b);
    return { code: out.code, stdout: decode(out.stdout), stderr: decode(out.stderr) };
  } catch (e) {
    throw new Error(
      `cannot run chromium (${(e as Error).message}); install Debian's chromium package ` +
        "(scripts/setup.sh does)",
    );
  }
};

/** The text of every element whose id is given, from Chromium's serialised DOM. */
const textOf = (dom: string, id: string) => {
  const match = dom.match(new RegExp(`id="${id}"[^>]*>([\\s\\S]*?)</(tbody|span|b|polyline)>`));
  return match ? match[1].replace(/<[^>]+>/g, " ").replace(/\s+/g, " ").trim() : "";
};

Deno.test("status page: headless Chromium shows ranks, adapters, memory, tokens/s and the restart", async () => {
  const scope = Effect.runSync(Scope.make());
  const { server, open, engine } = await Effect.runPromise(
    Effect.gen(function* () {
      const engine = yield* makeInferenceEngine({
        modelPath: MODEL,
        tokenizerPath: TOKENIZER,
        tp: 2,
        modelId: "stories260K",
        restartBackoff: { initialMillis: 50, maxMillis: 200 },
      });
      const serve = (apiKey?: string) =>
        startServer({ port: 0, apiKey }).pipe(
          Effect.provideService(InferenceEngine, engine),
          Effect.provideService(ChatTemplate, defaultChatTemplate),
        );
      // Chromium cannot type the key into the page, so it gets a keyless server of the engine.
      return { server: yield* serve(API_KEY), open: yield* serve(), engine };
    }).pipe(Effect.provide(Layer.fresh(WorkersTransport())), Scope.extend(scope)),
  );
  try {
    const headers = { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" };
    const complete = (prompt: string) =>
      fetch(`${server.url}/v1/completions`, {
        method: "POST",
        headers,
        body: JSON.stringify({ model: "stories260K", prompt, max_tokens: 48, temperature: 0 }),
      }).then(async (r) => {
        const body = await r.json();
        assert.equal(r.status, 200, JSON.stringify(body));
        return body;
      });
    await Promise.all(["Once upon a time", "The dog", "A little bird"].map(complete));
    // A rank dies; the engine restarts the group and the page must list it.
    await Effect.runPromise(engine.killRank(1));
    await complete("Lily and Ben");
    const status = await (await fetch(`${server.url}/status`, { headers })).json();
    assert.equal(status.state, "ready");
    assert.equal(status.recentRestarts.length, 1);
    const generatedSoFar = status.tokensPerSecond.reduce((a: number, b: number) => a + b, 0);

    // The page itself is open; its data needs the key like every API route.
    const page = await fetch(`${server.url}/`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get("content-type") ?? "", /text\/html/);
    assert.match(await page.text(), /<title>Tessera status<\/title>/);
    const denied = await fetch(`${server.url}/status`);
    assert.equal(denied.status, 401);
    await denied.body?.cancel();

    await Deno.mkdir(OUTPUT, { recursive: true });
    const screenshot = `${OUTPUT}status_page.png`;
    const dom = await chromium("--dump-dom", `${open.url}/`);
    assert.equal(dom.code, 0, dom.stderr);
    assert.equal(textOf(dom.stdout, "state"), "ready", dom.stdout);
    const ranks = textOf(dom.stdout, "ranks");
    // Each row: memory cells (weights, KV cache, activations, total, budget) and the context.
    assert.match(
      ranks,
      /^0 alive dawn llvmpipe.*( [\d.]+ MB){5} 512 of 512 1 alive dawn llvmpipe.*( [\d.]+ MB){5} 512 of 512$/,
      ranks,
    );
    assert.match(textOf(dom.stdout, "restart-list"), /\b1\b.*Worker was killed/);
    assert.equal(textOf(dom.stdout, "restarts"), "1");
    const points = dom.stdout.match(/id="rate"[^>]*points="([^"]*)"/)?.[1] ?? "";
    assert.equal(points.trim().split(" ").length, 60, "one chart point per second");
    assert.ok(generatedSoFar > 0);

    const shot = await chromium(`--screenshot=${screenshot}`, `${open.url}/`);
    assert.equal(shot.code, 0, shot.stderr);
    const png = await Deno.readFile(screenshot);
    assert.deepEqual([...png.subarray(1, 4)], [0x50, 0x4e, 0x47], "a PNG file");
    console.log(`status page screenshot: ${screenshot} (${png.length} bytes)`);
  } finally {
    await Effect.runPromise(Scope.close(scope, Exit.void));
  }
});
