{
  "targets": [
    {
      "target_name": "tessera_cuda",
      "sources": ["native/addon.cc"],
      "dependencies": ["<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"],
      "include_dirs": ["<!@(node scripts/gyp-cuda.mjs include)"],
      "defines": ["<!@(node scripts/gyp-cuda.mjs defines)"],
      "cflags_cc": ["-std=c++17", "-O2"],
      "libraries": ["-ldl"]
    }
  ]
}
