// @tessera/cuda native addon: a thin, generic binding over the CUDA driver API and NVRTC.
// It knows nothing about attention: kernels are generated, packed and launched from TypeScript.
// Handles (device pointers, modules, functions, streams, events) cross into JS as BigInt.
// Failures throw JS errors carrying { kind, call, status, statusName }; src/errors.ts turns them
// into typed CudaError / CudaUnavailableError / NvrtcError instances.
#include <dlfcn.h>
#include <napi.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "cuda_api.h"

namespace {

tcu::Driver g_cu;
tcu::Nvrtc g_rtc;
CUcontext g_ctx = nullptr;
CUdevice g_dev = 0;
bool g_initialised = false;

template <typename T>
bool Sym(void* lib, const char* name, T* out) {
  *out = reinterpret_cast<T>(dlsym(lib, name));
  return *out != nullptr;
}

std::string CuErrorName(CUresult r) {
  const char* s = nullptr;
  if (g_cu.cuGetErrorName && g_cu.cuGetErrorName(r, &s) == CUDA_SUCCESS && s) return s;
  return "CUDA_ERROR_" + std::to_string(static_cast<int>(r));
}

std::string CuErrorString(CUresult r) {
  const char* s = nullptr;
  if (g_cu.cuGetErrorString && g_cu.cuGetErrorString(r, &s) == CUDA_SUCCESS && s) return s;
  return "unknown CUDA error";
}

Napi::Error MakeError(Napi::Env env, const std::string& kind, const std::string& call, int status,
                      const std::string& statusName, const std::string& message) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Value().Set("kind", kind);
  e.Value().Set("call", call);
  e.Value().Set("status", status);
  e.Value().Set("statusName", statusName);
  return e;
}

Napi::Error CudaErr(Napi::Env env, const char* call, CUresult r) {
  const std::string name = CuErrorName(r);
  return MakeError(env, "cuda", call, static_cast<int>(r), name,
                   std::string(call) + " failed: " + name + " (" + CuErrorString(r) + ")");
}

Napi::Error NvrtcErr(Napi::Env env, const char* call, tcu::nvrtcResult r) {
  const char* s = g_rtc.nvrtcGetErrorString ? g_rtc.nvrtcGetErrorString(r) : nullptr;
  const std::string name = s ? s : "NVRTC_ERROR_" + std::to_string(r);
  return MakeError(env, "nvrtc", call, r, name, std::string(call) + " failed: " + name);
}

#define CU_CHECK(env, call, expr)                                         \
  do {                                                                    \
    CUresult r_ = (expr);                                                 \
    if (r_ != CUDA_SUCCESS) throw CudaErr((env), (call), r_);             \
  } while (0)

void RequireDriver(Napi::Env env) {
  if (!g_initialised)
    throw MakeError(env, "unavailable", "cuInit", -1, "NOT_INITIALISED",
                    "the CUDA driver is not initialised (call loadDriver and init first)");
}

void RequireContext(Napi::Env env) {
  RequireDriver(env);
  if (!g_ctx)
    throw MakeError(env, "unavailable", "cuCtxSetCurrent", -1, "NO_CONTEXT",
                    "no CUDA device selected (call useDevice first)");
}

uint64_t U64(const Napi::Value& v, const char* what) {
  if (v.IsBigInt()) {
    bool lossless = false;
    uint64_t x = v.As<Napi::BigInt>().Uint64Value(&lossless);
    return x;
  }
  if (v.IsNumber()) return static_cast<uint64_t>(v.As<Napi::Number>().Int64Value());
  throw Napi::TypeError::New(v.Env(), std::string(what) + " must be a bigint handle");
}

size_t Size(const Napi::Value& v, const char* what) {
  if (v.IsNumber()) {
    double d = v.As<Napi::Number>().DoubleValue();
    if (d < 0 || d != static_cast<double>(static_cast<uint64_t>(d)))
      throw Napi::RangeError::New(v.Env(), std::string(what) + " must be a non-negative integer");
    return static_cast<size_t>(d);
  }
  if (v.IsBigInt()) return static_cast<size_t>(U64(v, what));
  throw Napi::TypeError::New(v.Env(), std::string(what) + " must be a number");
}

