enable f16;

// Tessera fused attention, spec 81a1cb99c00c28fe6b803ff57be68979
// batch 1, heads 2/2, seq 512x512, dim 16/16, bhsd, f16
// tile: blockQ 64, blockKV 32, 1 row(s) per thread, 64 threads, queries in workgroup memory

const SEQ_Q = 512u;
const SEQ_KV = 512u;
const HEADS_Q = 2u;
const GROUP = 1u;
const NUM_Q_BLOCKS = 8u;
const Q_SCALE = 0.3606737554073334f; // scale * log2(e)
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

@group(0) @binding(0) var<storage, read> q_buf: array<vec4<f16>>;
@group(0) @binding(1) var<storage, read> k_buf: array<vec4<f16>>;
@group(0) @binding(2) var<storage, read> v_buf: array<vec4<f16>>;
@group(0) @binding(3) var<storage, read_write> out_buf: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> lse_buf: array<u32>;
@group(0) @binding(5) var<storage, read> layout_buf: array<u32>;
@group(0) @binding(6) var<uniform> params: Params;

var<workgroup> q_tile: array<vec4<f32>, 256>; // [d4][row]
var<workgroup> k_tile: array<vec4<f32>, 128>; // [kv][d4]
var<workgroup> v_tile: array<vec4<f32>, 128>; // [kv][c4]

fn load_q(row: u32, d4: u32) -> vec4<f32> {
  return vec4<f32>(q_buf[row / 4u + d4]);
}
fn load_k(row: u32, d4: u32) -> vec4<f32> {
  return vec4<f32>(k_buf[row / 4u + d4]);
}
fn load_v(row: u32, d4: u32) -> vec4<f32> {
  return vec4<f32>(v_buf[row / 4u + d4]);
}
fn rt_i32(x: i32) -> i32 { return x; }
fn mix32(x: u32) -> u32 {
  var h = x;
  h ^= h >> 16u;
  h *= 0x7feb352du;
  h ^= h >> 15u;
  h *= 0x846ca68bu;
  h ^= h >> 16u;
  return h;
}
fn hash_step(h: u32, a: i32) -> u32 {
  return mix32(h ^ mix32(bitcast<u32>(a) + 0x9e3779b9u));
}
fn hash_unit(h: u32) -> f32 {
  return f32(h >> 8u) * (1.0f / 16777216.0f);
}
// mask 'random-blocks(0.25)'
fn mask(b: i32, h: i32, q: i32, kv: i32) -> bool {
  let m0: bool = q >= kv;
  let m1: i32 = select(q / rt_i32(16i), 0i, rt_i32(16i) == 0i);
  let m2: i32 = select(kv / rt_i32(16i), 0i, rt_i32(16i) == 0i);
  let m3: f32 = hash_unit(hash_step(hash_step(hash_step(0u, 3i), m1), m2));
  let m4: bool = m3 < 0.25f;
  let m5: i32 = q - kv;
  let m6: bool = m5 < 16i;
  let m7: bool = m4 | m6;
  let m8: bool = m0 & m7;
  return m8;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let q_block = wg.x + params.q_block_base;
  let bh = wg.y + params.bh_base;
  let b = bh / HEADS_Q;
  let h = bh % HEADS_Q;
  let hk = h / GROUP;
  let q_base = b * 16384u + h * 8192u;
  let k_base = b * 16384u + hk * 8192u;
  let v_base = b * 16384u + hk * 8192u;
  let q0 = q_block * 64u;

  // Stage the tile's queries, pre-scaled.
  for (var e = tid; e < 256u; e += 64u) {
    let r = e / 4u;
    let d4 = e % 4u;
    var x = vec4<f32>(0.0f);
    if (q0 + r < SEQ_Q) { x = load_q(q_base + (q0 + r) * 16u, d4) * Q_SCALE; }
    q_tile[d4 * 64u + r] = x;
  }

  var m: array<f32, 1>;
  var l: array<f32, 1>;
  var acc: array<vec4<f32>, 4>;
  m[0u] = MASKED;

  // Walk the KV blocks the layout lists for this Q block.
  let row = (select(0u, b, params.layout_batches > 1u) * params.layout_heads + select(0u, h, params.layout_heads > 1u)) * NUM_Q_BLOCKS + q_block;
  let first = layout_buf[row];
  let last = layout_buf[row + 1u];
  for (var e = first; e < last; e++) {
    let entry = layout_buf[params.entries + e];
    let kv0 = (entry & 0x7fffffffu) * 32u;
    workgroupBarrier(); // the previous tiles are consumed
    for (var x = tid; x < 128u; x += 64u) {
      let j = x / 4u;
      var kx = vec4<f32>(0.0f);
      if (kv0 + j < SEQ_KV) { kx = load_k(k_base + (kv0 + j) * 16u, x % 4u); }
      k_tile[x] = kx;
    }
    for (var x = tid; x < 128u; x += 64u) {
      let j = x / 4u;
      var vx = vec4<f32>(0.0f);
      if (kv0 + j < SEQ_KV) { vx = load_v(v_base + (kv0 + j) * 16u, x % 4u); }
      v_tile[x] = vx;
    }
    workgroupBarrier();
    
    // Scores of this thread's rows against the tile.
    var s = array<f32, 32>();
    for (var d4 = 0u; d4 < 4u; d4++) {
      let qv = q_tile[d4 * 64u + tid];
      for (var j = 0u; j < 32u; j++) {
        s[j] += dot(qv, k_tile[j * 4u + d4]);
      }
    }
    
    // Partial block (or past the sequence end): the per-element mask.
    if ((entry >> 31u) == 0u || kv0 + 32u > SEQ_KV) {
      for (var j = 0u; j < 32u; j++) {
        s[j] = select(s[j], MASKED, (kv0 + j >= SEQ_KV) | !mask(i32(b), i32(h), i32(q0 + tid), i32(kv0 + j)));
      }
    }
    
    // Online softmax: rescale what was accumulated, add this tile.
    {
      var mx = m[0u];
      for (var j = 0u; j < 32u; j++) {
        mx = max(mx, s[j]);
      }
      let m_use = select(mx, 0.0f, mx <= MASKED_LIMIT);
      let alpha = exp2(m[0u] - m_use);
      m[0u] = mx;
      var sum = 0.0f;
      for (var j = 0u; j < 32u; j++) {
        { let p = exp2(s[j] - m_use); s[j] = p; sum += p; }
      }
      l[0u] = l[0u] * alpha + sum;
      for (var c4 = 0u; c4 < 4u; c4++) {
        acc[c4] *= alpha;
      }
    }
    for (var j = 0u; j < 32u; j++) {
      for (var c4 = 0u; c4 < 4u; c4++) {
        {
          let vx = v_tile[j * 4u + c4];
          acc[c4] = fma(vec4<f32>(s[j]), vx, acc[c4]);
        }
      }
    }
  }

  // Normalise and write; a row with no unmasked key gets out = 0 and lse = -inf.
  {
    let qi = q0 + tid;
    if (qi < SEQ_Q) {
      let ok = l[0u] > 0.0f;
      let inv = select(0.0f, 1.0f / l[0u], ok);
      let o_row = b * 16384u + h * 8192u + qi * 16u;
      for (var c4 = 0u; c4 < 4u; c4++) {
        let ai = c4;
        out_buf[o_row / 4u + c4] = acc[ai] * inv;
      }
      let lse = (m[0u] + log2(l[0u])) * LN2;
      lse_buf[bh * SEQ_Q + qi] = select(0xff800000u, bitcast<u32>(lse), ok);
    }
  }
}
