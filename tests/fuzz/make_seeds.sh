#!/usr/bin/env bash
# Writes the seed corpora of the request fuzzers: tests/fuzz/corpus/http_request/ (raw HTTP/1.1
# requests for every endpoint, valid and edge cases) and tests/fuzz/corpus/grpc_request/ (a
# selector byte, then a protobuf message encoded by protoc from text format; see the header of
# grpc_request_fuzz.cc). Regression seeds for fixed crashes (regress_*) are kept as they are.
# Usage: bash tests/fuzz/make_seeds.sh   (needs protoc)
set -euo pipefail
cd "$(dirname "$0")/../.."
http=tests/fuzz/corpus/http_request
grpc=tests/fuzz/corpus/grpc_request
mkdir -p "$http" "$grpc"
find "$http" "$grpc" -type f ! -name 'regress_*' -delete

# req NAME METHOD TARGET BODY [HEADER...]: one request with Content-Length when it has a body.
req() {
  local name=$1 method=$2 target=$3 body=$4
  shift 4
  {
    printf '%s %s HTTP/1.1\r\nHost: localhost\r\n' "$method" "$target"
    for h in "$@"; do printf '%s\r\n' "$h"; done
    if [ -n "$body" ]; then
      printf 'Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s' "${#body}" "$body"
    else
      printf '\r\n'
    fi
  } >"$http/$name"
}