Napi::BigInt Handle(Napi::Env env, uint64_t x) { return Napi::BigInt::New(env, x); }

struct View {
  uint8_t* data;
  size_t bytes;
};

View ViewOf(const Napi::Value& v, const char* what) {
  if (v.IsTypedArray()) {
    auto ta = v.As<Napi::TypedArray>();
    auto ab = ta.ArrayBuffer();
    return {static_cast<uint8_t*>(ab.Data()) + ta.ByteOffset(), ta.ByteLength()};
  }
  if (v.IsDataView()) {
    auto dv = v.As<Napi::DataView>();
    return {static_cast<uint8_t*>(dv.ArrayBuffer().Data()) + dv.ByteOffset(), dv.ByteLength()};
  }
  if (v.IsArrayBuffer()) {
    auto ab = v.As<Napi::ArrayBuffer>();
    return {static_cast<uint8_t*>(ab.Data()), ab.ByteLength()};
  }
  throw Napi::TypeError::New(v.Env(), std::string(what) + " must be a TypedArray or ArrayBuffer");
}

// ---------------------------------------------------------------- library loading

Napi::Value LoadDriver(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (g_cu.lib) return Napi::Boolean::New(env, true);
  auto paths = info[0].As<Napi::Array>();
  std::string tried;
  for (uint32_t i = 0; i < paths.Length(); i++) {
    std::string p = paths.Get(i).As<Napi::String>();
    void* lib = dlopen(p.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      const char* why = dlerror();
      tried += "\n  " + (why ? std::string(why) : p + ": not found");
      continue;
    }
    tcu::Driver d;
    d.lib = lib;
    bool ok = Sym(lib, "cuInit", &d.cuInit) && Sym(lib, "cuDriverGetVersion", &d.cuDriverGetVersion) &&
              Sym(lib, "cuGetErrorString", &d.cuGetErrorString) &&
              Sym(lib, "cuGetErrorName", &d.cuGetErrorName) &&
              Sym(lib, "cuDeviceGetCount", &d.cuDeviceGetCount) &&
              Sym(lib, "cuDeviceGet", &d.cuDeviceGet) && Sym(lib, "cuDeviceGetName", &d.cuDeviceGetName) &&
              Sym(lib, "cuDeviceGetAttribute", &d.cuDeviceGetAttribute) &&
              Sym(lib, "cuDeviceTotalMem_v2", &d.cuDeviceTotalMem) &&
              Sym(lib, "cuDevicePrimaryCtxRetain", &d.cuDevicePrimaryCtxRetain) &&
              Sym(lib, "cuDevicePrimaryCtxRelease_v2", &d.cuDevicePrimaryCtxRelease) &&
              Sym(lib, "cuCtxSetCurrent", &d.cuCtxSetCurrent) &&
              Sym(lib, "cuCtxSynchronize", &d.cuCtxSynchronize) &&
              Sym(lib, "cuMemGetInfo_v2", &d.cuMemGetInfo) && Sym(lib, "cuMemAlloc_v2", &d.cuMemAlloc) &&
              Sym(lib, "cuMemFree_v2", &d.cuMemFree) && Sym(lib, "cuMemcpyHtoD_v2", &d.cuMemcpyHtoD) &&
              Sym(lib, "cuMemcpyDtoH_v2", &d.cuMemcpyDtoH) && Sym(lib, "cuMemcpyDtoD_v2", &d.cuMemcpyDtoD) &&
              Sym(lib, "cuMemsetD8_v2", &d.cuMemsetD8) &&
              Sym(lib, "cuModuleLoadData", &d.cuModuleLoadData) &&
              Sym(lib, "cuModuleUnload", &d.cuModuleUnload) &&
              Sym(lib, "cuModuleGetFunction", &d.cuModuleGetFunction) &&
              Sym(lib, "cuFuncSetAttribute", &d.cuFuncSetAttribute) &&
              Sym(lib, "cuFuncGetAttribute", &d.cuFuncGetAttribute) &&
              Sym(lib, "cuLaunchKernel", &d.cuLaunchKernel) &&
              Sym(lib, "cuStreamCreate", &d.cuStreamCreate) &&
              Sym(lib, "cuStreamDestroy_v2", &d.cuStreamDestroy) &&
              Sym(lib, "cuStreamSynchronize", &d.cuStreamSynchronize) &&
              Sym(lib, "cuEventCreate", &d.cuEventCreate) && Sym(lib, "cuEventDestroy_v2", &d.cuEventDestroy) &&
              Sym(lib, "cuEventRecord", &d.cuEventRecord) &&
              Sym(lib, "cuEventSynchronize", &d.cuEventSynchronize) &&
              Sym(lib, "cuEventElapsedTime", &d.cuEventElapsedTime);
    if (!ok) {
      tried += "\n  " + p + ": missing driver API symbols (driver too old?)";
      dlclose(lib);
      continue;
    }
    g_cu = d;
    Napi::Object out = Napi::Object::New(env);
    out.Set("path", p);
    return out;
  }
  throw MakeError(env, "unavailable", "dlopen", -1, "NO_DRIVER",
                  "no CUDA driver/GPU found: could not load the CUDA driver library" + tried);
}

