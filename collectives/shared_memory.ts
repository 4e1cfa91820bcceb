/**
 * Collectives through one SharedArrayBuffer shared by every rank's Worker: each rank writes its
 * contribution into its own slot, publishes a ticket with `Atomics.store`, and waits (futex, no
 * message hop) until every rank has published the same ticket.
 *
 * Small messages are combined one-shot: every rank reads every slot. A large all-reduce is a
 * reduce-scatter (rank r sums part r over all slots into a shared result) then an all-gather
 * (everyone copies the result): on shared memory the ring's neighbour passes collapse into
 * those two passes, and each rank sums 1/N of the data instead of all of it. The threshold
 * between them comes from `deno task bench collectives`.
 *
 * Slots are double-buffered by `seq` parity, so a rank may write collective k+1 while others
 * still read k. Parity restarts with every step, and steps are pipelined (the supervisor sends a
 * token's layers at once), so two collectives in a row can share a parity: before writing its
 * slot a rank waits until every rank that took part in the last collective of that parity has
 * consumed it (each rank publishes a `consumed` ticket once it has copied its result out).
 */
import { Effect, Either } from "effect";
import { bytesMoved, checkAllReduce, combine } from "./combine.ts";
import type { CollectiveFailure, CollectiveGroup } from "./communicator.ts";
import { CollectiveError, RankDied } from "./errors.ts";
import { CollectiveOp, type Contribution, type TensorPayload } from "./protocol.ts";
import { elementCount, type HostTensor, partRange, tensor, toBytes } from "./tensor.ts";

const OPS = CollectiveOp.literals;
const MAX_DIMS = 8;
const HEADER_INTS = 4 + MAX_DIMS; // op, arg, byteLength, ndims, dims…
/** Control words: [dead rank + 1, aborted step + 1, one-shot limit, stats lock (unused)]. */
const CONTROL_INTS = 4;
const DEAD = 0;
const ABORTED_STEP = 1;
const ONE_SHOT_LIMIT = 2;
/** Per op: calls and bytes, written by rank 0 only (for stats, read without locking). */
const STATS_F64 = OPS.length * 2;
/** Before sleeping on the futex, poll briefly: a peer usually arrives within microseconds. */
const SPIN_CHECKS = 200;
const WAIT_SLICE_MS = 100;

/**
 * From `deno task bench collectives` (docs/BENCHMARKS.md; 2-core host, so noisy): at 4 ranks the
 * two-pass all-reduce is ahead from 64–256 KiB (0.73 vs 0.85 ms at 256 KiB, 2.4 vs 4.0 at 1 MiB);
 * at 2 ranks the two are within noise up to 1 MiB and two-pass wins at 4 MiB.
 */
export const DEFAULT_ONE_SHOT_MAX_BYTES = 128 * 1024;

/** Sizes of the Workers transport's shared-memory region. */
export interface SharedRegionOptions {
  /** Largest contribution carried in shared memory; larger ones go through the fallback. */
  readonly slotBytes?: number;
  /** Largest contribution reduced one-shot; larger ones use two passes. Default 128 KiB. */
  readonly oneShotMaxBytes?: number;
}

const align = (n: number) => Math.ceil(n / 8) * 8;

/** Where everything lives inside the buffer; computed identically by every rank. */
class Layout {
  readonly control = 0;
  readonly tickets: number; // Int32 [parity][rank] arrival, reduced, then consumed
  readonly headers: number; // Int32 [parity][rank][HEADER_INTS]
  readonly stats: number; // Float64 [STATS_F64]
  readonly slots: number; // bytes [parity][rank][slotBytes]
  readonly results: number; // bytes [parity][slotBytes]
  readonly totalBytes: number;

  constructor(readonly worldSize: number, readonly slotBytes: number) {
    this.tickets = align(CONTROL_INTS * 4);
    this.headers = align(this.tickets + 3 * 2 * worldSize * 4);
    this.stats = align(this.headers + 2 * worldSize * HEADER_INTS * 4);
    this.slots = align(this.stats + STATS_F64 * 8);
    this.results = this.slots + 2 * worldSize * slotBytes;
    this.totalBytes = this.results + 2 * slotBytes;
  }

  arrival(parity: number, rank: number) {
    return this.tickets / 4 + parity * this.worldSize + rank;
  }
  reduced(parity: number, rank: number) {
    return this.tickets / 4 + (2 + parity) * this.worldSize + rank;
  }
  consumed(parity: number, rank: number) {
    return this.tickets / 4 + (4 + parity) * this.worldSize + rank;
  }
  header(parity: number, rank: number) {
    return this.headers / 4 + (parity * this.worldSize + rank) * HEADER_INTS;
  }
  slot(parity: number, rank: number) {
    return this.slots + (parity * this.worldSize + rank) * this.slotBytes;
  }
  result(parity: number) {
    return this.results + parity * this.slotBytes;
  }
}

