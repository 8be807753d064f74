// Cancelling a call from another thread: the call installs a handler (abort the socket, cancel
// the gRPC context) for as long as it runs; Cancel runs it, or marks the token so a call that
// has not started yet returns CANCELLED at once.
#pragma once

#include <functional>
#include <mutex>

namespace mamba::client {

class CancelToken {
 public:
  // Any thread. Runs the installed handler (once per installation) and remembers the
  // cancellation.
  void Cancel() {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_ = true;
    if (handler_) {
      std::function<void()> fn = std::move(handler_);
      handler_ = nullptr;
      fn();
    }
  }
  bool cancelled() const {
    std::lock_guard<std::mutex> lock(mu_);
    return cancelled_;
  }
  // Installs `fn`; false (and nothing installed) when already cancelled.
  bool SetHandler(std::function<void()> fn) {
    std::lock_guard<std::mutex> lock(mu_);
    if (cancelled_) return false;
    handler_ = std::move(fn);
    return true;
  }
  // Removes the handler; once this returns the handler is not running and will not run, so
  // what it refers to may be destroyed.
  void ClearHandler() {
    std::lock_guard<std::mutex> lock(mu_);
    handler_ = nullptr;
  }

 private:
  mutable std::mutex mu_;
  bool cancelled_ = false;
  std::function<void()> handler_;  // runs under mu_, so ClearHandler waits for it
};

// Installs a handler for a scope.
class ScopedCancelHandler {
 public:
  ScopedCancelHandler(CancelToken* token, std::function<void()> fn) : token_(token) {
    installed_ = token_ == nullptr || token_->SetHandler(std::move(fn));
  }
  ~ScopedCancelHandler() {
    if (token_ != nullptr && installed_) token_->ClearHandler();
  }
  ScopedCancelHandler(const ScopedCancelHandler&) = delete;
  ScopedCancelHandler& operator=(const ScopedCancelHandler&) = delete;
  // False when the token was cancelled before the call began.
  bool installed() const { return installed_; }

 private:
  CancelToken* token_;
  bool installed_ = true;
};

}  // namespace mamba::client
