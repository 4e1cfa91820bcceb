/**
 * The collective vocabulary on the wire, defined once. Every transport carries these messages;
 * tensor data is a binary payload, never a JSON array.
 */
import { Schema } from "effect";
import { f32FromBytes, type HostTensor, tensor, toBytes } from "./tensor.ts";

export const DTypeSchema = Schema.Literal("f32");

/** A tensor as bytes plus the metadata needed to check and reassemble it. */
export const TensorPayload = Schema.Struct({
  dtype: DTypeSchema,
  shape: Schema.Array(Schema.NonNegativeInt),
  data: Schema.Uint8ArrayFromSelf,
});
export type TensorPayload = typeof TensorPayload.Type;

/** Megatron's collectives as a small named vocabulary. */
export const CollectiveOp = Schema.Literal(
  "allReduce",
  "allGather",
  "reduceScatter",
  "broadcast",
  "barrier",
);
export type CollectiveOp = typeof CollectiveOp.Type;

/** One rank's part of collective number `seq` within step `step`. */
export class Contribution extends Schema.TaggedClass<Contribution>()("Contribution", {
  step: Schema.NonNegativeInt,
  seq: Schema.NonNegativeInt,
  rank: Schema.NonNegativeInt,
  op: CollectiveOp,
  /** allGather: concatenation axis; reduceScatter: split axis; broadcast: root rank. */
  arg: Schema.NonNegativeInt,
  tensor: TensorPayload,
}) {}

/** What a rank receives back for its contribution. */
export class CollectiveResult extends Schema.TaggedClass<CollectiveResult>()("CollectiveResult", {
  step: Schema.NonNegativeInt,
  seq: Schema.NonNegativeInt,
  tensor: TensorPayload,
}) {}

/** A host tensor as a payload (a view of its bytes, no copy). */
export const toPayload = (t: HostTensor): TensorPayload => ({
  dtype: t.dtype,
  shape: [...t.shape],
  data: toBytes(t),
});

/** A payload as a host tensor; throws a RangeError when shape and bytes disagree. */
export const fromPayload = (p: TensorPayload): HostTensor => tensor(p.shape, f32FromBytes(p.data));
