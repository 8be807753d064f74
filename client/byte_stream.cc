#include "client/byte_stream.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/errors.h"

namespace mamba::client {
namespace {

Io Just(Io::Status status) {
  Io io;
  io.status = status;
  return io;
}
Io Done(ssize_t n) { return {Io::kDone, static_cast<size_t>(n), 0, ""}; }
Io SocketError(int err) { return {Io::kError, 0, err, ""}; }

class PlainStream : public ByteStream {
 public:
  explicit PlainStream(int fd) : fd_(fd) {}
  Io Read(char* data, size_t size) override {
    for (;;) {
      const ssize_t n = ::recv(fd_, data, size, 0);
      if (n > 0) return Done(n);
      if (n == 0) return Just(Io::kEof);
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return Just(Io::kWantRead);
      return SocketError(errno);
    }
  }
  Io Write(const char* data, size_t size) override {
    for (;;) {
      const ssize_t n = ::send(fd_, data, size, MSG_NOSIGNAL);
      if (n >= 0) return Done(n);
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return Just(Io::kWantWrite);
      return SocketError(errno);
    }
  }

 private:
  int fd_;
};

// OpenSSL's own socket BIO writes with write(), which raises SIGPIPE on a connection the server
// reset; this one sends with MSG_NOSIGNAL (as the plain stream does) and keeps errno for messages.
struct SocketBioState {
  int fd = -1;
  int last_errno = 0;
};

int BioWrite(BIO* bio, const char* data, int size) {
  auto* s = static_cast<SocketBioState*>(BIO_get_data(bio));
  BIO_clear_retry_flags(bio);
  for (;;) {
    const ssize_t n = ::send(s->fd, data, static_cast<size_t>(size), MSG_NOSIGNAL);
    if (n >= 0) return static_cast<int>(n);
    if (errno == EINTR) continue;
    s->last_errno = errno;
    if (errno == EAGAIN || errno == EWOULDBLOCK) BIO_set_retry_write(bio);
    return -1;
  }
}

int BioRead(BIO* bio, char* data, int size) {
  auto* s = static_cast<SocketBioState*>(BIO_get_data(bio));
  BIO_clear_retry_flags(bio);
  for (;;) {
    const ssize_t n = ::recv(s->fd, data, static_cast<size_t>(size), 0);
    if (n >= 0) return static_cast<int>(n);
    if (errno == EINTR) continue;
    s->last_errno = errno;
    if (errno == EAGAIN || errno == EWOULDBLOCK) BIO_set_retry_read(bio);
    return -1;
  }
}

long BioCtrl(BIO*, int cmd, long, void*) { return cmd == BIO_CTRL_FLUSH ? 1 : 0; }

BIO_METHOD* SocketBioMethod() {
  static BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "mamba-client socket");
    BIO_meth_set_write(m, BioWrite);
    BIO_meth_set_read(m, BioRead);
    BIO_meth_set_ctrl(m, BioCtrl);
    return m;
  }();
  return method;
}

// The reason of the first queued OpenSSL error ("certificate verify failed"); clears the queue.
std::string TakeSslError() {
  const unsigned long code = ERR_get_error();
  std::string text;
  if (code != 0) {
    const char* reason = ERR_reason_error_string(code);
    if (reason != nullptr) {
      text = reason;
    } else {
      char buf[256];
      ERR_error_string_n(code, buf, sizeof(buf));
      text = buf;
    }
  }
  ERR_clear_error();
  return text;
}

bool IsIpLiteral(const std::string& name) {
  unsigned char addr[sizeof(in6_addr)];
  return inet_pton(AF_INET, name.c_str(), addr) == 1 ||
         inet_pton(AF_INET6, name.c_str(), addr) == 1;
}

