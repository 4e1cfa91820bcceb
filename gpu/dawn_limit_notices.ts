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
 * by the length of the call, never lost. Without FFI permission, or off Linux and macOS, the
 * call simply runs as it is.
 *
 * fd 2 belongs to the whole process, so swaps are serialized: within an isolate by a promise
 * chain, across Workers by a lock file of the process's own (created exclusively, removed on
 * release). Nothing waits unboundedly and nothing blocks a thread: a waiter polls, and a lock
 * older than `staleAfterMillis` is taken over. Its holder may have been a Worker terminated in
 * mid-swap, so the lock file records the holder's saved copy of the real stderr, and whoever
 * takes over points fd 2 back at it first: stderr can never stay captured.
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

export interface NoticeFilterOptions {
  /** A lock held longer than this is taken over (its holder is presumed gone). */
  readonly staleAfterMillis?: number;
  /** How long to wait for the lock before running the call with fd 2 as it is. */
  readonly waitMillis?: number;
}

/** The process-wide lock: a file only one thread of this process can create. */
interface StderrLock {
  /** Records the holder's saved stderr, for whoever must take the lock over. */
  recordSaved(savedFd: number): void;
  /** Removes the lock file, unless another thread has taken it over meanwhile. */
  release(): void;
}

/** The capture file fd 2 points at, if it does (Linux; elsewhere it cannot be told). */
const currentCaptureFile = (): string | undefined => {
  try {
    const target = Deno.readLinkSync("/proc/self/fd/2");
    return target.includes("/tessera-stderr-") ? target : undefined;
  } catch {
    return undefined;
  }
};

const sleep = (millis: number) => new Promise((resolve) => setTimeout(resolve, millis));

const acquireStderrLock = async (
  c: Libc,
  { staleAfterMillis = 10_000, waitMillis = 15_000 }: NoticeFilterOptions,
): Promise<StderrLock | null> => {
  const path = `${temporaryDirectory()}/tessera-stderr-${Deno.pid}.lock`;
  const token = crypto.randomUUID();
  const giveUpAt = performance.now() + waitMillis;
  for (let pause = 1; performance.now() < giveUpAt; pause = Math.min(pause * 2, 25)) {
    try {
      Deno.writeTextFileSync(path, token, { createNew: true });
      return {
        recordSaved: (savedFd) => Deno.writeTextFileSync(path, `${token} ${savedFd}`),
        release: () => {
          try {
            if (Deno.readTextFileSync(path).startsWith(token)) Deno.removeSync(path);
          } catch { /* taken over and released by another thread */ }
        },
      };
    } catch (error) {
      if (!(error instanceof Deno.errors.AlreadyExists)) return null; // no lock to be had
    }
    try {
      const held = Deno.statSync(path);
      const age = Date.now() - (held.mtime?.getTime() ?? Date.now());
      if (age > staleAfterMillis) {
        // The holder is gone (a Worker terminated mid-swap, or an earlier process with this
        // pid): restore the stderr it saved, then free the lock for the next try.
        const savedFd = Number(Deno.readTextFileSync(path).split(" ")[1]);
        const orphan = currentCaptureFile();
        if (Number.isInteger(savedFd) && savedFd > 2 && orphan !== undefined) {
          c.dup2(savedFd, 2);
          writeStderr(withoutLimitNoticeLines(Deno.readTextFileSync(orphan)));
          Deno.removeSync(orphan);
        }
        Deno.removeSync(path);
        continue;
      }
    } catch { /* released meanwhile: try again */ }
    await sleep(pause);
  }
  return null;
};

/**
 * Runs `call` with Dawn's limit notices kept off stderr (see the module comment); what else
 * reached stderr meanwhile is written there when `call` settles.
 */
export const withoutDawnLimitNotices = <A>(
  call: () => Promise<A>,
  options: NoticeFilterOptions = {},
): Promise<A> => {
  const run = async (): Promise<A> => {
    const c = openLibc();
    if (c === null) return await call();
    const lock = await acquireStderrLock(c, options);
    if (lock === null) return await call();
    try {
      const template = new TextEncoder().encode(
        `${temporaryDirectory()}/tessera-stderr-${Deno.pid}-XXXXXX\0`,
      );
      const file = c.mkstemp(template);
      if (file < 0) return await call();
      const path = new TextDecoder().decode(template.subarray(0, template.length - 1));
      const saved = c.dup(2);
      lock.recordSaved(saved);
      c.dup2(file, 2);
      try {
        return await call();
      } finally {
        c.dup2(saved, 2);
        lock.release();
        c.close(saved); // after the release: a recorded saved fd is always still open
        c.close(file);
        const captured = Deno.readTextFileSync(path);
        Deno.removeSync(path);
        const kept = withoutLimitNoticeLines(captured);
        if (kept.length > 0) writeStderr(kept);
      }
    } finally {
      lock.release();
    }
  };
  const result = queue.then(run, run);
  queue = result.then(() => {}, () => {});
  return result;
};
