enable subgroups;

// Tessera naive 3-pass attention, spec a456563ec34dcdfa788dd4d27721c8ed
// batch 2, heads 4/2, seq 1000x1000, dim 32/32, bshd, f32

const SEQ_Q = 1000u;
const SEQ_KV = 1000u;
const HEADS_Q = 4u;
const GROUP = 2u;
const SCALE = 0.1767766922712326f;
const MASKED = -3.0e38f;
const MASKED_LIMIT = -1.0e38f;

@group(0) @binding(0) var<storage, read> q_buf: array<f32>;
@group(0) @binding(1) var<storage, read> k_buf: array<f32>;
@group(0) @binding(2) var<storage, read> v_buf: array<f32>;
@group(0) @binding(3) var<storage, read_write> out_buf: array<f32>;
@group(0) @binding(4) var<storage, read_write> lse_buf: array<u32>;
@group(0) @binding(5) var<storage, read_write> scores: array<f32>;
@group(0) @binding(7) var<storage, read> tensors: array<u32>;

var<workgroup> red: array<f32, 256>;

fn load_t0(i: i32) -> f32 {
  let w = tensors[0u + min(u32(i), 3u)];
  return select(0.0f, bitcast<f32>(w), u32(i) < 4u);
}
// score modification 'alibi'
fn score_mod(score: f32, b: i32, h: i32, q: i32, kv: i32) -> f32 {
  let s0: f32 = load_t0(h);
  let s1: i32 = q - kv;
  let s2: f32 = f32(s1);
  let s3: f32 = s0 * s2;
  let s4: f32 = score - s3;
  return s4;
}
// mask 'causal'
fn mask(b: i32, h: i32, q: i32, kv: i32) -> bool {
  let m0: bool = q >= kv;
  return m0;
}
fn reduce_max(x: f32, tid: u32, lane: u32, width: u32) -> f32 {
  let v = subgroupMax(x);
  if (lane == 0u) { red[tid / width] = v; }
  workgroupBarrier();
  var r = -3.0e38f;
  for (var i = 0u; i < 256u / width; i++) { r = max(r, red[i]); }
  workgroupBarrier();
  return r;
}
fn reduce_add(x: f32, tid: u32, lane: u32, width: u32) -> f32 {
  let v = subgroupAdd(x);
  if (lane == 0u) { red[tid / width] = v; }
  workgroupBarrier();
  var r = 0.0f;
  for (var i = 0u; i < 256u / width; i++) { r = r + red[i]; }
  workgroupBarrier();
  return r;
}

// Pass 1: one thread per (q, kv) score.
@compute @workgroup_size(16, 16)
fn scores_pass(@builtin(global_invocation_id) g: vec3<u32>) {
  let kv = g.x;
  let qi = g.y;
  let bh = g.z;
  if (kv >= SEQ_KV || qi >= SEQ_Q) { return; }
  let b = bh / HEADS_Q;
  let h = bh % HEADS_Q;
  let q_row = b * 128000u + h * 32u + qi * 128u;
  let k_row = b * 64000u + (h / GROUP) * 32u + kv * 64u;
  var acc = 0.0f;
  for (var d = 0u; d < 32u; d++) { acc += (q_buf[q_row + d]) * (k_buf[k_row + d]); }
  var s = acc * SCALE;
  s = score_mod(s, i32(b), i32(h), i32(qi), i32(kv));
  s = select(MASKED, s, mask(i32(b), i32(h), i32(qi), i32(kv)));
  scores[(bh * SEQ_Q + qi) * SEQ_KV + kv] = s;
}

// Pass 2: one workgroup per row: max, sum, normalise in place, log-sum-exp.
@compute @workgroup_size(256)
fn softmax_pass(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32, @builtin(subgroup_invocation_id) lane: u32, @builtin(subgroup_size) width: u32) {
  let qi = wg.x;
  let bh = wg.y;
  let base = (bh * SEQ_Q + qi) * SEQ_KV;
  var mx = MASKED;
  for (var j = tid; j < SEQ_KV; j += 256u) { mx = max(mx, scores[base + j]); }
  mx = reduce_max(mx, tid, lane, width);
  let m_use = select(mx, 0.0f, mx <= MASKED_LIMIT);
  var sum = 0.0f;
  for (var j = tid; j < SEQ_KV; j += 256u) { sum += exp(scores[base + j] - m_use); }
  sum = reduce_add(sum, tid, lane, width);
  let inv = select(0.0f, 1.0f / sum, sum > 0.0f);
  for (var j = tid; j < SEQ_KV; j += 256u) { scores[base + j] = exp(scores[base + j] - m_use) * inv; }
  if (tid == 0u) {
    lse_buf[bh * SEQ_Q + qi] = select(0xff800000u, bitcast<u32>(m_use + log(sum)), sum > 0.0f);
  }
}

// Pass 3: one thread per output element: probabilities times V.
@compute @workgroup_size(64)
fn weighted_pass(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let c = wg.x * 64u + tid;
  let qi = wg.y;
  let bh = wg.z;
  if (c >= 32u || qi >= SEQ_Q) { return; }
  let b = bh / HEADS_Q;
  let h = bh % HEADS_Q;
  let v_base = b * 64000u + (h / GROUP) * 32u + c;
  let base = (bh * SEQ_Q + qi) * SEQ_KV;
  var acc = 0.0f;
  for (var j = 0u; j < SEQ_KV; j++) { acc += scores[base + j] * (v_buf[v_base + j * 64u]); }
  out_buf[b * 128000u + h * 32u + qi * 128u + c] = acc;
}
