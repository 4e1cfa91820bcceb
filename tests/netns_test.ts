/**
 * Across hosts: two rank processes in two network namespaces joined by a veth pair (two hosts as
 * far as TCP can tell), the supervisor in the first, generating the stories260K greedy tokens.
 * Needs root and `ip netns` (CI runs as root); elsewhere the test is ignored and says why.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import type { GreedyFixture } from "./fixtures/make_stories260K_greedy.ts";
import { STORIES260K_PATH, TOK512_PATH } from "../assets/paths.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const MODEL = STORIES260K_PATH;
const TOKENIZER = TOK512_PATH;
const FIXTURE = new URL("./fixtures/stories260K_greedy.json", import.meta.url);
const STEPS = 32;

const id = Deno.pid % 10000;
const NS = [`tessera-a-${id}`, `tessera-b-${id}`];
const VETH = [`tsa${id}`, `tsb${id}`];
const ADDR = ["10.231.0.1", "10.231.0.2"];

const ip = (...args: string[]) => {
  const out = new Deno.Command("ip", { args, stdout: "null", stderr: "piped" }).outputSync();
  if (!out.success) {
    throw new Error(`ip ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
};

/** Why this machine cannot run the test, or undefined when it can. */
const unsupported = (() => {
  if (Deno.build.os !== "linux") return "network namespaces need Linux";
  if (Deno.uid() !== 0) return "creating network namespaces needs root";
  try {
    ip("netns", "add", NS[0]);
    ip("netns", "del", NS[0]);
    return undefined;
  } catch (e) {
    return `ip netns is unavailable: ${(e as Error).message.trim()}`;
  }
})();
if (unsupported) console.log(`netns test ignored: ${unsupported}`);

const setUp = () => {
  for (const ns of NS) ip("netns", "add", ns);
  ip(
    "link",
    "add",
    VETH[0],
    "netns",
    NS[0],
    "type",
    "veth",
    "peer",
    "name",
    VETH[1],
    "netns",
    NS[1],
  );
  NS.forEach((ns, i) => {
    ip("-n", ns, "addr", "add", `${ADDR[i]}/24`, "dev", VETH[i]);
    ip("-n", ns, "link", "set", VETH[i], "up");
    ip("-n", ns, "link", "set", "lo", "up");
  });
};

const tearDown = () => {
  for (const ns of NS) {
    try {
      ip("netns", "del", ns); // also removes its end of the veth pair
    } catch { /* never created */ }
  }
};

const deno = (ns: string, args: string[], stdout: "piped" | "inherit") =>
  new Deno.Command("ip", {
    args: ["netns", "exec", ns, Deno.execPath(), ...args],
    cwd: ROOT,
    stdin: "null",
    stdout,
    stderr: "inherit",
    env: { LP_NUM_THREADS: "1" },
  });

/** Starts a rank listening on `address:0` inside `ns`; resolves with its bound address. */
const startRank = async (ns: string, address: string, secretFile: string) => {
  const child = deno(ns, [
    "run",
    "-A",
    "--v8-flags=--expose-gc",
    "cli/rank.ts",
    "--listen",
    `${address}:0`,
    "--secret-file",
    secretFile,
  ], "piped").spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!/listening on (\S+)/.test(text)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`rank in ${ns} exited before listening`);
    text += value;
  }
  (async () => {
    while (!(await reader.read()).done) { /* drain */ }
  })().catch(() => {});
  return { child, address: /listening on (\S+)/.exec(text)![1] };
};

Deno.test({
  name: "tcp across two network namespaces (veth): stories260K greedy tokens equal the fixture",
  ignore: unsupported !== undefined,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const fixture: GreedyFixture = JSON.parse(await Deno.readTextFile(FIXTURE));
    const secretFile = await Deno.makeTempFile({ prefix: "tessera-netns-secret-" });
    await Deno.writeTextFile(secretFile, crypto.randomUUID() + crypto.randomUUID(), {
      mode: 0o600,
    });
    const ranks: Deno.ChildProcess[] = [];
    tearDown();
    try {
      setUp();
      const started = await Promise.all(NS.map((ns, i) => startRank(ns, ADDR[i], secretFile)));
      ranks.push(...started.map((r) => r.child));
      assert.deepEqual(started.map((r) => r.address.split(":")[0]), ADDR);
      // The supervisor lives in the first namespace: rank 1 is reachable only over the veth.
      const out = await deno(NS[0], [
        "run",
        "-A",
        "--v8-flags=--expose-gc",
        "cli/generate.ts",
        "--model",
        MODEL,
        "--tokenizer",
        TOKENIZER,
        "--tp",
        "2",
        "--share-adapter",
        "--transport",
        "tcp",
        "--ranks",
        started.map((r) => r.address).join(","),
        "--secret-file",
        secretFile,
        "--max-tokens",
        String(STEPS),
        "--json",
      ], "piped").output();
      assert.ok(out.success, "generate across namespaces failed");
      const { tokens } = JSON.parse(new TextDecoder().decode(out.stdout));
      assert.deepEqual(tokens, fixture.tokens.slice(0, STEPS));
    } finally {
      for (const child of ranks) {
        try {
          child.kill("SIGTERM");
        } catch { /* gone */ }
        await child.status;
      }
      tearDown();
      await Deno.remove(secretFile);
    }
  },
});
