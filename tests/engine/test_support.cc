#include "tests/engine/test_support.h"

#include <cmath>
#include <cstdlib>
#include <random>
#include <sstream>

namespace mamba::engine::testing {

namespace fs = std::filesystem;

fs::path SourceDir() {
  const char* env = std::getenv("MAMBA_SOURCE_DIR");
  return env ? fs::path(env) : fs::current_path();
}

TempDir::TempDir() {
  std::random_device rd;
  path_ = fs::temp_directory_path() / ("mamba-test-" + std::to_string(rd()) + std::to_string(rd()));
  fs::create_directories(path_);
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

ModelConfig SmallConfig() {
  ModelConfig c;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_hidden_layers = 2;
  c.vocab_size = 96;
  c.state_size = 16;
  c.time_step_rank = 4;
  c.conv_kernel = 4;
  return c;
}

fs::path WriteModel(const TempDir& dir, const std::string& name,
                    const RandomCheckpointOptions& options) {
  const fs::path p = dir.path() / name;
  absl::Status s = WriteRandomCheckpoint(options, p);
  EXPECT_TRUE(s.ok()) << s;
  return p;
}

::testing::AssertionResult AllClose(std::span<const float> got, std::span<const double> want,
                                    double atol, double rtol) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure() << "size " << got.size() << " != " << want.size();
  }
  size_t bad = 0;
  std::ostringstream msg;
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(static_cast<double>(got[i]) - want[i]);
    const double tol = atol + rtol * std::fabs(want[i]);
    if (!(err <= tol)) {  // NaN fails
      if (bad < 5) msg << " [" << i << "] got " << got[i] << " want " << want[i] << ";";
      ++bad;
    }
    if (std::isfinite(err)) worst = std::max(worst, err);
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " of " << got.size()
                                       << " values out of tolerance (max abs err " << worst
                                       << "):" << msg.str();
}

}  // namespace mamba::engine::testing
