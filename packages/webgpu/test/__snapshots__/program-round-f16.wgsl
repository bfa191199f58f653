// Tessera program: round 720 values to f16 (nearest even)

const ITEMS = 720u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;

fn round_dtype(x: f32) -> f32 {
  let b = bitcast<u32>(x);
  let sign = b & 0x80000000u;
  let mant = b & 0x7fffffu;
  var e = i32((b >> 23u) & 0xffu) - 112; // the f16 exponent field
  if (e >= 31) {
    return bitcast<f32>(sign | 0x7f800000u); // beyond f16: infinity
  }
  var h = 0u; // f16 magnitude bits
  if (e <= 0) {
    if (e < -10) {
      return bitcast<f32>(sign);
    }
    let full = mant | 0x800000u;
    let shift = u32(14 - e);
    let rem = full & ((1u << shift) - 1u);
    let half = 1u << (shift - 1u);
    h = full >> shift;
    h += select(0u, 1u, rem > half || (rem == half && (h & 1u) == 1u));
  } else {
    let rem = mant & 0x1fffu;
    h = (u32(e) << 10u) | (mant >> 13u);
    h += select(0u, 1u, rem > 0x1000u || (rem == 0x1000u && (h & 1u) == 1u));
    if (h >= 0x7c00u) {
      return bitcast<f32>(sign | 0x7f800000u);
    }
  }
  let he = h >> 10u;
  let hm = h & 0x3ffu;
  let mag = select(bitcast<f32>(((he + 112u) << 23u) | (hm << 13u)), f32(hm) * 5.9604644775390625e-8f, he == 0u);
  return select(mag, -mag, sign != 0u);
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
  out[idx] = round_dtype(x[idx]);
}
