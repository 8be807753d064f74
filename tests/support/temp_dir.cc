#include "tests/support/temp_dir.h"

#include <stdlib.h>

#include <cstdlib>
#include <string>
#include <system_error>

namespace mamba::testing {

namespace fs = std::filesystem;

fs::path SourceDir() {
  const char* env = std::getenv("MAMBA_SOURCE_DIR");
  return env ? fs::path(env) : fs::current_path();
}

TempDir::TempDir() {
  std::string tmpl = (fs::temp_directory_path() / "mamba-test-XXXXXX").string();
  if (mkdtemp(tmpl.data()) == nullptr) {
    // Unreachable unless the temp dir is unwritable; the test then fails on its first write.
    tmpl = (fs::temp_directory_path() / "mamba-test-unwritable").string();
  }
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

}  // namespace mamba::testing
