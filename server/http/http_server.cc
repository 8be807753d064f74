// The only Boost.Beast translation unit: the accept loop, one session per connection (plain or
// TLS) and the Exchange the handlers answer through. Each connection runs on its own strand;
// engine events reach it through Exchange::Post.
//
// A connection serves one request at a time (HTTP/1.1 keep-alive; pipelined requests wait in
// the buffer). While a request is in flight the session keeps a read pending so that a client
// that goes away is noticed at once: its engine requests are cancelled and their slots freed.
//
// A session's state is two enums (session_state.h) changed only through checked transitions (an
// illegal one is logged, and asserts in debug builds):
//   ReadState:  kIdle -> kHeader -> kIdle -> kBody -> kIdle     reading a request
//               kIdle -> kWatch [-> kWatchThenParse] -> kIdle   read-ahead while one is in flight
//               kIdle -> kLinger                                draining input before a close
//   ReplyState: kIdle -> kHandling [-> kStreaming] -> kSent -> kIdle    keep-alive
//               kHandling | kStreaming -> kClosing -> (close)          last response
//               kIdle -> kClosing                                      413, 431, 400
// and any state -> kClosed (both at once, in Close).
// clang-format off
#include <utility>  // before Asio: GCC 12 in C++20 mode needs it
// clang-format on

#include "server/http/http_server.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/stream_traits.hpp>
#include <boost/beast/http.hpp>
#include <cassert>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/logging.h"
#include "server/http/api_error.h"
#include "server/http/http_limits.h"
#include "server/http/router.h"
#include "server/http/session_state.h"
#include "server/metrics.h"
#include "spdlog/spdlog.h"

namespace mamba::server {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = asio::ip::tcp;
using SslStream = asio::ssl::stream<tcp::socket>;
using http::HttpRequest;
using http::HttpResponse;
using http::ReadState;
using http::ReplyState;

constexpr auto kHandshakeTimeout = std::chrono::seconds(10);  // TLS
constexpr auto kLingerTimeout = std::chrono::seconds(2);      // draining input before a close
constexpr size_t kHeaderLimit = http::kMaxHeaderBytes;
constexpr size_t kWatchChunk = 4096;

std::shared_ptr<spdlog::logger> Log() {
  static const std::shared_ptr<spdlog::logger> log = engine::NamedLogger("http");
  return log;
}

class SessionBase {
 public:
  virtual ~SessionBase() = default;
  virtual void CloseFromServer() = 0;  // thread-safe
  virtual void CloseNow() = 0;         // only with no I/O thread running
};

// Shared by the server, its sessions and every exchange. Engine sinks hold exchanges, so this
// can outlive the server: `stopped` tells late events that the I/O side is gone.
struct IoCore {
  explicit IoCore(http::HandlerContext ctx) : router(std::move(ctx)) {}
  const FrontEndOptions& options() const { return router.context().options; }
  Metrics* metrics() const { return router.context().metrics; }

  // Changes one of the counters below; waking the waiters of WaitForZero when it reaches 0.
  void Add(std::atomic<int64_t>& counter, int64_t delta) {
    if (counter.fetch_add(delta) + delta != 0) return;
    { std::lock_guard<std::mutex> lock(zero_mu); }  // a waiter is either waiting or re-checks
    zero_cv.notify_all();
  }
  // Waits until every counter in `counters` is 0; false when `until` comes first.
  bool WaitForZero(std::initializer_list<const std::atomic<int64_t>*> counters,
                   std::chrono::steady_clock::time_point until) {
    std::unique_lock<std::mutex> lock(zero_mu);
    return zero_cv.wait_until(lock, until, [&] {
      return std::all_of(counters.begin(), counters.end(),
                         [](const std::atomic<int64_t>* c) { return c->load() <= 0; });
    });
  }