/** The shared buffer of a group of `worldSize` ranks (created by the supervisor). */
export const createSharedRegion = (
  worldSize: number,
  options: SharedRegionOptions = {},
): SharedArrayBuffer => {
  const slotBytes = align(options.slotBytes ?? 4 * 1024 * 1024);
  const layout = new Layout(worldSize, slotBytes);
  const buffer = new SharedArrayBuffer(layout.totalBytes);
  const control = new Int32Array(buffer, 0, CONTROL_INTS);
  control[ONE_SHOT_LIMIT] = options.oneShotMaxBytes ?? DEFAULT_ONE_SHOT_MAX_BYTES;
  return buffer;
};

/** Infers the slot size back from a region's length (every rank sees the same buffer). */
const layoutOf = (buffer: SharedArrayBuffer, worldSize: number) => {
  const fixed = new Layout(worldSize, 0).totalBytes;
  return new Layout(worldSize, (buffer.byteLength - fixed) / (2 * worldSize + 2));
};

/** Wakes every waiter of the region: used when a rank dies or a step is aborted. */
const wakeAll = (buffer: SharedArrayBuffer, worldSize: number) => {
  const ints = new Int32Array(buffer);
  const layout = layoutOf(buffer, worldSize);
  for (let p = 0; p < 2; p++) {
    for (let r = 0; r < worldSize; r++) {
      Atomics.notify(ints, layout.arrival(p, r));
      Atomics.notify(ints, layout.reduced(p, r));
      Atomics.notify(ints, layout.consumed(p, r));
    }
  }
};

/** Supervisor side: marks `rank` dead; every pending and future collective fails. */
export const markRankDead = (buffer: SharedArrayBuffer, worldSize: number, rank: number) => {
  const ints = new Int32Array(buffer);
  Atomics.compareExchange(ints, DEAD, 0, rank + 1);
  wakeAll(buffer, worldSize);
};

/** Supervisor side: fails every collective of steps up to and including `step`. */
export const abortSharedStep = (buffer: SharedArrayBuffer, worldSize: number, step: number) => {
  const ints = new Int32Array(buffer);
  let seen = Atomics.load(ints, ABORTED_STEP);
  while (seen < step + 1) {
    const previous = Atomics.compareExchange(ints, ABORTED_STEP, seen, step + 1);
    if (previous === seen) break;
    seen = previous;
  }
  wakeAll(buffer, worldSize);
};

/** Calls and bytes per op as recorded by rank 0. */
export const sharedStats = (buffer: SharedArrayBuffer, worldSize: number) => {
  const stats = new Float64Array(buffer, layoutOf(buffer, worldSize).stats, STATS_F64);
  return OPS.flatMap((op, i) =>
    stats[2 * i] > 0 ? [{ op, calls: stats[2 * i], bytes: stats[2 * i + 1] }] : []
  );
};

/** A ticket names one collective: equal on every rank for the same (step, seq). */
const ticketOf = (step: number, seq: number) =>
  (((step % 0x100000) * 0x800 + seq) % 0x7fffffff) + 1;

/** One rank's endpoint on the shared region. */
export class SharedMemoryGroup implements CollectiveGroup {
  private readonly layout: Layout;
  private readonly ints: Int32Array;
  private readonly bytes: Uint8Array;
  private readonly stats: Float64Array;
  private readonly timeoutMs: number;
  /** Per parity, the ticket of the last collective every rank arrived at (0: none yet). */
  private readonly lastTicket = [0, 0];

  constructor(
    buffer: SharedArrayBuffer,
    readonly worldSize: number,
    private readonly rank: number,
    /** Carries contributions too large for a slot (every rank takes the same path). */
    private readonly fallback: CollectiveGroup,
    options: { readonly timeoutMs?: number } = {},
  ) {
    this.layout = layoutOf(buffer, worldSize);
    this.ints = new Int32Array(buffer);
    this.bytes = new Uint8Array(buffer);
    this.stats = new Float64Array(buffer, this.layout.stats, STATS_F64);
    this.timeoutMs = options.timeoutMs ?? 5 * 60_000;
  }

  exchange(c: Contribution): Effect.Effect<TensorPayload, CollectiveFailure> {
    return Effect.suspend(() => {
      if (c.seq >= 0x800) return this.fallback.exchange(c);
      const outcome = this.run(c);
      if (outcome === "fallback") return this.fallback.exchange(c);
      return Either.isLeft(outcome) ? Effect.fail(outcome.left) : Effect.succeed(outcome.right);
    });
  }

