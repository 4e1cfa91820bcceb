/**
 * Ranks on adapters: the placement rules on made-up adapter lists (distinct GPUs, too few,
 * shared, identical ones with and without a driver file each, a name inside another), Dawn's
 * adapter listing parsed, and the real path on lavapipe: the Vulkan loader given lavapipe's
 * driver file twice shows two identical adapters, and `--devices 0,1` over local rank processes
 * puts each rank on its own with the same tokens as ranks sharing one.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { Either } from "effect";
import {
  type AdapterListing,
  parseDawnAdapterList,
  parseDevices,
  placeRanks,
  requireOneProcess,
} from "../gpu/adapters.ts";
import { STORIES260K_PATH, TOK512_PATH } from "../assets/paths.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

const adapters = (...names: string[]): AdapterListing[] =>
  names.map((name, index) => ({ index, backend: "vulkan", name }));

const placed = (...args: Parameters<typeof placeRanks>) => {
  const result = placeRanks(...args);
  if (Either.isLeft(result)) throw new Error(`expected a placement: ${result.left.message}`);
  return result.right;
};

const refused = (...args: Parameters<typeof placeRanks>) => {
  const result = placeRanks(...args);
  if (Either.isRight(result)) throw new Error("expected a refusal");
  assert.equal(result.left._tag, "AdapterSelectionError");
  return result.left.message;
};

Deno.test("adapters: rank r goes on adapter r, or where --devices says, by Dawn's name filter", () => {
  const four = adapters("GPU A", "GPU B", "GPU C", "GPU D");
  const byDefault = placed(4, four, {});
  assert.deepEqual(byDefault.map((p) => p.dawnName), ["GPU A", "GPU B", "GPU C", "GPU D"]);
  assert.deepEqual(byDefault.map((p) => p.processEnv), [{}, {}, {}, {}]);
  assert.equal(byDefault[2].description, "adapter 2 of 4");
  const chosen = placed(2, four, { devices: [3, 1] });
  assert.deepEqual(chosen.map((p) => [p.rank, p.adapter.index]), [[0, 3], [1, 1]]);
  assert.deepEqual(Either.getOrThrow(parseDevices(" 3, 1")), [3, 1]);
  assert.equal(Either.isLeft(parseDevices("0,gpu1")), true);
});

Deno.test("adapters: too few adapters is an error naming them, unless ranks may share", () => {
  const one = adapters("llvmpipe (LLVM 15.0.6, 256 bits)");
  const message = refused(2, one, {});
  assert.match(message, /tp 2 needs an adapter per rank but this host found 1 adapter/);
  assert.match(message, /0: llvmpipe \(LLVM 15\.0\.6, 256 bits\) \(vulkan\)/);
  assert.match(message, /--share-adapter/);
  assert.deepEqual(placed(4, one, { shareAdapter: true }).map((p) => p.adapter.index), [
    0,
    0,
    0,
    0,
  ]);
  assert.match(refused(2, one, { devices: [0, 1] }), /no adapter 1: this host found 1 adapter/);
  const two = adapters("GPU A", "GPU B");
  assert.match(refused(2, two, { devices: [1, 1] }), /adapter 1 is named for two ranks/);
  assert.deepEqual(placed(2, two, { devices: [1, 1], shareAdapter: true }).length, 2);
  assert.match(refused(3, two, { devices: [0, 1] }), /--tp is 3 but devices lists 2/);
});

Deno.test("adapters: an identical adapter needs its own process, with one driver file each", () => {
  const twins = adapters("NVIDIA H100", "NVIDIA H100");
  // The first of two identical adapters is what the name filter finds anyway.
  assert.deepEqual(placed(1, twins, { devices: [0] })[0].processEnv, {});
  const message = refused(2, twins, {});
  assert.match(message, /adapter 1 \(NVIDIA H100\) is identical to adapter 0/);
  assert.match(message, /deno task rank/);
  const files = { variable: "VK_DRIVER_FILES", files: ["/icd/a.json", "/icd/b.json"] };
  const apart = placed(2, twins, {}, files);
  assert.deepEqual(apart.map((p) => p.processEnv), [{}, { VK_DRIVER_FILES: "/icd/b.json" }]);
  assert.equal(apart[1].description, "adapter 1 of 2 (VK_DRIVER_FILES=/icd/b.json)");
  const inOneProcess = requireOneProcess(apart, "workers");
  assert.ok(Either.isLeft(inOneProcess));
  assert.match(inOneProcess.left.message, /rank 1's adapter 1 of 2 .* needs a process of its own/);
  // A driver file list that does not match the adapters one to one proves nothing: refused.
  refused(2, twins, {}, { variable: "VK_ICD_FILENAMES", files: ["/icd/a.json"] });
  // Dawn's filter is a substring match: "…4090" alone would find "…4090 D" first.
  const nested = adapters("NVIDIA GeForce RTX 4090 D", "NVIDIA GeForce RTX 4090");
  assert.match(refused(2, nested, {}), /adapter 1 \(NVIDIA GeForce RTX 4090\) is identical/);
  assert.deepEqual(placed(1, nested, { devices: [0] })[0].processEnv, {});
});

Deno.test("adapters: Dawn's refusal of an unknown name is read as its adapter list", () => {
  const message = "Error: no suitable backends found\nAvailable adapters:\n" +
    " * backend: 'vulkan', name: 'NVIDIA H100 80GB HBM3'\n" +
    " * backend: 'vulkan', name: 'llvmpipe (LLVM 15.0.6, 256 bits)'";
  assert.deepEqual(parseDawnAdapterList(message), [
    { index: 0, backend: "vulkan", name: "NVIDIA H100 80GB HBM3" },
    { index: 1, backend: "vulkan", name: "llvmpipe (LLVM 15.0.6, 256 bits)" },
  ]);
  assert.deepEqual(parseDawnAdapterList("Error: something else"), []);
});

// ---------------------------------------------------------------------------------------------
// The real path on lavapipe

const LAVAPIPE_ICD = "/usr/share/vulkan/icd.d/lvp_icd.json";

/** The loader's environment with lavapipe's driver file listed twice (two identical adapters). */
const twoLavapipes = async () => {
  const second = await Deno.makeTempFile({ suffix: "_lvp.json" });
  await Deno.writeTextFile(second, await Deno.readTextFile(LAVAPIPE_ICD));
  return { second, env: { VK_ICD_FILENAMES: `${LAVAPIPE_ICD}:${second}` } };
};

