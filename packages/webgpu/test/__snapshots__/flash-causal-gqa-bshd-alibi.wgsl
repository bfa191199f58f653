// Tessera fused attention, spec a456563ec34dcdfa788dd4d27721c8ed
// batch 2, heads 4/2, seq 1000x1000, dim 32/32, bshd, f32
// tile: blockQ 64, blockKV 32, 2 row(s) per thread, 32 threads, queries in workgroup memory

const SEQ_Q = 1000u;
const SEQ_KV = 1000u;
const HEADS_Q = 4u;
const GROUP = 2u;
const NUM_Q_BLOCKS = 16u;
const Q_SCALE = 0.1767766922712326f; // scale
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
@group(0) @binding(7) var<storage, read> tensors: array<u32>;

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

@compute @workgroup_size(32)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let q_block = wg.x + params.q_block_base;
  let bh = wg.y + params.bh_base;
  let b = bh / HEADS_Q;
  let h = bh % HEADS_Q;
  let hk = h / GROUP;
  let q_base = b * 128000u + h * 32u;
  let k_base = b * 64000u + hk * 32u;
  let v_base = b * 64000u + hk * 32u;
  let q0 = q_block * 64u;

  // Stage the tile's queries, pre-scaled.
  for (var e = tid; e < 512u; e += 32u) {
    let r = e / 8u;
    let d4 = e % 8u;
    var x = vec4<f32>(0.0f);
    if (q0 + r < SEQ_Q) { x = load_q(q_base + (q0 + r) * 128u, d4) * Q_SCALE; }
    q_tile[d4 * 64u + r] = x;
  }

  var m: array<f32, 2>;
  var l: array<f32, 2>;
  var acc: array<vec4<f32>, 16>;
  for (var i = 0u; i < 2u; i++) {
    m[i] = MASKED;
  }

  // Walk the KV blocks the layout lists for this Q block.
  let row = (select(0u, b, params.layout_batches > 1u) * params.layout_heads + select(0u, h, params.layout_heads > 1u)) * NUM_Q_BLOCKS + q_block;
  let first = layout_buf[row];
  let last = layout_buf[row + 1u];
  for (var e = first; e < last; e++) {
    let entry = layout_buf[params.entries + e];
    let kv0 = (entry & 0x7fffffffu) * 32u;
    workgroupBarrier(); // the previous tiles are consumed
    for (var x = tid; x < 256u; x += 32u) {
      let j = x / 8u;
      var kx = vec4<f32>(0.0f);
      if (kv0 + j < SEQ_KV) { kx = load_k(k_base + (kv0 + j) * 64u, x % 8u); }
      k_tile[x] = kx;
    }
    for (var x = tid; x < 256u; x += 32u) {
      let j = x / 8u;
      var vx = vec4<f32>(0.0f);
      if (kv0 + j < SEQ_KV) { vx = load_v(v_base + (kv0 + j) * 64u, x % 8u); }
      v_tile[x] = vx;
    }
    workgroupBarrier();
    
    // Scores of this thread's rows against the tile.
    var s = array<f32, 64>();
    for (var d4 = 0u; d4 < 8u; d4++) {
      for (var j = 0u; j < 32u; j++) {
        let kx = k_tile[j * 8u + d4];
        for (var i = 0u; i < 2u; i++) {
          s[i * 32u + j] += dot(q_tile[d4 * 64u + i * 32u + tid], kx);
        }
      }
    }
    
    // Score modification (natural units), then base 2.
    for (var i = 0u; i < 2u; i++) {
      for (var j = 0u; j < 32u; j++) {
        s[i * 32u + j] = score_mod(s[i * 32u + j], i32(b), i32(h), i32(q0 + i * 32u + tid), i32(kv0 + j)) * LOG2E;
      }
    }
    
    // Partial block (or past the sequence end): the per-element mask.
    if ((entry >> 31u) == 0u || kv0 + 32u > SEQ_KV) {
      for (var i = 0u; i < 2u; i++) {
        for (var j = 0u; j < 32u; j++) {
          s[i * 32u + j] = select(s[i * 32u + j], MASKED, (kv0 + j >= SEQ_KV) | !mask(i32(b), i32(h), i32(q0 + i * 32u + tid), i32(kv0 + j)));
        }
      }
    }
    
    // Online softmax: rescale what was accumulated, add this tile.
    for (var i = 0u; i < 2u; i++) {
      {
        var mx = m[i];
        for (var j = 0u; j < 32u; j++) {
          mx = max(mx, s[i * 32u + j]);
        }
        let m_use = select(mx, 0.0f, mx <= MASKED_LIMIT);
        let alpha = exp2(m[i] - m_use);
        m[i] = mx;
        var sum = 0.0f;
        for (var j = 0u; j < 32u; j++) {
          { let p = exp2(s[i * 32u + j] - m_use); s[i * 32u + j] = p; sum += p; }
        }
        l[i] = l[i] * alpha + sum;
        for (var c4 = 0u; c4 < 8u; c4++) {
          acc[i * 8u + c4] *= alpha;
        }
      }
    }
    for (var j = 0u; j < 32u; j++) {
      for (var c4 = 0u; c4 < 8u; c4++) {
        {
          let vx = v_tile[j * 8u + c4];
          for (var i = 0u; i < 2u; i++) {
            acc[i * 8u + c4] = fma(vec4<f32>(s[i * 32u + j]), vx, acc[i * 8u + c4]);
          }
        }
      }
    }
  }

  // Normalise and write; a row with no unmasked key gets out = 0 and lse = -inf.
  for (var i = 0u; i < 2u; i++) {
    {
      let qi = q0 + i * 32u + tid;
      if (qi < SEQ_Q) {
        let ok = l[i] > 0.0f;
        let inv = select(0.0f, 1.0f / l[i], ok);
        let o_row = b * 128000u + h * 32u + qi * 128u;
        for (var c4 = 0u; c4 < 8u; c4++) {
          let ai = i * 8u + c4;
          out_buf[o_row / 4u + c4] = acc[ai] * inv;
        }
        let lse = (m[i] + log2(l[i])) * LN2;
        lse_buf[bh * SEQ_Q + qi] = select(0xff800000u, bitcast<u32>(lse), ok);
      }
    }
  }
}
