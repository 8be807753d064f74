#include "engine/serving/session_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/logging.h"

namespace mamba::engine {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kFileSuffix = ".session";
constexpr std::string_view kTempSuffix = ".tmp";

// Debian's abseil has its own string_view, which StrCat takes.
absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool IdByteOk(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '~' || c == '-';
}

// Lower-case RFC 4648 base32 without padding: a file name made of [a-z2-7] whatever the id.
std::string Base32(std::string_view s) {
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
  std::string out;
  uint32_t buffer = 0;
  int bits = 0;
  for (unsigned char c : s) {
    buffer = (buffer << 8) | c;
    bits += 8;
    while (bits >= 5) {
      out.push_back(kAlphabet[(buffer >> (bits - 5)) & 31]);
      bits -= 5;
    }
  }
  if (bits > 0) out.push_back(kAlphabet[(buffer << (5 - bits)) & 31]);
  return out;
}

// Writes `bytes` to `path` durably: a temporary file beside it, fsync, rename, fsync of the
// directory. A crash at any point leaves the old file or the new one, never a mix.
absl::Status WriteFileAtomically(const fs::path& path, std::string_view bytes) {
  const fs::path tmp = path.string() + std::string(kTempSuffix);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return absl::InternalError(absl::StrCat(tmp.string(), ": ", std::strerror(errno)));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return absl::InternalError(absl::StrCat(tmp.string(), ": write: ", std::strerror(err)));
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    ::unlink(tmp.c_str());
    return absl::InternalError(absl::StrCat(tmp.string(), ": fsync: ", std::strerror(errno)));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return absl::InternalError(absl::StrCat(path.string(), ": rename: ", std::strerror(errno)));
  }
  const int dir = ::open(path.parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateSessionId(std::string_view id) {
  if (id.empty() || id.size() > kMaxSessionIdBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("a session id has 1 to ", kMaxSessionIdBytes, " bytes, got ", id.size()));
  }
  if (id == "." || id == "..") {
    return absl::InvalidArgumentError("a session id may not be '.' or '..'");
  }
  for (char c : id) {
    if (!IdByteOk(c)) {
      return absl::InvalidArgumentError(
          "a session id may contain only letters, digits and . _ ~ - (no other characters)");
    }
  }
  return absl::OkStatus();
}

// ---- SessionStore ----

SessionStore::SessionStore(const SessionOptions& options, SessionModel model)
    : options_(options), model_(std::move(model)) {}

absl::StatusOr<std::unique_ptr<SessionStore>> SessionStore::Create(const SessionOptions& options,
                                                                   SessionModel model) {
  std::unique_ptr<SessionStore> s(new SessionStore(options, std::move(model)));
  if (!options.dir.empty()) {
    if (absl::Status st = s->LoadDir(); !st.ok()) return st;
    s->writer_ = std::thread([p = s.get()] { p->WriterLoop(); });
  }
  return s;
}

SessionStore::~SessionStore() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_writer_ = true;
  }
  writer_cv_.notify_all();
  if (writer_.joinable()) writer_.join();
}

fs::path SessionStore::PathOf(std::string_view id) const {
  return options_.dir / absl::StrCat("s_", Base32(id), Sv(kFileSuffix));
}

int64_t SessionStore::BytesOf(const SessionContent& c) const {
  return (c.state ? c.state->bytes() : 0) + static_cast<int64_t>(c.tokens.size()) * 4;
}

int64_t SessionStore::NewEntryBytes() const {
  return model_.state_floats() * 4 + StateSnapshot::kEntryOverheadBytes;
}

int64_t SessionStore::max_file_bytes() const {
  return 8 + kMaxSessionHeaderBytes + (model_.state_floats() + model_.vocab_size) * 4 +
         (options_.max_tokens > 0 ? options_.max_tokens : int64_t{1} << 22) * 4;
}

SessionInfo SessionStore::InfoLocked(const std::string& id, const Entry& e) const {
  SessionInfo i;
  i.id = id;
  i.tokens = static_cast<int64_t>(e.content.tokens.size());
  i.bytes = BytesOf(e.content);
  i.created_ms = e.created_ms;
  i.last_used_ms = e.last_used_ms;
  i.expires_ms = e.last_used_ms + static_cast<int64_t>(options_.ttl_seconds * 1000);
  i.in_use = e.in_use;
  i.adapter = e.content.adapter;
  return i;
}

