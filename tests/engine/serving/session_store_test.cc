// SessionStore: ids, the session file format (round trip, every kind of damage refused), leases
// (one turn at a time, a failed turn changes nothing), fork, TTL, the memory budget, and the
// session directory (reload, leftovers, the disk budget, and SIGKILL at random points).
#include "engine/serving/session_store.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <random>
#include <thread>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"
#include "tests/support/temp_dir.h"

namespace mamba::engine {
namespace {

using testing::TempDir;

SessionModel TestModel() {
  SessionModel m;
  m.fingerprint = "0123456789abcdef0123456789abcdef";
  m.dtype = "float32";
  m.layers = 2;
  m.d_inner = 4;
  m.conv_rows = 3;
  m.d_state = 2;
  m.vocab_size = 100;
  return m;
}

// A session's content whose every value follows from (seed, n): a file mixing two versions
// would not pass Consistent.
SessionContent Content(const SessionModel& m, uint64_t seed, int64_t n, bool logits = false) {
  SessionContent c;
  std::mt19937_64 rng(seed * 1000003 + static_cast<uint64_t>(n));
  for (int64_t i = 0; i < n; ++i) c.tokens.push_back(static_cast<TokenId>(rng() % 100));
  if (n == 0) return c;
  auto s = std::make_shared<StateSnapshot>();
  for (int64_t i = 0; i < m.state_floats(); ++i) {
    s->state.push_back(static_cast<float>(rng() % 1000) / 7.0f);
  }
  if (logits) {
    for (int64_t i = 0; i < m.vocab_size; ++i) s->logits.push_back(static_cast<float>(i) * 0.5f);
  }
  c.state = s;
  c.state_tokens = logits ? n : n - 1;
  return c;
}

void ExpectSame(const SessionContent& a, const SessionContent& b) {
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.adapter, b.adapter);
  EXPECT_EQ(a.state_tokens, b.state_tokens);
  ASSERT_EQ(a.state == nullptr, b.state == nullptr);
  if (a.state) {
    EXPECT_EQ(a.state->state, b.state->state);
    EXPECT_EQ(a.state->logits, b.state->logits);
  }
}

SessionOptions Memory(int64_t bytes = 1 << 20) {
  SessionOptions o;
  o.max_bytes = bytes;
  return o;
}

std::unique_ptr<SessionStore> Store(const SessionOptions& o, SessionModel m = TestModel()) {
  auto s = SessionStore::Create(o, std::move(m));
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(*s) : nullptr;
}

TEST(SessionIdTest, SafeAlphabetAndLength) {
  for (const char* ok : {"a", "chat-42", "A.b_c~d-e", "0"}) {
    EXPECT_TRUE(ValidateSessionId(ok).ok()) << ok;
  }
  EXPECT_TRUE(ValidateSessionId(std::string(128, 'x')).ok());
  for (std::string bad :
       {std::string(), std::string(129, 'x'), std::string("a/b"), std::string(".."),
        std::string("."), std::string("a b"), std::string("a\0b", 3), std::string("é"),
        std::string("a%2Fb"), std::string("a\\b")}) {
    EXPECT_FALSE(ValidateSessionId(bad).ok()) << bad;
  }
}

TEST(SessionFileTest, RoundTrips) {
  const SessionModel m = TestModel();
  for (bool logits : {false, true}) {
    for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{37}}) {
      if (n == 0 && logits) continue;
      const SessionContent c = Content(m, 1, n, logits);
      const std::string bytes = EncodeSessionFile(m, "conv-1", c, 111, 222);
      auto d = DecodeSessionFile(m, bytes);
      ASSERT_TRUE(d.ok()) << d.status();
      EXPECT_EQ(d->id, "conv-1");
      EXPECT_EQ(d->created_ms, 111);
      EXPECT_EQ(d->last_used_ms, 222);
      ExpectSame(d->content, c);
    }
  }
}