req health GET /health ''
req metrics GET /metrics ''
req models GET /v1/models ''
req model GET /v1/models/kjv-mamba-4x192 ''
req model_unknown GET /v1/models/gpt-4 ''
req not_found GET /v2/nothing ''
req wrong_method GET /v1/completions ''
req auth_key POST /tokenize '{"prompt":"In the beginning"}' 'Authorization: Bearer fuzz-key'
req auth_wrong GET /v1/models '' 'Authorization: bearer  wrong'
req query POST '/v1/completions?stream=true&x=%20' '{"prompt":"And God said","max_tokens":4}'
req cmpl_text POST /v1/completions '{"model":"kjv-mamba-4x192","prompt":"In the beginning God","max_tokens":8,"temperature":0}'
req cmpl_strings POST /v1/completions '{"prompt":["Let there be light","and there was"],"n":2,"stop":["\n","."],"seed":-7}'
req cmpl_ids POST /v1/completions '{"prompt":[510,3220,273,253],"max_tokens":3,"stop_token_ids":[0,187]}'
req cmpl_id_lists POST /v1/completions '{"prompt":[[510,3220],[50279,50280]],"best_of":1,"logit_bias":{}}'
req cmpl_stream POST /v1/completions '{"prompt":"The Lord is my shepherd","stream":true,"stream_options":{"include_usage":true},"logprobs":3,"echo":true}'
req cmpl_sampling POST /v1/completions '{"prompt":"Blessed are","temperature":0.7,"top_p":0.9,"top_k":-1,"min_p":0.05,"presence_penalty":0.5,"frequency_penalty":-0.5,"repetition_penalty":1.1,"min_tokens":2,"ignore_eos":true,"skip_special_tokens":false,"timeout":2.5,"user":"u","logprobs":true}'
req cmpl_bad_ranges POST /v1/completions '{"prompt":"x","n":5,"max_tokens":2147483647,"temperature":-1,"logprobs":21,"top_p":1e300}'
req cmpl_refused POST /v1/completions '{"prompt":"x","suffix":"y","best_of":3,"model":"other"}'
req cmpl_wrong_types POST /v1/completions '{"prompt":[1,"a"],"max_tokens":"8","stream":1,"stop":[1],"seed":1.5}'
req cmpl_special POST /v1/completions '{"prompt":"<|endoftext|>caf\u00e9 \ud83d\ude00 \u0000","echo":true,"max_tokens":1}'
req gen POST /generate '{"inputs":"And the earth was without form","parameters":{"max_new_tokens":5,"details":true,"decoder_input_details":true,"return_full_text":true}}'
req gen_sample POST /generate '{"inputs":"void","parameters":{"do_sample":true,"temperature":0.8,"top_k":40,"top_p":0.95,"seed":42,"top_n_tokens":5,"stop":["\n",""],"repetition_penalty":1.2,"frequency_penalty":0.1,"ignore_eos":false,"timeout":1}}'
req gen_bad POST /generate '{"inputs":"x","parameters":{"temperature":0,"best_of":2,"max_new_tokens":0,"top_n_tokens":99}}'
req gen_stream POST /generate_stream '{"inputs":"darkness was upon","parameters":null}'
req gen_no_inputs POST /generate_stream '{"parameters":{"details":true}}'
req tokenize POST /tokenize '{"prompt":"In the beginning God created the heaven and the earth."}'
req detokenize POST /detokenize '{"tokens":[510,3220,2047,0,50276,50279,-1]}'
req detokenize_ok POST /detokenize '{"tokens":[510,3220,2047]}'
req not_object POST /tokenize '[{"prompt":"x"}]'
req bad_json POST /v1/completions '{"prompt": "unterminated'
req deep POST /generate "$(printf '%.0s[' {1..70})"
req long_ids POST /v1/completions "{\"prompt\":[$(seq -s, 1 600)]}"
req expect POST /detokenize '{"tokens":[1,2,3]}' 'Expect: 100-continue' 'Connection: keep-alive'
req cmpl_compat POST /v1/completions '{"model":"https://example.org/endpoint","prompt":[510,50277,50279],"logit_bias":{"510":100,"50279":-100,"0":0.5},"n":2,"best_of":3,"user":"u-1","logprobs":1}'
req cmpl_bias_bad POST /v1/completions '{"prompt":"x","logit_bias":{"abc":1,"-1":2,"50280":3,"5":101,"6":"1"},"best_of":0}'
req tgi_info GET /info ''
req tgi_root POST / '{"inputs":"In the beginning","parameters":{"max_new_tokens":3,"details":true},"stream":false}'
req tgi_root_stream POST / '{"inputs":"And God said","stream":true,"parameters":{"max_new_tokens":2}}'
req tgi_root_bad POST / '{"inputs":"x","stream":"yes"}'
req tgi_best_of POST /generate '{"inputs":"And God said","parameters":{"max_new_tokens":3,"best_of":2,"do_sample":true,"seed":5,"details":true}}'
req tgi_best_of_greedy POST /generate '{"inputs":"And","parameters":{"max_new_tokens":2,"best_of":2}}'
req tgi_stream_prefill POST /generate_stream '{"inputs":"And","parameters":{"max_new_tokens":2,"decoder_input_details":true}}'
req cmpl_score POST /v1/completions '{"prompt":[[510,3220,273],"And God said"],"max_tokens":0,"echo":true,"logprobs":1,"temperature":0,"seed":1234}'
req cmpl_prompt_logprobs POST /v1/completions '{"prompt":"Let there be light","max_tokens":2,"prompt_logprobs":3,"stream":true,"echo":true,"logprobs":2}'
req cmpl_score_bad POST /v1/completions '{"prompt":"x","max_tokens":0,"prompt_logprobs":-1,"logprobs":0}'
req gen_prefill POST /generate '{"inputs":"And God said","parameters":{"max_new_tokens":1,"details":true,"decoder_input_details":true}}'
# Chunked body, HTTP/1.0, and two pipelined requests.
printf 'POST /tokenize HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n{"prom\r\nb;ext=1\r\npt":"hi"}\n\r\n0\r\nTrailer: x\r\n\r\n' >"$http/chunked"
printf 'GET /health HTTP/1.0\r\n\r\n' >"$http/http10"
printf 'GET /health HTTP/1.1\r\nHost: h\r\n\r\nPOST /detokenize HTTP/1.1\r\nHost: h\r\nContent-Length: 14\r\n\r\n{"tokens":[1]}' >"$http/pipelined"
printf 'POST /tokenize HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n{}' >"$http/huge_length"

