/**
 * What each collective computes, given every rank's contribution in rank order. Pure and
 * deterministic: sums run in rank order, so every rank gets bit-identical results.
 */
import { Either } from "effect";
import type { CollectiveOp } from "./protocol.ts";
import { CollectiveError } from "./errors.ts";
import { concat, describe, elementCount, type HostTensor, slice, tensor } from "./tensor.ts";

export interface CombineInput {
  readonly op: CollectiveOp;
  readonly arg: number;
  readonly tensors: readonly HostTensor[];
}

const mismatch = (op: string, tensors: readonly HostTensor[], what: string) =>
  new CollectiveError({
    op,
    ranks: tensors.map((_, r) => r),
    message: `${op}: ${what}; ranks sent ${
      tensors.map((t, r) => `rank ${r}: ${describe(t)}`).join(", ")
    }`,
  });

const sameShape = (a: readonly number[], b: readonly number[]) =>
  a.length === b.length && a.every((d, i) => d === b[i]);

/** Checks dtypes agree and shapes agree (except along `freeAxis`, when given). */
const checkShapes = (op: string, tensors: readonly HostTensor[], freeAxis?: number) => {
  const first = tensors[0];
  for (const t of tensors) {
    if (t.dtype !== first.dtype) return mismatch(op, tensors, "dtypes differ");
    const same = freeAxis === undefined
      ? sameShape(t.shape, first.shape)
      : t.shape.length === first.shape.length &&
        t.shape.every((d, i) => i === freeAxis || d === first.shape[i]);
    if (!same) return mismatch(op, tensors, "shapes differ");
  }
  return undefined;
};

const sum = (tensors: readonly HostTensor[]): HostTensor => {
  const out = new Float32Array(tensors[0].data);
  for (let r = 1; r < tensors.length; r++) {
    const d = tensors[r].data;
    for (let i = 0; i < out.length; i++) out[i] += d[i];
  }
  return tensor(tensors[0].shape, out);
};

/** The shape check of an all-reduce, for transports that sum without `combine`. */
export const checkAllReduce = (tensors: readonly HostTensor[]): CollectiveError | undefined =>
  checkShapes("allReduce", tensors);

/** Per-rank results of the collective, or a `CollectiveError` naming ranks and shapes. */
export const combine = (
  { op, arg, tensors }: CombineInput,
): Either.Either<readonly HostTensor[], CollectiveError> => {
  const world = tensors.length;
  const each = (t: HostTensor) => tensors.map(() => t);
  switch (op) {
    case "allReduce": {
      const bad = checkShapes(op, tensors);
      return bad ? Either.left(bad) : Either.right(each(sum(tensors)));
    }
    case "allGather": {
      if (arg >= tensors[0].shape.length) {
        return Either.left(mismatch(op, tensors, `axis ${arg} out of range`));
      }
      const bad = checkShapes(op, tensors, arg);
      return bad ? Either.left(bad) : Either.right(each(concat(tensors, arg)));
    }
    case "reduceScatter": {
      const bad = checkShapes(op, tensors) ??
        (arg >= tensors[0].shape.length
          ? mismatch(op, tensors, `axis ${arg} out of range`)
          : undefined);
      if (bad) return Either.left(bad);
      const total = sum(tensors);
      return Either.right(tensors.map((_, r) => slice(total, arg, r, world)));
    }
    case "broadcast": {
      if (arg >= world) return Either.left(mismatch(op, tensors, `root ${arg} out of range`));
      const bad = checkShapes(op, tensors);
      return bad ? Either.left(bad) : Either.right(each(tensors[arg]));
    }
    case "barrier":
      return Either.right(each(tensor([0], new Float32Array(0))));
  }
};

/** Bytes a collective moves: each contribution up, each result down. */
export const bytesMoved = (inputs: readonly HostTensor[], outputs: readonly HostTensor[]) =>
  [...inputs, ...outputs].reduce((n, t) => n + elementCount(t.shape) * 4, 0);