  http::Router router;
  std::mutex mu;  // held while posting from outside the I/O threads, and to set `stopped`
  bool stopped = false;
  std::atomic<int64_t> sessions{0};
  std::atomic<int64_t> pending_output{0};  // bytes queued on any connection, not yet written
  // Engine events posted to a session and not yet run: their bytes are about to be queued.
  // A drain waits for both, because the engine is idle as soon as its last event is posted.
  std::atomic<int64_t> pending_tasks{0};
  std::mutex zero_mu;  // with zero_cv: a counter above reached 0
  std::condition_variable zero_cv;
  std::mutex live_mu;
  std::vector<std::weak_ptr<SessionBase>> live;
};

// Moves *state to `to`; an illegal transition is a bug in this file: logged (and asserted in
// debug builds), then made anyway, as the code before the enums would have.
template <class State>
void Transition(State* state, State to) {
  if (!Allowed(*state, to)) {
    Log()->error("http session: illegal transition {} -> {}", Name(*state), Name(to));
    assert(false && "illegal http session transition");
  }
  *state = to;
}

const char* Reason(int status) {
  const auto r = bhttp::obsolete_reason(static_cast<bhttp::status>(status));
  return r.empty() ? "Unknown" : r.data();
}

std::string Head(int status, std::string_view content_type, bool keep_alive,
                 const std::vector<std::pair<std::string, std::string>>& headers) {
  std::string h =
      absl::StrCat("HTTP/1.1 ", status, " ", Reason(status), "\r\nServer: mambaserve\r\n",
                   "Content-Type: ", std::string(content_type), "\r\n",
                   "Connection: ", keep_alive ? "keep-alive" : "close", "\r\n");
  for (const auto& [name, value] : headers) absl::StrAppend(&h, name, ": ", value, "\r\n");
  return h;
}

template <class Stream>
class Session : public SessionBase, public std::enable_shared_from_this<Session<Stream>> {
  static constexpr bool kTls = std::is_same_v<Stream, SslStream>;

 public:
  template <class... StreamArgs>
  explicit Session(std::shared_ptr<IoCore> core, StreamArgs&&... args)
      : core_(std::move(core)),
        stream_(std::forward<StreamArgs>(args)...),
        executor_(stream_.get_executor()),
        timer_(executor_),
        write_timer_(executor_) {
    core_->Add(core_->sessions, 1);
    if (Metrics* m = core_->metrics()) m->OnConnectionOpened("http");
  }
  ~Session() override {
    if (Metrics* m = core_->metrics()) m->OnConnectionClosed("http");
    core_->Add(core_->sessions, -1);
  }

  void Start() {
    if constexpr (kTls) {
      ArmTimer(kHandshakeTimeout);
      stream_.async_handshake(asio::ssl::stream_base::server,
                              [self = this->shared_from_this()](beast::error_code ec) {
                                self->timer_.cancel();
                                if (ec || self->Closed()) return self->Close();
                                self->DoRead();
                              });
    } else {
      DoRead();
    }
  }

  void CloseFromServer() override {
    asio::post(executor_, [self = this->shared_from_this()] { self->Close(); });
  }
  // Only once the I/O threads are stopped: ends whatever is still open, in this thread.
  void CloseNow() override { Close(); }

 private:
  class ExchangeImpl;

  tcp::socket& Socket() { return beast::get_lowest_layer(stream_); }

  // FrontEndOptions::idle_timeout_ms: for (the rest of) a request, and for a write to progress.
  std::chrono::milliseconds IdleTimeout() const {
    return std::chrono::milliseconds(std::max<int64_t>(core_->options().idle_timeout_ms, 1));
  }

  void ArmTimer(std::chrono::steady_clock::duration d) {
    timer_.expires_after(d);
    timer_.async_wait([self = this->shared_from_this()](beast::error_code ec) {
      if (!ec) self->Close();
    });
  }

  // ---- reading requests ----

  bool Closed() const { return reply_ == ReplyState::kClosed; }
  // A request is in flight: its exchange has not ended.
  bool InFlight() const {
    return reply_ == ReplyState::kHandling || reply_ == ReplyState::kStreaming;
  }

