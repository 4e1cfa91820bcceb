/**
 * The command-line habits every task shares: `--help` lists each flag with its default on one
 * line, `--version`, llama-cli's short forms, dashed values reaching the flag's own range check,
 * and a missing tokenizer naming `--tokenizer`.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import denoJson from "../deno.json" with { type: "json" };
import { STORIES260K_PATH, TOK512_PATH } from "../assets/paths.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const MODEL = ["-m", STORIES260K_PATH, "--tokenizer", TOK512_PATH] as const;

const run = async (args: readonly string[]) => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
    env: { TESSERA_LOG_LEVEL: "error" },
  }).output();
  const text = new TextDecoder();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
};

const task = (name: string, ...args: string[]) => run(["task", "-q", name, ...args]);
const generate = (...args: string[]) =>
  run(["run", "-A", "--v8-flags=--expose-gc", "cli/generate.ts", ...args]);

/**
 * Per task: flags its help must list, and the value-taking flags that rightly have no default
 * (every other value-taking flag must show one).
 */
const COMMANDS: Record<string, { flags: string[]; noDefault: string[]; defaults: RegExp[] }> = {
  generate: {
    flags: ["model", "tokenizer", "tp", "transport", "weights", "prompt", "max-tokens"]
      .concat(["ctx-size", "temperature", "top-p", "seed", "json", "trace", "log-level"]),
    noDefault: ["secret-file", "prompt", "trace"],
    defaults: [/--tp N .*\(default: 1\)/, /-n, --max-tokens N .*\(default: 256\)/],
  },
  chat: {
    flags: ["model", "tokenizer", "tp", "system", "max-tokens", "ctx-size", "temperature", "seed"],
    noDefault: ["secret-file", "system", "trace"],
    defaults: [/--temperature T .*\(default: 0\.8\)/],
  },
  serve: {
    flags: ["model", "tp", "host", "port", "api-key", "max-sequences", "max-queue"]
      .concat(["drain-seconds", "header-timeout-seconds", "stall-seconds", "admin-key"]),
    noDefault: ["secret-file", "trace"],
    defaults: [/--port PORT .*\(default: 8000\)/, /--stall-seconds S .*\(default: 30\)/],
  },
  rank: {
    flags: ["listen", "secret-file", "backend"],
    noDefault: [],
    defaults: [/--listen HOST:PORT .*\(default: 127\.0\.0\.1:0\)/],
  },
  bench: { flags: ["trace", "log-level"], noDefault: ["trace"], defaults: [] },
  "bench:service": {
    flags: ["minutes", "streams"],
    noDefault: [],
    defaults: [/--minutes M .*\(default: 10\)/],
  },
  "bench:chaos": {
    flags: ["kills", "idle-kills", "stall-seconds"],
    noDefault: [],
    defaults: [/--kills N .*\(default: 6\)/],
  },
};

/** `  -m, --model PATH   help (default: ...)`: short form, name, value, help. */
const FLAG_LINE = /^ {2}(?:-(\w), | {4})--([a-z][a-z-]*)(?: ([A-Z][A-Z:]*))? {2,}(\S.*)$/;

for (const [name, expected] of Object.entries(COMMANDS)) {
  Deno.test(`cli: deno task ${name} --help lists every flag with its default, one line each`, async () => {
    const { code, stdout, stderr } = await task(name, "--help");
    assert.equal(code, 0, stderr);
    const [usage, , blank, ...rows] = stdout.trimEnd().split("\n");
    assert.match(usage, new RegExp(`^usage: deno task ${name}\\b`));
    assert.equal(blank, "");
    const flags = rows.map((row) => {
      const match = FLAG_LINE.exec(row);
      assert.ok(match, `not one flag per line: ${JSON.stringify(row)}`);
      return { name: match[2], value: match[3], help: match[4] };
    });
    const names = flags.map((f) => f.name);
    for (const flag of [...expected.flags, "help", "version"]) {
      assert.ok(names.includes(flag), `--${flag} missing from:\n${stdout}`);
    }
    const withoutDefault = flags
      .filter((f) => f.value !== undefined && !/\((default: .+|required)\)$/.test(f.help))
      .map((f) => f.name);
    assert.deepEqual(
      withoutDefault.sort(),
      [...expected.noDefault].sort(),
      `value flags without a default:\n${stdout}`,
    );
    for (const line of expected.defaults) assert.match(stdout, line);
  });
}

Deno.test("cli: --version and -V print the package version on every task", async () => {
  for (const [name, flag] of [["generate", "--version"], ["chat", "-V"], ["serve", "--version"]]) {
    const { code, stdout } = await task(name, flag);
    assert.equal(code, 0);
    assert.equal(stdout, `tessera ${denoJson.version}\n`);
  }
});

Deno.test("cli: -m -p -n -c -s are --model --prompt --max-tokens --ctx-size --seed", async () => {
  const sampled = ["--temperature", "1", "--top-p", "1", "--json"];
  const short = await generate(
    ...MODEL,
    ...["-p", "Once upon a time", "-n", "24", "-c", "64", "-s", "7", ...sampled],
  );
  const long = await generate(
    ...["--model", STORIES260K_PATH, "--tokenizer", TOK512_PATH, "--prompt", "Once upon a time"],
    ...["--max-tokens", "24", "--ctx-size", "64", "--seed", "7", ...sampled],
  );
  assert.equal(short.code, 0, short.stderr);
  assert.equal(long.code, 0, long.stderr);
  const tokens = JSON.parse(short.stdout).tokens;
  assert.equal(tokens.length, 24);
  assert.deepEqual(tokens, JSON.parse(long.stdout).tokens);
  // The seed is really read: another seed samples other tokens.
  const other = await generate(
    ...MODEL,
    "-p",
    "Once upon a time",
    "-n",
    "12",
    "-s",
    "8",
    ...sampled,
  );
  assert.notDeepEqual(JSON.parse(other.stdout).tokens, tokens);
  // -c bounds the context: the prompt's 5 tokens leave no room in 4.
  const tight = await generate(...MODEL, "-p", "Once upon a time", "-n", "8", "-c", "4");
  assert.equal(tight.code, 2);
  assert.match(tight.stderr, /^error: .*prompt is 5 tokens.*context of 4 \(--ctx-size\)/m);
});

Deno.test("cli: a value starting with a dash reaches the flag's own check", async () => {
  const cases = [
    {
      args: ["--temperature", "-1"],
      says: /^error: --temperature must be a number >= 0, got "-1"/,
    },
    { args: ["--top-p", "-0.5"], says: /^error: --top-p must be in \[0, 1\], got "-0.5"/ },
    { args: ["-n", "-3"], says: /^error: --max-tokens must be .*got "-3"/ },
    { args: ["--seed", "-9"], says: /^error: --seed must be .*got "-9"/ },
  ];
  for (const { args, says } of cases) {
    const { code, stdout, stderr } = await generate(...MODEL, ...args);
    assert.equal(code, 2, `${args.join(" ")}: ${stderr}`);
    assert.equal(stderr.trimEnd().split("\n").length, 1, stderr);
    assert.match(stderr, says);
    assert.equal(stdout, "");
  }
});

Deno.test("cli: a llama2.c model without a tokenizer beside it names --tokenizer", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.copyFile(STORIES260K_PATH, `${dir}/stories260K.bin`);
    const { code, stderr } = await generate("-m", `${dir}/stories260K.bin`, "-p", "hi", "-n", "2");
    assert.equal(code, 1);
    assert.match(stderr, /^error: .*tokenizer\.bin.*--tokenizer/m);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
