// ======== module: prepass
// Tessera backward (pre-pass: D = rowsum(dOut ∘ out), packed with lse), spec 04e5a40920d50b54acf1e8999abb1e96
// batch 2, heads 4, seq 300, dimV 32, bshd

const SEQ_Q = 300u;
const HEADS_Q = 4u;
const DEAD_LSE = 3.0e38f;

@group(0) @binding(0) var<storage, read> out_buf: array<f32>;
@group(0) @binding(1) var<storage, read> dout_buf: array<f32>;
@group(0) @binding(2) var<storage, read> lse_buf: array<u32>;
@group(0) @binding(3) var<storage, read_write> stats: array<vec2<f32>>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let qi = wg.x * 64u + tid;
  let bh = wg.y;
  if (qi >= SEQ_Q) { return; }
  let b = bh / HEADS_Q;
  let h = bh % HEADS_Q;
  let row = b * 38400u + h * 32u + qi * 128u;
  var d = 0.0f;
  for (var c = 0u; c < 32u; c++) { d = fma(dout_buf[row + c], out_buf[row + c], d); }
  let bits = lse_buf[bh * SEQ_Q + qi];
  let dead = (bits & 0x7f800000u) == 0x7f800000u; // -inf (or not finite): no gradient
  stats[bh * SEQ_Q + qi] = select(vec2<f32>(bitcast<f32>(bits), d), vec2<f32>(DEAD_LSE, 0.0f), dead);
}

// ======== module: dkdv
// Tessera backward (dK, dV: one workgroup per KV block, one thread per key), spec 04e5a40920d50b54acf1e8999abb1e96
// batch 2, heads 4/2, seq 300x300, dim 32/32, bshd, f32
// tile: blockQ 32, blockKV 32

const SEQ_Q = 300u;
const SEQ_KV = 300u;
const HEADS_Q = 4u;
const HEADS_KV = 2u;
const GROUP = 2u;
const NUM_Q_BLOCKS = 10u;
const NUM_KV_BLOCKS = 10u;
const SCALE = 0.1767766922712326f;
const DEAD_LSE = 3.0e38f;

struct Params {
  layout_batches: u32,
  layout_heads: u32,
  row_start: u32,
  row_entries: u32,
  col_start: u32,
  col_entries: u32,
}

@group(0) @binding(0) var<storage, read> q_buf: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> k_buf: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> v_buf: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> dout_buf: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> stats: array<vec2<f32>>;
@group(0) @binding(5) var<storage, read_write> dk_buf: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> dv_buf: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read> aux: array<u32>;
@group(0) @binding(8) var<uniform> params: Params;

var<workgroup> q_tile: array<vec4<f32>, 256>; // [row][d4]
var<workgroup> do_tile: array<vec4<f32>, 256>; // [row][c4]
var<workgroup> st_tile: array<vec2<f32>, 32>; // (lse, D) per row

fn load_q(row: u32, d4: u32) -> vec4<f32> {
  return vec4<f32>(q_buf[row / 4u + d4]);
}
fn load_k(row: u32, d4: u32) -> vec4<f32> {
  return vec4<f32>(k_buf[row / 4u + d4]);
}
fn load_v(row: u32, d4: u32) -> vec4<f32> {
  return vec4<f32>(v_buf[row / 4u + d4]);
}
fn load_do(row: u32, d4: u32) -> vec4<f32> {
  return vec4<f32>(dout_buf[row / 4u + d4]);
}
fn load_t0(i: i32) -> f32 {
  let w = aux[0u + min(u32(i), 3u)];
  return select(0.0f, bitcast<f32>(w), u32(i) < 4u);
}
// score modification 'alibi' and its derivative in score
fn score_grad(score: f32, b: i32, h: i32, q: i32, kv: i32) -> vec2<f32> {
  let s0: f32 = load_t0(h);
  let s1: i32 = q - kv;
  let s2: f32 = f32(s1);
  let s3: f32 = s0 * s2;
  let s4: f32 = score - s3;
  return vec2<f32>(s4, 1.0f);
}
// mask 'sliding-window(64, causal)'
fn mask(b: i32, h: i32, q: i32, kv: i32) -> bool {
  let m0: i32 = q - kv;
  let m1: bool = m0 >= 0i;
  let m2: bool = m0 < 64i;
  let m3: bool = m1 & m2;
  return m3;
}

