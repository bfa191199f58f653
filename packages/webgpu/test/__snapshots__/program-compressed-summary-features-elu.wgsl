// Tessera program: compressed attention's summary features (elu+1, 8 features)
// k [2, 2, 6, 8]; work: features at KF, stabilisers at KC

const ITEMS = 24u;
const HEAD_DIM = 8u;
const F = 8u;
const KF = 0u;
const KC = 192u;
const K_MUL = 0.5946035385131836f;

@group(0) @binding(0) var<storage, read> k: array<f32>;
@group(0) @binding(1) var<storage, read_write> work: array<f32>;

var<private> phi: array<f32, F>;

fn key_features(row: u32, mul: f32) -> f32 {
  for (var d = 0u; d < 8u; d++) {
    let x = mul * k[row + d];
    phi[d] = select(exp(x), x + 1.0f, x > 0.0f);
  }
  return 0.0f;
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
