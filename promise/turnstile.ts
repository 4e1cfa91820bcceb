/**
 * One holder at a time, in call order: how a `Tessera` model serializes its generations (a
 * model has one KV-cache slot, so two generations cannot interleave). Waiting can be abandoned
 * with an `AbortSignal`; the abandoned place in line passes on to the next caller.
 */

/** Lets callers through one at a time, first come first served. */
export class Turnstile {
  /** Settles when the last caller in line has left. */
  #tail: Promise<void> = Promise.resolve();

  /**
   * Waits for every earlier caller to leave, then resolves with `leave` (call it exactly once).
   * Rejects with `signal.reason` if the signal aborts first.
   */
  enter(signal?: AbortSignal): Promise<() => void> {
    const before = this.#tail;
    let leave!: () => void;
    const left = new Promise<void>((resolve) => leave = resolve);
    this.#tail = before.then(() => left);
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        before.then(leave);
        reject(signal?.reason);
      };
      if (signal?.aborted) return onAbort();
      signal?.addEventListener("abort", onAbort, { once: true });
      before.then(() => {
        if (signal?.aborted) return;
        signal?.removeEventListener("abort", onAbort);
        resolve(leave);
      });
    });
  }
}
