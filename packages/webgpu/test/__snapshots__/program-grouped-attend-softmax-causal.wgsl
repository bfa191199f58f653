// Tessera program: grouped attention (softmax, causal), groups of 8 queries / 8 keys
// q [2, 4, 45, 8], k/v [2, 2, 45, 8/8]; groupings: ranks, then orders

const ITEMS = 360u;
const HEADS_Q = 4u;
const HEADS_KV = 2u;
const GROUP = 2u;
const SEQ_Q = 45u;
const SEQ_KV = 45u;
const HEAD_DIM = 8u;
const COLS = 8u;
const SIZE_Q = 8u;
const SIZE_KV = 8u;
const HEADS_GQ = 4u;
const GROUP_Q = 1u;
const ORDER_KV = 180u;
const SCALE = 0.3535533845424652f;
const MASKED = -3.0e38f;
const NEG_INF_BITS = 0xff800000u;

@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read> group_q: array<u32>;
@group(0) @binding(4) var<storage, read> group_kv: array<u32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read_write> lse: array<u32>;

@compute @workgroup_size(64)
fn main(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let idx = (wg.y * groups.x + wg.x) * 64u + lid;
  if (idx >= ITEMS) {
    return;
  }
  let i = idx % SEQ_Q;
  let bh = idx / SEQ_Q;
  let kv = ((bh / HEADS_Q) * HEADS_KV + (bh % HEADS_Q) / GROUP) * SEQ_KV;
  let q0 = idx * HEAD_DIM;
  let o0 = idx * COLS;
  for (var c = 0u; c < COLS; c++) {
    out[o0 + c] = 0.0f;
  }
  // The query grouping's slice: this query head's (GROUP_Q = 1) or its KV head's.
  let sq = (bh / HEADS_Q) * HEADS_GQ + (bh % HEADS_Q) / GROUP_Q;
  let g = group_q[sq * SEQ_Q + i] / SIZE_Q;
  let first = g * SIZE_KV;
  let last = min(first + SIZE_KV, SEQ_KV);
  var m = MASKED;
  var l = 0.0f;
  for (var p = first; p < last; p++) {
    let j = group_kv[ORDER_KV + kv + p];
    if (j > i) {
      continue;
    }
    var s = 0.0f;
    for (var d = 0u; d < HEAD_DIM; d++) {
      s = fma(q[q0 + d], k[(kv + j) * HEAD_DIM + d], s);
    }
    s *= SCALE;
    let m_new = max(m, s);
    let alpha = exp(m - m_new);
    let w = exp(s - m_new);
    l = l * alpha + w;
    for (var c = 0u; c < COLS; c++) {
      out[o0 + c] = fma(w, v[(kv + j) * COLS + c], out[o0 + c] * alpha);
    }
    m = m_new;
  }
  let ok = l > 0.0f;
  let inv = select(0.0f, 1.0f / l, ok);
  for (var c = 0u; c < COLS; c++) {
    out[o0 + c] *= inv;
  }
  lse[idx] = select(NEG_INF_BITS, bitcast<u32>(m + log(l)), ok);
}