void SessionStore::SweepLocked(int64_t now_ms) {
  const auto ttl_ms = static_cast<int64_t>(options_.ttl_seconds * 1000);
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    if (!it->second.in_use && now_ms - it->second.last_used_ms > ttl_ms) {
      stats_.bytes -= BytesOf(it->second.content);
      ++stats_.expired;
      UnpersistLocked(it->first);
      it = sessions_.erase(it);
    } else {
      ++it;
    }
  }
  stats_.live = static_cast<int64_t>(sessions_.size());
}

absl::StatusOr<std::unique_ptr<SessionStore::Lease>> SessionStore::Acquire(std::string_view id) {
  if (absl::Status s = ValidateSessionId(id); !s.ok()) return s;
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = NowMs();
  SweepLocked(now);
  auto it = sessions_.find(id);
  if (it == sessions_.end()) {
    if (stats_.bytes + NewEntryBytes() > options_.max_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "no memory for a new session: ", stats_.live, " sessions hold ", stats_.bytes,
          " bytes of --session-bytes ", options_.max_bytes, "; delete sessions or raise it"));
    }
    Entry e;
    e.created_ms = e.last_used_ms = now;
    e.generation = next_generation_++;
    it = sessions_.emplace(std::string(id), std::move(e)).first;
    ++stats_.created;
    stats_.live = static_cast<int64_t>(sessions_.size());
  } else if (it->second.in_use) {
    ++stats_.conflicts;
    return absl::AbortedError(absl::StrCat("session '", Sv(id),
                                           "' is in use by another request; a session runs one "
                                           "request at a time"));
  }
  it->second.in_use = true;
  auto lease = std::unique_ptr<Lease>(new Lease());
  lease->store_ = this;
  lease->id_ = std::string(id);
  lease->generation_ = it->second.generation;
  lease->content_ = it->second.content;
  return lease;
}

SessionStore::Lease::~Lease() {
  if (!done_) store_->Release(*this, std::nullopt);
}

int64_t SessionStore::Lease::Commit(SessionContent content) {
  const auto tokens = static_cast<int64_t>(content.tokens.size());
  done_ = true;
  store_->Release(*this, std::move(content));
  return tokens;
}

void SessionStore::Release(Lease& lease, std::optional<SessionContent> content) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = sessions_.find(lease.id_);
  if (it == sessions_.end() || it->second.generation != lease.generation_) return;  // deleted
  Entry& e = it->second;
  e.in_use = false;
  if (!content) {
    // A first turn that failed leaves no empty session behind.
    if (e.content.tokens.empty()) {
      stats_.bytes -= BytesOf(e.content);
      sessions_.erase(it);
      stats_.live = static_cast<int64_t>(sessions_.size());
    }
    return;
  }
  stats_.bytes += BytesOf(*content) - BytesOf(e.content);
  e.content = std::move(*content);
  e.last_used_ms = NowMs();
  PersistLocked(it->first, e);
}

absl::StatusOr<SessionInfo> SessionStore::Get(std::string_view id) {
  if (absl::Status s = ValidateSessionId(id); !s.ok()) return s;
  std::lock_guard<std::mutex> lock(mu_);
  SweepLocked(NowMs());
  auto it = sessions_.find(id);
  if (it == sessions_.end()) {
    return absl::NotFoundError(absl::StrCat("no session '", Sv(id),
                                            "' (never created, deleted or "
                                            "expired)"));
  }
  return InfoLocked(it->first, it->second);
}

std::vector<SessionInfo> SessionStore::List() {
  std::lock_guard<std::mutex> lock(mu_);
  SweepLocked(NowMs());
  std::vector<SessionInfo> out;
  for (const auto& [id, e] : sessions_) out.push_back(InfoLocked(id, e));
  return out;
}

