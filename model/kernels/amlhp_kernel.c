/* IoT-AMLHP inference, one packet at a time, every op vectorised over the tokens.
 *
 * Why this layout: the encoder's attention has 8 heads of dimension 4 over 32 tokens, far
 * too small for a GEMM library, where torch reaches about 2 G multiply-adds/s. Kept
 * feature-major (X[d]: one vector of all tokens per feature), every step is a vertical
 * SIMD op: projections broadcast one weight onto a row of tokens, the attention scores are
 * built transposed (S[s]: key s against every query) so that the softmax over s is an
 * element-wise max/exp/sum down the rows, and the layer norm over the features of each
 * token is a sum down the rows too. No horizontal reduction is left on the hot path.
 *
 * SIMD comes from GCC/Clang vector extensions (a row of TP floats, chunks of 16), which the
 * compiler lowers to whatever the build targets: AVX-512 zmm, AVX2 ymm pairs, or SSE/NEON
 * for the generic build; amlhp.model.native_net picks the variant at run time. The sizes
 * are compile-time constants (a header generated from the artifact's weights), so every
 * loop has a fixed trip count. The extractors use the per-tap tables of
 * amlhp.model.numpy_net, with every branch's channels padded to a multiple of 16 (zero
 * columns) so that a branch is whole vectors. The exponential is Cephes' single-precision
 * polynomial (relative error about 1e-7).
 */
#include <stdint.h>
#include <string.h>

#include "amlhp_sizes.h"

/* sizes the header gives: C_x (padded channels, a multiple of 16), NB_x, WIN_x, LO_x, L_x,
 * TOK_x (tokens of a modality, padded to 16: TOKP_x), MASK_x for x in H, P; D, HEADS,
 * FFN, LAYERS, HIDDEN, CLASSES, T (real tokens), TP (a power of two >= T), SIGNATURE */
#define HD (D / HEADS)
#define INLINE static inline __attribute__((always_inline))

#ifndef VW
#define VW 4 /* floats per native vector: 16 (AVX-512), 8 (AVX2), 4 (generic), set by -DVW */
#endif
#if TP < VW
#undef VW
#define VW TP
#endif
#define NV (TP / VW)

typedef float vec __attribute__((vector_size(VW * 4)));              /* native width */
typedef float vecu __attribute__((vector_size(VW * 4), aligned(4))); /* unaligned load */
typedef int32_t ivec __attribute__((vector_size(VW * 4)));
typedef vec row_t[NV]; /* one feature of every token: NV native vectors */

/* weights, in the order amlhp.model.native_net packs them */
enum {
    W_TABLES_H, W_PROJ_W_H, W_PROJ_B_H, W_CONST_H,
    W_TABLES_P, W_PROJ_W_P, W_PROJ_B_P, W_CONST_P,
    W_HEAD0_W, W_HEAD0_B, W_HEAD3_W, W_HEAD3_B,
    W_LAYERS /* then L_COUNT per layer */
};
enum {
    L_IN_W, L_IN_B, L_OUT_W, L_OUT_B, L_W1, L_B1, L_W2, L_B2, L_N1G, L_N1B, L_N2G, L_N2B,
    L_COUNT
};

/* Compares and conversions are done on native-width vectors: on wider generic vectors
 * GCC falls back to scalar code for them. */
INLINE vec loadv(const float *p) { return *(const vecu *)p; }
INLINE vec maxv(vec a, vec b) {
    ivec m = a > b;
    return (vec)(((ivec)a & m) | ((ivec)b & ~m));
}
/* e^x for x <= 0 (scores after their maximum is subtracted), round-to-nearest reduction */
INLINE vec exp_neg(vec x) {
    x = maxv(x, (vec){} - 87.0f);
    ivec ni = __builtin_convertvector(x * 1.44269504088896341f - 0.5f, ivec);
    vec n = __builtin_convertvector(ni, vec); /* truncation: rounds x/ln2 to nearest */
    vec r = x - n * 0.693359375f + n * 2.12194440e-4f;
    vec p = (vec){} + 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    vec y = p * r * r + r + 1.0f;
    return y * (vec)((ni + 127) << 23);
}
/* One modality's extractor: bytes x[L] to tokens tok0.. of X[d], for d < D.
 * tables: WIN x 257 x (NB + 1) * C (row 256: a tap outside the sequence), branch b in
 * columns b*C.., the residual last; proj_w: (NB * C) x TOKP; proj_b: TOKP. */
