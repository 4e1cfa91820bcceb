/**
 * `deno task chat`: a multi-turn chat on the terminal with a model sharded over `--tp` ranks.
 *
 *   deno task chat --model assets/stories260K.bin --tokenizer assets/tok512.bin --tp 2
 *
 * Each turn renders the whole conversation with the model's chat template (a Hugging Face
 * directory's `chat_template`, else Tessera's plain `role: content` lines) and streams the reply
 * as it is sampled. Ctrl-C stops a reply (what was said so far stays in the conversation);
 * Ctrl-C at the prompt or Ctrl-D (end of input) ends the chat. When the conversation outgrows
 * the context, its oldest turns are dropped (the system message stays).
 *
 * Failures print one line `error: ...` on stderr; exit codes as `deno task generate`.
 */
import { Deferred, Effect, Either, Exit, Stream } from "effect";
import { generate } from "../engine/generate.ts";
import { loadTokenizer, modelSourceOf } from "../models/files.ts";
import { LlamaModel } from "../models/llama.ts";
import type { TextTokenizer } from "../models/tokenizer.ts";
import {
  type ChatTemplateShape,
  encodeRendered,
  loadChatTemplate,
} from "../serve/chat_template.ts";
import type { ChatTurn } from "../serve/openai_schema.ts";
import { helpText, parseFlagTable, versionText } from "./flag_table.ts";
import {
  loadOptionsOf,
  type ModelFlags,
  modelFlagsOf,
  modelFlagTable,
  positiveInt,
  tokensWithinContext,
  type UsageError,
} from "./flags.ts";
import { lineReader } from "./line_reader.ts";
import { runMain } from "./main.ts";
import {
  type ObserveFlags,
  observeFlagsOf,
  observeFlagTable,
  withRanksObserved,
} from "./observe.ts";
import { type SamplingFlags, samplingFlagsOf, samplingFlagTable } from "./sampling_flags.ts";

const FLAGS = {
  ...modelFlagTable,
  system: { type: "string", value: "TEXT", help: "a system message that opens the chat" },
  ...samplingFlagTable("0.8"),
  ...observeFlagTable,
} as const;

const HELP = helpText(
  "deno task chat",
  "Chats on the terminal with the model's chat template; Ctrl-C stops a reply, Ctrl-D exits.",
  FLAGS,
);

interface ChatOptions extends ModelFlags, ObserveFlags, SamplingFlags {
  readonly system?: string;
}

const parseCli = (args: string[]): Effect.Effect<ChatOptions | "help" | "version", UsageError> =>
  Effect.gen(function* () {
    const parsed = yield* parseFlagTable(args, FLAGS);
    if (parsed._tag === "Help") return "help" as const;
    if (parsed._tag === "Version") return "version" as const;
    const { values } = parsed;
    // A chat shows the conversation, not the engine's info lines, unless asked.
    const logLevel = values["log-level"] ?? Deno.env.get("TESSERA_LOG_LEVEL") ?? "warning";
    return {
      ...yield* modelFlagsOf(values, (tp) => positiveInt("tp", tp)),
      ...yield* observeFlagsOf({ ...values, "log-level": logLevel }),
      ...yield* samplingFlagsOf(values),
      system: values.system,
    };
  });

const encoder = new TextEncoder();

/** Synchronous, complete write: a streamed piece must be on the terminal before the next step. */
const writeOut = (text: string) => {
  const bytes = encoder.encode(text);
  for (let at = 0; at < bytes.length;) at += Deno.stdout.writeSync(bytes.subarray(at));
};

/**
 * The prompt for `turns`, dropping the oldest exchanges (never a system message nor the newest
 * user message) until it leaves room to reply within `context` tokens.
 */
