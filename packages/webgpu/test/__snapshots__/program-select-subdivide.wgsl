// Tessera program: split 40 selected blocks into 2 sub-blocks each
// every sub-block partial, as the selection

const ITEMS = 80u;
const FACTOR = 2u;
const FROM_ENTRIES = 25u;
const TO_ENTRIES = 25u;

@group(0) @binding(0) var<storage, read> selection: array<u32>;
@group(0) @binding(1) var<storage, read_write> split: array<u32>;

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
  let j = selection[FROM_ENTRIES + idx / FACTOR] & 0x7fffffffu;
  split[TO_ENTRIES + idx] = j * FACTOR + idx % FACTOR;
}
