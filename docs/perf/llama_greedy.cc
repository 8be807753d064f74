// llama_greedy: feed token ids to a llama.cpp model, print the last prompt position's top
// log-probs and a greedy continuation as ids. For checking docs/perf/to_gguf.py's output against
// mamba-generate (docs/perf/llama_cpp_compare.sh builds it against a llama.cpp build; it is not
// part of MambaServe's build).
//   llama_greedy MODEL.gguf THREADS N_NEW ID,ID,... [LOGITS_OUT.f32]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "llama.h"

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: %s MODEL THREADS N_NEW ID,ID,... [LOGITS_OUT]\n", argv[0]);
    return 2;
  }
  const int threads = std::atoi(argv[2]), n_new = std::atoi(argv[3]);
  std::vector<llama_token> prompt;
  std::stringstream ss(argv[4]);
  for (std::string t; std::getline(ss, t, ',');) prompt.push_back(std::atoi(t.c_str()));
  llama_backend_init();
  llama_model_params mp = llama_model_default_params();
  llama_model* model = llama_load_model_from_file(argv[1], mp);
  if (!model) return 1;
  llama_context_params cp = llama_context_default_params();
  cp.n_ctx = prompt.size() + n_new + 8;
  cp.n_batch = cp.n_ubatch = prompt.size();
  cp.n_threads = cp.n_threads_batch = threads;
  llama_context* ctx = llama_new_context_with_model(model, cp);
  if (!ctx) return 1;
#ifdef LLAMA_GREEDY_OLD_API
  const int n_vocab = llama_n_vocab(model);
#else
  const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
#endif
  if (llama_decode(ctx, llama_batch_get_one(prompt.data(), prompt.size()))) return 1;
  std::vector<llama_token> out;
  for (int step = 0; step < n_new; ++step) {
    const float* logits = llama_get_logits_ith(ctx, -1);
    std::vector<int> idx(n_vocab);
    for (int i = 0; i < n_vocab; ++i) idx[i] = i;
    std::partial_sort(idx.begin(), idx.begin() + 5, idx.end(),
                      [&](int a, int b) { return logits[a] > logits[b]; });
    double sum = 0;  // log-softmax, to compare with mamba-generate --top-logprobs
    for (int i = 0; i < n_vocab; ++i) sum += std::exp(double(logits[i]) - logits[idx[0]]);
    const double lse = logits[idx[0]] + std::log(sum);
    if (step < 3) {
      std::printf("step %d top5 logprobs:", step);
      for (int k = 0; k < 5; ++k) std::printf(" %d:%.5f", idx[k], logits[idx[k]] - lse);
      std::printf("\n");
    }
    if (step == 0) {
      if (argc > 5) {
        FILE* f = std::fopen(argv[5], "wb");
        std::fwrite(logits, sizeof(float), n_vocab, f);
        std::fclose(f);
      }
    }
    llama_token next = idx[0];
    std::printf("step %d: %d (margin %.4f)\n", step, next, logits[idx[0]] - logits[idx[1]]);
    out.push_back(next);
    if (llama_decode(ctx, llama_batch_get_one(&next, 1))) return 1;
  }
  std::printf("greedy:");
  for (size_t i = 0; i < out.size(); ++i) std::printf("%s%d", i ? "," : " ", out[i]);
  std::printf("\n");
  llama_free(ctx);
  llama_free_model(model);
  llama_backend_free();
  return 0;
}