  void DoRead() {
    if (Closed()) return;
    parser_.emplace();
    // Until the request line is known, the largest limit of any route; OnHeader narrows it.
    parser_->body_limit(static_cast<uint64_t>(core_->router.MaxBodyLimit()));
    parser_->header_limit(kHeaderLimit);
    ArmTimer(IdleTimeout());
    Transition(&read_, ReadState::kHeader);
    bhttp::async_read_header(
        stream_, buffer_, *parser_,
        [self = this->shared_from_this()](beast::error_code ec, size_t) { self->OnHeader(ec); });
  }

  void OnHeader(beast::error_code ec) {
    if (Closed()) return;
    Transition(&read_, ReadState::kIdle);
    if (ec) return OnReadError(ec);
    // The route's own body limit (no body byte has been parsed yet, so it may still change).
    const uint64_t limit = static_cast<uint64_t>(core_->router.BodyLimit(Method(), Path()));
    if (parser_->content_length() && *parser_->content_length() > limit) {
      return OnReadError(bhttp::error::body_limit);
    }
    parser_->body_limit(limit);
    if (absl::EqualsIgnoreCase(std::string(parser_->get()[bhttp::field::expect]), "100-continue")) {
      Queue("HTTP/1.1 100 Continue\r\n\r\n");
    }
    Transition(&read_, ReadState::kBody);
    bhttp::async_read(
        stream_, buffer_, *parser_,
        [self = this->shared_from_this()](beast::error_code ec, size_t) { self->OnBody(ec); });
  }

  void OnBody(beast::error_code ec) {
    if (Closed()) return;
    Transition(&read_, ReadState::kIdle);
    if (ec) return OnReadError(ec);
    timer_.cancel();
    bhttp::request<bhttp::string_body> msg = parser_->release();
    parser_.reset();
    keep_alive_ = msg.keep_alive();
    chunked_ = msg.version() >= 11;
    HttpRequest req;
    req.method = std::string(msg.method_string());
    const std::string_view target(msg.target().data(), msg.target().size());
    req.path = std::string(target.substr(0, target.find('?')));
    req.body = std::move(msg.body());
    req.authorization = std::string(msg[bhttp::field::authorization]);
    endpoint_ = std::string(http::Router::EndpointLabel(req.path));
    style_ = http::StyleOf(req.path);
    Transition(&reply_, ReplyState::kHandling);
    exchange_ = std::make_shared<ExchangeImpl>(this->shared_from_this());
    try {
      core_->router.Handle(req, exchange_);
    } catch (const std::exception& e) {
      HandlerFailed(e.what());
    }
    // Read ahead only with an empty buffer: pipelined bytes already here must be parsed next,
    // and a pending read-ahead would wait for bytes that never come.
    if (InFlight() && read_ == ReadState::kIdle && buffer_.size() == 0) StartWatch();
  }

  void OnReadError(beast::error_code ec) {
    if (ec == bhttp::error::body_limit) {
      return SendClosing(core_->router.BodyTooLarge(Method(), Path()));
    }
    if (ec == bhttp::error::header_limit) {
      return SendError(431, "the request headers are too large");
    }
    const bool parse_error =
        &ec.category() == &bhttp::make_error_code(bhttp::error::bad_method).category() &&
        ec != bhttp::error::end_of_stream && ec != bhttp::error::partial_message;
    if (parse_error) return SendError(400, absl::StrCat("malformed HTTP request: ", ec.message()));
    Close();  // eof, reset, timeout, TLS truncation: nothing to answer
  }

  // While a request is in flight: read ahead so that a disconnect is seen at once. Bytes that
  // arrive (a pipelined request) stay in buffer_ for the parser, and end the read-ahead: a
  // client that pipelines is only noticed gone when its answers are written.
  void StartWatch() {
    Transition(&read_, ReadState::kWatch);
    stream_.async_read_some(buffer_.prepare(kWatchChunk),
                            [self = this->shared_from_this()](beast::error_code ec, size_t n) {
                              self->OnWatch(ec, n);
                            });
  }

