// Debian's abseil is built with its own absl::string_view (not std::string_view): these adapt
// std::string_view for absl's string functions.
#pragma once

#include <string_view>

#include "absl/strings/string_view.h"

namespace mamba::client {

inline absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }
inline std::string_view SV(absl::string_view s) { return std::string_view(s.data(), s.size()); }

}  // namespace mamba::client
