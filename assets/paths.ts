/**
 * Paths of the model bundled with the project (stories260K and its tokenizer, see README.md
 * beside this file), so the demo, examples, tests and benchmarks run from a bare clone.
 */
import { fileURLToPath } from "node:url";

/** The bundled stories260K checkpoint (llama2.c format). */
export const STORIES260K_PATH: string = fileURLToPath(
  new URL("./stories260K.bin", import.meta.url),
);
/** Its 512-token tokenizer (llama2.c `tokenizer.bin` format). */
export const TOK512_PATH: string = fileURLToPath(new URL("./tok512.bin", import.meta.url));