  private run(c: Contribution): Either.Either<TensorPayload, CollectiveFailure> | "fallback" {
    const { layout, ints, bytes } = this;
    const parity = c.seq & 1;
    const ticket = ticketOf(c.step, c.seq);
    const data = c.tensor.data;
    // Too large for a slot: publish -1 so that every rank takes the fallback together.
    const fits = data.byteLength <= layout.slotBytes && c.tensor.shape.length <= MAX_DIMS;

    const busy = this.awaitConsumed(c, parity);
    if (busy) return Either.left(busy);
    const h = layout.header(parity, this.rank);
    ints[h] = OPS.indexOf(c.op);
    ints[h + 1] = c.arg;
    ints[h + 2] = fits ? data.byteLength : -1;
    ints[h + 3] = fits ? c.tensor.shape.length : 0;
    if (fits) c.tensor.shape.forEach((d, i) => (ints[h + 4 + i] = d));
    if (fits) bytes.set(data, layout.slot(parity, this.rank));
    Atomics.store(ints, layout.arrival(parity, this.rank), ticket);
    Atomics.notify(ints, layout.arrival(parity, this.rank));

    const arrived = this.awaitAll(c, (r) => layout.arrival(parity, r), ticket);
    if (arrived) {
      this.markConsumed(parity, ticket);
      return Either.left(arrived);
    }
    this.lastTicket[parity] = ticket;
    const outcome = this.combineArrived(c, parity, ticket);
    this.markConsumed(parity, ticket);
    return outcome;
  }

  /** This rank has read all it needs of the collective `ticket` at `parity`. */
  private markConsumed(parity: number, ticket: number) {
    Atomics.store(this.ints, this.layout.consumed(parity, this.rank), ticket);
    Atomics.notify(this.ints, this.layout.consumed(parity, this.rank));
  }

  /**
   * Waits until no rank still reads this parity's slots: every rank that arrived at the last
   * collective of this parity has consumed it (a rank that never arrived there reads nothing).
   */
  private awaitConsumed(c: Contribution, parity: number): CollectiveFailure | undefined {
    const last = this.lastTicket[parity];
    if (last === 0) return undefined;
    const deadline = performance.now() + this.timeoutMs;
    for (let r = 0; r < this.worldSize; r++) {
      if (r === this.rank) continue;
      const index = this.layout.consumed(parity, r);
      let checks = 0;
      while (true) {
        const seen = Atomics.load(this.ints, index);
        if (seen === last || Atomics.load(this.ints, this.layout.arrival(parity, r)) !== last) {
          break;
        }
        const failure = this.failure(c);
        if (failure) return failure;
        if (++checks < SPIN_CHECKS) continue;
        const left = deadline - performance.now();
        if (left <= 0) return this.timeoutError(c, (q) => this.layout.consumed(parity, q), last);
        Atomics.wait(this.ints, index, seen, Math.min(left, WAIT_SLICE_MS));
      }
    }
    return undefined;
  }

  /** Every rank has arrived: check the headers and combine the slots. */
  private combineArrived(
    c: Contribution,
    parity: number,
    ticket: number,
  ): Either.Either<TensorPayload, CollectiveFailure> | "fallback" {
    const { layout, ints, bytes } = this;
    const data = c.tensor.data;
    const headers = Array.from({ length: this.worldSize }, (_, r) => {
      const at = layout.header(parity, r);
      const ndims = ints[at + 3];
      return {
        op: OPS[ints[at]],
        arg: ints[at + 1],
        byteLength: ints[at + 2],
        shape: Array.from(ints.subarray(at + 4, at + 4 + ndims)),
      };
    });
    const disagree = headers.findIndex((x) => x.op !== c.op || x.arg !== c.arg);
    if (disagree >= 0) {
      return Either.left(
        new CollectiveError({
          op: c.op,
          ranks: [this.rank, disagree],
          message: `collective ${c.seq} of step ${c.step}: rank ${this.rank} called ` +
            `${c.op}(${c.arg}) but rank ${disagree} called ` +
            `${headers[disagree].op}(${headers[disagree].arg}); the ranks disagree on order`,
        }),
      );
    }
    if (headers.some((x) => x.byteLength < 0)) return "fallback";

    const tensors = headers.map((x, r) => {
      const view = new Float32Array(bytes.buffer, layout.slot(parity, r), x.byteLength / 4);
      return { dtype: "f32", shape: x.shape, data: view } as HostTensor;
    });
    const badShape = tensors.find((t) => elementCount(t.shape) * 4 !== t.data.byteLength);
    if (badShape) {
      return Either.left(
        new CollectiveError({
          op: c.op,
          ranks: [tensors.indexOf(badShape)],
          message: `${c.op}: shape [${badShape.shape}] does not match its bytes`,
        }),
      );
    }

    const twoPass = c.op === "allReduce" && data.byteLength > ints[ONE_SHOT_LIMIT];
    const result = twoPass
      ? this.reduceScatterAllGather(c, parity, ticket, tensors)
      : Either.map(combine({ op: c.op, arg: c.arg, tensors }), (outs) => outs[this.rank]);
    return Either.map(result, (out) => {
      if (this.rank === 0) this.record(c.op, tensors, out);
      // Results must not alias the slots, which the next collective but one overwrites.
      const owned = out.data.buffer === bytes.buffer ? new Float32Array(out.data) : out.data;
      return { dtype: "f32", shape: [...out.shape], data: toBytes(tensor(out.shape, owned)) };
    });
  }

