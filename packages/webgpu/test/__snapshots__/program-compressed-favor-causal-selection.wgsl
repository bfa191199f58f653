// Tessera program: compressed attention to 6 summaries of 8 keys with favor+ features (16), causal, selection exclude
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
const F = 16u;
const W = 0u;
const KF = 128u;
const KC = 512u;
const Q_MUL = 0.5946035385131836f;
const MASKED = -3.0e38f;
const NEG_INF_BITS = 0xff800000u;
const SEL_BLOCK_Q = 16u;
const SEL_Q_BLOCKS = 3u;
const SEL_ENTRIES = 25u;

@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> work: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> lse: array<u32>;
@group(0) @binding(5) var<storage, read> selection: array<u32>;

var<private> phi: array<f32, F>;

fn query_features(row: u32, mul: f32) -> f32 {
  var sq = 0.0f;
  for (var d = 0u; d < 8u; d++) { let x = mul * q[row + d]; sq += x * x; }
  var mx = -3.0e38f;
  for (var r = 0u; r < 16u; r++) {
    var p = 0.0f;
    for (var d = 0u; d < 8u; d++) { p += work[W + r * 8u + d] * (mul * q[row + d]); }
    phi[r] = p;
    mx = max(mx, p);
  }
  for (var r = 0u; r < 16u; r++) { phi[r] = exp(phi[r] - mx) * 0.25f; }
  return mx - 0.5f * sq;
}

fn selected_block(p: u32) -> u32 {
  return selection[SEL_ENTRIES + p] & 0x7fffffffu;
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
  let srow = bh * SEL_Q_BLOCKS + i / SEL_BLOCK_Q;
  var p = selection[srow];
  let p_end = selection[srow + 1u];
  var m = MASKED;
  var l = 0.0f;
  for (var j = 0u; j < NUM_BLOCKS; j++) {
    let n = min(BLOCK, SEQ_KV - j * BLOCK);
    if (j >= i / BLOCK) {
      break; // the query's own block and later ones are not seen
    }
    while (p < p_end && selected_block(p) < j) {
      p += 1u;
    }
    let picked = p < p_end && selected_block(p) == j;
    if (picked) {
      continue;
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