const fitToContext = (
  template: ChatTemplateShape,
  tokenizer: TextTokenizer,
  turns: ChatTurn[],
  context: number,
) => {
  for (;;) {
    const rendered = template.render(turns);
    if (Either.isLeft(rendered)) return Either.left(rendered.left.message);
    const tokens = encodeRendered(tokenizer, rendered.right).length;
    if (tokens < context) return Either.right({ rendered: rendered.right, tokens });
    const oldest = turns.findIndex((t) => t.role !== "system");
    if (oldest === turns.length - 1) {
      return Either.left(
        `this message makes a prompt of ${tokens} tokens; the context is ${context}`,
      );
    }
    turns.splice(oldest, turns[oldest + 1]?.role === "assistant" ? 2 : 1);
  }
};

const run = (options: ChatOptions) =>
  Effect.gen(function* () {
    const source = yield* modelSourceOf(options.model);
    const tokenizer = yield* loadTokenizer(options.model, options.tokenizer);
    const template = yield* loadChatTemplate(options.model, options.tokenizer);
    const model = yield* LlamaModel.load(loadOptionsOf(options, source, options.ctxSize));
    const context = options.ctxSize ?? model.config.seqLen;
    yield* tokensWithinContext(1, 1, options.ctxSize, model.config.seqLen);

    // Ctrl-C: stops the reply being streamed, or at the prompt ends the chat.
    let replying = false;
    let stopReply = false;
    const quit = yield* Deferred.make<void>();
    const onInterrupt = () => {
      if (replying) stopReply = true;
      else Deferred.unsafeDone(quit, Exit.void);
    };
    Deno.addSignalListener("SIGINT", onInterrupt);
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => Deno.removeSignalListener("SIGINT", onInterrupt))
    );
    const lines = lineReader(Deno.stdin.readable);
    yield* Effect.addFinalizer(() => Effect.promise(() => lines.cancel()));

    writeOut(
      `Chat with ${options.model} over ${options.tp} rank${options.tp > 1 ? "s" : ""} ` +
        `(${template.kind === "jinja" ? "its chat template" : "plain role: text turns"}). ` +
        "Ctrl-C stops a reply, Ctrl-D exits.\n",
    );
    const turns: ChatTurn[] = options.system ? [{ role: "system", content: options.system }] : [];
    for (let turn = 0;; turn++) {
      writeOut("> ");
      const line = yield* Effect.raceFirst(
        Effect.promise(() => lines.next()),
        Effect.as(Deferred.await(quit), null),
      );
      if (line === null) break;
      if (line.trim() === "") continue;
      turns.push({ role: "user", content: line });
      const fitted = fitToContext(template, tokenizer, turns, context);
      if (Either.isLeft(fitted)) {
        turns.pop();
        console.error(`error: ${fitted.left}`);
        continue;
      }
      const { rendered, tokens } = fitted.right;
      let reply = "";
      replying = true;
      stopReply = false;
      yield* generate(model, tokenizer, {
        prompt: rendered.text,
        bos: rendered.addBos,
        maxTokens: Math.min(options.maxTokens, context - tokens),
        temperature: options.temperature,
        topP: options.topP,
        // Each reply its own stream of random numbers, reproducible from the one seed.
        seed: BigInt(options.seed) + BigInt(turn),
      }).pipe(
        Stream.runForEachWhile((piece) =>
          Effect.sync(() => {
            writeOut(piece.text);
            reply += piece.text;
            return !stopReply;
          })
        ),
        Effect.ensuring(Effect.sync(() => (replying = false))),
      );
      writeOut("\n");
      turns.push({ role: "assistant", content: reply.trim() });
    }
    writeOut("\n");
  }).pipe(withRanksObserved(options));

await runMain(
  parseCli(Deno.args).pipe(
    Effect.flatMap((options) =>
      Effect.sync(() =>
        options === "help" ? writeOut(HELP) : options === "version" ? writeOut(versionText()) : 0
      ).pipe(Effect.zipRight(typeof options === "string" ? Effect.void : run(options)))
    ),
  ),
);