const generateCli = async (env: Record<string, string>, ...flags: string[]) => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      ...["run", "-A", "--v8-flags=--expose-gc", "cli/generate.ts"],
      ...["--model", STORIES260K_PATH, "--tokenizer", TOK512_PATH, "--prompt", ""],
      ...["--max-tokens", "16", "--json", ...flags],
    ],
    cwd: ROOT,
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
};

const listInChild = async (env: Record<string, string>) => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      "import { listAdapters } from './gpu/adapters.ts'; import { Effect } from 'effect';" +
      "console.log(JSON.stringify(await Effect.runPromise(listAdapters())));",
    ],
    cwd: ROOT,
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const lines = new TextDecoder().decode(out.stdout).trim().split("\n");
  return JSON.parse(lines[lines.length - 1]) as AdapterListing[];
};

Deno.test("adapters: two lavapipe driver files give two adapters, and each rank process gets its own", async () => {
  const { second, env } = await twoLavapipes();
  try {
    const listed = await listInChild(env);
    assert.equal(listed.length, 2, JSON.stringify(listed));
    assert.equal(listed[0].name, listed[1].name);
    assert.match(listed[0].name, /llvmpipe/);
    assert.equal((await listInChild({})).length, 1);

    const shared = await generateCli({}, "--tp", "2", "--share-adapter", "--transport", "tcp");
    assert.equal(shared.code, 0, shared.stderr);
    const apart = await generateCli(env, "--tp", "2", "--devices", "0,1", "--transport", "tcp");
    assert.equal(apart.code, 0, apart.stderr);
    assert.deepEqual(JSON.parse(apart.stdout).tokens, JSON.parse(shared.stdout).tokens);
    // The model-loaded line names each rank's placement, as /status does.
    assert.match(apart.stderr, /rank 0: llvmpipe[^;]*\[adapter 0 of 2\]/);
    assert.match(
      apart.stderr,
      new RegExp(`rank 1: llvmpipe[^;]*\\[adapter 1 of 2 \\(VK_ICD_FILENAMES=${second}\\)\\]`),
    );

    // Workers share this process: the second identical adapter is out of their reach.
    const workers = await generateCli(env, "--tp", "2", "--devices", "0,1");
    assert.equal(workers.code, 1);
    assert.match(workers.stderr, /error: rank 1's adapter 1 of 2 .* needs a process of its own/);
    // One adapter and no --share-adapter: refused before any rank starts, naming what was found.
    const tooFew = await generateCli({}, "--tp", "2");
    assert.equal(tooFew.code, 1);
    assert.match(
      tooFew.stderr,
      /error: tp 2 needs an adapter per rank but this host found 1 adapter/,
    );
  } finally {
    await Deno.remove(second);
  }
});
