// Guide: CUDA setup (site/guide/cuda.md).
// #region check
import { defineAttention } from '@tessera/core';
import { CudaUnavailableError, createCudaBackend, emitCuda } from '@tessera/cuda';
import { causal } from '@tessera/patterns';

const spec = defineAttention({
  batch: 1,
  headsQ: 8,
  seqQ: 2048,
  headDim: 128,
  dtype: 'bf16', // 16-bit inputs with head dims that are multiples of 8 take the tensor-core path
  mask: causal(),
});

// Code generation needs no GPU: this is the CUDA C++ that NVRTC (or nvcc) would compile.
const module = emitCuda(spec);
console.log(module.path, module.kernels.map((k) => k.name).join(', '));

let available = false;
try {
  const backend = await createCudaBackend(); // loads the addon, the driver, and NVRTC or nvcc
  available = true;
  console.log(`CUDA device: ${backend.device}`);
  await backend.dispose();
} catch (e) {
  if (!(e instanceof CudaUnavailableError)) throw e;
  console.log(`no CUDA here: ${e.message}`);
}

// #endregion check

export { available, module, spec };
