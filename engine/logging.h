// One named spdlog logger per layer ("engine", "cuda", "grpc", "http", "server"), so every
// line says where it comes from. Header-only: the CUDA engine library uses it too.
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "spdlog/spdlog.h"

namespace mamba::engine {

// The layer's logger, made on first use as a clone of the default logger: it shares its sinks,
// level and format (plain text or --log-json), so set those up before the first log line.
// Thread-safe; later calls return the registered logger.
inline std::shared_ptr<spdlog::logger> NamedLogger(const std::string& layer) {
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  if (std::shared_ptr<spdlog::logger> l = spdlog::get(layer)) return l;
  std::shared_ptr<spdlog::logger> l = spdlog::default_logger()->clone(layer);
  spdlog::register_logger(l);
  return l;
}

}  // namespace mamba::engine