  void OnWatch(beast::error_code ec, size_t n) {
    if (Closed()) return;
    const bool parse = read_ == ReadState::kWatchThenParse;
    Transition(&read_, ReadState::kIdle);
    if (ec) return Close();  // the client went away: Close cancels what it was waiting for
    buffer_.commit(n);
    if (parse) return DoRead();
    // Not re-armed: AfterDrain starts the parse of what came.
  }

  // ---- writing ----

  void Queue(std::string bytes) {
    pending_bytes_ += static_cast<int64_t>(bytes.size());
    core_->Add(core_->pending_output, static_cast<int64_t>(bytes.size()));
    out_.push_back(std::move(bytes));
    DoWrite();
  }

  bool Writing() const { return in_write_ > 0; }

  void DoWrite() {
    if (Writing() || out_.empty() || Closed()) return;
    in_write_ = out_.size();
    std::vector<asio::const_buffer> bufs;
    bufs.reserve(in_write_);
    for (size_t i = 0; i < in_write_; ++i) bufs.emplace_back(out_[i].data(), out_[i].size());
    write_started_ = std::chrono::steady_clock::now();
    if (!write_timer_armed_) ArmWriteTimer(IdleTimeout());
    asio::async_write(
        stream_, bufs,
        [self = this->shared_from_this()](beast::error_code ec, size_t) { self->OnWrite(ec); });
  }

  // A client that stops reading holds at most the stream buffer, and only until a write has
  // waited IdleTimeout(). The timer is not re-armed per write (a stream writes every token): when
  // it fires it checks the write under way, if any, and waits out the rest of its time.
  void ArmWriteTimer(std::chrono::steady_clock::duration d) {
    write_timer_armed_ = true;
    write_timer_.expires_after(d);
    write_timer_.async_wait([self = this->shared_from_this()](beast::error_code ec) {
      self->write_timer_armed_ = false;
      if (ec || self->Closed() || !self->Writing()) return;
      const auto waited = std::chrono::steady_clock::now() - self->write_started_;
      if (waited < self->IdleTimeout()) return self->ArmWriteTimer(self->IdleTimeout() - waited);
      Log()->info("closing a connection: the client read nothing for {} ms",
                  self->IdleTimeout().count());
      self->Close();
    });
  }

  void OnWrite(beast::error_code ec) {
    if (Closed()) return;
    if (ec) return Close();
    int64_t written = 0;
    for (size_t i = 0; i < in_write_; ++i) {
      written += static_cast<int64_t>(out_.front().size());
      out_.pop_front();
    }
    in_write_ = 0;
    pending_bytes_ -= written;
    core_->Add(core_->pending_output, -written);
    if (!out_.empty()) return DoWrite();
    AfterDrain();
  }

  // Everything queued is written: close, wait for the next request, or keep streaming.
  void AfterDrain() {
    if (reply_ == ReplyState::kClosing) return GracefulClose();
    // In flight, closed, or idle (e.g. a 100 Continue went out before the body): nothing to do.
    if (reply_ != ReplyState::kSent) return;
    exchange_.reset();
    Transition(&reply_, ReplyState::kIdle);
    if (read_ == ReadState::kWatch) {
      // The read-ahead is pending: it starts the parse when bytes come.
      Transition(&read_, ReadState::kWatchThenParse);
      ArmTimer(IdleTimeout());
    } else {
      DoRead();
    }
  }

  // The request line's method and path (without the query), once the parser has read them.
  std::string Method() const {
    return parser_ ? std::string(parser_->get().method_string()) : std::string();
  }
  std::string Path() const {
    if (!parser_) return {};
    const std::string_view target(parser_->get().target().data(), parser_->get().target().size());
    return std::string(target.substr(0, target.find('?')));
  }

