// Tessera program: grouped attention (elu+1 features (8)), groups of 8 queries / 8 keys
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
const F = 8u;
const KF = 0u;
const KC = 1440u;
const Q_MUL = 0.5946035385131836f;
const MASKED = -3.0e38f;
const NEG_INF_BITS = 0xff800000u;

@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> work: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read> group_q: array<u32>;
@group(0) @binding(4) var<storage, read> group_kv: array<u32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read_write> lse: array<u32>;

var<private> phi: array<f32, F>;

fn query_features(row: u32, mul: f32) -> f32 {
  for (var d = 0u; d < 8u; d++) {
    let x = mul * q[row + d];
    phi[d] = select(exp(x), x + 1.0f, x > 0.0f);
  }
  return 0.0f;
}

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
  let cq = query_features(q0, Q_MUL);
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
    var dot = 0.0f;
    for (var f = 0u; f < F; f++) {
      dot = fma(phi[f], work[KF + (kv + j) * F + f], dot);
    }
    let ck = work[KC + kv + j];
    let m_new = max(m, ck);
    let alpha = exp(m - m_new);
    let w = dot * exp(ck - m_new);
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
  lse[idx] = select(NEG_INF_BITS, bitcast<u32>(log(l) + m + cq), ok);
}
