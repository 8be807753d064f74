// The byte stream under the HTTP client: a connected non-blocking socket, plain or TLS (OpenSSL
// on the same socket). The HTTP code, its poll()-based deadlines and its cancellation (shutdown()
// of the socket from another thread) are the same for both; only these reads and writes differ.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace mamba::client {

// What one non-blocking read, write or handshake step did.
struct Io {
  enum Status { kDone, kWantRead, kWantWrite, kEof, kError };
  Status status = kDone;
  size_t bytes = 0;     // kDone of Read / Write: how many
  int err = 0;          // kError: the errno of a socket failure (0 when it was a TLS failure)
  std::string message;  // kError from TLS: OpenSSL's reason ("decryption failed", ...)
};

// Not thread-safe; the socket is not owned (the HTTP client closes it).
class ByteStream {
 public:
  virtual ~ByteStream() = default;
  virtual Io Read(char* data, size_t size) = 0;
  virtual Io Write(const char* data, size_t size) = 0;
  // Called until it is kDone before the first Read / Write (plain sockets: at once).
  virtual Io Handshake() { return {}; }
  // Ends the connection politely where the protocol has a way (TLS: one non-blocking
  // close_notify, skipped after an error); the caller closes the socket afterwards.
  virtual void Shutdown() {}
  // A failed Handshake, for people: TLS says why the certificate was refused ("self-signed
  // certificate", "hostname mismatch") and what to do about it, else the error's message.
  virtual std::string DescribeFailure(const Io& io) const { return io.message; }
};

std::unique_ptr<ByteStream> MakePlainStream(int fd);

struct TlsOptions {
  bool enabled = false;     // https://: set from the target by HttpApi
  std::string ca_file;      // PEM roots to verify the server with; empty: the system's trust store
  std::string server_name;  // SNI and the name checked against the certificate; empty: the host
};

// The verification setup (roots, TLS >= 1.2, peer verification), shared by the connections of one
// client. There is deliberately no way to turn verification off.
class TlsContext {
 public:
  // Errors (kind "tls"): an unreadable or empty CA file, no system trust store.
  static absl::StatusOr<std::shared_ptr<TlsContext>> Create(const TlsOptions& options);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  // A TLS stream over the connected socket `fd`, checking the certificate against `name` (an IP
  // literal is matched against the IP addresses of the certificate and not sent as SNI).
  absl::StatusOr<std::unique_ptr<ByteStream>> Wrap(int fd, const std::string& name) const;

 private:
  struct Impl;
  explicit TlsContext(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mamba::client