  // A protocol-level error with no exchange (413, 431, 400): answer and close.
  void SendError(int status, std::string message) {
    // The path, when the request line was read, says which API's error shape to answer in.
    SendClosing(http::ErrorResponse(
        {.status = status, .message = std::move(message), .style = http::StyleOf(Path())}));
  }

  void SendClosing(HttpResponse r) {
    if (Metrics* m = core_->metrics()) m->OnResponse("http", "other", r.status);
    Transition(&reply_, ReplyState::kClosing);
    Queue(absl::StrCat(Head(r.status, r.content_type, false, r.headers),
                       "Content-Length: ", r.body.size(), "\r\n\r\n", r.body));
    timer_.cancel();
    ArmTimer(IdleTimeout());  // a client that never reads cannot hold the connection
  }

  // Stops sending, then drains what the client still sends (so that closing does not reset
  // the connection before it read our answer), for at most kLingerTimeout.
  void GracefulClose() {
    if (read_ != ReadState::kIdle) return Close();
    ArmTimer(kLingerTimeout);
    if constexpr (kTls) {
      // close_notify, so that the client can tell the end from a truncation.
      stream_.async_shutdown(
          [self = this->shared_from_this()](beast::error_code) { self->Close(); });
    } else {
      beast::error_code ec;
      Socket().shutdown(tcp::socket::shutdown_send, ec);
      Transition(&read_, ReadState::kLinger);
      Linger();
    }
  }

  void Linger() {
    Socket().async_read_some(asio::buffer(linger_buf_),
                             [self = this->shared_from_this()](beast::error_code ec, size_t) {
                               if (ec || self->Closed()) return self->Close();
                               self->Linger();
                             });
  }

  void Close() {
    if (Closed()) return;
    const bool in_flight = InFlight() && !exchange_->ended_;  // not after Abort's End
    Transition(&reply_, ReplyState::kClosed);
    Transition(&read_, ReadState::kClosed);
    core_->Add(core_->pending_output, -pending_bytes_);  // never to be written now
    pending_bytes_ = 0;
    timer_.cancel();
    write_timer_.cancel();
    if (in_flight) exchange_->ClientGone();
    exchange_.reset();
    beast::error_code ec;
    Socket().shutdown(tcp::socket::shutdown_both, ec);
    Socket().close(ec);
  }

  // ---- the exchange's operations (strand only) ----

  bool Current(const ExchangeImpl* ex) const {
    return InFlight() && exchange_.get() == ex && !ex->ended_;
  }

  void CountResponse(int status) {
    if (Metrics* m = core_->metrics()) m->OnResponse("http", endpoint_, status);
  }

  void Respond(ExchangeImpl* ex, HttpResponse r) {
    if (!Current(ex)) return;
    ex->End();
    CountResponse(r.status);
    Transition(&reply_, keep_alive_ ? ReplyState::kSent : ReplyState::kClosing);
    Queue(absl::StrCat(Head(r.status, r.content_type, keep_alive_, r.headers),
                       "Content-Length: ", r.body.size(), "\r\n\r\n", r.body));
  }

  void StartStream(ExchangeImpl* ex) {
    if (!Current(ex) || reply_ != ReplyState::kHandling) return;
    Transition(&reply_, ReplyState::kStreaming);
    CountResponse(200);
    // HTTP/1.0 has no chunked encoding: the stream then ends with the connection.
    if (!chunked_) keep_alive_ = false;
    BoundSendBuffer();
    std::string head = Head(200, "text/event-stream", keep_alive_,
                            {{"Cache-Control", "no-cache"}, {"X-Accel-Buffering", "no"}});
    Queue(absl::StrCat(head, chunked_ ? "Transfer-Encoding: chunked\r\n" : "", "\r\n"));
  }

