/**
 * `deno task chat` on a pseudo-terminal (util-linux `script`), typed at as a user would: each
 * reply equals `generate` on the conversation the plain chat template renders, a second turn
 * carries the first, Ctrl-C stops a reply and returns to the prompt, Ctrl-D exits cleanly.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { STORIES260K_PATH, TOK512_PATH } from "../assets/paths.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const MODEL = ["--model", STORIES260K_PATH, "--tokenizer", TOK512_PATH] as const;
const TIMEOUT_MS = 60_000;

/** The text of a greedy `generate` run (a separate process, as the reference). */
const generated = async (prompt: string, maxTokens: number) => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--v8-flags=--expose-gc",
      "cli/generate.ts",
      ...MODEL,
      "--tp",
      "2",
      "--share-adapter",
    ]
      .concat(["--prompt", prompt, "--max-tokens", String(maxTokens), "--json"]),
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return JSON.parse(new TextDecoder().decode(out.stdout)).text as string;
};

const shellQuote = (arg: string) => `'${arg.replaceAll("'", `'\\''`)}'`;

/** The chat under a pty; what it printed so far, with the terminal's \r\n made \n. */
const startChat = (maxTokens: number) => {
  const command = ["exec", Deno.execPath(), "run", "-A", "--v8-flags=--expose-gc", "cli/chat.ts"]
    .concat([
      ...MODEL,
      "--tp",
      "2",
      "--share-adapter",
      "--temperature",
      "0",
      "-n",
      String(maxTokens),
    ])
    .map((arg, i) => (i === 0 ? arg : shellQuote(arg))).join(" ");
  const child = new Deno.Command("script", {
    args: ["-qfec", command, "/dev/null"],
    cwd: ROOT,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    env: { TERM: "xterm-256color" },
  }).spawn();
  const input = child.stdin.getWriter();
  let screen = "";
  const reading = (async () => {
    for await (const piece of child.stdout.pipeThrough(new TextDecoderStream())) {
      screen += piece.replaceAll("\r\n", "\n");
    }
  })();
  const waitFor = async (what: string, predicate: (text: string) => boolean) => {
    const until = Date.now() + TIMEOUT_MS;
    while (!predicate(screen)) {
      if (Date.now() > until) assert.fail(`timed out waiting for ${what}; screen:\n${screen}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  return {
    child,
    screen: () => screen,
    waitFor,
    type: (text: string) => input.write(new TextEncoder().encode(text)),
    /** Types `line` and Enter, and returns the reply printed before the next prompt. */
    async say(line: string) {
      const from = screen.length;
      await input.write(new TextEncoder().encode(`${line}\n`));
      const echoed = `${line}\n`;
      await waitFor(`the reply to ${JSON.stringify(line)}`, (s) => {
        const at = s.indexOf(echoed, from);
        return at >= 0 && s.indexOf("\n> ", at + echoed.length - 1) >= 0;
      });
      const start = screen.indexOf(echoed, from) + echoed.length;
      return screen.slice(start, screen.indexOf("\n> ", start - 1));
    },
    async close() {
      try {
        await input.close();
      } catch { /* already closed */ }
      try {
        child.kill("SIGKILL");
      } catch { /* already gone */ }
      await child.status;
      await reading;
    },
  };
};

Deno.test({
  name: "chat: on a pty, replies equal generate on the rendered conversation; Ctrl-C, Ctrl-D",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const chat = startChat(24);
    try {
      await chat.waitFor("the first prompt", (s) => /Ctrl-D exits\.\n> $/.test(s));
      const first = await chat.say("Once upon a time");
      const firstExpected = await generated("user: Once upon a time\nassistant:", 24);
      assert.equal(first, firstExpected);

      // The second turn sees the first: the plain template's two-turn conversation.
      const second = await chat.say("The dog ran");
      const secondExpected = await generated(
        `user: Once upon a time\nassistant: ${firstExpected.trim()}\nuser: The dog ran\n` +
          "assistant:",
        24,
      );
      assert.equal(second, secondExpected);

      await chat.type("\x04"); // Ctrl-D on an empty line: end of input
      const status = await chat.child.status;
      assert.equal(status.code, 0, chat.screen());
    } finally {
      await chat.close();
    }
  },
});

Deno.test({
  name: "chat: Ctrl-C stops a long reply where it is and returns to the prompt",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const maxTokens = 480;
    const chat = startChat(maxTokens);
    try {
      await chat.waitFor("the first prompt", (s) => /Ctrl-D exits\.\n> $/.test(s));
      const full = await generated("user: Lily\nassistant:", maxTokens);
      const from = chat.screen().length;
      await chat.type("Lily\n");
      // A few words in, interrupt.
      await chat.waitFor("the reply to start", (s) => s.slice(from).length > "Lily\n".length + 20);
      await chat.type("\x03");
      await chat.waitFor("the prompt after Ctrl-C", (s) => s.slice(from).includes("\n> "));
      const shown = chat.screen().slice(from + "Lily\n".length);
      const stopped = shown.slice(0, shown.indexOf("\n> ")).replaceAll("^C", "");
      assert.ok(stopped.length > 0 && stopped.length < full.length, `stopped at: ${stopped}`);
      assert.ok(full.startsWith(stopped), `a prefix of the full reply:\n${stopped}\n${full}`);

      // Still chatting: Ctrl-C at the prompt ends the chat, cleanly.
      await chat.type("\x03");
      const status = await chat.child.status;
      assert.equal(status.code, 0, chat.screen());
    } finally {
      await chat.close();
    }
  },
});