absl::Status SessionStore::Delete(std::string_view id) {
  if (absl::Status s = ValidateSessionId(id); !s.ok()) return s;
  std::lock_guard<std::mutex> lock(mu_);
  SweepLocked(NowMs());
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return absl::NotFoundError(absl::StrCat("no session '", Sv(id), "'"));
  stats_.bytes -= BytesOf(it->second.content);
  ++stats_.deleted;
  UnpersistLocked(it->first);
  sessions_.erase(it);
  stats_.live = static_cast<int64_t>(sessions_.size());
  return absl::OkStatus();
}

absl::StatusOr<SessionInfo> SessionStore::Fork(std::string_view id, std::string_view new_id) {
  if (absl::Status s = ValidateSessionId(id); !s.ok()) return s;
  std::string target(new_id);
  if (!target.empty()) {
    if (absl::Status s = ValidateSessionId(target); !s.ok()) return s;
  }
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = NowMs();
  SweepLocked(now);
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return absl::NotFoundError(absl::StrCat("no session '", Sv(id), "'"));
  if (target.empty()) {
    do {
      target =
          absl::StrCat(Sv(id).substr(0, kMaxSessionIdBytes - 24), ".fork", next_generated_id_++);
    } while (sessions_.count(target));
  } else if (sessions_.count(target)) {
    return absl::AlreadyExistsError(absl::StrCat("session '", target, "' already exists"));
  }
  const int64_t bytes = BytesOf(it->second.content);
  if (stats_.bytes + bytes > options_.max_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("no memory for another session (--session-bytes ", options_.max_bytes, ")"));
  }
  Entry e;
  e.content = it->second.content;  // the state is immutable: shared, not copied
  e.created_ms = e.last_used_ms = now;
  e.generation = next_generation_++;
  it->second.last_used_ms = now;
  auto [nit, inserted] = sessions_.emplace(target, std::move(e));
  stats_.bytes += bytes;
  ++stats_.created;
  stats_.live = static_cast<int64_t>(sessions_.size());
  PersistLocked(nit->first, nit->second);
  return InfoLocked(nit->first, nit->second);
}

absl::StatusOr<std::string> SessionStore::Export(std::string_view id) {
  if (absl::Status s = ValidateSessionId(id); !s.ok()) return s;
  SessionContent content;
  int64_t created = 0, used = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    SweepLocked(NowMs());
    auto it = sessions_.find(id);
    if (it == sessions_.end())
      return absl::NotFoundError(absl::StrCat("no session '", Sv(id), "'"));
    content = it->second.content;
    created = it->second.created_ms;
    used = it->second.last_used_ms;
  }
  return EncodeSessionFile(model_, id, content, created, used);
}

absl::StatusOr<SessionInfo> SessionStore::Import(std::string_view id, std::string_view bytes) {
  if (absl::Status s = ValidateSessionId(id); !s.ok()) return s;
  if (static_cast<int64_t>(bytes.size()) > max_file_bytes()) {
    return absl::InvalidArgumentError(absl::StrCat("session state file: ", bytes.size(),
                                                   " bytes; a state of this model takes at most ",
                                                   max_file_bytes()));
  }
  absl::StatusOr<DecodedSession> d = DecodeSessionFile(model_, bytes);
  if (!d.ok()) return d.status();
  if (options_.max_tokens > 0 &&
      static_cast<int64_t>(d->content.tokens.size()) > options_.max_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("session state file: the session holds ", d->content.tokens.size(),
                     " tokens; this server's limit is ", options_.max_tokens));
  }
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = NowMs();
  SweepLocked(now);
  auto it = sessions_.find(id);
  const int64_t old_bytes = it == sessions_.end() ? 0 : BytesOf(it->second.content);
  if (it != sessions_.end() && it->second.in_use) {
    ++stats_.conflicts;
    return absl::AbortedError(absl::StrCat("session '", Sv(id), "' is in use by another request"));
  }
  const int64_t bytes_new = BytesOf(d->content);
  if (stats_.bytes - old_bytes + bytes_new > options_.max_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("no memory for the session (--session-bytes ", options_.max_bytes, ")"));
  }
  Entry e;
  e.content = std::move(d->content);
  e.created_ms = it == sessions_.end() ? now : it->second.created_ms;
  e.last_used_ms = now;
  e.generation = next_generation_++;
  if (it == sessions_.end()) ++stats_.created;
  stats_.bytes += bytes_new - old_bytes;
  Entry& stored = sessions_[std::string(id)] = std::move(e);
  stats_.live = static_cast<int64_t>(sessions_.size());
  PersistLocked(std::string(id), stored);
  return InfoLocked(std::string(id), stored);
}

