/**
 * Dawn's limit notices ("... artificially reduced from 1000000 to 16 ...") stay off stderr
 * when Tessera acquires a device, in one isolate or in several Workers at once, while every
 * other line written meanwhile still arrives; a Worker terminated in mid-capture does not
 * leave stderr captured.
 */
import assert from "node:assert/strict";
import { withoutLimitNoticeLines } from "../gpu/dawn_limit_notices.ts";

const NOTICE = /artificially reduced/;

/** Runs TypeScript files (the first is the entry) in a child Deno; returns its exit and stderr. */
const runScripts = async (...sources: string[]) => {
  const paths = sources.map((_, i) =>
    `${Deno.cwd()}/.dawn-notice-test-${crypto.randomUUID()}-${i}.ts`
  );
  const entry = sources[0].replaceAll("WORKER_URL", `"file://${paths[1] ?? ""}"`);
  try {
    for (const [i, path] of paths.entries()) {
      await Deno.writeTextFile(path, i === 0 ? entry : sources[i]);
    }
    const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--v8-flags=--expose-gc", paths[0]],
      stdout: "piped",
      stderr: "piped",
    }).output();
    return {
      code,
      stdout: new TextDecoder().decode(stdout),
      stderr: new TextDecoder().decode(stderr),
    };
  } finally {
    for (const path of paths) await Deno.remove(path).catch(() => {});
  }
};

/** Capture files of process `pid` left in the temporary directory. */
const leftovers = (pid: string) =>
  [...Deno.readDirSync(Deno.env.get("TMPDIR") ?? "/tmp")]
    .filter((entry) => entry.name.startsWith(`tessera-stderr-${pid}`))
    .map((entry) => entry.name);

Deno.test("Dawn limit notices: a bare Dawn adapter prints them (the case being handled)", async () => {
  const { code, stderr } = await runScripts(`
    import { create } from "webgpu";
    const adapter = await create([]).requestAdapter();
    console.error(adapter ? "adapter" : "no adapter");
  `);
  assert.equal(code, 0);
  assert.match(stderr, /adapter/);
  assert.match(stderr, NOTICE, "this Dawn no longer prints the notices: the filter is moot");
});

Deno.test("Dawn limit notices: acquiring devices prints none, other lines come through, Dawn's instance is freed after", async () => {
  const { code, stdout, stderr } = await runScripts(`
    import { Effect } from "effect";
    import { acquireGpu, releaseDawnInstance } from "./gpu/device.ts";
    console.error("before");
    setTimeout(() => console.error("during"), 0);
    const names = await Effect.runPromise(Effect.scoped(Effect.all([
      acquireGpu({ backend: "dawn" }),
      acquireGpu({ backend: "dawn" }),
    ], { concurrency: 2 }).pipe(Effect.map((gpus) => gpus.map((g) => g.backend)))));
    console.error("after " + names.join(","));
    // Nothing of the capture may keep the adapter alive (a rank could not stop in time).
    console.log(await Effect.runPromise(releaseDawnInstance("5 seconds")) ? "released" : "held");
  `);
  assert.equal(code, 0, stderr);
  assert.doesNotMatch(stderr, NOTICE);
  assert.match(stderr, /before/);
  assert.match(stderr, /during/);
  assert.match(stderr, /after dawn,dawn/);
  assert.equal(stdout.trim(), "released");
});

Deno.test("Dawn limit notices: four Workers acquiring at once print none; the main thread's lines arrive", async () => {
  const { code, stdout, stderr } = await runScripts(
    `
    const workers = Array.from({ length: 4 }, () => new Worker(WORKER_URL, { type: "module" }));
    const timer = setInterval(() => console.error("main is alive"), 1);
    const names = await Promise.all(workers.map((worker, i) => new Promise((resolve) => {
      worker.onmessage = (event) => resolve(event.data);
      worker.postMessage(i);
    })));
    clearInterval(timer);
    for (const worker of workers) worker.terminate();
    console.error("main done");
    console.log(names.join(",") + " " + Deno.pid);
    `,
    `
    import { Effect } from "effect";
    import { acquireGpu } from "./gpu/device.ts";
    self.onmessage = async (event) => {
      console.error("worker " + event.data + " starts");
      const backend = await Effect.runPromise(Effect.scoped(Effect.map(
        acquireGpu({ backend: "dawn" }),
        (gpu) => gpu.backend,
      )));
      self.postMessage(backend);
    };
    `,
  );
  assert.equal(code, 0, stderr);
  assert.doesNotMatch(stderr, NOTICE);
  for (let i = 0; i < 4; i++) assert.match(stderr, new RegExp(`worker ${i} starts`));
  assert.match(stderr, /main is alive/);
  assert.match(stderr, /main done/);
  const [names, pid] = stdout.trim().split(" ");
  assert.equal(names, "dawn,dawn,dawn,dawn");
  assert.deepEqual(leftovers(pid), []);
});

Deno.test("Dawn limit notices: a Worker terminated mid-capture leaves stderr as it was", async () => {
  const { code, stdout, stderr } = await runScripts(
    `
    import { withoutDawnLimitNotices } from "./gpu/dawn_limit_notices.ts";
    import { create } from "webgpu";
    const holder = new Worker(WORKER_URL, { type: "module" });
    await new Promise((resolve) => holder.onmessage = resolve);
    holder.terminate(); // in the middle of its capture: fd 2 still points at its file
    const adapter = await withoutDawnLimitNotices(
      () => create([]).requestAdapter(),
      { staleAfterMillis: 300 },
    );
    console.error("after the takeover " + (adapter ? "adapter" : "none"));
    console.log(Deno.pid);
    `,
    `
    import { withoutDawnLimitNotices } from "./gpu/dawn_limit_notices.ts";
    withoutDawnLimitNotices(() => {
      console.error("written by the holder while it captured");
      self.postMessage("holding");
      return new Promise(() => {}); // never settles: the Worker dies holding the capture
    });
    `,
  );
  assert.equal(code, 0, stderr);
  assert.match(stderr, /written by the holder while it captured/);
  assert.match(stderr, /after the takeover adapter/);
  assert.doesNotMatch(stderr, NOTICE);
  assert.deepEqual(leftovers(stdout.trim()), []);
});

Deno.test("Dawn limit notices: the filter drops exactly the notice lines", () => {
  const text = "a\n" +
    "Warning: maxDynamicUniformBuffersPerPipelineLayout artificially reduced from 1000000 to 16" +
    " to fit dynamic offset allocation limit.\nWarning: something else\nb";
  assert.equal(withoutLimitNoticeLines(text), "a\nWarning: something else\nb");
});
