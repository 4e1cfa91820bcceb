/**
 * The native reference, measured in the same run: bench/native/llama.c (llama2.c's forward pass,
 * f32, OpenMP over every core) built with the system C compiler the way llama2.c's `runomp`
 * builds it (-Ofast -march=native -fopenmp), decoding the same synthetic checkpoint. Issue 6's
 * "70 tok/s" was measured on another CPU; this run's own figure is the fair denominator.
 */
import { fileURLToPath } from "node:url";

/** What the reference measured, or why it could not run. */
export type NativeResult =
  | { readonly tokPerS: number; readonly threads: number; readonly command: string }
  | { readonly unavailable: string };

const SOURCE = fileURLToPath(new URL("./native/llama.c", import.meta.url));

const run = async (command: string, args: string[], env: Record<string, string> = {}) => {
  const out = await new Deno.Command(command, { args, env, stdout: "piped", stderr: "piped" })
    .output();
  const text = new TextDecoder();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
};

/** Builds the reference into `cacheDir` once (again when the source is newer). */
const build = async (cacheDir: string): Promise<string | { unavailable: string }> => {
  const binary = `${cacheDir}/llama-native`;
  const [source, built] = await Promise.all([
    Deno.stat(SOURCE),
    Deno.stat(binary).catch(() => undefined),
  ]);
  if (built && (built.mtime?.getTime() ?? 0) >= (source.mtime?.getTime() ?? 0)) return binary;
  const args = ["-Ofast", "-march=native", "-fopenmp", SOURCE, "-lm", "-o", binary];
  try {
    const out = await run("cc", args);
    if (out.code !== 0) return { unavailable: `cc failed: ${out.stderr.trim().split("\n")[0]}` };
  } catch {
    return { unavailable: "no C compiler (cc) on this machine" };
  }
  return binary;
};

/** Greedy decode tok/s of the checkpoint at `modelPath` after a 16-token prompt. */
export const nativeDecode = async (
  modelPath: string,
  tokens: number,
  cacheDir: string,
): Promise<NativeResult> => {
  const binary = await build(cacheDir);
  if (typeof binary !== "string") return binary;
  const threads = navigator.hardwareConcurrency;
  const out = await run(binary, [modelPath, String(tokens)], {
    OMP_NUM_THREADS: String(threads),
  });
  if (out.code !== 0) return { unavailable: `the reference failed: ${out.stderr.trim()}` };
  const { tokPerS } = JSON.parse(out.stdout);
  return { tokPerS, threads, command: "cc -Ofast -march=native -fopenmp bench/native/llama.c" };
};
