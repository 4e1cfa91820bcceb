/**
 * OpenAI's `stop`: the text ends just before the first occurrence of any stop string, which is
 * not returned. Streamed text arrives a token at a time, so a stop string can straddle tokens;
 * the scanner holds back the longest tail that could still begin a stop string and releases it
 * once the next token shows it does not.
 */
export class StopScanner {
  private held = "";
  private readonly longest: number;

  constructor(private readonly stops: readonly string[]) {
    this.longest = Math.max(0, ...stops.map((s) => s.length));
  }

  /** Text now safe to send after `text` arrives; `stopped` once a stop string was seen. */
  push(text: string): { readonly text: string; readonly stopped: boolean } {
    const buffer = this.held + text;
    if (this.stops.length === 0) return { text: buffer, stopped: false };
    let cut = -1;
    for (const stop of this.stops) {
      const at = buffer.indexOf(stop);
      if (at !== -1 && (cut === -1 || at < cut)) cut = at;
    }
    if (cut !== -1) {
      this.held = "";
      return { text: buffer.slice(0, cut), stopped: true };
    }
    const keep = this.heldTail(buffer);
    this.held = buffer.slice(buffer.length - keep);
    return { text: buffer.slice(0, buffer.length - keep), stopped: false };
  }

  /** What was held back, at the end of the generation (no stop string came). */
  flush(): string {
    const rest = this.held;
    this.held = "";
    return rest;
  }

  /** Length of the longest tail of `buffer` that is a proper prefix of some stop string. */
  private heldTail(buffer: string): number {
    for (let k = Math.min(buffer.length, this.longest - 1); k > 0; k--) {
      const tail = buffer.slice(buffer.length - k);
      if (this.stops.some((stop) => stop.startsWith(tail))) return k;
    }
    return 0;
  }
}
