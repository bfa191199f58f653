// ======== module: prepass
// Tessera backward (pre-pass: D = rowsum(dOut ∘ out), packed with lse), spec af97596b33c6559b376d578bb87b7755
// batch 1, heads 8, seq 1024, dimV 64, bhsd

const SEQ_Q = 1024u;
const HEADS_Q = 8u;
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
  let row = b * 524288u + h * 65536u + qi * 64u;
  var d = 0.0f;
  for (var c = 0u; c < 64u; c++) { d = fma(dout_buf[row + c], out_buf[row + c], d); }
  let bits = lse_buf[bh * SEQ_Q + qi];
  let dead = (bits & 0x7f800000u) == 0x7f800000u; // -inf (or not finite): no gradient
  stats[bh * SEQ_Q + qi] = select(vec2<f32>(bitcast<f32>(bits), d), vec2<f32>(DEAD_LSE, 0.0f), dead);
}

// ======== module: dkdv
// Tessera backward (dK, dV: one workgroup per KV block, one thread per key), spec af97596b33c6559b376d578bb87b7755
// batch 1, heads 8/8, seq 1024x1024, dim 64/64, bhsd, f32
// tile: blockQ 16, blockKV 16

const SEQ_Q = 1024u;
const SEQ_KV = 1024u;
const HEADS_Q = 8u;
const HEADS_KV = 8u;
const GROUP = 1u;
const NUM_Q_BLOCKS = 64u;
const NUM_KV_BLOCKS = 64u;
const SCALE = 0.125f;
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
var<workgroup> st_tile: array<vec2<f32>, 16>; // (lse, D) per row

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
// mask 'causal'
fn mask(b: i32, h: i32, q: i32, kv: i32) -> bool {
  let m0: bool = q >= kv;
  return m0;
}

@compute @workgroup_size(16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let kv_block = wg.x;
  let b = wg.y / HEADS_KV;
  let hk = wg.y % HEADS_KV;
  let j = kv_block * 16u + tid;
  let live = j < SEQ_KV;
  var k_reg: array<vec4<f32>, 16>;
  var v_reg: array<vec4<f32>, 16>;
  var dk: array<vec4<f32>, 16>;
  var dv: array<vec4<f32>, 16>;
  if (live) {
    for (var d4 = 0u; d4 < 16u; d4++) { k_reg[d4] = load_k(b * 524288u + hk * 65536u + j * 64u, d4); }
    for (var c4 = 0u; c4 < 16u; c4++) { v_reg[c4] = load_v(b * 524288u + hk * 65536u + j * 64u, c4); }
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
      let q0 = (entry & 0x7fffffffu) * 16u;
      workgroupBarrier(); // the previous tiles are consumed
      for (var x = tid; x < 256u; x += 16u) {
        let r = x / 16u;
        var qx = vec4<f32>(0.0f);
        if (q0 + r < SEQ_Q) { qx = load_q(b * 524288u + h * 65536u + (q0 + r) * 64u, x % 16u); }
        q_tile[x] = qx;
      }
      for (var x = tid; x < 256u; x += 16u) {
        let r = x / 16u;
        var ox = vec4<f32>(0.0f);
        if (q0 + r < SEQ_Q) { ox = load_do(b * 524288u + h * 65536u + (q0 + r) * 64u, x % 16u); }
        do_tile[x] = ox;
      }
      for (var r = tid; r < 16u; r += 16u) {
        var sx = vec2<f32>(DEAD_LSE, 0.0f);
        if (q0 + r < SEQ_Q) { sx = stats[bh * SEQ_Q + q0 + r]; }
        st_tile[r] = sx;
      }
      workgroupBarrier();
      if (live) {
        for (var i = 0u; i < 16u; i++) {
          let qi = q0 + i;
          var dot_qk = 0.0f;
          for (var d4 = 0u; d4 < 16u; d4++) { dot_qk += dot(q_tile[i * 16u + d4], k_reg[d4]); }
          let s_raw = dot_qk * SCALE;
          let s_mod = s_raw;
          let ds = 1.0f;
          let stat = st_tile[i];
          var p = exp(s_mod - stat.x);
          if ((entry >> 31u) == 0u) { p = select(p, 0.0f, !mask(i32(b), i32(h), i32(qi), i32(j))); }
          if (p > 0.0f) {
            var dp = 0.0f;
            for (var c4 = 0u; c4 < 16u; c4++) {
              let ox = do_tile[i * 16u + c4];
              dv[c4] = fma(vec4<f32>(p), ox, dv[c4]);
              dp += dot(ox, v_reg[c4]);
            }
            let coef = p * (dp - stat.y) * ds * SCALE;
            for (var d4 = 0u; d4 < 16u; d4++) { dk[d4] = fma(vec4<f32>(coef), q_tile[i * 16u + d4], dk[d4]); }
          }
        }
      }
    }
  }
  if (live) {
    let dk_row = b * 524288u + hk * 65536u + j * 64u;
    let dv_row = b * 524288u + hk * 65536u + j * 64u;
    for (var c4 = 0u; c4 < 16u; c4++) { dk_buf[dk_row / 4u + c4] = dk[c4]; }
    for (var c4 = 0u; c4 < 16u; c4++) { dv_buf[dv_row / 4u + c4] = dv[c4]; }
  }
}

