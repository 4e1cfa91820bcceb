/**
 * A tcp-transport server killed with SIGKILL takes its rank processes with it (each rank exits
 * when its stdin, held by the server, closes), and leaves no secret file behind.
 */
import assert from "node:assert/strict";
import { STORIES260K_PATH, TOK512_PATH } from "../assets/paths.ts";

const SERVE_CLI = new URL("../cli/serve.ts", import.meta.url).pathname;
/** Rank processes free their device before exiting (2 s at most), then go within 5 s. */
const RANKS_GONE_WITHIN_MS = 10_000;

/** The pids of a process's children, from every one of its threads. */
const childrenOf = (pid: number) =>
  [...Deno.readDirSync(`/proc/${pid}/task`)].flatMap((task) =>
    Deno.readTextFileSync(`/proc/${pid}/task/${task.name}/children`).trim().split(/\s+/)
      .filter((s) => s !== "").map(Number)
  );

/** Whether `pid` still runs (a zombie, exited and awaiting its reaper, does not). */
const isRunning = (pid: number) => {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
};

const commandLine = (pid: number) => {
  try {
    return Deno.readTextFileSync(`/proc/${pid}/cmdline`).replaceAll("\0", " ");
  } catch {
    return "";
  }
};

/** Reads the child's stdout until it says where it listens; the rest is drained unread. */
const waitForListening = async (stdout: ReadableStream<Uint8Array>) => {
  const reader = stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!/listening on http/.test(text)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`the server exited before listening:\n${text}`);
    text += value;
  }
  (async () => {
    while (!(await reader.read()).done) { /* drain */ }
  })().catch(() => {});
};

Deno.test("tcp: SIGKILL of a server takes its rank processes with it and leaves no secret file", async () => {
  // The server's temp files go here, so whatever it leaves behind can be seen.
  const tmp = await Deno.makeTempDir({ prefix: "tessera-orphans-" });
  let ranks: number[] = [];
  try {
    const server = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--v8-flags=--expose-gc",
        SERVE_CLI,
        "--model",
        STORIES260K_PATH,
        "--tokenizer",
        TOK512_PATH,
        "--tp",
        "2",
        "--share-adapter",
        "--transport",
        "tcp",
        "--port",
        "0",
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "null",
      env: { TMPDIR: tmp },
    }).spawn();
    await waitForListening(server.stdout);
    ranks = childrenOf(server.pid).filter((pid) => commandLine(pid).includes("cli/rank.ts"));
    assert.equal(ranks.length, 2, `the server's children: ${childrenOf(server.pid)}`);
    assert.ok(ranks.every(isRunning));

    server.kill("SIGKILL");
    await server.status;
    const killedAt = performance.now();
    while (ranks.some(isRunning) && performance.now() - killedAt < RANKS_GONE_WITHIN_MS) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.deepEqual(
      {
        stillRunning: ranks.filter(isRunning),
        leftInTempDir: [...Deno.readDirSync(tmp)].map((e) => e.name),
      },
      { stillRunning: [], leftInTempDir: [] },
    );
  } finally {
    // Orphans (before the fix) would otherwise outlive the test.
    for (const pid of ranks.filter(isRunning)) Deno.kill(pid, "SIGKILL");
    await Deno.remove(tmp, { recursive: true });
  }
});
