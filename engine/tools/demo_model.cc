#include "engine/tools/demo_model.h"

#include <filesystem>
#include <system_error>

namespace mamba::engine::tools {

std::string DemoModelDir() {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (ec) return MAMBA_DEMO_MODEL_RELDIR;  // no /proc: relative to the working directory
  return (exe.parent_path() / MAMBA_DEMO_MODEL_RELDIR).lexically_normal().string();
}

}  // namespace mamba::engine::tools
