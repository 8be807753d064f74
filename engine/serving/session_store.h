// Sessions: client-named conversations whose recurrent state the server keeps, so that a turn
// sends only its new text. A session holds every token it has seen or produced and the state
// after all of them but the last (the last generated token has not been fed yet; the next turn
// feeds it first). Sessions are pinned: the state cache's eviction never touches them; they
// end when deleted or when unused for the TTL (refreshed on use), and with a directory they are
// written to disk (temporary file, fsync, rename) and loaded again at start-up.
//
// Thread-safe: front-end threads manage sessions, the scheduler thread commits turns.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/serving/session_file.h"
#include "engine/types.h"

namespace mamba::engine {

inline constexpr size_t kMaxSessionIdBytes = 128;

// 1 to 128 bytes of [A-Za-z0-9._~-], not "." or ".." (URL-safe as it is; URL clients would
// resolve those two away). InvalidArgument otherwise.
absl::Status ValidateSessionId(std::string_view id);

struct SessionOptions {
  int64_t max_bytes = 0;      // memory for all sessions' states and tokens; 0 turns sessions off
  double ttl_seconds = 3600;  // a session unused this long ends (in use: never)
  int64_t max_tokens = 0;     // a session may hold at most this many tokens (0: unbounded)
  std::filesystem::path dir;  // empty: sessions live in memory only
  int64_t dir_max_bytes = 0;  // disk budget for `dir`; 0: unbounded
};

// A session as the management API reports it. Times are Unix milliseconds.
struct SessionInfo {
  std::string id;
  int64_t tokens = 0;  // tokens the session holds
  int64_t bytes = 0;   // memory it takes (state + tokens)
  int64_t created_ms = 0, last_used_ms = 0, expires_ms = 0;
  bool in_use = false;  // a request is running on it now
  // The LoRA adapter its state was computed under (its fingerprint); empty: the base model.
  std::string adapter;
};

struct SessionStats {
  int64_t live = 0, bytes = 0;
  int64_t created = 0, expired = 0, deleted = 0, conflicts = 0;
  int64_t disk_files = 0, disk_bytes = 0, disk_writes = 0, disk_write_failures = 0;
  int64_t disk_evictions = 0;  // files removed to stay within dir_max_bytes
};

class SessionStore {
 public:
  // Loads `options.dir` (when set): valid files of this model become sessions, expired ones and
  // leftover temporary files are removed, others (corrupt, another model) are skipped with a
  // warning and left alone.
  static absl::StatusOr<std::unique_ptr<SessionStore>> Create(const SessionOptions& options,
                                                              SessionModel model);
  ~SessionStore();  // writes what is queued for disk, then returns

  // A turn running on a session: holds it exclusively until Commit or destruction (which leaves
  // the session as it was). Commit after the request's last token, before its client is told.
  class Lease {
   public:
    ~Lease();
    const SessionContent& content() const { return content_; }
    const std::string& id() const { return id_; }
    // Replaces the session's content (the tokens grew; the state is the slot's after all but
    // the last of them). Returns the token count now held.
    int64_t Commit(SessionContent content);

   private:
    friend class SessionStore;
    SessionStore* store_ = nullptr;
    std::string id_;
    uint64_t generation_ = 0;
    SessionContent content_;
    bool done_ = false;
  };

  // Takes session `id` for one turn, creating it (empty) when it does not exist. Aborted when a
  // request is running on it; ResourceExhausted when a new one does not fit.
  absl::StatusOr<std::unique_ptr<Lease>> Acquire(std::string_view id);

  absl::StatusOr<SessionInfo> Get(std::string_view id);
  std::vector<SessionInfo> List();
  absl::Status Delete(std::string_view id);  // a turn running on it finishes unsaved
  // Copies `id` into `new_id` (generated when empty). AlreadyExists when new_id is taken.
  absl::StatusOr<SessionInfo> Fork(std::string_view id, std::string_view new_id);
  absl::StatusOr<std::string> Export(std::string_view id);
  // Creates or replaces `id` from a file EncodeSessionFile wrote (for any id).
  absl::StatusOr<SessionInfo> Import(std::string_view id, std::string_view bytes);

  SessionStats stats();
  const SessionModel& model() const { return model_; }
  const SessionOptions& options() const { return options_; }
  // Largest file Export can produce (for front ends' body limits).
  int64_t max_file_bytes() const;
  // Waits until every queued disk write is done (tests).
  void Flush();

 private:
  struct Entry {
    SessionContent content;
    int64_t created_ms = 0, last_used_ms = 0;
    bool in_use = false;
    uint64_t generation = 0;  // bumped on delete/replace: a lease of an older one commits nothing
  };
  SessionStore(const SessionOptions& options, SessionModel model);
  absl::Status LoadDir();
  void Release(Lease& lease, std::optional<SessionContent> content);
  void SweepLocked(int64_t now_ms);
  int64_t BytesOf(const SessionContent& c) const;
  int64_t NewEntryBytes() const;
  SessionInfo InfoLocked(const std::string& id, const Entry& e) const;
  void PersistLocked(const std::string& id, const Entry& e);
  void UnpersistLocked(const std::string& id);
  void WriterLoop();
  std::filesystem::path PathOf(std::string_view id) const;

  SessionOptions options_;
  SessionModel model_;
  std::mutex mu_;
  std::map<std::string, Entry, std::less<>> sessions_;
  uint64_t next_generation_ = 1;
  uint64_t next_generated_id_ = 1;
  SessionStats stats_;

  // Disk writer: the latest content per id (or a removal), written in the background.
  struct DiskOp {
    bool remove = false;
    SessionContent content;
    int64_t created_ms = 0, last_used_ms = 0;
  };
  std::map<std::string, DiskOp> disk_queue_;
  struct DiskFile {
    int64_t bytes = 0, last_used_ms = 0;
  };
  std::map<std::string, DiskFile> disk_files_;  // by session id
  bool writing_ = false, stop_writer_ = false;
  std::condition_variable writer_cv_, flushed_cv_;
  std::thread writer_;
};

}  // namespace mamba::engine