INLINE void extract(const uint8_t *x, const float *tables, const float *proj_w,
                    const float *proj_b, row_t X[D], const int L, const int C, const int NB,
                    const int WIN, const int LO, const int TOK, const int TOKP,
                    const int tok0) {
    enum { MAXV = 1024 / VW }; /* chunks of a table row, at most 1,024 columns (checked) */
    const int RV = (NB + 1) * C / VW, CV = C / VW, POOL = L / D;
    for (int d = 0; d < D; d++) {
        vec m[MAXV];
        for (int q = 0; q < POOL; q++) {
            vec z[MAXV];
            const int l = d * POOL + q;
            for (int r = 0; r < RV; r++) z[r] = (vec){};
            for (int j = 0; j < WIN; j++) {
                const int at = l + j - LO;
                const int v = (at >= 0 && at < L) ? x[at] : 256;
                const float *row = tables + ((size_t)j * 257 + (size_t)v) * (RV * VW);
                for (int r = 0; r < RV; r++) z[r] += loadv(row + VW * r);
            }
            for (int r = 0; r < RV; r++) m[r] = q == 0 ? z[r] : maxv(m[r], z[r]);
        }
        vec acc[256 / VW];
        for (int o = 0; o < TOKP / VW; o++) acc[o] = loadv(proj_b + VW * o);
        for (int b = 0; b < NB; b++)
            for (int cv = 0; cv < CV; cv++) {
                const vec y = maxv(m[b * CV + cv], m[NB * CV + cv]);
                for (int lane = 0; lane < VW; lane++) {
                    const float *w = proj_w + (size_t)((b * CV + cv) * VW + lane) * TOKP;
                    for (int o = 0; o < TOKP / VW; o++) acc[o] += y[lane] * loadv(w + VW * o);
                }
            }
        float *xd = (float *)X[d];
        memcpy(xd + tok0, acc, (size_t)TOK * sizeof(float));
    }
}

/* out[o] = b[o] + sum_i w[o][i] in[i], w row-major (OUT x IN); four outputs at a time so
 * that each input row is loaded once for four FMAs, the accumulators in registers */
INLINE void linear(const float *w, const float *b, const row_t *in, row_t *out,
                   const int IN, const int OUT) {
    int o = 0;
    for (; o + 4 <= OUT; o += 4) {
        vec a[4][NV];
        for (int u = 0; u < 4; u++)
            for (int c = 0; c < NV; c++) a[u][c] = (vec){} + b[o + u];
        const float *w0 = w + (size_t)o * IN;
        for (int i = 0; i < IN; i++)
            for (int c = 0; c < NV; c++) {
                const vec v = in[i][c];
                for (int u = 0; u < 4; u++) a[u][c] += w0[u * IN + i] * v;
            }
        for (int u = 0; u < 4; u++)
            for (int c = 0; c < NV; c++) out[o + u][c] = a[u][c];
    }
    for (; o < OUT; o++) {
        vec a[NV];
        for (int c = 0; c < NV; c++) a[c] = (vec){} + b[o];
        for (int i = 0; i < IN; i++)
            for (int c = 0; c < NV; c++) a[c] += w[(size_t)o * IN + i] * in[i][c];
        for (int c = 0; c < NV; c++) out[o][c] = a[c];
    }
}

/* X = LayerNorm(X + Y) over the D features of each token (eps 1e-5, biased variance) */
INLINE void add_norm(row_t X[D], const row_t Y[D], const float *g, const float *b) {
    vec mean[NV], var[NV], rstd[NV];
    for (int c = 0; c < NV; c++) mean[c] = var[c] = (vec){};
    for (int d = 0; d < D; d++)
        for (int c = 0; c < NV; c++) {
            X[d][c] += Y[d][c];
            mean[c] += X[d][c];
        }
    for (int c = 0; c < NV; c++) mean[c] *= 1.0f / D;
    for (int d = 0; d < D; d++)
        for (int c = 0; c < NV; c++) {
            const vec e = X[d][c] - mean[c];
            var[c] += e * e;
        }
    for (int c = 0; c < NV; c++)
        for (int t = 0; t < VW; t++)
            rstd[c][t] = 1.0f / __builtin_sqrtf(var[c][t] * (1.0f / D) + 1e-5f);
    for (int d = 0; d < D; d++)
        for (int c = 0; c < NV; c++) X[d][c] = (X[d][c] - mean[c]) * rstd[c] * g[d] + b[d];
}

/* lane s of a row: token s's value of that feature */
INLINE float lane(const row_t r, int s) { return ((const float *)r)[s]; }