  // FrontEndOptions::stream_send_buffer_bytes: a small kernel buffer makes a client that stops
  // reading show up in pending_bytes_ (and reach max_stream_buffer_bytes) after kilobytes, not
  // after the megabytes an autotuned buffer absorbs. Kept for the connection's later requests.
  void BoundSendBuffer() {
    const int64_t bytes = core_->options().stream_send_buffer_bytes;
    if (bytes <= 0 || send_buffer_bounded_) return;
    send_buffer_bounded_ = true;
    beast::error_code ec;
    Socket().set_option(asio::socket_base::send_buffer_size(static_cast<int>(bytes)), ec);
    if (ec) Log()->warn("cannot set SO_SNDBUF to {}: {}", bytes, ec.message());
  }

  bool Write(ExchangeImpl* ex, std::string data) {
    if (!Current(ex) || reply_ != ReplyState::kStreaming) return false;
    if (data.empty()) return true;
    const int64_t limit = core_->options().max_stream_buffer_bytes;
    // A chunk always goes out when nothing is waiting; beyond that the client is too slow.
    if (pending_bytes_ > 0 && limit > 0 &&
        pending_bytes_ + static_cast<int64_t>(data.size()) > limit) {
      Log()->info("closing a stream: the client is more than {} bytes behind", limit);
      return false;
    }
    if (chunked_) {
      char size[20];
      const int len = std::snprintf(size, sizeof(size), "%zx\r\n", data.size());
      data.insert(0, size, static_cast<size_t>(len));
      data += "\r\n";
    }
    Queue(std::move(data));
    return true;
  }

  void EndStream(ExchangeImpl* ex) {
    if (!Current(ex) || reply_ != ReplyState::kStreaming) return;
    ex->End();
    if (chunked_) {
      Transition(&reply_, ReplyState::kSent);
      Queue("0\r\n\r\n");
    } else {
      Transition(&reply_, ReplyState::kClosing);
      if (!Writing() && out_.empty()) AfterDrain();
    }
  }

  void Abort(ExchangeImpl* ex) {
    if (!Current(ex)) return;
    ex->End();
    Close();
  }

  void HandlerFailed(const char* what) {
    Log()->error("a handler failed: {}", what);
    if (!InFlight()) return;
    if (reply_ == ReplyState::kStreaming) return Abort(exchange_.get());
    Respond(exchange_.get(),
            http::ErrorResponse({.status = 500, .message = "internal error", .style = style_}));
  }