SessionStats SessionStore::stats() {
  std::lock_guard<std::mutex> lock(mu_);
  SweepLocked(NowMs());
  return stats_;
}

// ---- Disk ----

void SessionStore::PersistLocked(const std::string& id, const Entry& e) {
  if (options_.dir.empty()) return;
  DiskOp& op = disk_queue_[id];
  op.remove = false;
  op.content = e.content;
  op.created_ms = e.created_ms;
  op.last_used_ms = e.last_used_ms;
  writer_cv_.notify_one();
}

void SessionStore::UnpersistLocked(const std::string& id) {
  if (options_.dir.empty()) return;
  DiskOp& op = disk_queue_[id];
  op = DiskOp{};
  op.remove = true;
  writer_cv_.notify_one();
}

void SessionStore::Flush() {
  std::unique_lock<std::mutex> lock(mu_);
  flushed_cv_.wait(lock,
                   [&] { return options_.dir.empty() || (disk_queue_.empty() && !writing_); });
}

void SessionStore::WriterLoop() {
  auto log = NamedLogger("engine");
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    writer_cv_.wait(lock, [&] { return stop_writer_ || !disk_queue_.empty(); });
    if (disk_queue_.empty()) break;  // stopping, and everything queued is written
    auto node = disk_queue_.extract(disk_queue_.begin());
    const std::string& id = node.key();
    DiskOp op = std::move(node.mapped());
    writing_ = true;
    const fs::path path = PathOf(id);
    if (op.remove) {
      lock.unlock();
      std::error_code ec;
      fs::remove(path, ec);
      lock.lock();
      if (auto f = disk_files_.find(id); f != disk_files_.end()) {
        stats_.disk_bytes -= f->second.bytes;
        disk_files_.erase(f);
      }
    } else {
      lock.unlock();
      const std::string bytes =
          EncodeSessionFile(model_, id, op.content, op.created_ms, op.last_used_ms);
      lock.lock();
      // Within the disk budget: the least recently used other files go first (expired ones
      // are the oldest of all; a live session whose file goes stays in memory, not durable).
      const auto size = static_cast<int64_t>(bytes.size());
      std::vector<std::string> evict;
      bool fits = true;
      if (options_.dir_max_bytes > 0) {
        int64_t total = stats_.disk_bytes;
        if (auto f = disk_files_.find(id); f != disk_files_.end()) total -= f->second.bytes;
        std::vector<std::pair<int64_t, std::string>> by_age;
        for (const auto& [other, f] : disk_files_) {
          if (other != id) by_age.emplace_back(f.last_used_ms, other);
        }
        std::sort(by_age.begin(), by_age.end());
        for (size_t k = 0; k < by_age.size() && total + size > options_.dir_max_bytes; ++k) {
          total -= disk_files_[by_age[k].second].bytes;
          evict.push_back(by_age[k].second);
        }
        fits = total + size <= options_.dir_max_bytes;
        if (!fits) evict.clear();  // it cannot fit at all: keep the others
      }
      for (const std::string& other : evict) {
        stats_.disk_bytes -= disk_files_[other].bytes;
        disk_files_.erase(other);
        ++stats_.disk_evictions;
      }
      lock.unlock();
      for (const std::string& other : evict) {
        std::error_code ec;
        fs::remove(PathOf(other), ec);
        log->warn("engine: session file of '{}' removed to stay within --session-dir-bytes {}",
                  other, options_.dir_max_bytes);
      }
      absl::Status s =
          fits ? WriteFileAtomically(path, bytes)
               : absl::ResourceExhaustedError(absl::StrCat(
                     "a session file of ", size, " bytes does not fit --session-dir-bytes ",
                     options_.dir_max_bytes));
      lock.lock();
      if (s.ok()) {
        ++stats_.disk_writes;
        DiskFile& f = disk_files_[id];
        stats_.disk_bytes += size - f.bytes;
        f.bytes = size;
        f.last_used_ms = op.last_used_ms;
      } else {
        ++stats_.disk_write_failures;
        lock.unlock();
        log->warn("engine: session '{}' not written to disk: {}", id, s.ToString());
        lock.lock();
      }
    }
    stats_.disk_files = static_cast<int64_t>(disk_files_.size());
    writing_ = false;
    if (disk_queue_.empty()) flushed_cv_.notify_all();
  }
  writing_ = false;
  flushed_cv_.notify_all();
}