// Mamba-2's state: conv over x|B|C channels, SSM state per head; a Mamba-1 reading of the same
// floats (same count) is refused by shape.
TEST(SessionFileTest, Mamba2StateShapesRoundTrip) {
  SessionModel m = TestModel();
  m.d_inner = 8;
  m.heads = 2;
  m.conv_dim = 12;
  const SessionContent c = Content(m, 4, 9, true);
  const std::string bytes = EncodeSessionFile(m, "m2", c, 1, 2);
  auto d = DecodeSessionFile(m, bytes);
  ASSERT_TRUE(d.ok()) << d.status();
  ExpectSame(d->content, c);
  EXPECT_NE(bytes.find("[2,2,4]"), std::string::npos);  // ssm_state [heads, d_state, head_dim]
  SessionModel flat = m;
  flat.heads = 0;
  EXPECT_FALSE(DecodeSessionFile(flat, bytes).ok());
}

TEST(SessionFileTest, RefusesEveryDamage) {
  const SessionModel m = TestModel();
  const std::string good = EncodeSessionFile(m, "s", Content(m, 2, 20), 1, 2);
  // Every truncation.
  for (size_t len = 0; len < good.size(); ++len) {
    EXPECT_FALSE(DecodeSessionFile(m, good.substr(0, len)).ok()) << len;
  }
  // Any flipped data byte (the checksum), or header byte (parse or field checks).
  std::mt19937 rng(3);
  for (int i = 0; i < 200; ++i) {
    std::string bad = good;
    const size_t at = rng() % bad.size();
    bad[at] = static_cast<char>(bad[at] ^ (1 + rng() % 255));
    auto d = DecodeSessionFile(m, bad);
    if (d.ok()) {
      // Only a header byte that JSON ignores (padding space <-> another blank) may pass; then
      // the content must be intact.
      ExpectSame(d->content, Content(m, 2, 20));
    }
  }
  // Trailing garbage.
  EXPECT_FALSE(DecodeSessionFile(m, good + "x").ok());
  // Another model: both fingerprints named.
  SessionModel other = m;
  other.fingerprint = "ffffffffffffffffffffffffffffffff";
  auto d = DecodeSessionFile(other, good);
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find(m.fingerprint), std::string::npos) << d.status();
  EXPECT_NE(d.status().message().find(other.fingerprint), std::string::npos) << d.status();
  // Same fingerprint, other shape (a bug elsewhere, but never a silent misread).
  SessionModel wider = m;
  wider.d_inner = 8;
  EXPECT_FALSE(DecodeSessionFile(wider, good).ok());
  // Token ids outside this vocabulary.
  SessionModel small = m;
  small.vocab_size = 2;
  EXPECT_FALSE(DecodeSessionFile(small, good).ok());
  EXPECT_FALSE(DecodeSessionFile(m, "not a safetensors file at all").ok());
}

// `bytes` (a session file) with its metadata changed by `edit`; the checksum covers the tensor
// data only, so the result still passes every other check.
std::string EditMetadata(const std::string& bytes,
                         const std::function<void(nlohmann::json&)>& edit) {
  uint64_t len = 0;
  for (int i = 7; i >= 0; --i) len = len << 8 | static_cast<uint8_t>(bytes[static_cast<size_t>(i)]);
  nlohmann::json header = nlohmann::json::parse(bytes.substr(8, len));
  edit(header["__metadata__"]);
  std::string h = header.dump();
  while (h.size() % 8 != 0) h.push_back(' ');
  std::string out;
  for (int i = 0; i < 8; ++i)
    out.push_back(static_cast<char>(static_cast<uint64_t>(h.size()) >> (8 * i)));
  return out + h + bytes.substr(8 + len);
}

// A session under a LoRA adapter keeps the adapter's fingerprint through the file; a file without
// one (every file written before adapters existed) is the base model's; a malformed one is
// refused.
TEST(SessionFileTest, AdapterFingerprintRoundTripsAndOldFilesAreBase) {
  const SessionModel m = TestModel();
  SessionContent c = Content(m, 3, 12);
  c.adapter = "fedcba9876543210fedcba9876543210";
  const std::string bytes = EncodeSessionFile(m, "lora", c, 1, 2);
  EXPECT_NE(bytes.find("adapter_fingerprint"), std::string::npos);
  auto d = DecodeSessionFile(m, bytes);
  ASSERT_TRUE(d.ok()) << d.status();
  ExpectSame(d->content, c);
  // The base model's session writes no field at all (the file old servers wrote and read).
  const std::string base = EncodeSessionFile(m, "base", Content(m, 3, 12), 1, 2);
  EXPECT_EQ(base.find("adapter_fingerprint"), std::string::npos);
  auto old = DecodeSessionFile(
      m, EditMetadata(bytes, [](nlohmann::json& meta) { meta.erase("adapter_fingerprint"); }));
  ASSERT_TRUE(old.ok()) << old.status();
  EXPECT_EQ(old->content.adapter, "");
  for (const nlohmann::json& bad :
       {nlohmann::json(""), nlohmann::json(7), nlohmann::json(std::string(129, 'f')),
        nlohmann::json::array()}) {
    auto refused = DecodeSessionFile(
        m, EditMetadata(bytes, [&](nlohmann::json& meta) { meta["adapter_fingerprint"] = bad; }));
    ASSERT_FALSE(refused.ok()) << bad;
    EXPECT_NE(refused.status().message().find("adapter_fingerprint"), std::string::npos)
        << refused.status();
  }
}