  std::shared_ptr<IoCore> core_;
  Stream stream_;
  const asio::any_io_executor executor_;  // the connection's strand
  asio::steady_timer timer_;              // reading a request, TLS handshake, lingering
  asio::steady_timer write_timer_;        // a write under way must progress (ArmWriteTimer)
  bool write_timer_armed_ = false;
  std::chrono::steady_clock::time_point write_started_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  std::deque<std::string> out_;
  size_t in_write_ = 0;        // entries of out_ in the write under way
  int64_t pending_bytes_ = 0;  // queued and not yet written
  std::shared_ptr<ExchangeImpl> exchange_;
  std::string endpoint_;                            // metrics label of the current request
  http::ApiStyle style_ = http::ApiStyle::kOpenAi;  // error shape of the current request
  std::array<char, 4096> linger_buf_;
  ReadState read_ = ReadState::kIdle;
  ReplyState reply_ = ReplyState::kIdle;
  // Of the current request (and the connection's HTTP version).
  bool keep_alive_ = true;
  bool chunked_ = true;               // HTTP/1.1: streams use chunked encoding
  bool send_buffer_bounded_ = false;  // SO_SNDBUF set (stream_send_buffer_bytes)
};

// Holds its session while in flight (so a request the engine still works on keeps the
// connection object), and lets it go once ended.
template <class Stream>
class Session<Stream>::ExchangeImpl : public http::Exchange,
                                      public std::enable_shared_from_this<ExchangeImpl> {
 public:
  explicit ExchangeImpl(std::shared_ptr<Session> session)
      : session_(session), weak_(session), core_(session->core_) {}

  // No Asio object lives in here: engine sinks hold exchanges, and they may outlive the
  // io_context. Under core_->mu, `stopped` false means the io_context is still there.
  void Post(std::function<void()> task) override {
    std::lock_guard<std::mutex> lock(core_->mu);
    if (core_->stopped) return;
    std::shared_ptr<Session> s = weak_.lock();
    if (!s) return;
    core_->Add(core_->pending_tasks, 1);
    asio::post(s->executor_, [self = this->shared_from_this(), task = std::move(task)] {
      struct Done {
        IoCore* core;
        ~Done() { core->Add(core->pending_tasks, -1); }
      } done{self->core_.get()};
      if (self->ended_) return;
      try {
        task();
      } catch (const std::exception& e) {
        if (auto s = self->session_) s->HandlerFailed(e.what());
      }
    });
  }
  // Each call holds the session in a local: ending the exchange drops session_, which may be
  // the last reference.
  void Respond(HttpResponse response) override {
    if (auto s = session_) s->Respond(this, std::move(response));
  }
  void StartStream() override {
    if (auto s = session_) s->StartStream(this);
  }
  bool Write(std::string data) override {
    auto s = session_;
    return s && s->Write(this, std::move(data));
  }
  void EndStream() override {
    if (auto s = session_) s->EndStream(this);
  }
  void Abort() override {
    if (auto s = session_) s->Abort(this);
  }
  void SetOnClientGone(std::function<void()> fn) override { on_gone_ = std::move(fn); }

  // Called by the session (which holds itself meanwhile).
  void End() {
    ended_ = true;
    on_gone_ = nullptr;
    session_.reset();
  }
  void ClientGone() {
    ended_ = true;
    std::function<void()> fn = std::move(on_gone_);
    on_gone_ = nullptr;
    session_.reset();
    if (fn) fn();
  }

  bool ended_ = false;

 private:
  std::shared_ptr<Session> session_;  // null once ended
  std::weak_ptr<Session> weak_;
  std::shared_ptr<IoCore> core_;
  std::function<void()> on_gone_;
};

}  // namespace

struct HttpServer::Impl {
  std::shared_ptr<IoCore> core;
  std::optional<asio::ssl::context> ssl;  // destroyed after the io_context and its sessions
  asio::io_context ioc;
  tcp::acceptor acceptor{asio::make_strand(ioc)};
  asio::steady_timer retry{acceptor.get_executor()};
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::vector<std::thread> threads;
  int port = 0;
  bool shut_down = false;

