/* conv1 (5x5, 1 -> 32 channels, pad 2) at the 27x27 positions the first max-pool reads, the
   3x3/2 max-pool (first maximum wins ties, NaN wins, as PyTorch's), conv1's bias and the ReLU,
   one image at a time so that its 93 KB of conv1 outputs never leave the core's cache; and the
   backward pass of the same into conv1's kernel and bias gradients. Activations are
   channels-last: [image][13*13 positions][32 channels]. AVX2 + FMA; OpenMP over images. */
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#define CH 32
#define TAPS 25

int conv1_kernels_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

int conv1_kernels_threads(void) { return omp_get_max_threads(); }

/* The image scaled and zero-padded to 31x31 (2 before, 1 after: the 27x27 output windows). */
static void pad_and_scale(const uint8_t *pixels, float scale, float *padded) {
    memset(padded, 0, 31 * 31 * sizeof(float));
    for (int y = 0; y < 28; y++)
        for (int x = 0; x < 28; x++)
            padded[(y + 2) * 31 + x + 2] = (float)pixels[y * 28 + x] * scale;
}

/* conv1 without bias into conv[729][CH], two positions at a time so that every kernel row
   loaded feeds 8 fused multiply-adds; the taps are summed in order from zero. */
static void conv1_image(const float *padded, const float *kernels /* [TAPS][CH] */,
                        float *conv) {
    for (int p = 0; p < 729; p += 2) {
        int q = p + 1 < 729 ? p + 1 : p;
        const float *x0 = padded + (p / 27) * 31 + p % 27, *x1 = padded + (q / 27) * 31 + q % 27;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        __m256 b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        for (int t = 0; t < TAPS; t++) {
            const float *k = kernels + t * CH;
            int at = (t / 5) * 31 + t % 5;
            __m256 k0 = _mm256_loadu_ps(k), k1 = _mm256_loadu_ps(k + 8);
            __m256 k2 = _mm256_loadu_ps(k + 16), k3 = _mm256_loadu_ps(k + 24);
            __m256 u = _mm256_broadcast_ss(x0 + at), v = _mm256_broadcast_ss(x1 + at);
            a0 = _mm256_fmadd_ps(u, k0, a0); a1 = _mm256_fmadd_ps(u, k1, a1);
            a2 = _mm256_fmadd_ps(u, k2, a2); a3 = _mm256_fmadd_ps(u, k3, a3);
            b0 = _mm256_fmadd_ps(v, k0, b0); b1 = _mm256_fmadd_ps(v, k1, b1);
            b2 = _mm256_fmadd_ps(v, k2, b2); b3 = _mm256_fmadd_ps(v, k3, b3);
        }
        float *o = conv + p * CH;
        _mm256_storeu_ps(o, a0); _mm256_storeu_ps(o + 8, a1);
        _mm256_storeu_ps(o + 16, a2); _mm256_storeu_ps(o + 24, a3);
        o = conv + q * CH;  /* the same position again (and values) after the last odd one */
        _mm256_storeu_ps(o, b0); _mm256_storeu_ps(o + 8, b1);
        _mm256_storeu_ps(o + 16, b2); _mm256_storeu_ps(o + 24, b3);
    }
}