// ======== module: dq
// Tessera backward (dQ: one workgroup per Q block, one thread per query), spec af97596b33c6559b376d578bb87b7755
// batch 1, heads 8/8, seq 1024x1024, dim 64/64, bhsd, f32
// tile: blockQ 16, blockKV 16

const SEQ_Q = 1024u;
const SEQ_KV = 1024u;
const HEADS_Q = 8u;
const HEADS_KV = 8u;
const GROUP = 1u;
const NUM_Q_BLOCKS = 64u;
const NUM_KV_BLOCKS = 64u;
const SCALE = 0.125f;
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
@group(0) @binding(5) var<storage, read_write> dq_buf: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> aux: array<u32>;
@group(0) @binding(7) var<uniform> params: Params;

var<workgroup> k_tile: array<vec4<f32>, 256>; // [kv][d4]
var<workgroup> v_tile: array<vec4<f32>, 256>; // [kv][c4]

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
// mask 'causal'
fn mask(b: i32, h: i32, q: i32, kv: i32) -> bool {
  let m0: bool = q >= kv;
  return m0;
}

@compute @workgroup_size(16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let q_block = wg.x;
  let bh = wg.y;
  let b = bh / HEADS_Q;
  let h = bh % HEADS_Q;
  let hk = h / GROUP;
  let qi = q_block * 16u + tid;
  let live = qi < SEQ_Q;
  let k_base = b * 524288u + hk * 65536u;
  let v_base = b * 524288u + hk * 65536u;
  var q_reg: array<vec4<f32>, 16>;
  var do_reg: array<vec4<f32>, 16>;
  var dq: array<vec4<f32>, 16>;
  var stat = vec2<f32>(DEAD_LSE, 0.0f);
  if (live) {
    for (var d4 = 0u; d4 < 16u; d4++) { q_reg[d4] = load_q(b * 524288u + h * 65536u + qi * 64u, d4); }
    for (var c4 = 0u; c4 < 16u; c4++) { do_reg[c4] = load_do(b * 524288u + h * 65536u + qi * 64u, c4); }
    stat = stats[bh * SEQ_Q + qi];
  }
  let row = params.row_start + (select(0u, b, params.layout_batches > 1u) * params.layout_heads + select(0u, h, params.layout_heads > 1u)) * NUM_Q_BLOCKS + q_block;
  let first = aux[row];
  let last = aux[row + 1u];
  for (var e = first; e < last; e++) {
    let entry = aux[params.row_entries + e];
    let kv0 = (entry & 0x7fffffffu) * 16u;
    let partial = (entry >> 31u) == 0u;
    workgroupBarrier(); // the previous tiles (and staged terms) are consumed
    for (var x = tid; x < 256u; x += 16u) {
      let r = x / 16u;
      var kx = vec4<f32>(0.0f);
      if (kv0 + r < SEQ_KV) { kx = load_k(k_base + (kv0 + r) * 64u, x % 16u); }
      k_tile[x] = kx;
    }
    for (var x = tid; x < 256u; x += 16u) {
      let r = x / 16u;
      var vx = vec4<f32>(0.0f);
      if (kv0 + r < SEQ_KV) { vx = load_v(v_base + (kv0 + r) * 64u, x % 16u); }
      v_tile[x] = vx;
    }
    workgroupBarrier();
    for (var j = 0u; j < 16u; j++) {
      let kj = kv0 + j;
      var dot_qk = 0.0f;
      for (var d4 = 0u; d4 < 16u; d4++) { dot_qk += dot(q_reg[d4], k_tile[j * 16u + d4]); }
      let s_raw = dot_qk * SCALE;
      let s_mod = s_raw;
      let ds = 1.0f;
      var p = select(exp(s_mod - stat.x), 0.0f, kj >= SEQ_KV);
      if (partial) { p = select(p, 0.0f, !mask(i32(b), i32(h), i32(qi), i32(kj))); }
      var dsp = 0.0f;
      if (p > 0.0f) {
        var dp = 0.0f;
        for (var c4 = 0u; c4 < 16u; c4++) { dp += dot(do_reg[c4], v_tile[j * 16u + c4]); }
        dsp = p * (dp - stat.y);
        let coef = dsp * ds * SCALE;
        for (var d4 = 0u; d4 < 16u; d4++) { dq[d4] = fma(vec4<f32>(coef), k_tile[j * 16u + d4], dq[d4]); }
      }
    }
  }
  if (live) {
    let dq_row = b * 524288u + h * 65536u + qi * 64u;
    for (var c4 = 0u; c4 < 16u; c4++) { dq_buf[dq_row / 4u + c4] = dq[c4]; }
  }
}
