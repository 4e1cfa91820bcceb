/**
 * What a user sees on a terminal: `generate` run under a pseudo-terminal (`script`), its bytes
 * rendered as a screen, must show the streamed text exactly as a plain (piped) run prints it:
 * no progress frame redrawn over it, no Dawn notice anywhere.
 */
import assert from "node:assert/strict";

const ESC = String.fromCharCode(27);

/** The screen `output` leaves: rows of text after carriage returns, erases and cursor moves. */
export const renderScreen = (output: string): string[] => {
  const rows: string[][] = [[]];
  let row = 0;
  let column = 0;
  for (let at = 0; at < output.length; at++) {
    const char = output[at];
    if (char === ESC) {
      const csi = /^\[([0-9;?]*)([A-Za-z])/.exec(output.slice(at + 1));
      if (csi) {
        const n = Number(csi[1].replace("?", "")) || 1;
        if (csi[2] === "A") row = Math.max(0, row - n);
        else if (csi[2] === "G") column = n - 1;
        else if (csi[2] === "K") rows[row].length = Math.min(rows[row].length, column);
        at += csi[0].length;
      } else at += 1; // ESC 7 / ESC 8 and other two-byte sequences: no visible effect here
      continue;
    }
    if (char === "\r") column = 0;
    else if (char === "\n") {
      row++;
      column = 0;
      rows[row] ??= [];
    } else {
      rows[row][column++] = char;
    }
  }
  return rows.map((cells) => Array.from(cells, (c) => c ?? " ").join("").trimEnd());
};

const GENERATE = [
  "run",
  "-A",
  "--v8-flags=--expose-gc",
  "cli/generate.ts",
  "--model",
  "assets/stories260K.bin",
  "--tokenizer",
  "assets/tok512.bin",
  "--tp",
  "2",
  "--share-adapter",
  "--temperature",
  "0",
  "-n",
  "96",
  "--prompt",
  "Once upon a time",
];

Deno.test("terminal: on a pty the story is rendered exactly as piped, after one finished progress line", async () => {
  const plain = await new Deno.Command(Deno.execPath(), {
    args: [...GENERATE, "--log-level", "none"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(plain.code, 0);
  assert.equal(new TextDecoder().decode(plain.stderr), "", "--log-level none: nothing on stderr");
  const story = new TextDecoder().decode(plain.stdout);
  assert.ok(story.startsWith("Once upon a time") && story.length > 100, story);

  const command = [Deno.execPath(), ...GENERATE].map((arg) => `'${arg}'`).join(" ");
  const pty = await new Deno.Command("script", {
    args: ["-qfec", `exec ${command}`, "/dev/null"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output = await pty.output(); // stdin stays open: `script` spins on a closed one
  assert.equal(output.code, 0);
  const raw = new TextDecoder().decode(output.stdout);
  assert.doesNotMatch(raw, /artificially reduced/);
  assert.ok(!raw.includes(`${ESC}[1A`), "nothing moves the cursor up");
  const screen = renderScreen(raw).join("\n");
  const storyRows = story.replace(/\n$/, "");
  assert.ok(screen.includes(storyRows), `the story is not on the screen intact:\n${screen}`);
  const beforeStory = screen.slice(0, screen.indexOf(storyRows));
  assert.match(beforeStory, /loading shards \[.*\] 100% \| [\d.]+\/[\d.]+ MB \| 2\/2 ranks/);
  assert.match(screen.slice(screen.indexOf(storyRows)), /96 tokens in [\d.]+ s/);
});
