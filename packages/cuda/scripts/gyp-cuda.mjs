// Tells binding.gyp where cuda.h is, if a CUDA toolkit is installed: the addon then takes the
// driver API's types from it. Without one the addon uses its own declarations (native/cuda_api.h).
// It never links against CUDA: libcuda and libnvrtc are opened at run time.
import { existsSync } from 'node:fs';
import { join } from 'node:path';

const roots = [
  process.env.CUDA_HOME,
  process.env.CUDA_PATH,
  '/usr/local/cuda',
  '/usr/local/cuda-13.0',
];
const include = roots
  .filter(Boolean)
  .map((root) => join(root, 'include'))
  .find((dir) => existsSync(join(dir, 'cuda.h')));

const what = process.argv[2];
if (what === 'include' && include) console.log(include);
if (what === 'defines' && include) console.log('TESSERA_HAVE_CUDA_H=1');
