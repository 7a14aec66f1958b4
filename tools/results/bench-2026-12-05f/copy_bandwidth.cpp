// Copy bandwidth of the machine: two threads, each reading one buffer and writing another with
// AVX-512 (normal or non-temporal stores), 20 passes; reports bytes read + written per second.
//   g++ -O2 -march=native -pthread copy_bandwidth.cpp -o copy_bandwidth
//   ./copy_bandwidth TOTAL_BYTES NT     # TOTAL_BYTES over both threads' sources and destinations;
//   NT 0 or 1
#include <immintrin.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 3) return std::fprintf(stderr, "usage: copy_bandwidth TOTAL_BYTES NT\n"), 2;
  const size_t n = std::strtoull(argv[1], nullptr, 10) / sizeof(float) / 4;  // floats per buffer
  const bool nt = std::atoi(argv[2]) != 0;
  const int passes = 20;
  std::vector<float*> src(2), dst(2);
  for (int t = 0; t < 2; ++t) {
    src[t] = static_cast<float*>(std::aligned_alloc(64, n * sizeof(float)));
    dst[t] = static_cast<float*>(std::aligned_alloc(64, n * sizeof(float)));
    std::memset(src[t], 1, n * sizeof(float));
    std::memset(dst[t], 1, n * sizeof(float));
  }
  auto body = [&](int t) {
    for (int r = 0; r < passes; ++r)
      for (size_t i = 0; i + 16 <= n; i += 16) {
        const __m512 v = _mm512_load_ps(src[t] + i);
        if (nt)
          _mm512_stream_ps(dst[t] + i, v);
        else
          _mm512_store_ps(dst[t] + i, v);
      }
  };
  const auto t0 = std::chrono::steady_clock::now();
  std::thread a(body, 0), b(body, 1);
  a.join(), b.join();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%s stores, %zu MB in all: %.1f GB/s read + written\n",
              nt ? "non-temporal" : "normal", 4 * n * sizeof(float) >> 20,
              2.0 * 2 * n * sizeof(float) * passes / s / 1e9);
}
