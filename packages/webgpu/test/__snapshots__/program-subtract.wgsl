// Tessera program: subtract (a part of a kernel branch taken out of the whole)
// 360 rows of 8; a row with an empty whole or nothing left gets out 0 and lse -inf

const ITEMS = 360u;
const COLS = 8u;
const NEG_INF_BITS = 0xff800000u;

@group(0) @binding(0) var<storage, read> whole_out: array<f32>;
@group(0) @binding(1) var<storage, read> whole_lse: array<u32>;
@group(0) @binding(2) var<storage, read> part_out: array<f32>;
@group(0) @binding(3) var<storage, read> part_lse: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read_write> lse: array<u32>;

// ln(1 + x) without losing the digits of a small x (WGSL has no log1p).
fn log1p(x: f32) -> f32 {
  let u = 1.0f + x;
  let du = u - 1.0f;
  return select(log(u) * (x / du), x, du == 0.0f);
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
  let lw = whole_lse[idx];
  let lp = part_lse[idx];
  var t = 0.0f;
  if (lp != NEG_INF_BITS) {
    t = exp(bitcast<f32>(lp) - bitcast<f32>(lw));
  }
  let ok = lw != NEG_INF_BITS && t < 1.0f;
  let inv = select(0.0f, 1.0f / (1.0f - t), ok);
  for (var c = 0u; c < COLS; c++) {
    let o = idx * COLS + c;
    out[o] = select(0.0f, (whole_out[o] - t * part_out[o]) * inv, ok);
  }
  lse[idx] = select(NEG_INF_BITS, bitcast<u32>(bitcast<f32>(lw) + log1p(-t)), ok);
}