Napi::Value Init(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!g_cu.lib)
    throw MakeError(env, "unavailable", "cuInit", -1, "NO_DRIVER",
                    "no CUDA driver/GPU found: the driver library is not loaded");
  CUresult r = g_cu.cuInit(0);
  if (r != CUDA_SUCCESS) {
    const std::string name = CuErrorName(r);
    throw MakeError(env, "unavailable", "cuInit", static_cast<int>(r), name,
                    "no CUDA driver/GPU found: cuInit failed: " + name + " (" + CuErrorString(r) + ")");
  }
  g_initialised = true;
  int count = 0, version = 0;
  CU_CHECK(env, "cuDeviceGetCount", g_cu.cuDeviceGetCount(&count));
  CU_CHECK(env, "cuDriverGetVersion", g_cu.cuDriverGetVersion(&version));
  Napi::Object out = Napi::Object::New(env);
  out.Set("deviceCount", count);
  out.Set("driverVersion", version);
  return out;
}

Napi::Value DeviceInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RequireDriver(env);
  int ordinal = info[0].As<Napi::Number>().Int32Value();
  CUdevice dev;
  CU_CHECK(env, "cuDeviceGet", g_cu.cuDeviceGet(&dev, ordinal));
  char name[256] = {0};
  CU_CHECK(env, "cuDeviceGetName", g_cu.cuDeviceGetName(name, sizeof(name) - 1, dev));
  size_t total = 0;
  CU_CHECK(env, "cuDeviceTotalMem", g_cu.cuDeviceTotalMem(&total, dev));
  auto attr = [&](int a) {
    int v = 0;
    CU_CHECK(env, "cuDeviceGetAttribute", g_cu.cuDeviceGetAttribute(&v, static_cast<CUdevice_attribute>(a), dev));
    return v;
  };
  Napi::Object out = Napi::Object::New(env);
  out.Set("name", std::string(name));
  out.Set("major", attr(tcu::kAttrComputeCapabilityMajor));
  out.Set("minor", attr(tcu::kAttrComputeCapabilityMinor));
  out.Set("multiprocessors", attr(tcu::kAttrMultiprocessorCount));
  out.Set("l2CacheBytes", attr(tcu::kAttrL2CacheSize));
  out.Set("maxSharedPerBlockOptin", attr(tcu::kAttrMaxSharedPerBlockOptin));
  out.Set("maxThreadsPerBlock", attr(tcu::kAttrMaxThreadsPerBlock));
  out.Set("totalMemory", static_cast<double>(total));
  return out;
}

