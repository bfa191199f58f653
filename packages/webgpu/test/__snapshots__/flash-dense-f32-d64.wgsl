// Tessera fused attention, spec 4ea27760731c43bc4f9d05d89c4c567d
// batch 1, heads 16/16, seq 4096x4096, dim 64/64, bhsd, f32
// tile: blockQ 32, blockKV 16, 1 row(s) per thread, 32 threads, queries in workgroup memory

const SEQ_Q = 4096u;
const SEQ_KV = 4096u;
const HEADS_Q = 16u;
const GROUP = 1u;
const NUM_Q_BLOCKS = 128u;
const Q_SCALE = 0.1803368777036667f; // scale * log2(e)
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

@group(0) @binding(0) var<storage, read> q_buf: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> k_buf: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> v_buf: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> out_buf: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> lse_buf: array<u32>;
@group(0) @binding(5) var<storage, read> layout_buf: array<u32>;
@group(0) @binding(6) var<uniform> params: Params;

var<workgroup> q_tile: array<vec4<f32>, 512>; // [d4][row]
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

@compute @workgroup_size(32)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let q_block = wg.x + params.q_block_base;
  let bh = wg.y + params.bh_base;
  let b = bh / HEADS_Q;
  let h = bh % HEADS_Q;
  let hk = h / GROUP;
  let q_base = b * 4194304u + h * 262144u;
  let k_base = b * 4194304u + hk * 262144u;
  let v_base = b * 4194304u + hk * 262144u;
  let q0 = q_block * 32u;

  // Stage the tile's queries, pre-scaled.
  for (var e = tid; e < 512u; e += 32u) {
    let r = e / 16u;
    let d4 = e % 16u;
    var x = vec4<f32>(0.0f);
    if (q0 + r < SEQ_Q) { x = load_q(q_base + (q0 + r) * 64u, d4) * Q_SCALE; }
    q_tile[d4 * 32u + r] = x;
  }

  var m: array<f32, 1>;
  var l: array<f32, 1>;
  var acc: array<vec4<f32>, 16>;
  m[0u] = MASKED;

  // Walk the KV blocks the layout lists for this Q block.
  let row = (select(0u, b, params.layout_batches > 1u) * params.layout_heads + select(0u, h, params.layout_heads > 1u)) * NUM_Q_BLOCKS + q_block;
  let first = layout_buf[row];
  let last = layout_buf[row + 1u];
  for (var e = first; e < last; e++) {
    let entry = layout_buf[params.entries + e];
    let kv0 = (entry & 0x7fffffffu) * 16u;
    workgroupBarrier(); // the previous tiles are consumed
    for (var x = tid; x < 256u; x += 32u) {
      let j = x / 16u;
      var kx = vec4<f32>(0.0f);
      if (kv0 + j < SEQ_KV) { kx = load_k(k_base + (kv0 + j) * 64u, x % 16u); }
      k_tile[x] = kx;
    }
    for (var x = tid; x < 256u; x += 32u) {
      let j = x / 16u;
      var vx = vec4<f32>(0.0f);
      if (kv0 + j < SEQ_KV) { vx = load_v(v_base + (kv0 + j) * 64u, x % 16u); }
      v_tile[x] = vx;
    }
    workgroupBarrier();
    
    // Scores of this thread's rows against the tile.
    var s = array<f32, 16>();
    for (var d4 = 0u; d4 < 16u; d4++) {
      let qv = q_tile[d4 * 32u + tid];
      for (var j = 0u; j < 16u; j++) {
        s[j] += dot(qv, k_tile[j * 16u + d4]);
      }
    }
    
    // Past the sequence end: mask the missing keys.
    if (kv0 + 16u > SEQ_KV) {
      for (var j = 0u; j < 16u; j++) {
        s[j] = select(s[j], MASKED, kv0 + j >= SEQ_KV);
      }
    }
    
    // Online softmax: rescale what was accumulated, add this tile.
    {
      var mx = m[0u];
      for (var j = 0u; j < 16u; j++) {
        mx = max(mx, s[j]);
      }
      let m_use = select(mx, 0.0f, mx <= MASKED_LIMIT);
      let alpha = exp2(m[0u] - m_use);
      m[0u] = mx;
      var sum = 0.0f;
      for (var j = 0u; j < 16u; j++) {
        { let p = exp2(s[j] - m_use); s[j] = p; sum += p; }
      }
      l[0u] = l[0u] * alpha + sum;
      for (var c4 = 0u; c4 < 16u; c4++) {
        acc[c4] *= alpha;
      }
    }
    for (var j = 0u; j < 16u; j++) {
      for (var c4 = 0u; c4 < 16u; c4++) {
        {
          let vx = v_tile[j * 16u + c4];
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
      let o_row = b * 4194304u + h * 262144u + qi * 64u;
      for (var c4 = 0u; c4 < 16u; c4++) {
        let ai = c4;
        out_buf[o_row / 4u + c4] = acc[ai] * inv;
      }
      let lse = (m[0u] + log2(l[0u])) * LN2;
      lse_buf[bh * SEQ_Q + qi] = select(0xff800000u, bitcast<u32>(lse), ok);
    }
  }
}
