// Bounded polling: the one way tests wait for something another thread or process does.
#pragma once

#include <chrono>
#include <functional>

namespace mamba::testing {

// Polls `done` every `poll` until it holds or `timeout` passes; returns its last value.
bool WaitFor(const std::function<bool()>& done, std::chrono::milliseconds timeout,
             std::chrono::milliseconds poll = std::chrono::milliseconds(20));

}  // namespace mamba::testing
