/**
 * Dawn's limit notices ("... artificially reduced from 1000000 to 16 ...") stay off stderr
 * when Tessera acquires a device, while every other line written meanwhile still arrives.
 */
import assert from "node:assert/strict";
import { withoutLimitNoticeLines } from "../gpu/dawn_limit_notices.ts";

const NOTICE = /artificially reduced/;

const runScript = async (source: string) => {
  const path = await Deno.makeTempFile({ suffix: ".ts", dir: Deno.cwd() });
  try {
    await Deno.writeTextFile(path, source);
    const { code, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--v8-flags=--expose-gc", path],
      stdout: "null",
      stderr: "piped",
    }).output();
    return { code, stderr: new TextDecoder().decode(stderr) };
  } finally {
    await Deno.remove(path);
  }
};

Deno.test("Dawn limit notices: a bare Dawn adapter prints them (the case being handled)", async () => {
  const { code, stderr } = await runScript(`
    import { create } from "webgpu";
    const adapter = await create([]).requestAdapter();
    console.error(adapter ? "adapter" : "no adapter");
  `);
  assert.equal(code, 0);
  assert.match(stderr, /adapter/);
  assert.match(stderr, NOTICE, "this Dawn no longer prints the notices: the filter is moot");
});

Deno.test("Dawn limit notices: acquiring devices prints none; other lines come through", async () => {
  const { code, stderr } = await runScript(`
    import { Effect } from "effect";
    import { acquireGpu } from "./gpu/device.ts";
    console.error("before");
    setTimeout(() => console.error("during"), 0);
    const names = await Effect.runPromise(Effect.scoped(Effect.all([
      acquireGpu({ backend: "dawn" }),
      acquireGpu({ backend: "dawn" }),
    ], { concurrency: 2 }).pipe(Effect.map((gpus) => gpus.map((g) => g.backend)))));
    console.error("after " + names.join(","));
  `);
  assert.equal(code, 0, stderr);
  assert.doesNotMatch(stderr, NOTICE);
  assert.match(stderr, /before/);
  assert.match(stderr, /during/);
  assert.match(stderr, /after dawn,dawn/);
});

Deno.test("Dawn limit notices: the filter drops exactly the notice lines", () => {
  const text = "a\n" +
    "Warning: maxDynamicUniformBuffersPerPipelineLayout artificially reduced from 1000000 to 16" +
    " to fit dynamic offset allocation limit.\nWarning: something else\nb";
  assert.equal(withoutLimitNoticeLines(text), "a\nWarning: something else\nb");
});
