/**
 * The collective vocabulary on the wire, defined once. Every transport carries these messages;
 * tensor data is a binary payload, never a JSON array.
 */
import { Schema } from "effect";
import { f32FromBytes, type HostTensor, tensor, toBytes } from "./tensor.ts";

/** The element types a payload may carry. */
export const DTypeSchema: Schema.Literal<["f32"]> = Schema.Literal("f32");

/** A tensor as bytes plus the metadata needed to check and reassemble it. */
export const TensorPayload: Schema.Struct<{
  dtype: typeof DTypeSchema;
  shape: Schema.Array$<typeof Schema.NonNegativeInt>;
  data: typeof Schema.Uint8ArrayFromSelf;
}> = Schema.Struct({
  dtype: DTypeSchema,
  shape: Schema.Array(Schema.NonNegativeInt),
  data: Schema.Uint8ArrayFromSelf,
});
/** A decoded {@link TensorPayload}. */
export type TensorPayload = typeof TensorPayload.Type;

/** Megatron's collectives as a small named vocabulary. */
export const CollectiveOp: Schema.Literal<
  ["allReduce", "allGather", "reduceScatter", "broadcast", "barrier"]
> = Schema.Literal(
  "allReduce",
  "allGather",
  "reduceScatter",
  "broadcast",
  "barrier",
);
/** One of the {@link CollectiveOp} names. */
export type CollectiveOp = typeof CollectiveOp.Type;

/** The fields of a {@link Contribution}. */
export type ContributionFields = {
  /** The supervisor step the collective belongs to. */
  step: typeof Schema.NonNegativeInt;
  /** The collective's number within the step. */
  seq: typeof Schema.NonNegativeInt;
  /** The contributing rank. */
  rank: typeof Schema.NonNegativeInt;
  /** Which collective. */
  op: typeof CollectiveOp;
  /** allGather: concatenation axis; reduceScatter: split axis; broadcast: root rank. */
  arg: typeof Schema.NonNegativeInt;
  /** The rank's tensor. */
  tensor: typeof TensorPayload;
};

/** One rank's part of collective number `seq` within step `step` (decoded). */
export type Contribution = Schema.Struct.Type<
  { readonly _tag: Schema.tag<"Contribution"> } & ContributionFields
>;

/** One rank's part of collective number `seq` within step `step` (a `Schema.TaggedClass`). */
export const Contribution: Schema.TaggedClass<
  Contribution,
  "Contribution",
  { readonly _tag: Schema.tag<"Contribution"> } & ContributionFields
> = Schema.TaggedClass<Contribution>()("Contribution", {
  step: Schema.NonNegativeInt,
  seq: Schema.NonNegativeInt,
  rank: Schema.NonNegativeInt,
  op: CollectiveOp,
  /** allGather: concatenation axis; reduceScatter: split axis; broadcast: root rank. */
  arg: Schema.NonNegativeInt,
  tensor: TensorPayload,
});

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
