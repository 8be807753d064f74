// API key checks shared by the HTTP and gRPC front ends.
#pragma once

#include <algorithm>
#include <cstddef>
#include <string_view>

namespace mamba::server {

// Whether `presented` equals `secret`, in time that depends only on presented's length: neither
// where the strings first differ nor secret's length leaks through timing.
inline bool ConstantTimeEquals(std::string_view presented, std::string_view secret) {
  unsigned char diff = presented.size() != secret.size();
  const size_t n = std::max<size_t>(secret.size(), 1);
  for (size_t i = 0; i < presented.size(); ++i) {
    diff |= static_cast<unsigned char>(presented[i] ^ (secret.empty() ? 0 : secret[i % n]));
  }
  return diff == 0;
}

}  // namespace mamba::server
