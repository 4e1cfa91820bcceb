/**
 * Tokens per wall-clock second over a sliding window, for the status page's chart: a ring of
 * per-second counts, so recording a token is O(1) and nothing grows with uptime.
 */
export class TokenRate {
  private readonly counts: number[];
  /** The whole second (since the epoch) that `counts[head]` holds. */
  private second: number;
  private head = 0;

  constructor(readonly windowSeconds: number, private readonly now: () => number = Date.now) {
    // One more slot than the window: the current, unfinished second.
    this.counts = new Array(windowSeconds + 1).fill(0);
    this.second = Math.floor(now() / 1000);
  }

  /** Counts `tokens` in the current second. */
  add(tokens: number): void {
    this.advance();
    this.counts[this.head] += tokens;
  }

  /** Tokens in each of the last `windowSeconds` whole seconds, oldest first (the current one excluded). */
  lastSeconds(): number[] {
    this.advance();
    const size = this.counts.length;
    return Array.from(
      { length: this.windowSeconds },
      (_, i) => this.counts[(this.head + 1 + i) % size],
    );
  }

  /** Moves the ring to the current second, zeroing the seconds that passed without tokens. */
  private advance() {
    const now = Math.floor(this.now() / 1000);
    const steps = Math.min(now - this.second, this.counts.length);
    for (let i = 0; i < steps; i++) {
      this.head = (this.head + 1) % this.counts.length;
      this.counts[this.head] = 0;
    }
    if (now > this.second) this.second = now;
  }
}