// The adapter stays with the session through a fork, an export / import, the session directory,
// and is reported in SessionInfo.
TEST(SessionStoreTest, TheAdapterFollowsTheSession) {
  TempDir dir;
  SessionOptions o = Memory();
  o.dir = dir.path() / "sessions";
  const std::string fp = "00112233445566778899aabbccddeeff";
  {
    auto store = Store(o);
    SessionContent c = Content(store->model(), 1, 10);
    c.adapter = fp;
    ASSERT_TRUE((*store->Acquire("a"))->Commit(c));
    ASSERT_TRUE((*store->Acquire("plain"))->Commit(Content(store->model(), 2, 10)));
    EXPECT_EQ(store->Get("a")->adapter, fp);
    EXPECT_EQ(store->Get("plain")->adapter, "");
    auto fork = store->Fork("a", "b");
    ASSERT_TRUE(fork.ok()) << fork.status();
    EXPECT_EQ(fork->adapter, fp);
    auto bytes = store->Export("a");
    ASSERT_TRUE(bytes.ok());
    auto imported = store->Import("c", *bytes);
    ASSERT_TRUE(imported.ok()) << imported.status();
    EXPECT_EQ(imported->adapter, fp);
    EXPECT_EQ((*store->Acquire("c"))->content().adapter, fp);
    store->Flush();
  }
  auto reloaded = Store(o);
  for (const char* id : {"a", "b", "c"}) EXPECT_EQ(reloaded->Get(id)->adapter, fp) << id;
  EXPECT_EQ(reloaded->Get("plain")->adapter, "");
}

TEST(SessionStoreTest, OneTurnAtATimeAndFailedTurnsChangeNothing) {
  auto store = Store(Memory());
  {
    auto lease = store->Acquire("a");
    ASSERT_TRUE(lease.ok()) << lease.status();
    EXPECT_TRUE((*lease)->content().tokens.empty());
    auto second = store->Acquire("a");
    EXPECT_EQ(second.status().code(), absl::StatusCode::kAborted) << second.status();
    EXPECT_TRUE(store->Get("a")->in_use);
    // Dropped without a commit: a new session that never held a token does not stay.
  }
  EXPECT_EQ(store->Get("a").status().code(), absl::StatusCode::kNotFound);
  {
    auto lease = store->Acquire("a");
    ASSERT_TRUE(lease.ok());
    EXPECT_EQ((*lease)->Commit(Content(store->model(), 1, 10)), 10);
  }
  EXPECT_EQ(store->Get("a")->tokens, 10);
  EXPECT_FALSE(store->Get("a")->in_use);
  {
    auto lease = store->Acquire("a");
    ASSERT_TRUE(lease.ok());
    ExpectSame((*lease)->content(), Content(store->model(), 1, 10));
  }  // a failed second turn
  EXPECT_EQ(store->Get("a")->tokens, 10);
  // Deleted while a turn runs: the turn's commit saves nothing.
  {
    auto lease = store->Acquire("a");
    ASSERT_TRUE(lease.ok());
    EXPECT_TRUE(store->Delete("a").ok());
    (*lease)->Commit(Content(store->model(), 1, 12));
  }
  EXPECT_EQ(store->Get("a").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store->Delete("a").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store->Acquire("bad id").status().code(), absl::StatusCode::kInvalidArgument);
  const SessionStats st = store->stats();
  EXPECT_EQ(st.conflicts, 1);
  EXPECT_EQ(st.deleted, 1);
  EXPECT_EQ(st.live, 0);
  EXPECT_EQ(st.bytes, 0);
}