@compute @workgroup_size(32)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let kv_block = wg.x;
  let b = wg.y / HEADS_KV;
  let hk = wg.y % HEADS_KV;
  let j = kv_block * 32u + tid;
  let live = j < SEQ_KV;
  var k_reg: array<vec4<f32>, 8>;
  var v_reg: array<vec4<f32>, 8>;
  var dk: array<vec4<f32>, 8>;
  var dv: array<vec4<f32>, 8>;
  if (live) {
    for (var d4 = 0u; d4 < 8u; d4++) { k_reg[d4] = load_k(b * 19200u + hk * 32u + j * 64u, d4); }
    for (var c4 = 0u; c4 < 8u; c4++) { v_reg[c4] = load_v(b * 19200u + hk * 32u + j * 64u, c4); }
  }
  // Every query head of the group, then every Q block that visits this KV block.
  for (var g = 0u; g < GROUP; g++) {
    let h = hk * GROUP + g;
    let bh = b * HEADS_Q + h;
    let col = params.col_start + (select(0u, b, params.layout_batches > 1u) * params.layout_heads + select(0u, h, params.layout_heads > 1u)) * NUM_KV_BLOCKS + kv_block;
    let first = aux[col];
    let last = aux[col + 1u];
    for (var e = first; e < last; e++) {
      let entry = aux[params.col_entries + e];
      let q0 = (entry & 0x7fffffffu) * 32u;
      workgroupBarrier(); // the previous tiles are consumed
      for (var x = tid; x < 256u; x += 32u) {
        let r = x / 8u;
        var qx = vec4<f32>(0.0f);
        if (q0 + r < SEQ_Q) { qx = load_q(b * 38400u + h * 32u + (q0 + r) * 128u, x % 8u); }
        q_tile[x] = qx;
      }
      for (var x = tid; x < 256u; x += 32u) {
        let r = x / 8u;
        var ox = vec4<f32>(0.0f);
        if (q0 + r < SEQ_Q) { ox = load_do(b * 38400u + h * 32u + (q0 + r) * 128u, x % 8u); }
        do_tile[x] = ox;
      }
      for (var r = tid; r < 32u; r += 32u) {
        var sx = vec2<f32>(DEAD_LSE, 0.0f);
        if (q0 + r < SEQ_Q) { sx = stats[bh * SEQ_Q + q0 + r]; }
        st_tile[r] = sx;
      }
      workgroupBarrier();
      if (live) {
        for (var i = 0u; i < 32u; i++) {
          let qi = q0 + i;
          var dot_qk = 0.0f;
          for (var d4 = 0u; d4 < 8u; d4++) { dot_qk += dot(q_tile[i * 8u + d4], k_reg[d4]); }
          let s_raw = dot_qk * SCALE;
          let sg = score_grad(s_raw, i32(b), i32(h), i32(qi), i32(j));
          let s_mod = sg.x;
          let ds = sg.y;
          let stat = st_tile[i];
          var p = exp(s_mod - stat.x);
          if ((entry >> 31u) == 0u) { p = select(p, 0.0f, !mask(i32(b), i32(h), i32(qi), i32(j))); }
          if (p > 0.0f) {
            var dp = 0.0f;
            for (var c4 = 0u; c4 < 8u; c4++) {
              let ox = do_tile[i * 8u + c4];
              dv[c4] = fma(vec4<f32>(p), ox, dv[c4]);
              dp += dot(ox, v_reg[c4]);
            }
            let coef = p * (dp - stat.y) * ds * SCALE;
            for (var d4 = 0u; d4 < 8u; d4++) { dk[d4] = fma(vec4<f32>(coef), q_tile[i * 8u + d4], dk[d4]); }
          }
        }
      }
    }
  }
  if (live) {
    let dk_row = b * 19200u + hk * 32u + j * 64u;
    let dv_row = b * 19200u + hk * 32u + j * 64u;
    for (var c4 = 0u; c4 < 8u; c4++) { dk_buf[dk_row / 4u + c4] = dk[c4]; }
    for (var c4 = 0u; c4 < 8u; c4++) { dv_buf[dv_row / 4u + c4] = dv[c4]; }
  }
}

// ======== module: dq
// Tessera backward (dQ: one workgroup per Q block, one thread per query), spec 04e5a40920d50b54acf1e8999abb1e96
// batch 2, heads 4/2, seq 300x300, dim 32/32, bshd, f32
// tile: blockQ 32, blockKV 32

