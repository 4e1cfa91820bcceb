/**
 * Gentle polling for dawn.node. While any GPU promise is pending, dawn.node calls
 * `wgpuInstanceProcessEvents` and reschedules itself through the global `setImmediate`, so the
 * waiting thread spins at full speed. On a 2-core machine running lavapipe that spin starves
 * the threads that finish the GPU work: single waits stalled for 5-10 s (a loop of 200 MB GEMVs
 * took 48 s for 40 iterations instead of 2.5 s). A spin through a MessageChannel stalls the same
 * way; anything that lets the thread sleep between polls does not.
 *
 * So while Dawn is in use, a wait's first few polls run at once (a small readback is done by
 * then) and later ones first sleep (Atomics.wait on a private cell), 50 µs doubling up to
 * 0.25 ms, so a long wait polls ~4000×/s and leaves the cores to lavapipe (a 1 ms cap cost
 * tp 2 decode ~3%: it waits on ~25 readbacks per token, each overshooting by up to the cap). A poll that reschedules itself
 * continues a wait; a `setImmediate` from anywhere else starts a new one.
 * Every other `setImmediate` caller in the isolate gets the same brief sleep, which is harmless
 * outside GPU waits because back-to-back immediates are rare there.
 */

/** Polls of one wait that run without sleeping. */
const EAGER_POLLS = 8;
const FIRST_SLEEP_MS = 0.05;
const MAX_SLEEP_MS = 0.25;

let installed = false;

/** Makes the isolate's `setImmediate` sleep briefly first, with backoff (idempotent). */
export const installGentleDawnPolling = (): void => {
  const global = globalThis as {
    setImmediate?: (fn: (...a: unknown[]) => void, ...a: unknown[]) => unknown;
  };
  const original = global.setImmediate;
  if (installed || typeof original !== "function") return;
  installed = true;
  const cell = new Int32Array(new SharedArrayBuffer(4));
  let polls = 0;
  let insidePoll = false;
  global.setImmediate = (fn, ...args) => {
    // Scheduled from inside a poll: the same wait goes on; anything else starts a new one.
    polls = insidePoll ? polls + 1 : 0;
    const sleep = polls < EAGER_POLLS
      ? 0
      : Math.min(FIRST_SLEEP_MS * 2 ** (polls - EAGER_POLLS), MAX_SLEEP_MS);
    return original(() => {
      if (sleep > 0) Atomics.wait(cell, 0, 0, sleep);
      insidePoll = true;
      try {
        fn(...args);
      } finally {
        insidePoll = false;
      }
    });
  };
};