Napi::Value UseDevice(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RequireDriver(env);
  int ordinal = info[0].As<Napi::Number>().Int32Value();
  CUdevice dev;
  CU_CHECK(env, "cuDeviceGet", g_cu.cuDeviceGet(&dev, ordinal));
  CUcontext ctx = nullptr;
  CU_CHECK(env, "cuDevicePrimaryCtxRetain", g_cu.cuDevicePrimaryCtxRetain(&ctx, dev));
  CU_CHECK(env, "cuCtxSetCurrent", g_cu.cuCtxSetCurrent(ctx));
  if (g_ctx && g_ctx != ctx) g_cu.cuDevicePrimaryCtxRelease(g_dev);
  g_ctx = ctx;
  g_dev = dev;
  return env.Undefined();
}

Napi::Value ReleaseDevice(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (g_ctx) {
    g_cu.cuCtxSetCurrent(nullptr);
    CU_CHECK(env, "cuDevicePrimaryCtxRelease", g_cu.cuDevicePrimaryCtxRelease(g_dev));
    g_ctx = nullptr;
  }
  return env.Undefined();
}

// ---------------------------------------------------------------- memory

Napi::Value MemGetInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RequireContext(env);
  size_t free = 0, total = 0;
  CU_CHECK(env, "cuMemGetInfo", g_cu.cuMemGetInfo(&free, &total));
  Napi::Object out = Napi::Object::New(env);
  out.Set("free", static_cast<double>(free));
  out.Set("total", static_cast<double>(total));
  return out;
}

Napi::Value MemAlloc(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RequireContext(env);
  size_t bytes = Size(info[0], "bytes");
  CUdeviceptr p = 0;
  CU_CHECK(env, "cuMemAlloc", g_cu.cuMemAlloc(&p, bytes == 0 ? 1 : bytes));
  return Handle(env, p);
}

Napi::Value MemFree(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RequireContext(env);
  CU_CHECK(env, "cuMemFree", g_cu.cuMemFree(U64(info[0], "pointer")));
  return env.Undefined();
}

Napi::Value MemsetD8(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RequireContext(env);
  CU_CHECK(env, "cuMemsetD8",
           g_cu.cuMemsetD8(U64(info[0], "pointer"), static_cast<unsigned char>(info[1].As<Napi::Number>().Uint32Value()),
                           Size(info[2], "bytes")));
  return env.Undefined();
}

Napi::Value MemcpyDtoD(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RequireContext(env);
  CU_CHECK(env, "cuMemcpyDtoD",
           g_cu.cuMemcpyDtoD(U64(info[0], "dst"), U64(info[1], "src"), Size(info[2], "bytes")));
  return env.Undefined();
}

// Long or blocking calls run on the libuv pool so the event loop keeps going.
class CudaWorker : public Napi::AsyncWorker {
 public:
  explicit CudaWorker(Napi::Env env)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  // Runs `r`'s check off the JS thread: records the failing call for OnError.
  bool Check(const char* call, CUresult r) {
    if (r == CUDA_SUCCESS) return true;
    call_ = call;
    status_ = static_cast<int>(r);
    SetError(call);
    return false;
  }
  bool Enter() { return Check("cuCtxSetCurrent", g_cu.cuCtxSetCurrent(g_ctx)); }
  void OnOK() override { deferred_.Resolve(Result()); }
  void OnError(const Napi::Error&) override {
    deferred_.Reject(CudaErr(Env(), call_.c_str(), static_cast<CUresult>(status_)).Value());
  }
  virtual Napi::Value Result() { return Env().Undefined(); }

  Napi::Promise::Deferred deferred_;
  std::string call_;
  int status_ = 0;
};

