/**
 * Phi-3 (`Phi3ForCausalLM`): a Llama whose checkpoints fuse q, k and v into `qkv_proj`
 * [q + 2·kv, dim] and gate and up into `gate_up_proj` [2·hidden, dim]; each rank reads its own
 * rows of each block. `sliding_window` is honoured; partial rotary (and longrope, refused with
 * the other rope types) are not implemented.
 */
import { type FusedRows, type ModelFamily, slidingWindowFeature } from "./family.ts";

const FUSED: Record<string, FusedRows> = {
  wq: { hf: "self_attn.qkv_proj", rows: (q, kv) => q + 2 * kv, offset: () => 0 },
  wk: { hf: "self_attn.qkv_proj", rows: (q, kv) => q + 2 * kv, offset: (q) => q },
  wv: { hf: "self_attn.qkv_proj", rows: (q, kv) => q + 2 * kv, offset: (q, kv) => q + kv },
  w1: { hf: "mlp.gate_up_proj", rows: (_q, _kv, h) => 2 * h, offset: () => 0 },
  w3: { hf: "mlp.gate_up_proj", rows: (_q, _kv, h) => 2 * h, offset: (_q, _kv, h) => h },
};

export const phi3: ModelFamily = {
  modelType: "phi3",
  architecture: "Phi3ForCausalLM",
  features: (json, context) => {
    const rotary = json.partial_rotary_factor;
    if (rotary != null && rotary !== 1) {
      return `partial_rotary_factor = ${rotary} is not supported (phi3)`;
    }
    return slidingWindowFeature(json, context);
  },
  fused: FUSED,
};
