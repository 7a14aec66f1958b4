// Peak FMA throughput: 12 independent FMA chains per thread (AVX-512 and AVX2); ./peak_fma THREADS.
// Peak FMA throughput of one core: 12 independent AVX-512 (or AVX2) FMA chains.
#include <immintrin.h>

#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>
template <class V, class F>
double run(F fma, int lanes) {
  V a[12];
  V b, c;
  for (auto& x : a) x = V{};
  b = V{};
  c = V{};
  const long iters = 200'000'000;
  auto t0 = std::chrono::steady_clock::now();
  for (long i = 0; i < iters; ++i)
#pragma GCC unroll 12
    for (int k = 0; k < 12; ++k) a[k] = fma(a[k], b, c);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  volatile float sink = 0;
  for (auto& x : a) sink = sink + ((float*)&x)[0];
  return 2.0 * lanes * 12 * iters / s / 1e9;
}
int main(int argc, char** argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 1;
  std::vector<std::thread> ts;
  std::vector<double> r(threads), r2(threads);
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      r[t] = run<__m512>([](__m512 a, __m512 b, __m512 c) { return _mm512_fmadd_ps(a, b, c); }, 16);
      r2[t] = run<__m256>([](__m256 a, __m256 b, __m256 c) { return _mm256_fmadd_ps(a, b, c); }, 8);
    });
  for (auto& t : ts) t.join();
  double s = 0, s2 = 0;
  for (int t = 0; t < threads; ++t) s += r[t], s2 += r2[t];
  printf("threads %d: AVX-512 %.1f GFLOP/s, AVX2 %.1f GFLOP/s\n", threads, s, s2);
}
