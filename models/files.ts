/**
 * Loading by path: what a model path holds (a Hugging Face directory or a llama2.c checkpoint)
 * and the tokenizer that goes with it.
 */
import { Effect } from "effect";
import { dirname, join } from "node:path";
import type { ModelSource } from "../actors/protocol.ts";
import { type LoadError, loadError } from "./errors.ts";
import { loadHuggingFaceTokenizer } from "./huggingface.ts";
import { readLlama2cHeader } from "./llama2c.ts";
import { loadLlama2cTokenizer, type TextTokenizer } from "./tokenizer.ts";
import { fileSize, openForRead, readBytesAt } from "./tensor_reader.ts";
import { isGguf } from "./gguf/format.ts";
import { loadGgufTokenizer, readGgufConfig } from "./gguf/open.ts";

const NOT_A_REGULAR_FILE = "not a regular file or a directory (a named pipe or a device?)";

/** What a path holds: a directory, a file, or nothing. */
const statPath = (path: string) =>
  Effect.tryPromise({
    try: () => Deno.stat(path),
    catch: (e) =>
      loadError(
        path,
        e instanceof Deno.errors.NotFound
          ? "no such file or directory"
          : `cannot read it (${e instanceof Error ? e.message : e})`,
      ),
  });

/** Whether a regular file starts with the GGUF magic (else it is taken as llama2.c). */
const startsWithGgufMagic = (path: string) =>
  Effect.scoped(Effect.gen(function* () {
    const handle = yield* openForRead(path);
    const size = yield* fileSize(handle, path);
    if (size < 4) return false;
    const magic = new Uint8Array(4);
    yield* readBytesAt(handle, path, 0, magic);
    return isGguf(magic);
  }));

/**
 * A model path as a source: a directory is Hugging Face; a regular file is GGUF when it starts
 * with GGUF's magic, else a llama2.c checkpoint. Anything else (a named pipe, a device, a
 * socket) is refused before it is opened: opening a FIFO would wait for a writer for ever.
 */
export const modelSourceOf = (path: string): Effect.Effect<ModelSource, LoadError> =>
  Effect.flatMap(
    statPath(path),
    (info) =>
      info.isDirectory
        ? Effect.succeed<ModelSource>({ format: "huggingface", path })
        : info.isFile
        ? Effect.map(
          startsWithGgufMagic(path),
          (gguf): ModelSource => ({ format: gguf ? "gguf" : "llama2c", path }),
        )
        : Effect.fail(loadError(path, NOT_A_REGULAR_FILE)),
  );

/**
 * The tokenizer for the model at `modelPath`. A Hugging Face directory uses its own
 * `tokenizer.json` (or `tokenizerPath`, a directory or its `tokenizer.json`); a llama2.c
 * checkpoint needs a llama2.c `tokenizer.bin`: `tokenizerPath`, else `tokenizer.bin` beside the
 * model (llama2.c's convention). The vocabulary size comes from the checkpoint's header.
 */
export const loadTokenizer = (
  modelPath: string,
  tokenizerPath?: string,
): Effect.Effect<TextTokenizer, LoadError> =>
  Effect.gen(function* () {
    const source = yield* modelSourceOf(modelPath);
    if (source.format === "huggingface") {
      const dir = tokenizerPath === undefined
        ? modelPath
        : (yield* statPath(tokenizerPath)).isDirectory
        ? tokenizerPath
        : dirname(tokenizerPath);
      return yield* loadHuggingFaceTokenizer(dir).pipe(
        Effect.mapError((e) =>
          e.reason === "file not found" && e.file === join(dir, "tokenizer.json")
            ? loadError(e.file, "file not found; pass the tokenizer's path with --tokenizer")
            : e
        ),
      );
    }
    // A GGUF file carries its own tokenizer (a llama2.c tokenizer.bin may still be given).
    if (source.format === "gguf" && tokenizerPath === undefined) {
      return yield* loadGgufTokenizer(modelPath);
    }
    const { config } = source.format === "gguf"
      ? { config: yield* readGgufConfig(modelPath) }
      : yield* readLlama2cHeader(modelPath);
    const file = tokenizerPath ?? join(dirname(modelPath), "tokenizer.bin");
    const info = yield* statPath(file).pipe(
      Effect.mapError((e) =>
        tokenizerPath === undefined
          ? loadError(
            file,
            `a llama2.c model needs its tokenizer.bin: none beside ${modelPath}; pass its path with --tokenizer`,
          )
          : e
      ),
    );
    if (info.isDirectory) {
      return yield* Effect.fail(loadError(file, "a llama2.c model needs a tokenizer.bin file"));
    }
    if (!info.isFile) return yield* Effect.fail(loadError(file, NOT_A_REGULAR_FILE));
    return yield* loadLlama2cTokenizer(file, config.vocabSize);
  });
