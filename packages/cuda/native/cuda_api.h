// The few CUDA driver and NVRTC entry points the addon calls, as function pointer types.
// libcuda.so.1 and libnvrtc.so are opened at run time (dlopen), so the addon builds and loads on
// machines with no GPU. Types come from cuda.h when the toolkit is present at build time; otherwise
// the minimal declarations below (the documented, stable ABI) stand in.
#pragma once

#include <cstddef>

#if defined(TESSERA_HAVE_CUDA_H) && __has_include(<cuda.h>)
#include <cuda.h>
#define TESSERA_CUDA_TYPES_FROM_TOOLKIT 1
#else
typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef struct CUctx_st* CUcontext;
typedef struct CUmod_st* CUmodule;
typedef struct CUfunc_st* CUfunction;
typedef struct CUstream_st* CUstream;
typedef struct CUevent_st* CUevent;
typedef int CUdevice_attribute;
typedef int CUfunction_attribute;
#define CUDA_SUCCESS 0
#define CU_LAUNCH_PARAM_END ((void*)0x00)
#define CU_LAUNCH_PARAM_BUFFER_POINTER ((void*)0x01)
#define CU_LAUNCH_PARAM_BUFFER_SIZE ((void*)0x02)
#endif

namespace tcu {

// Driver API (the _v2 symbols are the ones cuda.h maps the plain names to).
using PFN_cuInit = CUresult (*)(unsigned int);
using PFN_cuDriverGetVersion = CUresult (*)(int*);
using PFN_cuGetErrorString = CUresult (*)(CUresult, const char**);
using PFN_cuGetErrorName = CUresult (*)(CUresult, const char**);
using PFN_cuDeviceGetCount = CUresult (*)(int*);
using PFN_cuDeviceGet = CUresult (*)(CUdevice*, int);
using PFN_cuDeviceGetName = CUresult (*)(char*, int, CUdevice);
using PFN_cuDeviceGetAttribute = CUresult (*)(int*, CUdevice_attribute, CUdevice);
using PFN_cuDeviceTotalMem = CUresult (*)(size_t*, CUdevice);
using PFN_cuDevicePrimaryCtxRetain = CUresult (*)(CUcontext*, CUdevice);
using PFN_cuDevicePrimaryCtxRelease = CUresult (*)(CUdevice);
using PFN_cuCtxSetCurrent = CUresult (*)(CUcontext);
using PFN_cuCtxSynchronize = CUresult (*)();
using PFN_cuMemGetInfo = CUresult (*)(size_t*, size_t*);
using PFN_cuMemAlloc = CUresult (*)(CUdeviceptr*, size_t);
using PFN_cuMemFree = CUresult (*)(CUdeviceptr);
using PFN_cuMemcpyHtoD = CUresult (*)(CUdeviceptr, const void*, size_t);
using PFN_cuMemcpyDtoH = CUresult (*)(void*, CUdeviceptr, size_t);
using PFN_cuMemcpyDtoD = CUresult (*)(CUdeviceptr, CUdeviceptr, size_t);
using PFN_cuMemsetD8 = CUresult (*)(CUdeviceptr, unsigned char, size_t);
using PFN_cuModuleLoadData = CUresult (*)(CUmodule*, const void*);
using PFN_cuModuleUnload = CUresult (*)(CUmodule);
using PFN_cuModuleGetFunction = CUresult (*)(CUfunction*, CUmodule, const char*);
using PFN_cuFuncSetAttribute = CUresult (*)(CUfunction, CUfunction_attribute, int);
using PFN_cuFuncGetAttribute = CUresult (*)(int*, CUfunction_attribute, CUfunction);
using PFN_cuLaunchKernel = CUresult (*)(CUfunction, unsigned, unsigned, unsigned, unsigned,
                                        unsigned, unsigned, unsigned, CUstream, void**, void**);
using PFN_cuStreamCreate = CUresult (*)(CUstream*, unsigned int);
using PFN_cuStreamDestroy = CUresult (*)(CUstream);
using PFN_cuStreamSynchronize = CUresult (*)(CUstream);
using PFN_cuEventCreate = CUresult (*)(CUevent*, unsigned int);
using PFN_cuEventDestroy = CUresult (*)(CUevent);
using PFN_cuEventRecord = CUresult (*)(CUevent, CUstream);
using PFN_cuEventSynchronize = CUresult (*)(CUevent);
using PFN_cuEventElapsedTime = CUresult (*)(float*, CUevent, CUevent);

// Attribute numbers used (values from the CUDA driver API reference; stable since CUDA 4-9).
constexpr int kAttrMaxThreadsPerBlock = 1;            // CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK
constexpr int kAttrMultiprocessorCount = 16;          // CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT
constexpr int kAttrL2CacheSize = 38;                  // CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE
constexpr int kAttrComputeCapabilityMajor = 75;       // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
constexpr int kAttrComputeCapabilityMinor = 76;       // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR
constexpr int kAttrMaxSharedPerBlockOptin = 97;       // ..._MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
constexpr int kFuncAttrMaxThreadsPerBlock = 0;        // CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK
constexpr int kFuncAttrSharedSizeBytes = 1;           // CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES
constexpr int kFuncAttrLocalSizeBytes = 3;            // CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES
constexpr int kFuncAttrNumRegs = 4;                   // CU_FUNC_ATTRIBUTE_NUM_REGS
constexpr int kFuncAttrMaxDynamicSharedSizeBytes = 8; // ..._MAX_DYNAMIC_SHARED_SIZE_BYTES

// NVRTC.
typedef int nvrtcResult;
typedef struct _nvrtcProgram* nvrtcProgram;
using PFN_nvrtcVersion = nvrtcResult (*)(int*, int*);
using PFN_nvrtcGetErrorString = const char* (*)(nvrtcResult);
using PFN_nvrtcCreateProgram = nvrtcResult (*)(nvrtcProgram*, const char*, const char*, int,
                                               const char* const*, const char* const*);
using PFN_nvrtcDestroyProgram = nvrtcResult (*)(nvrtcProgram*);
using PFN_nvrtcCompileProgram = nvrtcResult (*)(nvrtcProgram, int, const char* const*);
using PFN_nvrtcGetProgramLogSize = nvrtcResult (*)(nvrtcProgram, size_t*);
using PFN_nvrtcGetProgramLog = nvrtcResult (*)(nvrtcProgram, char*);
using PFN_nvrtcGetCUBINSize = nvrtcResult (*)(nvrtcProgram, size_t*);
using PFN_nvrtcGetCUBIN = nvrtcResult (*)(nvrtcProgram, char*);
using PFN_nvrtcGetPTXSize = nvrtcResult (*)(nvrtcProgram, size_t*);
using PFN_nvrtcGetPTX = nvrtcResult (*)(nvrtcProgram, char*);

struct Driver {
  void* lib = nullptr;
  PFN_cuInit cuInit = nullptr;
  PFN_cuDriverGetVersion cuDriverGetVersion = nullptr;
  PFN_cuGetErrorString cuGetErrorString = nullptr;
  PFN_cuGetErrorName cuGetErrorName = nullptr;
  PFN_cuDeviceGetCount cuDeviceGetCount = nullptr;
  PFN_cuDeviceGet cuDeviceGet = nullptr;
  PFN_cuDeviceGetName cuDeviceGetName = nullptr;
  PFN_cuDeviceGetAttribute cuDeviceGetAttribute = nullptr;
  PFN_cuDeviceTotalMem cuDeviceTotalMem = nullptr;
  PFN_cuDevicePrimaryCtxRetain cuDevicePrimaryCtxRetain = nullptr;
  PFN_cuDevicePrimaryCtxRelease cuDevicePrimaryCtxRelease = nullptr;
  PFN_cuCtxSetCurrent cuCtxSetCurrent = nullptr;
  PFN_cuCtxSynchronize cuCtxSynchronize = nullptr;
  PFN_cuMemGetInfo cuMemGetInfo = nullptr;
  PFN_cuMemAlloc cuMemAlloc = nullptr;
  PFN_cuMemFree cuMemFree = nullptr;
  PFN_cuMemcpyHtoD cuMemcpyHtoD = nullptr;
  PFN_cuMemcpyDtoH cuMemcpyDtoH = nullptr;
  PFN_cuMemcpyDtoD cuMemcpyDtoD = nullptr;
  PFN_cuMemsetD8 cuMemsetD8 = nullptr;
  PFN_cuModuleLoadData cuModuleLoadData = nullptr;
  PFN_cuModuleUnload cuModuleUnload = nullptr;
  PFN_cuModuleGetFunction cuModuleGetFunction = nullptr;
  PFN_cuFuncSetAttribute cuFuncSetAttribute = nullptr;
  PFN_cuFuncGetAttribute cuFuncGetAttribute = nullptr;
  PFN_cuLaunchKernel cuLaunchKernel = nullptr;
  PFN_cuStreamCreate cuStreamCreate = nullptr;
  PFN_cuStreamDestroy cuStreamDestroy = nullptr;
  PFN_cuStreamSynchronize cuStreamSynchronize = nullptr;
  PFN_cuEventCreate cuEventCreate = nullptr;
  PFN_cuEventDestroy cuEventDestroy = nullptr;
  PFN_cuEventRecord cuEventRecord = nullptr;
  PFN_cuEventSynchronize cuEventSynchronize = nullptr;
  PFN_cuEventElapsedTime cuEventElapsedTime = nullptr;
};

struct Nvrtc {
  void* lib = nullptr;
  PFN_nvrtcVersion nvrtcVersion = nullptr;
  PFN_nvrtcGetErrorString nvrtcGetErrorString = nullptr;
  PFN_nvrtcCreateProgram nvrtcCreateProgram = nullptr;
  PFN_nvrtcDestroyProgram nvrtcDestroyProgram = nullptr;
  PFN_nvrtcCompileProgram nvrtcCompileProgram = nullptr;
  PFN_nvrtcGetProgramLogSize nvrtcGetProgramLogSize = nullptr;
  PFN_nvrtcGetProgramLog nvrtcGetProgramLog = nullptr;
  PFN_nvrtcGetCUBINSize nvrtcGetCUBINSize = nullptr;
  PFN_nvrtcGetCUBIN nvrtcGetCUBIN = nullptr;
  PFN_nvrtcGetPTXSize nvrtcGetPTXSize = nullptr;
  PFN_nvrtcGetPTX nvrtcGetPTX = nullptr;
};

}  // namespace tcu
