# Samples the demo model under several settings and reports, per setting, the share of sampled
# tokens drawn from the untrained tail (raw log-prob < -10: a tail token has ~0.18/41k = e^-12.3),
# the mean raw log-prob per token and one sample text (models/kjv-mamba-4x192/README.md).
# Usage: mamba-server --generation-config none --grpc-port -1 &
#        python3 measure_defaults.py [HTTP_PORT]   (default 8000)
import json, sys, urllib.request
port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
prompts = ["And God said", "In the beginning", "And it came to pass", "The LORD is my shepherd",
           "Blessed are", "And Jesus answered"]
settings = [
    ("T=1 (OpenAI default, nothing else)", {}),
    ("T=1 top_p=0.9", {"top_p": 0.9}),
    ("T=1 top_k=40", {"top_k": 40}),
    ("T=1 min_p=0.05", {"min_p": 0.05}),
    ("T=0.8 min_p=0.05", {"temperature": 0.8, "min_p": 0.05}),
    ("T=0.8 top_k=40", {"temperature": 0.8, "top_k": 40}),
    ("T=1 min_p=0.1", {"min_p": 0.1}),
]
for name, extra in settings:
    tail = total = 0
    lp_sum = 0.0
    sample = None
    for i, p in enumerate(prompts):
        for seed in range(4):
            body = {"prompt": p, "max_tokens": 48, "logprobs": 0, "seed": 1000 * i + seed,
                    "temperature": 1.0, **extra}
            req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions",
                                         data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
            r = json.load(urllib.request.urlopen(req))
            lps = r["choices"][0]["logprobs"]["token_logprobs"]
            tail += sum(1 for x in lps if x < -10)
            total += len(lps)
            lp_sum += sum(lps)
            if sample is None:
                sample = p + r["choices"][0]["text"]
    print(f"{name:38s} tail {100.0 * tail / total:5.1f}%  mean logprob {lp_sum / total:6.2f}")
    print("   ", repr(sample[:160]))