class TlsStream : public ByteStream {
 public:
  TlsStream(int fd, std::string name, std::string ca_file)
      : name_(std::move(name)), ca_file_(std::move(ca_file)) {
    bio_.fd = fd;
  }
  ~TlsStream() override {
    if (ssl_ != nullptr) SSL_free(ssl_);  // frees the BIO too
  }

  absl::Status Init(SSL_CTX* ctx) {
    ssl_ = SSL_new(ctx);
    BIO* bio = ssl_ == nullptr ? nullptr : BIO_new(SocketBioMethod());
    if (bio == nullptr)
      return WithKind(absl::InternalError(absl::StrCat("TLS: ", TakeSslError())), "tls");
    BIO_set_data(bio, &bio_);
    BIO_set_init(bio, 1);
    SSL_set_bio(ssl_, bio, bio);
    SSL_set_connect_state(ssl_);
    bool ok;
    if (IsIpLiteral(name_)) {  // RFC 6066: no SNI for addresses; match the certificate's IP SANs
      ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), name_.c_str()) == 1;
    } else {
      SSL_set_hostflags(ssl_, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      ok = SSL_set_tlsext_host_name(ssl_, name_.c_str()) == 1 &&
           SSL_set1_host(ssl_, name_.c_str()) == 1;
    }
    if (!ok) {
      return WithKind(absl::InvalidArgumentError(
                          absl::StrCat("TLS: cannot check the server's certificate against '",
                                       name_, "': ", TakeSslError())),
                      "tls");
    }
    return absl::OkStatus();
  }

  Io Handshake() override {
    Begin();
    const int r = SSL_do_handshake(ssl_);
    if (r == 1) {
      handshake_done_ = true;
      return {};
    }
    return Failure(r);
  }
  Io Read(char* data, size_t size) override {
    Begin();
    const int n = SSL_read(ssl_, data, static_cast<int>(std::min<size_t>(size, INT_MAX)));
    return n > 0 ? Done(n) : Failure(n);
  }
  Io Write(const char* data, size_t size) override {
    Begin();
    const int n = SSL_write(ssl_, data, static_cast<int>(std::min<size_t>(size, INT_MAX)));
    return n > 0 ? Done(n) : Failure(n);
  }
  void Shutdown() override {
    if (!handshake_done_ || failed_) return;  // OpenSSL forbids SSL_shutdown after a fatal error
    Begin();
    SSL_shutdown(ssl_);  // one try: sends close_notify if the socket takes it, never waits
    ERR_clear_error();
  }

  std::string DescribeFailure(const Io& io) const override {
    const long verify = SSL_get_verify_result(ssl_);
    if (verify != X509_V_OK) {
      const std::string why = X509_verify_cert_error_string(verify);
      if (verify == X509_V_ERR_HOSTNAME_MISMATCH || verify == X509_V_ERR_IP_ADDRESS_MISMATCH) {
        return absl::StrCat("the server's certificate is not valid for '", name_, "' (", why,
                            "); --tls-server-name sets the name to check");
      }
      return absl::StrCat("the server's certificate was not accepted: ", why,
                          ca_file_.empty()
                              ? " (checked against the system's trusted roots; give the "
                                "server's CA certificate with --tls-ca)"
                              : absl::StrCat(" (checked against the roots in ", ca_file_, ")"));
    }
    if (io.status == Io::kEof || absl::StrContains(io.message, "unexpected eof")) {
      return "the server closed the connection (is this port serving HTTPS?)";
    }
    if (absl::StrContains(io.message, "wrong version number") ||
        absl::StrContains(io.message, "packet length too long") ||
        absl::StrContains(io.message, "record layer failure")) {
      return absl::StrCat(
          io.message, " (the server does not speak TLS on this port; use http:// for plain HTTP)");
    }
    if (io.message.empty()) return io.err != 0 ? std::strerror(io.err) : "unknown error";
    return io.message;
  }

 private:
  void Begin() {
    ERR_clear_error();
    bio_.last_errno = 0;
  }
  Io Failure(int r) {
    switch (SSL_get_error(ssl_, r)) {
      case SSL_ERROR_WANT_READ:
        return Just(Io::kWantRead);
      case SSL_ERROR_WANT_WRITE:
        return Just(Io::kWantWrite);
      case SSL_ERROR_ZERO_RETURN:
        return Just(Io::kEof);
      case SSL_ERROR_SYSCALL: {
        failed_ = true;
        std::string message = TakeSslError();
        if (!message.empty()) return {Io::kError, 0, 0, message};
        if (bio_.last_errno == 0) return Just(Io::kEof);  // the server closed the socket
        return SocketError(bio_.last_errno);
      }
      default: {
        failed_ = true;
        std::string message = TakeSslError();
        return {Io::kError, 0, 0, message.empty() ? "TLS protocol error" : message};
      }
    }
  }

  SocketBioState bio_;
  SSL* ssl_ = nullptr;
  std::string name_, ca_file_;
  bool handshake_done_ = false;
  bool failed_ = false;
};

}  // namespace