/* Post-norm encoder layer (self-attention, ReLU feed-forward); queries pre-scaled. */
INLINE void encoder_layer(row_t X[D], const float *const *w) {
    row_t QKV[3 * D], A[D], Y[D], H[FFN];
    linear(w[L_IN_W], w[L_IN_B], (const row_t *)X, QKV, D, 3 * D);
    for (int h = 0; h < HEADS; h++) {
        const row_t *q = QKV + h * HD, *k = QKV + D + h * HD, *v = QKV + 2 * D + h * HD;
        row_t S[T]; /* S[s]: key s against every query */
        vec mx[NV], sum[NV], acc[HD][NV];
        for (int s = 0; s < T; s++)
            for (int c = 0; c < NV; c++) {
                vec e = lane(k[0], s) * q[0][c];
                for (int j = 1; j < HD; j++) e += lane(k[j], s) * q[j][c];
                S[s][c] = e;
                mx[c] = s == 0 ? e : maxv(mx[c], e);
            }
        for (int c = 0; c < NV; c++) sum[c] = (vec){};
        for (int j = 0; j < HD; j++)
            for (int c = 0; c < NV; c++) acc[j][c] = (vec){};
        for (int s = 0; s < T; s++)
            for (int c = 0; c < NV; c++) {
                const vec p = exp_neg(S[s][c] - mx[c]);
                sum[c] += p;
                for (int j = 0; j < HD; j++) acc[j][c] += lane(v[j], s) * p;
            }
        for (int c = 0; c < NV; c++) {
            const vec inv = 1.0f / sum[c];
            for (int j = 0; j < HD; j++) A[h * HD + j][c] = acc[j][c] * inv;
        }
    }
    linear(w[L_OUT_W], w[L_OUT_B], (const row_t *)A, Y, D, D);
    add_norm(X, (const row_t *)Y, w[L_N1G], w[L_N1B]);
    linear(w[L_W1], w[L_B1], (const row_t *)X, H, D, FFN);
    for (int f = 0; f < FFN; f++)
        for (int c = 0; c < NV; c++) H[f][c] = maxv(H[f][c], (vec){});
    linear(w[L_W2], w[L_B2], (const row_t *)H, Y, FFN, D);
    add_norm(X, (const row_t *)Y, w[L_N2G], w[L_N2B]);
}

/* X[d] tokens tok0..: a masked modality's constant (D x TOKP) tokens */
INLINE void copy_tokens(row_t X[D], const float *c, const int TOK, const int TOKP,
                        const int tok0) {
    for (int d = 0; d < D; d++) memcpy((float *)X[d] + tok0, c + d * TOKP, TOK * sizeof(float));
}

INLINE void forward_one(const float *const *w, const uint8_t *header, const uint8_t *payload,
                        float *logits) {
    row_t X[D];
    memset(X, 0, sizeof X);
    if (MASK_H) /* a masked modality: its constant tokens, the same for every packet */
        copy_tokens(X, w[W_CONST_H], TOK_H, TOKP_H, 0);
    else
        extract(header, w[W_TABLES_H], w[W_PROJ_W_H], w[W_PROJ_B_H], X, L_H, C_H, NB_H,
                WIN_H, LO_H, TOK_H, TOKP_H, 0);
    if (MASK_P)
        copy_tokens(X, w[W_CONST_P], TOK_P, TOKP_P, TOK_H);
    else
        extract(payload, w[W_TABLES_P], w[W_PROJ_W_P], w[W_PROJ_B_P], X, L_P, C_P, NB_P,
                WIN_P, LO_P, TOK_P, TOKP_P, TOK_H);
    for (int l = 0; l < LAYERS; l++) encoder_layer(X, w + W_LAYERS + l * L_COUNT);
    float mean[D], hidden[HIDDEN];
    for (int d = 0; d < D; d++) {
        float s = 0.0f;
        for (int t = 0; t < T; t++) s += lane(X[d], t);
        mean[d] = s * (1.0f / T);
    }
    const float *h0w = w[W_HEAD0_W], *h0b = w[W_HEAD0_B];
    for (int j = 0; j < HIDDEN; j++) {
        float s = h0b[j];
        for (int d = 0; d < D; d++) s += h0w[j * D + d] * mean[d];
        hidden[j] = s > 0.0f ? s : 0.0f;
    }
    const float *h3w = w[W_HEAD3_W], *h3b = w[W_HEAD3_B];
    for (int k = 0; k < CLASSES; k++) {
        float s = h3b[k];
        for (int j = 0; j < HIDDEN; j++) s += h3w[k * HIDDEN + j] * hidden[j];
        logits[k] = s;
    }
}

/* The sizes this library was built for, so that the loader can refuse a mismatch. */
int amlhp_signature(void) { return SIGNATURE; }

/* logits (n x CLASSES) for header (n x L_H) and payload (n x L_P) bytes */
void amlhp_forward(const float *const *w, const uint8_t *header, const uint8_t *payload,
                   int64_t n, float *logits) {
    for (int64_t i = 0; i < n; i++)
        forward_one(w, header + i * L_H, payload + i * L_P, logits + i * CLASSES);
}