# grpc SELECTOR MESSAGE NAME TEXTPROTO: SELECTOR's low 2 bits pick the message (0/1 generate,
# 2 tokenize, 3 detokenize), bits 2-3 the slice count - 1.
grpc() {
  local sel=$1 msg=$2 name=$3 text=$4
  { printf "\\x$sel"; printf '%s' "$text" |
      protoc -Iproto --encode="mamba.v1.$msg" proto/mamba/v1/mamba.proto; } >"$grpc/$name"
}
grpc 00 GenerateRequest gen_text 'text: "In the beginning God" stopping { max_new_tokens: 8 }'
grpc 04 GenerateRequest gen_ids 'token_ids { ids: [510, 3220, 273] } n: 2 echo: true'
grpc 08 GenerateRequest gen_full 'text: "Let there be light" sampling { temperature: 0.7 top_k: 40 top_p: 0.9 min_p: 0.05 repetition_penalty: 1.1 presence_penalty: 0.5 frequency_penalty: -0.5 seed: 42 } stopping { max_new_tokens: 16 min_new_tokens: 2 stop: ["\n", "."] stop_token_ids: [0] ignore_eos: true } logprobs: true top_logprobs: 5 n: 1 echo: true skip_special_tokens: false'
grpc 0c GenerateRequest gen_bad_ranges 'token_ids { ids: [50280, -1] } sampling { temperature: -1 top_p: 0 } stopping { max_new_tokens: 1073741824 } top_logprobs: 21'
grpc 01 GenerateRequest gen_n_over_slots 'token_ids { ids: [1] } n: 5'
grpc 01 GenerateRequest gen_n_negative 'token_ids { ids: [1] } n: -3'
grpc 00 GenerateRequest gen_no_prompt 'stopping { max_new_tokens: 1 }'
grpc 00 GenerateRequest gen_empty_text 'text: ""'
grpc 00 GenerateRequest gen_echo_special 'text: "<|endoftext|>caf\303\251" echo: true skip_special_tokens: true'
grpc 04 GenerateRequest gen_long "token_ids { ids: [$(seq -s, 1 600)] }"
grpc 00 GenerateRequest gen_many_stops 'token_ids { ids: [1] } stopping { stop: ["a","b","c","d","e","f","g","h","i","j","k","l","m","n","o","p","q"] }'
grpc 02 TokenizeRequest tok 'text: "In the beginning God created the heaven and the earth." return_tokens: true'
grpc 06 TokenizeRequest tok_plain 'text: "  caf\303\251 \360\237\230\200\n\t<|endoftext|>"'
grpc 02 TokenizeRequest tok_empty ''
grpc 03 DetokenizeRequest detok 'token_ids: [510, 3220, 2047, 0]'
grpc 07 DetokenizeRequest detok_skip 'token_ids: [0, 510, 0] skip_special_tokens: true'
grpc 03 DetokenizeRequest detok_bad 'token_ids: [50279, 1048576, -1]'
grpc 00 GenerateRequest gen_score 'token_ids { ids: [510, 3220, 273] } stopping { max_new_tokens: 0 } prompt_logprobs: 2'
grpc 04 GenerateRequest gen_score_stream 'text: "And God said" stopping { max_new_tokens: 2 } prompt_logprobs: 0 session_id: "fuzz-score"'
grpc 01 GenerateRequest gen_score_bad 'text: "x" stopping { max_new_tokens: 0 } prompt_logprobs: -5'
# Raw bytes protoc cannot write: invalid UTF-8 in a string field, and no protobuf at all.
grpc 00 GenerateRequest gen_compat 'token_ids { ids: [510, 50277, 50279] } sampling { temperature: 0.9 logit_bias { key: 510 value: 100 } logit_bias { key: 50279 value: -100 } } n: 2 best_of: 3 echo: true'
grpc 05 GenerateRequest gen_compat_bad 'text: "x" sampling { logit_bias { key: 50280 value: 1 } logit_bias { key: -1 value: 200 } } n: 2 best_of: 1'
printf '\x00\x0a\x04ba\xc3\x28' >"$grpc/gen_bad_utf8"
printf '\x02\x0a\x02\xff\xfe' >"$grpc/tok_bad_utf8"
printf '\x01\x0a\xff\xff\xff\xff\xff\xff' >"$grpc/garbage"
printf '\x00' >"$grpc/empty_generate"
echo "make_seeds: $(ls "$http" | wc -l) http_request, $(ls "$grpc" | wc -l) grpc_request seeds"
