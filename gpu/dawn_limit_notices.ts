/**
 * Keeps Dawn's limit notices off the user's terminal. The first adapter an instance finds on
 * Vulkan (lavapipe included) makes Dawn's native code print, on fd 2,
 *
 *   Warning: maxDynamicUniformBuffersPerPipelineLayout artificially reduced from 1000000 to 16
 *   to fit dynamic offset allocation limit.
 *
 * about limits Tessera never uses, once per rank. No Dawn option silences it, so the call that
 * triggers it runs with fd 2 pointed at a temporary file, and every other line written there
 * meanwhile (another Worker's log, any other Dawn message) is written back afterwards: delayed
 * by the length of the call, never lost. fd 2 belongs to the whole process, so the swap is
 * serialized within an isolate (a promise chain) and across Workers (a file lock). Without FFI
 * permission, or off Linux and macOS, the call simply runs as it is.
 */

/** The notices dropped: Dawn's limit clamps, nothing else. */
const LIMIT_NOTICE = /^Warning: \w+ artificially reduced from \d+ to \d+ to fit .*$/;

const LIBC_PATHS: Partial<Record<typeof Deno.build.os, string>> = {
  linux: "libc.so.6",
  darwin: "libSystem.B.dylib",
};

const libcSymbols = {
  dup: { parameters: ["i32"], result: "i32" },
  dup2: { parameters: ["i32", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  mkstemp: { parameters: ["buffer"], result: "i32" },
} as const;

type Libc = Deno.DynamicLibrary<typeof libcSymbols>["symbols"];

let libc: Libc | null | undefined;

/** libc's fd calls, or null where they cannot be had (no FFI permission, another OS). */
const openLibc = (): Libc | null => {
  if (libc !== undefined) return libc;
  libc = null;
  const path = LIBC_PATHS[Deno.build.os];
  try {
    if (path && Deno.permissions.querySync({ name: "ffi" }).state === "granted") {
      libc = Deno.dlopen(path, libcSymbols).symbols;
    }
  } catch {
    // No libc to open: notices are left as they are.
  }
  return libc;
};

/** Calls in this isolate run one after another (a second swap would save the first's file). */
let queue: Promise<unknown> = Promise.resolve();

const temporaryDirectory = () => {
  try {
    return Deno.env.get("TMPDIR") ?? "/tmp";
  } catch {
    return "/tmp";
  }
};

/** Writes `text` to fd 2 completely. */
const writeStderr = (text: string) => {
  const bytes = new TextEncoder().encode(text);
  for (let at = 0; at < bytes.length;) at += Deno.stderr.writeSync(bytes.subarray(at));
};

/** `text` without Dawn's limit notices (other lines kept, in order). */
export const withoutLimitNoticeLines = (text: string): string =>
  text.split(/(?<=\n)/).filter((line) => !LIMIT_NOTICE.test(line.trimEnd())).join("");

/**
 * Runs `call` with Dawn's limit notices kept off stderr (see the module comment); what else
 * reached stderr meanwhile is written there when `call` settles.
 */
export const withoutDawnLimitNotices = <A>(call: () => Promise<A>): Promise<A> => {
  const run = async (): Promise<A> => {
    const c = openLibc();
    if (c === null) return await call();
    // Any file serves as the process-wide lock; the runtime's own executable always exists.
    let lock: Deno.FsFile;
    try {
      lock = Deno.openSync(Deno.execPath(), { read: true });
    } catch {
      return await call();
    }
    const template = new TextEncoder().encode(`${temporaryDirectory()}/tessera-stderr-XXXXXX\0`);
    try {
      lock.lockSync(true);
      const file = c.mkstemp(template);
      if (file < 0) return await call();
      const path = new TextDecoder().decode(template.subarray(0, template.length - 1));
      const saved = c.dup(2);
      c.dup2(file, 2);
      try {
        return await call();
      } finally {
        c.dup2(saved, 2);
        c.close(saved);
        c.close(file);
        const captured = Deno.readTextFileSync(path);
        Deno.removeSync(path);
        const kept = withoutLimitNoticeLines(captured);
        if (kept.length > 0) writeStderr(kept);
      }
    } finally {
      lock.close(); // closing releases the lock
    }
  };
  const result = queue.then(run, run);
  queue = result.catch(() => {});
  return result;
};