TEST(SessionStoreTest, ForkExportImport) {
  auto store = Store(Memory());
  ASSERT_TRUE((*store->Acquire("a"))->Commit(Content(store->model(), 1, 10)));
  auto fork = store->Fork("a", "b");
  ASSERT_TRUE(fork.ok()) << fork.status();
  EXPECT_EQ(fork->tokens, 10);
  EXPECT_EQ(store->Fork("a", "b").status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(store->Fork("zz", "c").status().code(), absl::StatusCode::kNotFound);
  auto generated = store->Fork("a", "");
  ASSERT_TRUE(generated.ok());
  EXPECT_NE(generated->id, "a");
  EXPECT_TRUE(ValidateSessionId(generated->id).ok());
  // The fork moves on; the original stays.
  ASSERT_TRUE((*store->Acquire("b"))->Commit(Content(store->model(), 5, 14)));
  EXPECT_EQ(store->Get("a")->tokens, 10);
  EXPECT_EQ(store->Get("b")->tokens, 14);
  // Export / import, under another id.
  auto bytes = store->Export("b");
  ASSERT_TRUE(bytes.ok());
  auto imported = store->Import("c", *bytes);
  ASSERT_TRUE(imported.ok()) << imported.status();
  EXPECT_EQ(imported->tokens, 14);
  ExpectSame((*store->Acquire("c"))->content(), Content(store->model(), 5, 14));
  EXPECT_EQ(store->Import("d", bytes->substr(0, bytes->size() / 2)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store->Import("d", std::string(static_cast<size_t>(store->max_file_bytes()) + 1, 'x'))
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  // Importing over a session in use is refused.
  auto lease = store->Acquire("c");
  ASSERT_TRUE(lease.ok());
  EXPECT_EQ(store->Import("c", *bytes).status().code(), absl::StatusCode::kAborted);
}

TEST(SessionStoreTest, MemoryBudgetAndTtl) {
  const SessionModel m = TestModel();
  const int64_t one = m.state_floats() * 4 + StateSnapshot::kEntryOverheadBytes + 10 * 4;
  SessionOptions o = Memory(2 * one);
  o.ttl_seconds = 3600;
  auto store = Store(o);
  ASSERT_TRUE((*store->Acquire("a"))->Commit(Content(m, 1, 10)));
  ASSERT_TRUE((*store->Acquire("b"))->Commit(Content(m, 2, 10)));
  EXPECT_EQ(store->Acquire("c").status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(store->Fork("a", "c").status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(store->Delete("a").ok());
  EXPECT_TRUE(store->Acquire("c").ok());

  SessionOptions brief = Memory();
  brief.ttl_seconds = 0.001;
  auto expiring = Store(brief);
  ASSERT_TRUE((*expiring->Acquire("a"))->Commit(Content(m, 1, 10)));
  auto held = expiring->Acquire("b");  // in use: never expires
  ASSERT_TRUE(held.ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(expiring->Get("a").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(expiring->Get("b").ok());
  EXPECT_EQ(expiring->stats().expired, 1);
}

TEST(SessionStoreTest, DirectorySurvivesARestart) {
  TempDir dir;
  SessionOptions o = Memory();
  o.dir = dir.path() / "sessions";
  const SessionModel m = TestModel();
  {
    auto store = Store(o);
    ASSERT_TRUE((*store->Acquire("a"))->Commit(Content(m, 1, 10)));
    ASSERT_TRUE((*store->Acquire("b"))->Commit(Content(m, 2, 20)));
    ASSERT_TRUE((*store->Acquire("b"))->Commit(Content(m, 2, 21)));
    ASSERT_TRUE(store->Fork("a", "c").ok());
    ASSERT_TRUE(store->Delete("a").ok());
    store->Flush();
    EXPECT_EQ(store->stats().disk_files, 2);
  }
  // Leftovers: a temporary file from an interrupted write, a corrupt file, a file of another
  // model, an unrelated file.
  {
    std::ofstream(o.dir / "s_xyz.session.tmp") << "partial";
    std::ofstream(o.dir / "s_mfrgg.session") << "garbage";
    SessionModel other = m;
    other.fingerprint = "ffffffffffffffffffffffffffffffff";
    std::ofstream(o.dir / "s_mq.session", std::ios::binary)
        << EncodeSessionFile(other, "d", Content(other, 4, 5), 1, 2);
    std::ofstream(o.dir / "README") << "not ours";
  }
  auto store = Store(o);
  EXPECT_EQ(store->stats().live, 2);
  ExpectSame((*store->Acquire("b"))->content(), Content(m, 2, 21));
  ExpectSame((*store->Acquire("c"))->content(), Content(m, 1, 10));
  EXPECT_EQ(store->Get("a").status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(std::filesystem::exists(o.dir / "s_xyz.session.tmp"));
  EXPECT_TRUE(std::filesystem::exists(o.dir / "README"));
  EXPECT_TRUE(std::filesystem::exists(o.dir / "s_mq.session"));  // another model's: kept

  // Expired while the server was down: removed at start-up.
  store.reset();
  SessionOptions brief = o;
  brief.ttl_seconds = 0.001;
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  auto later = Store(brief);
  EXPECT_EQ(later->stats().live, 0);
  EXPECT_EQ(later->stats().disk_files, 0);
}

TEST(SessionStoreTest, DiskBudgetRemovesTheLeastRecentlyUsedFiles) {
  TempDir dir;
  const SessionModel m = TestModel();
  const int64_t file =
      static_cast<int64_t>(EncodeSessionFile(m, "a", Content(m, 1, 10), 1, 2).size());
  SessionOptions o = Memory();
  o.dir = dir.path();
  o.dir_max_bytes = 2 * file + file / 2;
  auto store = Store(o);
  for (const char* id : {"a", "b", "c"}) {
    ASSERT_TRUE((*store->Acquire(id))->Commit(Content(m, 1, 10)));
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  store->Flush();
  const SessionStats st = store->stats();
  EXPECT_EQ(st.disk_files, 2);
  EXPECT_EQ(st.disk_evictions, 1);
  EXPECT_LE(st.disk_bytes, o.dir_max_bytes);
  EXPECT_EQ(st.live, 3);  // still in memory
  store.reset();
  auto reloaded = Store(o);
  EXPECT_EQ(reloaded->Get("a").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(reloaded->Get("b").ok());
  EXPECT_TRUE(reloaded->Get("c").ok());
}

// A process writing sessions is killed (SIGKILL) at random points; each restart must load every
// file intact (each session's content is one whole version) and leave no temporary file.
TEST(SessionStoreTest, SigkillNeverCorruptsASession) {
  spdlog::set_level(spdlog::level::warn);
  TempDir dir;
  SessionOptions o = Memory(int64_t{1} << 30);
  o.dir = dir.path();
  const SessionModel m = TestModel();
  std::mt19937 rng(7);
  int64_t loaded_total = 0, previous = 0;
  for (int round = 0; round < 12; ++round) {
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      auto s = SessionStore::Create(o, m);
      if (!s.ok()) _exit(3);
      for (int64_t i = 0;; ++i) {
        const std::string id = "s" + std::to_string(i % 5);
        auto lease = (*s)->Acquire(id);
        if (!lease.ok()) _exit(4);
        // Files of up to ~256 KiB: a kill often lands mid-write.
        (*lease)->Commit(Content(m, static_cast<uint64_t>(i % 5), 1 + (i * 7919) % 64000));
        (*s)->Flush();
      }
    }
    std::this_thread::sleep_for(std::chrono::microseconds(5000 + rng() % 60000));
    ASSERT_EQ(kill(pid, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status)) << "the writer exited by itself: " << status;
    auto store = Store(o);
    ASSERT_NE(store, nullptr);
    const SessionStats st = store->stats();
    EXPECT_EQ(st.disk_files, st.live) << "a file did not load (round " << round << ")";
    for (const SessionInfo& info : store->List()) {
      auto lease = store->Acquire(info.id);
      ASSERT_TRUE(lease.ok());
      const SessionContent& c = (*lease)->content();
      const uint64_t seed = static_cast<uint64_t>(info.id[1] - '0');
      ExpectSame(c, Content(m, seed, static_cast<int64_t>(c.tokens.size())));
    }
    loaded_total += st.live;
    // A session once written is never lost: a kill costs at most the update in flight.
    EXPECT_GE(st.live, previous) << "round " << round;
    previous = st.live;
    for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
      EXPECT_EQ(e.path().extension(), ".session") << e.path();
    }
  }
  EXPECT_GT(loaded_total, 0);
}

}  // namespace
}  // namespace mamba::engine