class CopyWorker : public CudaWorker {
 public:
  CopyWorker(Napi::Env env, bool toDevice, CUdeviceptr dev, Napi::Value host, View view)
      : CudaWorker(env), toDevice_(toDevice), dev_(dev), view_(view) {
    keep_ = Napi::Persistent(host.As<Napi::Object>());
  }
  void Execute() override {
    if (!Enter()) return;
    if (toDevice_)
      Check("cuMemcpyHtoD", g_cu.cuMemcpyHtoD(dev_, view_.data, view_.bytes));
    else
      Check("cuMemcpyDtoH", g_cu.cuMemcpyDtoH(view_.data, dev_, view_.bytes));
  }

 private:
  bool toDevice_;
  CUdeviceptr dev_;
  View view_;
  Napi::ObjectReference keep_;
};

Napi::Value CopyAsync(const Napi::CallbackInfo& info, bool toDevice) {
  Napi::Env env = info.Env();
  RequireContext(env);
  CUdeviceptr dev = U64(info[0], "pointer");
  View view = ViewOf(info[1], "host");
  auto* w = new CopyWorker(env, toDevice, dev, info[1], view);
  auto p = w->Promise();
  w->Queue();
  return p;
}

Napi::Value MemcpyHtoD(const Napi::CallbackInfo& info) { return CopyAsync(info, true); }
Napi::Value MemcpyDtoH(const Napi::CallbackInfo& info) { return CopyAsync(info, false); }

// ---------------------------------------------------------------- modules and launches

Napi::Value ModuleLoadData(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RequireContext(env);
  View image = ViewOf(info[0], "image");
  // PTX must be NUL-terminated; cubins are not read past their header's size.
  std::vector<uint8_t> copy(image.data, image.data + image.bytes);
  copy.push_back(0);
  CUmodule mod = nullptr;
  CU_CHECK(env, "cuModuleLoadData", g_cu.cuModuleLoadData(&mod, copy.data()));
  return Handle(env, reinterpret_cast<uint64_t>(mod));
}

Napi::Value ModuleUnload(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RequireContext(env);
  CU_CHECK(env, "cuModuleUnload",
           g_cu.cuModuleUnload(reinterpret_cast<CUmodule>(U64(info[0], "module"))));
  return env.Undefined();
}

Napi::Value ModuleGetFunction(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RequireContext(env);
  std::string name = info[1].As<Napi::String>();
  CUfunction fn = nullptr;
  CU_CHECK(env, "cuModuleGetFunction",
           g_cu.cuModuleGetFunction(&fn, reinterpret_cast<CUmodule>(U64(info[0], "module")), name.c_str()));
  return Handle(env, reinterpret_cast<uint64_t>(fn));
}

Napi::Value FuncSetAttribute(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RequireContext(env);
  CU_CHECK(env, "cuFuncSetAttribute",
           g_cu.cuFuncSetAttribute(reinterpret_cast<CUfunction>(U64(info[0], "function")),
                                   static_cast<CUfunction_attribute>(info[1].As<Napi::Number>().Int32Value()),
                                   info[2].As<Napi::Number>().Int32Value()));
  return env.Undefined();
}

Napi::Value FuncGetAttributes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RequireContext(env);
  auto fn = reinterpret_cast<CUfunction>(U64(info[0], "function"));
  auto attr = [&](int a) {
    int v = 0;
    CU_CHECK(env, "cuFuncGetAttribute", g_cu.cuFuncGetAttribute(&v, static_cast<CUfunction_attribute>(a), fn));
    return v;
  };
  Napi::Object out = Napi::Object::New(env);
  out.Set("numRegs", attr(tcu::kFuncAttrNumRegs));
  out.Set("localBytes", attr(tcu::kFuncAttrLocalSizeBytes));
  out.Set("staticSharedBytes", attr(tcu::kFuncAttrSharedSizeBytes));
  out.Set("maxThreadsPerBlock", attr(tcu::kFuncAttrMaxThreadsPerBlock));
  return out;
}

