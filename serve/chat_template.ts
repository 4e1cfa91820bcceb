/**
 * Chat messages → prompt text, as the model was trained to see them.
 *
 * A Hugging Face model brings its own template: `chat_template` in `tokenizer_config.json`
 * (Jinja, rendered by `@huggingface/jinja` with `messages`, `add_generation_prompt: true`,
 * `bos_token`, `eos_token`). The template comes from the model directory, never from a request;
 * messages are only data to it.
 *
 * A model without one (every llama2.c checkpoint, an HF directory without `chat_template`) gets
 * this plain default, documented in the README ("Service"):
 *
 *     system: You are terse.
 *     user: Tell me a story.
 *     assistant:
 *
 * i.e. each message as `role: content` and a newline, then `assistant:` for the reply, encoded
 * with BOS in front like a completion prompt.
 */
import { Template } from "@huggingface/jinja";
import { Context, Effect, Either } from "effect";
import { dirname, join } from "node:path";
import { type LoadError, loadError } from "../models/errors.ts";
import { modelSourceOf } from "../models/files.ts";
import type { TextTokenizer } from "../models/tokenizer.ts";
import { type ApiError, invalidRequest } from "./api_error.ts";
import type { ChatTurn } from "./openai_schema.ts";

/** A rendered prompt, and whether the tokenizer must still put BOS in front. */
export interface RenderedPrompt {
  /** The prompt text. */
  readonly text: string;
  /** Whether the tokenizer must prepend BOS (the template did not). */
  readonly addBos: boolean;
}

/** A chat template: renders chat messages into one prompt. */
export interface ChatTemplateShape {
  /** "jinja" for the model's own template, "default" for the plain one above. */
  readonly kind: "jinja" | "default";
  /** The prompt for `messages`, or an invalid-request error. */
  readonly render: (messages: readonly ChatTurn[]) => Either.Either<RenderedPrompt, ApiError>;
}

/** The service key of {@link ChatTemplate}. */
export type ChatTemplate = Context.TagClassShape<"tessera/ChatTemplate", ChatTemplateShape>;

/** The chat template the server renders messages with (a `Context.Tag`). */
export const ChatTemplate: Context.TagClass<
  ChatTemplate,
  "tessera/ChatTemplate",
  ChatTemplateShape
> = Context.Tag("tessera/ChatTemplate")<ChatTemplate, ChatTemplateShape>();

/** `role: content` lines, then `assistant:`; encoded with BOS. */
export const defaultChatTemplate: ChatTemplateShape = {
  kind: "default",
  render: (messages) =>
    Either.right({
      text: messages.map((m) => `${m.role}: ${m.content}\n`).join("") + "assistant:",
      addBos: true,
    }),
};

/**
 * A Jinja chat template. Templates that write `{{ bos_token }}` themselves (most do) must not
 * get a second BOS from the tokenizer, so BOS is added only when the text does not start with it.
 */
export const jinjaChatTemplate = (
  template: Template,
  specialTokens: { readonly bos?: string; readonly eos?: string },
): ChatTemplateShape => ({
  kind: "jinja",
  render: (messages) =>
    Either.try({
      try: () => {
        const text = template.render({
          messages: messages.map((m) => ({ role: m.role, content: m.content })),
          add_generation_prompt: true,
          bos_token: specialTokens.bos ?? "",
          eos_token: specialTokens.eos ?? "",
        });
        const bos = specialTokens.bos;
        return { text, addBos: !(bos !== undefined && bos !== "" && text.startsWith(bos)) };
      },
      // A template may refuse a conversation (`raise_exception("roles must alternate")`).
      catch: (e) =>
        invalidRequest(
          `The model's chat template rejects these messages: ${
            e instanceof Error ? e.message : String(e)
          }`,
          "messages",
        ),
    }),
});

/** The prompt's token ids for a rendered chat. */
export const encodeRendered = (tokenizer: TextTokenizer, rendered: RenderedPrompt): number[] =>
  tokenizer.encode(rendered.text, { bos: rendered.addBos, eos: false });

/** A special token in tokenizer_config.json: a string or an AddedToken `{content}`. */
const tokenText = (value: unknown): string | undefined =>
  typeof value === "string"
    ? value
    : typeof value === "object" && value !== null && typeof (value as { content?: unknown })
          .content === "string"
    ? (value as { content: string }).content
    : undefined;

/** `chat_template` is a string, or a list of `{name, template}` of which "default" is used. */
const templateText = (value: unknown): string | undefined => {
  if (typeof value === "string") return value;
  if (!Array.isArray(value)) return undefined;
  const named = value.filter((t): t is { name: string; template: string } =>
    typeof t?.name === "string" && typeof t?.template === "string"
  );
  return (named.find((t) => t.name === "default") ?? named[0])?.template;
};

/** `tokenizer_config.json` of a Hugging Face directory, if it has one. */
const readTokenizerConfig = (file: string) =>
  Effect.tryPromise({
    try: () => Deno.readTextFile(file),
    catch: (e) => e,
  }).pipe(
    Effect.catchAll((e) =>
      e instanceof Deno.errors.NotFound
        ? Effect.succeed(undefined)
        : Effect.fail(loadError(file, `cannot read it (${e instanceof Error ? e.message : e})`))
    ),
    Effect.flatMap((text) =>
      text === undefined ? Effect.succeed(undefined) : Effect.try({
        try: () => JSON.parse(text) as Record<string, unknown>,
        catch: (e) => loadError(file, `not valid JSON (${e instanceof Error ? e.message : e})`),
      })
    ),
  );

/**
 * The chat template for the model at `modelPath` (as `loadTokenizer` finds its tokenizer): a
 * Hugging Face directory's `chat_template`, else the default. A template that does not parse
 * fails loading rather than every chat request.
 */
export const loadChatTemplate = (
  modelPath: string,
  tokenizerPath?: string,
): Effect.Effect<ChatTemplateShape, LoadError> =>
  Effect.gen(function* () {
    const source = yield* modelSourceOf(modelPath);
    if (source.format === "llama2c") return defaultChatTemplate;
    const dir = tokenizerPath === undefined
      ? modelPath
      : (yield* Effect.promise(() =>
          Deno.stat(tokenizerPath).then((i) => i.isDirectory, () => false)
        ))
      ? tokenizerPath
      : dirname(tokenizerPath);
    const file = join(dir, "tokenizer_config.json");
    const config = yield* readTokenizerConfig(file);
    const text = templateText(config?.chat_template);
    if (text === undefined) return defaultChatTemplate;
    const template = yield* Effect.try({
      try: () => new Template(text),
      catch: (e) =>
        loadError(file, `its chat_template does not parse (${e instanceof Error ? e.message : e})`),
    });
    return jinjaChatTemplate(template, {
      bos: tokenText(config?.bos_token),
      eos: tokenText(config?.eos_token),
    });
  });
