/*
 * The native reference of `deno task bench`: a Llama forward pass in C, f32, in llama2.c's shape
 * (weights apart from run state, buffers allocated once, matmuls parallelised with OpenMP), on
 * the same llama2.c checkpoint as the WebGPU run. It prefills a prompt token by token, then
 * decodes greedily, and prints one JSON line with the decode rate.
 *
 *   cc -O3 -march=native -fopenmp llama.c -lm -o llama && OMP_NUM_THREADS=2 ./llama MODEL.bin 32
 */
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct { int dim, hidden, layers, heads, kv_heads, vocab, seq_len; } Config;

typedef struct {
  float *embedding, *rms_att, *wq, *wk, *wv, *wo, *rms_ffn, *w1, *w2, *w3, *rms_final, *wcls;
} Weights;

typedef struct {
  float *x, *xb, *xb2, *hb, *hb2, *q, *k, *v, *att, *logits, *key_cache, *value_cache;
} RunState;

static void *alloc(size_t n) {
  void *p = calloc(n, sizeof(float));
  if (!p) { fprintf(stderr, "out of memory\n"); exit(1); }
  return p;
}

static void map_weights(Weights *w, const Config *c, float *p, int shared) {
  size_t hd = c->dim / c->heads, L = c->layers, dim = c->dim, kv = c->kv_heads * hd;
  w->embedding = p; p += (size_t)c->vocab * dim;
  w->rms_att = p; p += L * dim;
  w->wq = p; p += L * dim * dim;
  w->wk = p; p += L * dim * kv;
  w->wv = p; p += L * dim * kv;
  w->wo = p; p += L * dim * dim;
  w->rms_ffn = p; p += L * dim;
  w->w1 = p; p += L * dim * c->hidden;
  w->w2 = p; p += L * c->hidden * dim;
  w->w3 = p; p += L * dim * c->hidden;
  w->rms_final = p; p += dim;
  p += c->seq_len * hd; /* freq_cis_real (unused: RoPE is computed) */
  p += c->seq_len * hd; /* freq_cis_imag */
  w->wcls = shared ? w->embedding : p;
}

static void rmsnorm(float *o, const float *x, const float *weight, int n) {
  float ss = 0.0f;
  for (int j = 0; j < n; j++) ss += x[j] * x[j];
  ss = 1.0f / sqrtf(ss / n + 1e-5f);
  for (int j = 0; j < n; j++) o[j] = weight[j] * (ss * x[j]);
}

static void softmax(float *x, int n) {
  float max = x[0], sum = 0.0f;
  for (int i = 1; i < n; i++) if (x[i] > max) max = x[i];
  for (int i = 0; i < n; i++) { x[i] = expf(x[i] - max); sum += x[i]; }
  for (int i = 0; i < n; i++) x[i] /= sum;
}

/* W (d,n) @ x (n,) -> xout (d,): the time goes here. */
static void matmul(float *xout, const float *x, const float *w, int n, int d) {
  int i;
#pragma omp parallel for private(i)
  for (i = 0; i < d; i++) {
    float val = 0.0f;
    const float *row = w + (size_t)i * n;
    for (int j = 0; j < n; j++) val += row[j] * x[j];
    xout[i] = val;
  }
}

