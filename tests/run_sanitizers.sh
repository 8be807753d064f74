#!/usr/bin/env bash
# CI's sanitizer stages: the engine, server, client and integration tests under AddressSanitizer +
# UndefinedBehaviorSanitizer (build-asan), and the scheduler/engine-loop and front-end concurrency
# tests under ThreadSanitizer (build-tsan). Only the targets those tests need are built.
# Usage: bash tests/run_sanitizers.sh [asan|tsan|all]   (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
stage=${1:-all}
case "$stage" in asan | tsan | all) ;; *) echo "usage: $0 [asan|tsan|all]" >&2; exit 2 ;; esac

launcher=()
if command -v ccache >/dev/null; then
  # The cache run_all.sh uses; the sanitizer flags are part of every hash, so nothing collides.
  export CCACHE_DIR=${CCACHE_DIR:-/var/tmp/mamba-ccache} CCACHE_BASEDIR=$PWD CCACHE_NOHASHDIR=1
  export CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-8G}
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi

# ctest names; each is also the name of its target.
asan_tests=(
  dtype_test cpu_kernels_test int8_gemm_test quantized_checkpoint_test
  pytorch_bin_test checkpoint_bin_test lora_adapter_test lora_writer_test
  lora_kernel_test adapter_registry_test
  model_config_test checkpoint_test sampling_test draw_rule_test stop_matcher_test tokenizer_test
  cpu_backend_test generate_test kjv_model_test engine_test
  scheduler_test batch_loop_test decode_path_test state_store_test session_store_test lora_engine_test
  http_server_test http_errors_test http_sessions_test grpc_convert_test grpc_server_test
  sampling_defaults_test http_compat_test grpc_compat_test http_lora_test grpc_lora_test
  client_http_test client_generators_test client_loadgen_test
  client_server_test server_binary_test fault_test soak_test  # integration: the binaries below
  session_test session_cli_test lora_server_test
)
asan_binaries=(mamba-server mamba-client mamba-loadgen)
# Not grpc_server_test: Debian's gRPC and abseil are not TSan-instrumented, so the hand-offs
# between gRPC's threads (its callback reactors, ServerContext, interceptors) happen under locks
# TSan cannot see, and one run reports ~2000 races, nearly all in gRPC's inline headers; the only
# suppressions that silence them (any frame in libgrpc++) would also hide races in our handlers.
# The gRPC front end runs under ASan/UBSan; under TSan the engine loop is covered by engine_test
# and the HTTP front end (Boost.Asio/Beast, header-only, so fully instrumented) by its tests.
tsan_tests=(engine_test lora_engine_test adapter_registry_test http_server_test http_errors_test
  http_sessions_test)

# Reports go to files (one per process) so that those of the mamba-server processes the
# integration tests start, and often SIGKILL, are seen too; any file fails the stage.
common_opts="halt_on_error=1:print_stacktrace=1"

# -O1 -g1: quicker to build than -O2 -g and fast enough to run; line tables for the stacks;
# no NDEBUG, so asserts stay on.
configure() {  # dir sanitize [cmake args...]
  local dir=$1 sanitize=$2
  shift 2
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" -DMAMBA_CUDA=OFF -DMAMBA_BUILD_BENCHMARKS=OFF \
    -DMAMBA_SANITIZE="$sanitize" "${launcher[@]}" "$@"
}

run_tests() {  # dir test...
  local dir=$1
  shift
  local logs=$dir/sanitizer-logs regex
  rm -rf "$logs" && mkdir -p "$logs"
  regex="^($(IFS='|'; echo "$*"))\$"
  local rc=0
  ctest --test-dir "$dir" --output-on-failure -R "$regex" || rc=$?
  if compgen -G "$logs/*" >/dev/null; then
    echo "== sanitizer reports in $logs:" >&2
    for f in "$logs"/*; do echo "---- $f" >&2; cat "$f" >&2; done
    rc=1
  fi
  return $rc
}

run_asan() {
  local dir=build-asan
  configure "$dir" address,undefined
  cmake --build "$dir" -j"$(nproc)" --target "${asan_tests[@]}" "${asan_binaries[@]}"
  local logs=$PWD/$dir/sanitizer-logs
  ASAN_OPTIONS="$common_opts:detect_leaks=1:check_initialization_order=1:strict_init_order=1:log_path=$logs/asan" \
  LSAN_OPTIONS="print_suppressions=0:suppressions=$PWD/tests/lsan.supp" \
  UBSAN_OPTIONS="$common_opts:log_path=$logs/ubsan" MAMBA_SOAK_REQUESTS=150 \
    run_tests "$dir" "${asan_tests[@]}"
}

run_tsan() {
  local dir=build-tsan
  # MAMBA_CPU_CLONES=OFF: TSan crashes in target_clones' ifunc resolvers (see CMakeLists.txt).
  # -Wno-tsan: GCC warns in every Boost.Asio file that TSan does not model atomic_thread_fence.
  configure "$dir" thread -DMAMBA_CPU_CLONES=OFF -DCMAKE_CXX_FLAGS=-Wno-tsan
  cmake --build "$dir" -j"$(nproc)" --target "${tsan_tests[@]}"
  local logs=$PWD/$dir/sanitizer-logs
  # The CPU kernels run on one thread here (libgomp is not instrumented): kernels/cpu/threading.cc
  # forces it in TSan builds and tests/CMakeLists.txt sets OMP_NUM_THREADS=1 for these tests.
  TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:log_path=$logs/tsan" \
    run_tests "$dir" "${tsan_tests[@]}"
}

status=0
if [[ $stage == asan || $stage == all ]]; then run_asan || status=1; fi
if [[ $stage == tsan || $stage == all ]]; then run_tsan || status=1; fi
exit $status