std::unique_ptr<ByteStream> MakePlainStream(int fd) { return std::make_unique<PlainStream>(fd); }

struct TlsContext::Impl {
  SSL_CTX* ctx = nullptr;
  std::string ca_file;
  ~Impl() {
    if (ctx != nullptr) SSL_CTX_free(ctx);
  }
};

TlsContext::TlsContext(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TlsContext::~TlsContext() = default;

absl::StatusOr<std::shared_ptr<TlsContext>> TlsContext::Create(const TlsOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->ca_file = options.ca_file;
  ERR_clear_error();
  impl->ctx = SSL_CTX_new(TLS_client_method());
  if (impl->ctx == nullptr)
    return WithKind(absl::InternalError(absl::StrCat("TLS: ", TakeSslError())), "tls");
  SSL_CTX* ctx = impl->ctx;
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  // A server that closes without close_notify reads as the end of the connection, as over plain
  // TCP: the HTTP framing (Content-Length, chunked) tells a complete answer from a cut one, and the
  // keep-alive retry needs an idle connection closed by the server to look closed.
  SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  // Any certificate in the trusted roots is an anchor, even when it is not self-signed (a server's
  // own certificate, an intermediate CA), as curl does.
  X509_VERIFY_PARAM_set_flags(SSL_CTX_get0_param(ctx), X509_V_FLAG_PARTIAL_CHAIN);
  static const unsigned char kAlpn[] = "\x08http/1.1";
  SSL_CTX_set_alpn_protos(ctx, kAlpn, sizeof(kAlpn) - 1);
  if (!options.ca_file.empty()) {
    if (!std::ifstream(options.ca_file).good()) {
      return WithKind(
          absl::NotFoundError(absl::StrCat("cannot read the TLS CA file ", options.ca_file, ": ",
                                           std::strerror(errno))),
          "tls");
    }
    if (SSL_CTX_load_verify_locations(ctx, options.ca_file.c_str(), nullptr) != 1) {
      return WithKind(absl::InvalidArgumentError(
                          absl::StrCat("the TLS CA file ", options.ca_file,
                                       " holds no usable PEM certificate: ", TakeSslError())),
                      "tls");
    }
  } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
    return WithKind(absl::InternalError(absl::StrCat(
                        "TLS: cannot load the system's trusted roots: ", TakeSslError())),
                    "tls");
  }
  return std::shared_ptr<TlsContext>(new TlsContext(std::move(impl)));
}

absl::StatusOr<std::unique_ptr<ByteStream>> TlsContext::Wrap(int fd,
                                                             const std::string& name) const {
  auto stream = std::make_unique<TlsStream>(fd, name, impl_->ca_file);
  if (absl::Status s = stream->Init(impl_->ctx); !s.ok()) return s;
  return std::unique_ptr<ByteStream>(std::move(stream));
}

}  // namespace mamba::client