void conv1_pool_forward(const uint8_t *pixels /* [n][784] */, const float *kernels,
                        const float *bias, float scale, int n,
                        float *relu /* [n][169][CH] */, uint8_t *argmax /* [n][169][CH] */) {
    #pragma omp parallel for schedule(static)
    for (int image = 0; image < n; image++) {
        float padded[31 * 31], conv[729 * CH];
        int32_t window[CH];
        const __m256 lowest = _mm256_set1_ps(-__builtin_inff()), zero = _mm256_setzero_ps();
        pad_and_scale(pixels + (size_t)image * 784, scale, padded);
        conv1_image(padded, kernels, conv);
        float *out = relu + (size_t)image * 169 * CH;
        uint8_t *arg = argmax + (size_t)image * 169 * CH;
        for (int i = 0; i < 13; i++) {
            for (int j = 0; j < 13; j++) {
                for (int c = 0; c < CH; c += 8) {
                    __m256 best = lowest;
                    __m256 which = _mm256_setzero_ps();
                    for (int w = 0; w < 9; w++) {
                        __m256 v = _mm256_loadu_ps(
                            conv + ((2 * i + w / 3) * 27 + 2 * j + w % 3) * CH + c);
                        __m256 take = _mm256_or_ps(_mm256_cmp_ps(v, best, _CMP_GT_OQ),
                                                   _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
                        best = _mm256_blendv_ps(best, v, take);
                        which = _mm256_blendv_ps(
                            which, _mm256_castsi256_ps(_mm256_set1_epi32(w)), take);
                    }
                    __m256 biased = _mm256_add_ps(best, _mm256_loadu_ps(bias + c));
                    _mm256_storeu_ps(out + (i * 13 + j) * CH + c, _mm256_max_ps(biased, zero));
                    _mm256_storeu_si256((__m256i *)(window + c), _mm256_castps_si256(which));
                }
                for (int c = 0; c < CH; c++) arg[(i * 13 + j) * CH + c] = (uint8_t)window[c];
            }
        }
    }
}

/* Three taps' kernel gradients at once: 12 accumulators over the 729 positions. */
static void kernel_gradient_taps(const float *padded, const float *grad27, int first,
                                 int count, float *kernel_grad) {
    __m256 acc[3][4];
    int at[3];
    for (int u = 0; u < 3; u++) {
        int t = first + (u < count ? u : 0);
        at[u] = (t / 5) * 31 + t % 5;
        for (int c = 0; c < 4; c++) acc[u][c] = _mm256_setzero_ps();
    }
    for (int y = 0; y < 27; y++) {
        for (int x = 0; x < 27; x++) {
            const float *g = grad27 + (y * 27 + x) * CH;
            __m256 g0 = _mm256_loadu_ps(g), g1 = _mm256_loadu_ps(g + 8);
            __m256 g2 = _mm256_loadu_ps(g + 16), g3 = _mm256_loadu_ps(g + 24);
            const float *window = padded + y * 31 + x;
            for (int u = 0; u < 3; u++) {
                __m256 v = _mm256_broadcast_ss(window + at[u]);
                acc[u][0] = _mm256_fmadd_ps(v, g0, acc[u][0]);
                acc[u][1] = _mm256_fmadd_ps(v, g1, acc[u][1]);
                acc[u][2] = _mm256_fmadd_ps(v, g2, acc[u][2]);
                acc[u][3] = _mm256_fmadd_ps(v, g3, acc[u][3]);
            }
        }
    }
    for (int u = 0; u < count; u++)
        for (int c = 0; c < 4; c++) {
            float *d = kernel_grad + (first + u) * CH + c * 8;
            _mm256_storeu_ps(d, _mm256_add_ps(_mm256_loadu_ps(d), acc[u][c]));
        }
}

/* grad: the loss's gradient at the ReLU's output. Each thread adds into its own row of
   kernel_grad [threads][TAPS][CH] and bias_grad [threads][CH] (zeroed by the caller), in a
   fixed order, so the result depends only on the thread count. */
void conv1_pool_backward(const uint8_t *pixels, const float *grad, const float *relu,
                         const uint8_t *argmax, float scale, int n,
                         float *kernel_grad, float *bias_grad) {
    #pragma omp parallel
    {
        float *my_kernel_grad = kernel_grad + omp_get_thread_num() * TAPS * CH;
        float *my_bias_grad = bias_grad + omp_get_thread_num() * CH;
        float padded[31 * 31], grad27[729 * CH], masked[CH];
        int offset[9];
        const __m256 zero = _mm256_setzero_ps();
        __m256 bias_sum[4] = {zero, zero, zero, zero};
        for (int w = 0; w < 9; w++) offset[w] = ((w / 3) * 27 + w % 3) * CH;
        #pragma omp for schedule(static)
        for (int image = 0; image < n; image++) {
            const float *g = grad + (size_t)image * 169 * CH, *r = relu + (size_t)image * 169 * CH;
            const uint8_t *arg = argmax + (size_t)image * 169 * CH;
            pad_and_scale(pixels + (size_t)image * 784, scale, padded);
            memset(grad27, 0, sizeof grad27);
            for (int i = 0; i < 13; i++) {
                for (int j = 0; j < 13; j++) {
                    int p = (i * 13 + j) * CH;
                    for (int c = 0; c < 4; c++) {
                        __m256 on = _mm256_cmp_ps(_mm256_loadu_ps(r + p + c * 8), zero, _CMP_GT_OQ);
                        __m256 v = _mm256_and_ps(on, _mm256_loadu_ps(g + p + c * 8));
                        bias_sum[c] = _mm256_add_ps(bias_sum[c], v);
                        _mm256_storeu_ps(masked + c * 8, v);
                    }
                    float *window = grad27 + ((2 * i) * 27 + 2 * j) * CH;
                    for (int c = 0; c < CH; c++) window[offset[arg[p + c]] + c] += masked[c];
                }
            }
            for (int t = 0; t < TAPS; t += 3)
                kernel_gradient_taps(padded, grad27, t, TAPS - t < 3 ? TAPS - t : 3,
                                     my_kernel_grad);
        }
        for (int c = 0; c < 4; c++) _mm256_storeu_ps(my_bias_grad + c * 8, bias_sum[c]);
    }
}
