// Tessera fused attention, spec 7963c07512051484ade2b242014c52b2
// batch 1, heads 2/2, seq 300x300, dim 6/5, bhsd, f32
// tile: blockQ 8, blockKV 8, 1 row(s) per thread, 8 threads, queries in workgroup memory

const SEQ_Q = 300u;
const SEQ_KV = 300u;
const HEADS_Q = 2u;
const GROUP = 1u;
const NUM_Q_BLOCKS = 38u;
const Q_SCALE = 0.5889778137207031f; // scale * log2(e)
const LOG2E = 1.4426950408889634f;
const LN2 = 0.6931471805599453f;
const MASKED = -3.0e38f;
const MASKED_LIMIT = -1.0e38f;

struct Params {
  q_block_base: u32,
  bh_base: u32,
  layout_batches: u32,
  layout_heads: u32,
  entries: u32,
}

@group(0) @binding(0) var<storage, read> q_buf: array<f32>;
@group(0) @binding(1) var<storage, read> k_buf: array<f32>;
@group(0) @binding(2) var<storage, read> v_buf: array<f32>;
@group(0) @binding(3) var<storage, read_write> out_buf: array<f32>;
@group(0) @binding(4) var<storage, read_write> lse_buf: array<u32>;
@group(0) @binding(5) var<storage, read> layout_buf: array<u32>;
@group(0) @binding(6) var<uniform> params: Params;

var<workgroup> q_tile: array<vec4<f32>, 16>; // [d4][row]
var<workgroup> k_tile: array<vec4<f32>, 16>; // [kv][d4]
var<workgroup> v_tile: array<vec4<f32>, 16>; // [kv][c4]