  void Accept() {
    acceptor.async_accept(asio::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;
      if (ec) {
        // E.g. out of file descriptors: back off instead of spinning.
        Log()->warn("accept failed: {}", ec.message());
        retry.expires_after(std::chrono::milliseconds(50));
        retry.async_wait([this](beast::error_code e) {
          if (!e) Accept();
        });
        return;
      }
      socket.set_option(tcp::no_delay(true), ec);  // SSE tokens must not wait for Nagle
      std::shared_ptr<SessionBase> base;
      if (ssl) {
        auto s = std::make_shared<Session<SslStream>>(core, std::move(socket), *ssl);
        base = s;
        s->Start();
      } else {
        auto s = std::make_shared<Session<tcp::socket>>(core, std::move(socket));
        base = s;
        s->Start();
      }
      {
        std::lock_guard<std::mutex> lock(core->live_mu);
        std::erase_if(core->live, [](const std::weak_ptr<SessionBase>& w) { return w.expired(); });
        core->live.push_back(base);
      }
      Accept();
    });
  }
};

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(ServingState* state, Metrics* metrics,
                                                              const FrontEndOptions& options,
                                                              int threads) {
  if (!state) return absl::InvalidArgumentError("http: no serving state");
  if (threads < 1) return absl::InvalidArgumentError("http: threads must be >= 1");
  auto impl = std::make_unique<Impl>();
  impl->core = std::make_shared<IoCore>(http::HandlerContext{state, metrics, options});
  beast::error_code ec;
  if (!options.tls_cert_file.empty() || !options.tls_key_file.empty()) {
    if (options.tls_cert_file.empty() || options.tls_key_file.empty()) {
      return absl::InvalidArgumentError("http: TLS needs both a certificate and a key file");
    }
    impl->ssl.emplace(asio::ssl::context::tls_server);
    impl->ssl->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                           asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                           asio::ssl::context::no_tlsv1_1 | asio::ssl::context::single_dh_use);
    impl->ssl->use_certificate_chain_file(options.tls_cert_file, ec);
    if (ec) {
      return absl::InvalidArgumentError(absl::StrCat("http: cannot load TLS certificate ",
                                                     options.tls_cert_file, ": ", ec.message()));
    }
    impl->ssl->use_private_key_file(options.tls_key_file, asio::ssl::context::pem, ec);
    if (ec) {
      return absl::InvalidArgumentError(
          absl::StrCat("http: cannot load TLS key ", options.tls_key_file, ": ", ec.message()));
    }
  }
  tcp::resolver resolver(impl->ioc);
  auto endpoints = resolver.resolve(options.host, std::to_string(options.port),
                                    tcp::resolver::passive | tcp::resolver::numeric_service, ec);
  if (ec || endpoints.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("http: cannot resolve host '", options.host, "': ", ec.message()));
  }
  const tcp::endpoint endpoint = *endpoints.begin();
  tcp::acceptor& a = impl->acceptor;
  if (a.open(endpoint.protocol(), ec); !ec)
    a.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) a.bind(endpoint, ec);
  if (!ec) a.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat("http: cannot listen on ", options.host, ":",
                                               options.port, ": ", ec.message()));
  }
  impl->port = a.local_endpoint().port();
  impl->work.emplace(impl->ioc.get_executor());
  impl->Accept();
  for (int i = 0; i < threads; ++i) {
    impl->threads.emplace_back([io = &impl->ioc] {
      for (;;) {
        try {
          io->run();
          return;
        } catch (const std::exception& e) {
          Log()->error("http: I/O thread caught: {}", e.what());
        }
      }
    });
  }
  Log()->info("http: listening on {}:{}{}", options.host, impl->port, impl->ssl ? " (TLS)" : "");
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() { Shutdown(); }

int HttpServer::port() const { return impl_->port; }

bool HttpServer::WaitForPendingOutput(std::chrono::milliseconds timeout) {
  if (!impl_) return true;
  IoCore& core = *impl_->core;
  return core.WaitForZero({&core.pending_tasks, &core.pending_output},
                          std::chrono::steady_clock::now() + timeout);
}

void HttpServer::Shutdown() {
  if (!impl_ || impl_->shut_down) return;
  impl_->shut_down = true;
  Impl& s = *impl_;
  asio::post(s.acceptor.get_executor(), [&s] {
    beast::error_code ec;
    s.acceptor.close(ec);
    s.retry.cancel();
  });
  {
    std::lock_guard<std::mutex> lock(s.core->live_mu);
    for (auto& w : s.core->live) {
      if (auto session = w.lock()) session->CloseFromServer();
    }
  }
  // Closing cancels the sessions' engine requests; give them a moment to unwind.
  s.core->WaitForZero({&s.core->sessions},
                      std::chrono::steady_clock::now() + std::chrono::seconds(2));
  {
    std::lock_guard<std::mutex> lock(s.core->mu);
    s.core->stopped = true;
  }
  s.work.reset();
  s.ioc.stop();
  for (std::thread& t : s.threads) t.join();
  s.threads.clear();
  // A session that had not closed yet (accepted during the shutdown, or slow to unwind) is
  // closed here, so that no exchange still held by the engine keeps it past the io_context.
  std::lock_guard<std::mutex> lock(s.core->live_mu);
  for (auto& w : s.core->live) {
    if (auto session = w.lock()) session->CloseNow();
  }
  s.core->live.clear();
}

}  // namespace mamba::server
