// Tessera program: compressed attention to 6 summaries of 8 keys with relu features (8), skipping the query's own block
// q [2, 4, 45, 8], k/v [2, 2, 6, 8/8]

const ITEMS = 360u;
const HEADS = 4u;
const HEADS_KV = 2u;
const GROUP = 2u;
const ROWS = 45u;
const HEAD_DIM = 8u;
const COLS = 8u;
const BLOCK = 8u;
const NUM_BLOCKS = 6u;
const SEQ_KV = 45u;
const F = 8u;
const KF = 0u;
const KC = 192u;
const Q_MUL = 0.5946035385131836f;
const MASKED = -3.0e38f;
const NEG_INF_BITS = 0xff800000u;

@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> work: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> lse: array<u32>;

var<private> phi: array<f32, F>;

fn query_features(row: u32, mul: f32) -> f32 {
  for (var d = 0u; d < 8u; d++) { phi[d] = max(mul * q[row + d], 0.0f); }
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
  let i = idx % ROWS;
  let bh = idx / ROWS;
  let kv = ((bh / HEADS) * HEADS_KV + (bh % HEADS) / GROUP) * NUM_BLOCKS;
  let q0 = idx * HEAD_DIM;
  let o0 = idx * COLS;
  let cq = query_features(q0, Q_MUL);
  for (var c = 0u; c < COLS; c++) {
    out[o0 + c] = 0.0f;
  }
  var m = MASKED;
  var l = 0.0f;
  for (var j = 0u; j < NUM_BLOCKS; j++) {
    let n = min(BLOCK, SEQ_KV - j * BLOCK);
    if (j == i / BLOCK) {
      continue; // the query's own block is skipped
    }
    var mass = 0.0f;
    for (var f = 0u; f < F; f++) {
      mass = fma(phi[f], work[KF + (kv + j) * F + f], mass);
    }
    if (!(mass > 0.0f)) {
      continue; // no mass, no contribution
    }
    let s = log(mass) + cq + work[KC + kv + j] + log(f32(n));
    let m_new = max(m, s);
    let alpha = exp(m - m_new);
    let pj = exp(s - m_new);
    l = l * alpha + pj;
    for (var c = 0u; c < COLS; c++) {
      out[o0 + c] = fma(pj, v[(kv + j) * COLS + c], out[o0 + c] * alpha);
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
