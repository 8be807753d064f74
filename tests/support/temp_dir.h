// Where tests put and find files: a temporary directory removed with its owner, and the
// repository root the test data lives under.
#pragma once

#include <filesystem>

namespace mamba::testing {

// The repository root (MAMBA_SOURCE_DIR, set by ctest; else the current directory).
std::filesystem::path SourceDir();

// A fresh directory under the system temp dir (mkdtemp), removed with everything in it on
// destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace mamba::testing