fn load_q(row: u32, d4: u32) -> vec4<f32> {
  var r = vec4<f32>(0.0f);
  for (var c = 0u; c < 4u; c++) {
    let d = d4 * 4u + c;
    if (d < 6u) { r[c] = (q_buf[row + d]); }
  }
  return r;
}
fn load_k(row: u32, d4: u32) -> vec4<f32> {
  var r = vec4<f32>(0.0f);
  for (var c = 0u; c < 4u; c++) {
    let d = d4 * 4u + c;
    if (d < 6u) { r[c] = (k_buf[row + d]); }
  }
  return r;
}
fn load_v(row: u32, d4: u32) -> vec4<f32> {
  var r = vec4<f32>(0.0f);
  for (var c = 0u; c < 4u; c++) {
    let d = d4 * 4u + c;
    if (d < 5u) { r[c] = (v_buf[row + d]); }
  }
  return r;
}
// mask 'sliding-window(64, causal)'
fn mask(b: i32, h: i32, q: i32, kv: i32) -> bool {
  let m0: i32 = q - kv;
  let m1: bool = m0 >= 0i;
  let m2: bool = m0 < 64i;
  let m3: bool = m1 & m2;
  return m3;
}

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let q_block = wg.x + params.q_block_base;
  let bh = wg.y + params.bh_base;
  let b = bh / HEADS_Q;
  let h = bh % HEADS_Q;
  let hk = h / GROUP;
  let q_base = b * 3600u + h * 1800u;
  let k_base = b * 3600u + hk * 1800u;
  let v_base = b * 3000u + hk * 1500u;
  let q0 = q_block * 8u;

  // Stage the tile's queries, pre-scaled.
  for (var e = tid; e < 16u; e += 8u) {
    let r = e / 2u;
    let d4 = e % 2u;
    var x = vec4<f32>(0.0f);
    if (q0 + r < SEQ_Q) { x = load_q(q_base + (q0 + r) * 6u, d4) * Q_SCALE; }
    q_tile[d4 * 8u + r] = x;
  }

  var m: array<f32, 1>;
  var l: array<f32, 1>;
  var acc: array<vec4<f32>, 2>;
  m[0u] = MASKED;

  // Walk the KV blocks the layout lists for this Q block.
  let row = (select(0u, b, params.layout_batches > 1u) * params.layout_heads + select(0u, h, params.layout_heads > 1u)) * NUM_Q_BLOCKS + q_block;
  let first = layout_buf[row];
  let last = layout_buf[row + 1u];
  for (var e = first; e < last; e++) {
    let entry = layout_buf[params.entries + e];
    let kv0 = (entry & 0x7fffffffu) * 8u;
    workgroupBarrier(); // the previous tiles are consumed
    for (var x = tid; x < 16u; x += 8u) {
      let j = x / 2u;
      var kx = vec4<f32>(0.0f);
      if (kv0 + j < SEQ_KV) { kx = load_k(k_base + (kv0 + j) * 6u, x % 2u); }
      k_tile[x] = kx;
    }
    for (var x = tid; x < 16u; x += 8u) {
      let j = x / 2u;
      var vx = vec4<f32>(0.0f);
      if (kv0 + j < SEQ_KV) { vx = load_v(v_base + (kv0 + j) * 5u, x % 2u); }
      v_tile[x] = vx;
    }
    workgroupBarrier();
    
    // Scores of this thread's rows against the tile.
    var s = array<f32, 8>();
    for (var d4 = 0u; d4 < 2u; d4++) {
      let qv = q_tile[d4 * 8u + tid];
      s[0u] += dot(qv, k_tile[0u * 2u + d4]);
      s[1u] += dot(qv, k_tile[1u * 2u + d4]);
      s[2u] += dot(qv, k_tile[2u * 2u + d4]);
      s[3u] += dot(qv, k_tile[3u * 2u + d4]);
      s[4u] += dot(qv, k_tile[4u * 2u + d4]);
      s[5u] += dot(qv, k_tile[5u * 2u + d4]);
      s[6u] += dot(qv, k_tile[6u * 2u + d4]);
      s[7u] += dot(qv, k_tile[7u * 2u + d4]);
    }
    
    // Partial block (or past the sequence end): the per-element mask.
    if ((entry >> 31u) == 0u || kv0 + 8u > SEQ_KV) {
      s[0u] = select(s[0u], MASKED, (kv0 + 0u >= SEQ_KV) | !mask(i32(b), i32(h), i32(q0 + tid), i32(kv0 + 0u)));
      s[1u] = select(s[1u], MASKED, (kv0 + 1u >= SEQ_KV) | !mask(i32(b), i32(h), i32(q0 + tid), i32(kv0 + 1u)));
      s[2u] = select(s[2u], MASKED, (kv0 + 2u >= SEQ_KV) | !mask(i32(b), i32(h), i32(q0 + tid), i32(kv0 + 2u)));
      s[3u] = select(s[3u], MASKED, (kv0 + 3u >= SEQ_KV) | !mask(i32(b), i32(h), i32(q0 + tid), i32(kv0 + 3u)));
      s[4u] = select(s[4u], MASKED, (kv0 + 4u >= SEQ_KV) | !mask(i32(b), i32(h), i32(q0 + tid), i32(kv0 + 4u)));
      s[5u] = select(s[5u], MASKED, (kv0 + 5u >= SEQ_KV) | !mask(i32(b), i32(h), i32(q0 + tid), i32(kv0 + 5u)));
      s[6u] = select(s[6u], MASKED, (kv0 + 6u >= SEQ_KV) | !mask(i32(b), i32(h), i32(q0 + tid), i32(kv0 + 6u)));
      s[7u] = select(s[7u], MASKED, (kv0 + 7u >= SEQ_KV) | !mask(i32(b), i32(h), i32(q0 + tid), i32(kv0 + 7u)));
    }
    
    // Online softmax: rescale what was accumulated, add this tile.
    {
      var mx = m[0u];
      mx = max(mx, s[0u]);
      mx = max(mx, s[1u]);
      mx = max(mx, s[2u]);
      mx = max(mx, s[3u]);
      mx = max(mx, s[4u]);
      mx = max(mx, s[5u]);
      mx = max(mx, s[6u]);
      mx = max(mx, s[7u]);
      let m_use = select(mx, 0.0f, mx <= MASKED_LIMIT);
      let alpha = exp2(m[0u] - m_use);
      m[0u] = mx;
      var sum = 0.0f;
      { let p = exp2(s[0u] - m_use); s[0u] = p; sum += p; }
      { let p = exp2(s[1u] - m_use); s[1u] = p; sum += p; }
      { let p = exp2(s[2u] - m_use); s[2u] = p; sum += p; }
      { let p = exp2(s[3u] - m_use); s[3u] = p; sum += p; }
      { let p = exp2(s[4u] - m_use); s[4u] = p; sum += p; }
      { let p = exp2(s[5u] - m_use); s[5u] = p; sum += p; }
      { let p = exp2(s[6u] - m_use); s[6u] = p; sum += p; }
      { let p = exp2(s[7u] - m_use); s[7u] = p; sum += p; }
      l[0u] = l[0u] * alpha + sum;
      acc[0u] *= alpha;
      acc[1u] *= alpha;
    }
    {
      let vx = v_tile[0u * 2u + 0u];
      acc[0u] = fma(vec4<f32>(s[0u]), vx, acc[0u]);
    }
    {
      let vx = v_tile[0u * 2u + 1u];
      acc[1u] = fma(vec4<f32>(s[0u]), vx, acc[1u]);
    }
    {
      let vx = v_tile[1u * 2u + 0u];
      acc[0u] = fma(vec4<f32>(s[1u]), vx, acc[0u]);
    }
    {
      let vx = v_tile[1u * 2u + 1u];
      acc[1u] = fma(vec4<f32>(s[1u]), vx, acc[1u]);
    }
    {
      let vx = v_tile[2u * 2u + 0u];
      acc[0u] = fma(vec4<f32>(s[2u]), vx, acc[0u]);
    }
    {
      let vx = v_tile[2u * 2u + 1u];
      acc[1u] = fma(vec4<f32>(s[2u]), vx, acc[1u]);
    }
    {
      let vx = v_tile[3u * 2u + 0u];
      acc[0u] = fma(vec4<f32>(s[3u]), vx, acc[0u]);
    }
    {
      let vx = v_tile[3u * 2u + 1u];
      acc[1u] = fma(vec4<f32>(s[3u]), vx, acc[1u]);
    }
    {
      let vx = v_tile[4u * 2u + 0u];
      acc[0u] = fma(vec4<f32>(s[4u]), vx, acc[0u]);
    }
    {
      let vx = v_tile[4u * 2u + 1u];
      acc[1u] = fma(vec4<f32>(s[4u]), vx, acc[1u]);
    }
    {
      let vx = v_tile[5u * 2u + 0u];
      acc[0u] = fma(vec4<f32>(s[5u]), vx, acc[0u]);
    }
    {
      let vx = v_tile[5u * 2u + 1u];
      acc[1u] = fma(vec4<f32>(s[5u]), vx, acc[1u]);
    }
    {
      let vx = v_tile[6u * 2u + 0u];
      acc[0u] = fma(vec4<f32>(s[6u]), vx, acc[0u]);
    }
    {
      let vx = v_tile[6u * 2u + 1u];
      acc[1u] = fma(vec4<f32>(s[6u]), vx, acc[1u]);
    }
    {
      let vx = v_tile[7u * 2u + 0u];
      acc[0u] = fma(vec4<f32>(s[7u]), vx, acc[0u]);
    }
    {
      let vx = v_tile[7u * 2u + 1u];
      acc[1u] = fma(vec4<f32>(s[7u]), vx, acc[1u]);
    }
  }

  // Normalise and write; a row with no unmasked key gets out = 0 and lse = -inf.
  {
    let qi = q0 + tid;
    if (qi < SEQ_Q) {
      let ok = l[0u] > 0.0f;
      let inv = select(0.0f, 1.0f / l[0u], ok);
      let o_row = b * 3000u + h * 1500u + qi * 5u;
      for (var c4 = 0u; c4 < 2u; c4++) {
        let ai = c4;
        for (var c = 0u; c < 4u; c++) {
          if (c4 * 4u + c < 5u) { out_buf[o_row + c4 * 4u + c] = acc[ai][c] * inv; }
        }
      }
      let lse = (m[0u] + log2(l[0u])) * LN2;
      lse_buf[bh * SEQ_Q + qi] = select(0xff800000u, bitcast<u32>(lse), ok);
    }
  }
}
