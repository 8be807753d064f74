// Where the bundled demo model lives: relative to the running executable, so that a build tree
// (build/bin, build/share/mamba-serve/models) and an installed tree (PREFIX/bin,
// PREFIX/share/mamba-serve/models) both find it and no source path is baked into a binary.
#pragma once

#include <string>

namespace mamba::engine::tools {

// <directory of /proc/self/exe>/<MAMBA_DEMO_MODEL_RELDIR> (set by CMake from the install layout,
// e.g. ../share/mamba-serve/models/kjv-mamba-4x192), normalized. Returned whether or not it
// exists, so that a missing model's error names the directory that was looked in.
std::string DemoModelDir();

}  // namespace mamba::engine::tools