const SEQ_Q = 300u;
const SEQ_KV = 300u;
const HEADS_Q = 4u;
const HEADS_KV = 2u;
const GROUP = 2u;
const NUM_Q_BLOCKS = 10u;
const NUM_KV_BLOCKS = 10u;
const SCALE = 0.1767766922712326f;
const DEAD_LSE = 3.0e38f;
const GRAD_LEN = 4u; // captured-tensor gradient vector
const STAGED = 1024u; // 1 term(s) × blockQ × blockKV

struct Params {
  layout_batches: u32,
  layout_heads: u32,
  row_start: u32,
  row_entries: u32,
  col_start: u32,
  col_entries: u32,
}

@group(0) @binding(0) var<storage, read> q_buf: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> k_buf: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> v_buf: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> dout_buf: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> stats: array<vec2<f32>>;
@group(0) @binding(5) var<storage, read_write> dq_buf: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> aux: array<u32>;
@group(0) @binding(7) var<uniform> params: Params;
@group(0) @binding(8) var<storage, read_write> t_part: array<f32>;

var<workgroup> k_tile: array<vec4<f32>, 256>; // [kv][d4]
var<workgroup> v_tile: array<vec4<f32>, 256>; // [kv][c4]
var<workgroup> t_idx: array<u32, STAGED>; // [term][row][kv]: gradient-vector index, or NONE
var<workgroup> t_val: array<f32, STAGED>;

fn load_q(row: u32, d4: u32) -> vec4<f32> {
  return vec4<f32>(q_buf[row / 4u + d4]);
}
fn load_k(row: u32, d4: u32) -> vec4<f32> {
  return vec4<f32>(k_buf[row / 4u + d4]);
}
fn load_v(row: u32, d4: u32) -> vec4<f32> {
  return vec4<f32>(v_buf[row / 4u + d4]);
}
fn load_do(row: u32, d4: u32) -> vec4<f32> {
  return vec4<f32>(dout_buf[row / 4u + d4]);
}
fn rt_f32(x: f32) -> f32 { return x; }
fn load_t0(i: i32) -> f32 {
  let w = aux[0u + min(u32(i), 3u)];
  return select(0.0f, bitcast<f32>(w), u32(i) < 4u);
}
// score modification 'alibi' and its derivative in score
fn score_grad(score: f32, b: i32, h: i32, q: i32, kv: i32) -> vec2<f32> {
  let s0: f32 = load_t0(h);
  let s1: i32 = q - kv;
  let s2: f32 = f32(s1);
  let s3: f32 = s0 * s2;
  let s4: f32 = score - s3;
  return vec2<f32>(s4, 1.0f);
}

struct ScoreTerms {
  s: f32,
  ds: f32,
  i0: i32,
  w0: f32,
}

// ... and, per captured-tensor read, the element read and ∂s'/∂element
fn score_terms(score: f32, b: i32, h: i32, q: i32, kv: i32) -> ScoreTerms {
  let g0: f32 = load_t0(h);
  let g1: i32 = q - kv;
  let g2: f32 = f32(g1);
  let g3: f32 = g0 * g2;
  let g4: f32 = score - g3;
  let g5: f32 = -rt_f32(1.0f);
  let g6: f32 = g5 * g2;
  return ScoreTerms(g4, 1.0f, h, g6);
}
// mask 'sliding-window(64, causal)'
fn mask(b: i32, h: i32, q: i32, kv: i32) -> bool {
  let m0: i32 = q - kv;
  let m1: bool = m0 >= 0i;
  let m2: bool = m0 < 64i;
  let m3: bool = m1 & m2;
  return m3;
}

