// Tessera program: grouped attention's key features (trig-rf, 16 features)
// k [2, 2, 45, 8]; work: random matrix at W, features at KF, stabilisers at KC

const ITEMS = 180u;
const HEAD_DIM = 8u;
const F = 16u;
const W = 0u;
const KF = 64u;
const KC = 2944u;
const K_MUL = 0.5946035385131836f;

@group(0) @binding(0) var<storage, read> k: array<f32>;
@group(0) @binding(1) var<storage, read_write> work: array<f32>;

var<private> phi: array<f32, F>;

fn key_features(row: u32, mul: f32) -> f32 {
  var sq = 0.0f;
  for (var d = 0u; d < 8u; d++) { let x = mul * k[row + d]; sq += x * x; }
  for (var r = 0u; r < 8u; r++) {
    var p = 0.0f;
    for (var d = 0u; d < 8u; d++) { p += work[W + r * 8u + d] * (mul * k[row + d]); }
    // reduce to [-pi, pi] so sin and cos stay accurate on every driver
    let t = p - 6.283185307179586f * round(p * 0.15915494309189535f);
    phi[r] = sin(t) * 0.3535533845424652f;
    phi[8u + r] = cos(t) * 0.3535533845424652f;
  }
  return 0.5f * sq;
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
  let c = key_features(idx * HEAD_DIM, K_MUL);
  for (var f = 0u; f < F; f++) {
    work[KF + idx * F + f] = phi[f];
  }
  work[KC + idx] = c;
}