// launch(fn, [gx, gy, gz], [bx, by, bz], sharedBytes, stream, params): `params` holds the kernel's
// arguments packed with their natural alignment (the packing is done in TypeScript).
Napi::Value Launch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RequireContext(env);
  auto fn = reinterpret_cast<CUfunction>(U64(info[0], "function"));
  auto grid = info[1].As<Napi::Array>();
  auto block = info[2].As<Napi::Array>();
  auto dim = [](const Napi::Array& a, uint32_t i) {
    return a.Get(i).As<Napi::Number>().Uint32Value();
  };
  unsigned shared = info[3].As<Napi::Number>().Uint32Value();
  auto stream = reinterpret_cast<CUstream>(U64(info[4], "stream"));
  View params = ViewOf(info[5], "params");
  size_t size = params.bytes;
  void* extra[] = {CU_LAUNCH_PARAM_BUFFER_POINTER, params.data, CU_LAUNCH_PARAM_BUFFER_SIZE, &size,
                   CU_LAUNCH_PARAM_END};
  CU_CHECK(env, "cuLaunchKernel",
           g_cu.cuLaunchKernel(fn, dim(grid, 0), dim(grid, 1), dim(grid, 2), dim(block, 0),
                               dim(block, 1), dim(block, 2), shared, stream, nullptr, extra));
  return env.Undefined();
}

// ---------------------------------------------------------------- streams and events

Napi::Value StreamCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RequireContext(env);
  CUstream s = nullptr;
  CU_CHECK(env, "cuStreamCreate", g_cu.cuStreamCreate(&s, 0));
  return Handle(env, reinterpret_cast<uint64_t>(s));
}

Napi::Value StreamDestroy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RequireContext(env);
  CU_CHECK(env, "cuStreamDestroy",
           g_cu.cuStreamDestroy(reinterpret_cast<CUstream>(U64(info[0], "stream"))));
  return env.Undefined();
}

class SyncWorker : public CudaWorker {
 public:
  enum Kind { kStream, kEvent, kContext };
  SyncWorker(Napi::Env env, Kind kind, uint64_t handle) : CudaWorker(env), kind_(kind), handle_(handle) {}
  void Execute() override {
    if (!Enter()) return;
    if (kind_ == kStream)
      Check("cuStreamSynchronize", g_cu.cuStreamSynchronize(reinterpret_cast<CUstream>(handle_)));
    else if (kind_ == kEvent)
      Check("cuEventSynchronize", g_cu.cuEventSynchronize(reinterpret_cast<CUevent>(handle_)));
    else
      Check("cuCtxSynchronize", g_cu.cuCtxSynchronize());
  }

 private:
  Kind kind_;
  uint64_t handle_;
};

Napi::Value Sync(const Napi::CallbackInfo& info, SyncWorker::Kind kind) {
  Napi::Env env = info.Env();
  RequireContext(env);
  uint64_t h = kind == SyncWorker::kContext ? 0 : U64(info[0], "handle");
  auto* w = new SyncWorker(env, kind, h);
  auto p = w->Promise();
  w->Queue();
  return p;
}

Napi::Value StreamSynchronize(const Napi::CallbackInfo& info) { return Sync(info, SyncWorker::kStream); }
Napi::Value EventSynchronize(const Napi::CallbackInfo& info) { return Sync(info, SyncWorker::kEvent); }
Napi::Value CtxSynchronize(const Napi::CallbackInfo& info) { return Sync(info, SyncWorker::kContext); }

Napi::Value EventCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RequireContext(env);
  CUevent e = nullptr;
  CU_CHECK(env, "cuEventCreate", g_cu.cuEventCreate(&e, 0));
  return Handle(env, reinterpret_cast<uint64_t>(e));
}

Napi::Value EventDestroy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RequireContext(env);
  CU_CHECK(env, "cuEventDestroy", g_cu.cuEventDestroy(reinterpret_cast<CUevent>(U64(info[0], "event"))));
  return env.Undefined();
}

Napi::Value EventRecord(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RequireContext(env);
  CU_CHECK(env, "cuEventRecord",
           g_cu.cuEventRecord(reinterpret_cast<CUevent>(U64(info[0], "event")),
                              reinterpret_cast<CUstream>(U64(info[1], "stream"))));
  return env.Undefined();
}