  /** Rank r sums part r of every slot into the shared result, then everyone copies it all. */
  private reduceScatterAllGather(
    c: Contribution,
    parity: number,
    ticket: number,
    tensors: readonly HostTensor[],
  ): Either.Either<HostTensor, CollectiveFailure> {
    const bad = checkAllReduce(tensors);
    if (bad) return Either.left(bad);
    const { layout, ints } = this;
    const n = tensors[0].data.length;
    const result = new Float32Array(this.bytes.buffer, layout.result(parity), n);
    const { start, size } = partRange(n, this.rank, this.worldSize);
    const mine = result.subarray(start, start + size);
    mine.set(tensors[0].data.subarray(start, start + size));
    for (let r = 1; r < tensors.length; r++) {
      const part = tensors[r].data;
      for (let i = 0; i < size; i++) mine[i] += part[start + i];
    }
    Atomics.store(ints, layout.reduced(parity, this.rank), ticket);
    Atomics.notify(ints, layout.reduced(parity, this.rank));
    const reduced = this.awaitAll(c, (r) => layout.reduced(parity, r), ticket);
    if (reduced) return Either.left(reduced);
    return Either.right(tensor(tensors[0].shape, new Float32Array(result)));
  }

  /** Blocks until every rank's word at `indexOf(r)` holds `ticket`, or returns why not. */
  private awaitAll(c: Contribution, indexOf: (rank: number) => number, ticket: number) {
    const deadline = performance.now() + this.timeoutMs;
    for (let r = 0; r < this.worldSize; r++) {
      const index = indexOf(r);
      let checks = 0;
      while (true) {
        const failure = this.failure(c);
        if (failure) return failure;
        const seen = Atomics.load(this.ints, index);
        if (seen === ticket) break;
        if (++checks < SPIN_CHECKS) continue;
        const left = deadline - performance.now();
        if (left <= 0) return this.timeoutError(c, indexOf, ticket);
        Atomics.wait(this.ints, index, seen, Math.min(left, WAIT_SLICE_MS));
      }
    }
    return undefined;
  }

  private failure(c: Contribution): CollectiveFailure | undefined {
    const dead = Atomics.load(this.ints, DEAD);
    if (dead > 0) {
      return new RankDied({
        rank: dead - 1,
        message: `rank ${dead - 1} died; ${c.op} #${c.seq} of step ${c.step} cannot complete`,
      });
    }
    if (Atomics.load(this.ints, ABORTED_STEP) > c.step) {
      return new CollectiveError({
        op: c.op,
        ranks: [this.rank],
        message: `step ${c.step} was aborted: another rank failed`,
      });
    }
    return undefined;
  }

  private timeoutError(c: Contribution, indexOf: (rank: number) => number, ticket: number) {
    const missing = [...Array(this.worldSize).keys()].filter((r) =>
      Atomics.load(this.ints, indexOf(r)) !== ticket
    );
    return new CollectiveError({
      op: c.op,
      ranks: missing,
      message: `${c.op} #${c.seq} of step ${c.step} timed out after ${this.timeoutMs} ms ` +
        `waiting for ranks ${missing.join(", ")}`,
    });
  }

  private record(op: Contribution["op"], inputs: readonly HostTensor[], output: HostTensor) {
    const i = OPS.indexOf(op);
    this.stats[2 * i] += 1;
    // Rank 0 sees one output; every rank receives one of the same size for these ops.
    this.stats[2 * i + 1] += bytesMoved(inputs, inputs.map(() => output));
  }
}