static float *forward(const Config *c, const Weights *w, RunState *s, int token, int pos) {
  int dim = c->dim, hd = dim / c->heads, kv_dim = c->kv_heads * hd, group = c->heads / c->kv_heads;
  memcpy(s->x, w->embedding + (size_t)token * dim, dim * sizeof(float));
  for (int l = 0; l < c->layers; l++) {
    rmsnorm(s->xb, s->x, w->rms_att + l * dim, dim);
    size_t cache = (size_t)l * c->seq_len * kv_dim;
    s->k = s->key_cache + cache + (size_t)pos * kv_dim;
    s->v = s->value_cache + cache + (size_t)pos * kv_dim;
    matmul(s->q, s->xb, w->wq + (size_t)l * dim * dim, dim, dim);
    matmul(s->k, s->xb, w->wk + (size_t)l * dim * kv_dim, dim, kv_dim);
    matmul(s->v, s->xb, w->wv + (size_t)l * dim * kv_dim, dim, kv_dim);
    for (int i = 0; i < dim; i += 2) {
      float freq = 1.0f / powf(10000.0f, (float)(i % hd) / (float)hd);
      float fcr = cosf(pos * freq), fci = sinf(pos * freq);
      for (int v = 0; v < (i < kv_dim ? 2 : 1); v++) {
        float *vec = v == 0 ? s->q : s->k;
        float v0 = vec[i], v1 = vec[i + 1];
        vec[i] = v0 * fcr - v1 * fci;
        vec[i + 1] = v0 * fci + v1 * fcr;
      }
    }
    int h;
#pragma omp parallel for private(h)
    for (h = 0; h < c->heads; h++) {
      const float *q = s->q + h * hd;
      float *att = s->att + (size_t)h * c->seq_len;
      for (int t = 0; t <= pos; t++) {
        const float *k = s->key_cache + cache + (size_t)t * kv_dim + (h / group) * hd;
        float score = 0.0f;
        for (int i = 0; i < hd; i++) score += q[i] * k[i];
        att[t] = score / sqrtf((float)hd);
      }
      softmax(att, pos + 1);
      float *xb = s->xb + h * hd;
      memset(xb, 0, hd * sizeof(float));
      for (int t = 0; t <= pos; t++) {
        const float *v = s->value_cache + cache + (size_t)t * kv_dim + (h / group) * hd;
        for (int i = 0; i < hd; i++) xb[i] += att[t] * v[i];
      }
    }
    matmul(s->xb2, s->xb, w->wo + (size_t)l * dim * dim, dim, dim);
    for (int i = 0; i < dim; i++) s->x[i] += s->xb2[i];
    rmsnorm(s->xb, s->x, w->rms_ffn + l * dim, dim);
    matmul(s->hb, s->xb, w->w1 + (size_t)l * dim * c->hidden, dim, c->hidden);
    matmul(s->hb2, s->xb, w->w3 + (size_t)l * dim * c->hidden, dim, c->hidden);
    for (int i = 0; i < c->hidden; i++) {
      float val = s->hb[i];
      s->hb[i] = val * (1.0f / (1.0f + expf(-val))) * s->hb2[i];
    }
    matmul(s->xb, s->hb, w->w2 + (size_t)l * dim * c->hidden, c->hidden, dim);
    for (int i = 0; i < dim; i++) s->x[i] += s->xb[i];
  }
  rmsnorm(s->x, s->x, w->rms_final, dim);
  matmul(s->logits, s->x, w->wcls, dim, c->vocab);
  return s->logits;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: llama MODEL.bin DECODE_TOKENS [PROMPT_TOKENS]\n"); return 2; }
  int decode = atoi(argv[2]), prompt = argc > 3 ? atoi(argv[3]) : 16;
  int fd = open(argv[1], O_RDONLY);
  if (fd < 0) { perror(argv[1]); return 1; }
  struct stat st;
  fstat(fd, &st);
  Config c;
  if (read(fd, &c, sizeof c) != sizeof c) { fprintf(stderr, "short header\n"); return 1; }
  int shared = c.vocab > 0;
  c.vocab = abs(c.vocab);
  float *data = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
  if (data == MAP_FAILED) { perror("mmap"); return 1; }
  Weights w;
  map_weights(&w, &c, data + sizeof c / sizeof(float), shared);
  int kv_dim = c.kv_heads * (c.dim / c.heads);
  RunState s = {
    .x = alloc(c.dim), .xb = alloc(c.dim), .xb2 = alloc(c.dim), .hb = alloc(c.hidden),
    .hb2 = alloc(c.hidden), .q = alloc(c.dim), .att = alloc((size_t)c.heads * c.seq_len),
    .logits = alloc(c.vocab), .key_cache = alloc((size_t)c.layers * c.seq_len * kv_dim),
    .value_cache = alloc((size_t)c.layers * c.seq_len * kv_dim),
  };
  int token = 1, pos = 0;
  for (; pos < prompt; pos++) forward(&c, &w, &s, 1 + (pos * 7) % 300, pos);
  forward(&c, &w, &s, token, pos++); /* warm-up decode step */
  double started = now();
  for (int i = 0; i < decode && pos < c.seq_len; i++, pos++) {
    float *logits = forward(&c, &w, &s, token, pos);
    int best = 0;
    for (int j = 1; j < c.vocab; j++) if (logits[j] > logits[best]) best = j;
    token = best;
  }
  double seconds = now() - started;
  printf("{\"decodeTokens\": %d, \"seconds\": %.6f, \"tokPerS\": %.3f}\n", decode, seconds,
         decode / seconds);
  return 0;
}