Napi::Value EventElapsedTime(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RequireContext(env);
  float ms = 0;
  CU_CHECK(env, "cuEventElapsedTime",
           g_cu.cuEventElapsedTime(&ms, reinterpret_cast<CUevent>(U64(info[0], "start")),
                                   reinterpret_cast<CUevent>(U64(info[1], "end"))));
  return Napi::Number::New(env, ms);
}

// ---------------------------------------------------------------- NVRTC

Napi::Value LoadNvrtc(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!g_rtc.lib) {
    auto paths = info[0].As<Napi::Array>();
    std::string tried;
    for (uint32_t i = 0; i < paths.Length() && !g_rtc.lib; i++) {
      std::string p = paths.Get(i).As<Napi::String>();
      void* lib = dlopen(p.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (!lib) continue;
      tcu::Nvrtc n;
      n.lib = lib;
      bool ok = Sym(lib, "nvrtcVersion", &n.nvrtcVersion) &&
                Sym(lib, "nvrtcGetErrorString", &n.nvrtcGetErrorString) &&
                Sym(lib, "nvrtcCreateProgram", &n.nvrtcCreateProgram) &&
                Sym(lib, "nvrtcDestroyProgram", &n.nvrtcDestroyProgram) &&
                Sym(lib, "nvrtcCompileProgram", &n.nvrtcCompileProgram) &&
                Sym(lib, "nvrtcGetProgramLogSize", &n.nvrtcGetProgramLogSize) &&
                Sym(lib, "nvrtcGetProgramLog", &n.nvrtcGetProgramLog) &&
                Sym(lib, "nvrtcGetCUBINSize", &n.nvrtcGetCUBINSize) &&
                Sym(lib, "nvrtcGetCUBIN", &n.nvrtcGetCUBIN) && Sym(lib, "nvrtcGetPTXSize", &n.nvrtcGetPTXSize) &&
                Sym(lib, "nvrtcGetPTX", &n.nvrtcGetPTX);
      if (!ok) {
        dlclose(lib);
        continue;
      }
      g_rtc = n;
      Napi::Object out = Napi::Object::New(env);
      out.Set("path", p);
      int major = 0, minor = 0;
      g_rtc.nvrtcVersion(&major, &minor);
      out.Set("version", std::to_string(major) + "." + std::to_string(minor));
      return out;
    }
    return env.Null();
  }
  return Napi::Boolean::New(env, true);
}