absl::Status SessionStore::LoadDir() {
  auto log = NamedLogger("engine");
  std::error_code ec;
  fs::create_directories(options_.dir, ec);
  if (ec || !fs::is_directory(options_.dir)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--session-dir ", options_.dir.string(), ": not a usable directory"));
  }
  if (::access(options_.dir.c_str(), W_OK) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--session-dir ", options_.dir.string(), ": not writable"));
  }
  const int64_t now = NowMs();
  const auto ttl_ms = static_cast<int64_t>(options_.ttl_seconds * 1000);
  std::vector<DecodedSession> loaded;
  std::vector<int64_t> sizes;
  int skipped = 0, expired = 0;
  for (const fs::directory_entry& entry : fs::directory_iterator(options_.dir, ec)) {
    const fs::path& p = entry.path();
    const std::string name = p.filename().string();
    if (absl::EndsWith(name, Sv(kTempSuffix)) && absl::StartsWith(name, "s_")) {
      fs::remove(p, ec);  // a write a crash interrupted: its previous version is intact
      continue;
    }
    if (!absl::StartsWith(name, "s_") || !absl::EndsWith(name, Sv(kFileSuffix))) continue;
    std::ifstream in(p, std::ios::binary);
    std::stringstream buffer;
    buffer << in.rdbuf();
    const std::string bytes = buffer.str();
    absl::StatusOr<DecodedSession> d =
        static_cast<int64_t>(bytes.size()) > max_file_bytes()
            ? absl::InvalidArgumentError("larger than any state of this model")
            : DecodeSessionFile(model_, bytes);
    if (d.ok() && (ValidateSessionId(d->id).ok() == false || PathOf(d->id) != p)) {
      d = absl::InvalidArgumentError("the session id does not match the file name");
    }
    if (!d.ok()) {
      ++skipped;
      log->warn("engine: skipping session file {}: {}", p.string(), d.status().ToString());
      continue;
    }
    if (now - d->last_used_ms > ttl_ms) {
      ++expired;
      fs::remove(p, ec);
      continue;
    }
    sizes.push_back(static_cast<int64_t>(bytes.size()));
    loaded.push_back(std::move(*d));
  }
  // Most recently used first, while memory lasts (the rest stay on disk, not loaded).
  std::vector<size_t> order(loaded.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return loaded[a].last_used_ms > loaded[b].last_used_ms; });
  int not_loaded = 0;
  for (size_t i : order) {
    DecodedSession& d = loaded[i];
    const int64_t bytes = BytesOf(d.content);
    disk_files_[d.id] = DiskFile{sizes[i], d.last_used_ms};  // on disk either way
    stats_.disk_bytes += sizes[i];
    if (stats_.bytes + bytes > options_.max_bytes) {
      ++not_loaded;
      continue;
    }
    Entry e;
    e.content = std::move(d.content);
    e.created_ms = d.created_ms;
    e.last_used_ms = d.last_used_ms;
    e.generation = next_generation_++;
    stats_.bytes += bytes;
    sessions_.emplace(std::move(d.id), std::move(e));
  }
  stats_.live = static_cast<int64_t>(sessions_.size());
  stats_.disk_files = static_cast<int64_t>(disk_files_.size());
  log->info(
      "engine: {} sessions loaded from {} ({} expired and removed, {} skipped, {} not loaded "
      "for lack of --session-bytes)",
      sessions_.size(), options_.dir.string(), expired, skipped, not_loaded);
  return absl::OkStatus();
}

}  // namespace mamba::engine