@compute @workgroup_size(32)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let q_block = wg.x;
  let bh = wg.y;
  let b = bh / HEADS_Q;
  let h = bh % HEADS_Q;
  let hk = h / GROUP;
  let qi = q_block * 32u + tid;
  let live = qi < SEQ_Q;
  let k_base = b * 19200u + hk * 32u;
  let v_base = b * 19200u + hk * 32u;
  var q_reg: array<vec4<f32>, 8>;
  var do_reg: array<vec4<f32>, 8>;
  var dq: array<vec4<f32>, 8>;
  var stat = vec2<f32>(DEAD_LSE, 0.0f);
  if (live) {
    for (var d4 = 0u; d4 < 8u; d4++) { q_reg[d4] = load_q(b * 38400u + h * 32u + qi * 128u, d4); }
    for (var c4 = 0u; c4 < 8u; c4++) { do_reg[c4] = load_do(b * 38400u + h * 32u + qi * 128u, c4); }
    stat = stats[bh * SEQ_Q + qi];
  }
  // This workgroup owns one partial slice; thread x mod blockQ owns element x of it.
  let part = (bh * NUM_Q_BLOCKS + q_block) * GRAD_LEN;
  for (var x = tid; x < GRAD_LEN; x += 32u) { t_part[part + x] = 0.0f; }
  let row = params.row_start + (select(0u, b, params.layout_batches > 1u) * params.layout_heads + select(0u, h, params.layout_heads > 1u)) * NUM_Q_BLOCKS + q_block;
  let first = aux[row];
  let last = aux[row + 1u];
  for (var e = first; e < last; e++) {
    let entry = aux[params.row_entries + e];
    let kv0 = (entry & 0x7fffffffu) * 32u;
    let partial = (entry >> 31u) == 0u;
    workgroupBarrier(); // the previous tiles (and staged terms) are consumed
    for (var x = tid; x < 256u; x += 32u) {
      let r = x / 8u;
      var kx = vec4<f32>(0.0f);
      if (kv0 + r < SEQ_KV) { kx = load_k(k_base + (kv0 + r) * 64u, x % 8u); }
      k_tile[x] = kx;
    }
    for (var x = tid; x < 256u; x += 32u) {
      let r = x / 8u;
      var vx = vec4<f32>(0.0f);
      if (kv0 + r < SEQ_KV) { vx = load_v(v_base + (kv0 + r) * 64u, x % 8u); }
      v_tile[x] = vx;
    }
    workgroupBarrier();
    for (var j = 0u; j < 32u; j++) {
      let kj = kv0 + j;
      var dot_qk = 0.0f;
      for (var d4 = 0u; d4 < 8u; d4++) { dot_qk += dot(q_reg[d4], k_tile[j * 8u + d4]); }
      let s_raw = dot_qk * SCALE;
      let g = score_terms(s_raw, i32(b), i32(h), i32(qi), i32(kj));
      let s_mod = g.s;
      let ds = g.ds;
      var p = select(exp(s_mod - stat.x), 0.0f, kj >= SEQ_KV);
      if (partial) { p = select(p, 0.0f, !mask(i32(b), i32(h), i32(qi), i32(kj))); }
      var dsp = 0.0f;
      if (p > 0.0f) {
        var dp = 0.0f;
        for (var c4 = 0u; c4 < 8u; c4++) { dp += dot(do_reg[c4], v_tile[j * 8u + c4]); }
        dsp = p * (dp - stat.y);
        let coef = dsp * ds * SCALE;
        for (var d4 = 0u; d4 < 8u; d4++) { dq[d4] = fma(vec4<f32>(coef), k_tile[j * 8u + d4], dq[d4]); }
      }
      {
        let at = (0u * 32u + tid) * 32u + j;
        let ix = g.i0;
        let ok = p > 0.0f && ix >= 0i && ix < 4i;
        t_idx[at] = select(0xffffffffu, 0u + u32(ix), ok);
        t_val[at] = select(0.0f, dsp * g.w0, ok);
      }
    }
    // Fold the staged terms into the partial slice: each thread adds the elements it owns,
    // in staging order, so the sums are the same run to run.
    workgroupBarrier();
    for (var x = 0u; x < STAGED; x++) {
      let ix = t_idx[x];
      if (ix != 0xffffffffu && ix % 32u == tid) { t_part[part + ix] += t_val[x]; }
    }
  }
  if (live) {
    let dq_row = b * 38400u + h * 32u + qi * 128u;
    for (var c4 = 0u; c4 < 8u; c4++) { dq_buf[dq_row / 4u + c4] = dq[c4]; }
  }
}

// ======== module: reduce
// Tessera backward (captured-tensor gradients: partial slices summed in workgroup order), spec 04e5a40920d50b54acf1e8999abb1e96
const GRAD_LEN = 4u;
const PARTIALS = 80u;

@group(0) @binding(0) var<storage, read> t_part: array<f32>;
@group(0) @binding(1) var<storage, read_write> grads: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  let x = id.x;
  if (x >= GRAD_LEN) { return; }
  var sum = 0.0f;
  for (var w = 0u; w < PARTIALS; w++) { sum += t_part[w * GRAD_LEN + x]; }
  grads[x] = sum;
}