class CompileWorker : public Napi::AsyncWorker {
 public:
  CompileWorker(Napi::Env env, std::string source, std::string name, std::vector<std::string> options)
      : Napi::AsyncWorker(env),
        deferred_(Napi::Promise::Deferred::New(env)),
        source_(std::move(source)),
        name_(std::move(name)),
        options_(std::move(options)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    tcu::nvrtcProgram prog = nullptr;
    status_ = g_rtc.nvrtcCreateProgram(&prog, source_.c_str(), name_.c_str(), 0, nullptr, nullptr);
    if (status_ != 0) {
      call_ = "nvrtcCreateProgram";
      SetError(call_);
      return;
    }
    std::vector<const char*> opts;
    for (auto& o : options_) opts.push_back(o.c_str());
    int compiled = g_rtc.nvrtcCompileProgram(prog, static_cast<int>(opts.size()), opts.data());
    size_t logSize = 0;
    g_rtc.nvrtcGetProgramLogSize(prog, &logSize);
    if (logSize > 1) {
      log_.resize(logSize);
      g_rtc.nvrtcGetProgramLog(prog, &log_[0]);
      log_.resize(logSize - 1);
    }
    ok_ = compiled == 0;
    if (ok_) {
      size_t n = 0;
      status_ = g_rtc.nvrtcGetCUBINSize(prog, &n);
      if (status_ == 0 && n > 0) {
        image_.resize(n);
        status_ = g_rtc.nvrtcGetCUBIN(prog, image_.data());
        cubin_ = true;
      } else {
        // A virtual architecture (compute_XX) yields PTX only.
        status_ = g_rtc.nvrtcGetPTXSize(prog, &n);
        if (status_ == 0) {
          image_.resize(n);
          status_ = g_rtc.nvrtcGetPTX(prog, image_.data());
        }
      }
      if (status_ != 0) {
        call_ = "nvrtcGetCUBIN";
        g_rtc.nvrtcDestroyProgram(&prog);
        SetError(call_);
        return;
      }
    } else {
      status_ = compiled;
    }
    g_rtc.nvrtcDestroyProgram(&prog);
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::Object out = Napi::Object::New(env);
    out.Set("ok", ok_);
    out.Set("log", log_);
    out.Set("status", status_);
    if (ok_) {
      out.Set("image", Napi::Buffer<char>::Copy(env, image_.data(), image_.size()));
      out.Set("format", cubin_ ? "cubin" : "ptx");
    }
    deferred_.Resolve(out);
  }
  void OnError(const Napi::Error&) override {
    deferred_.Reject(NvrtcErr(Env(), call_.c_str(), status_).Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::string source_, name_;
  std::vector<std::string> options_;
  std::string call_, log_;
  std::vector<char> image_;
  int status_ = 0;
  bool ok_ = false;
  bool cubin_ = false;
};

Napi::Value NvrtcCompile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!g_rtc.lib)
    throw MakeError(env, "nvrtc", "nvrtcCompileProgram", -1, "NO_NVRTC", "NVRTC is not loaded");
  std::string source = info[0].As<Napi::String>();
  std::string name = info[1].As<Napi::String>();
  std::vector<std::string> options;
  auto arr = info[2].As<Napi::Array>();
  for (uint32_t i = 0; i < arr.Length(); i++) options.push_back(arr.Get(i).As<Napi::String>());
  auto* w = new CompileWorker(env, std::move(source), std::move(name), std::move(options));
  auto p = w->Promise();
  w->Queue();
  return p;
}

Napi::Object InitAll(Napi::Env env, Napi::Object exports) {
  auto fn = [&](const char* name, Napi::Value (*f)(const Napi::CallbackInfo&)) {
    exports.Set(name, Napi::Function::New(env, f, name));
  };
  fn("loadDriver", LoadDriver);
  fn("init", Init);
  fn("deviceInfo", DeviceInfo);
  fn("useDevice", UseDevice);
  fn("releaseDevice", ReleaseDevice);
  fn("memGetInfo", MemGetInfo);
  fn("memAlloc", MemAlloc);
  fn("memFree", MemFree);
  fn("memsetD8", MemsetD8);
  fn("memcpyDtoD", MemcpyDtoD);
  fn("memcpyHtoD", MemcpyHtoD);
  fn("memcpyDtoH", MemcpyDtoH);
  fn("moduleLoadData", ModuleLoadData);
  fn("moduleUnload", ModuleUnload);
  fn("moduleGetFunction", ModuleGetFunction);
  fn("funcSetAttribute", FuncSetAttribute);
  fn("funcGetAttributes", FuncGetAttributes);
  fn("launch", Launch);
  fn("streamCreate", StreamCreate);
  fn("streamDestroy", StreamDestroy);
  fn("streamSynchronize", StreamSynchronize);
  fn("ctxSynchronize", CtxSynchronize);
  fn("eventCreate", EventCreate);
  fn("eventDestroy", EventDestroy);
  fn("eventRecord", EventRecord);
  fn("eventSynchronize", EventSynchronize);
  fn("eventElapsedTime", EventElapsedTime);
  fn("loadNvrtc", LoadNvrtc);
  fn("nvrtcCompile", NvrtcCompile);
  exports.Set("abi", Napi::Number::New(env, 1));
  return exports;
}

}  // namespace

NODE_API_MODULE(tessera_cuda, InitAll)
