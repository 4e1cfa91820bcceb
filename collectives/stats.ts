/** Counts of collectives run and bytes moved, per operation, for examples and benchmarks. */
export class CollectiveStats {
  private readonly byOp = new Map<string, { calls: number; bytes: number }>();

  /** Counts one call of `op` that moved `bytes`. */
  record(op: string, bytes: number): void {
    const entry = this.byOp.get(op) ?? { calls: 0, bytes: 0 };
    entry.calls++;
    entry.bytes += bytes;
    this.byOp.set(op, entry);
  }

  /** Calls and bytes so far, one entry per operation. */
  snapshot(): ReadonlyArray<{ op: string; calls: number; bytes: number }> {
    return [...this.byOp].map(([op, e]) => ({ op, ...e }));
  }

  /** Forgets all counts. */
  reset(): void {
    this.byOp.clear();
  }
}
