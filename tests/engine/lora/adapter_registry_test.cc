// The LoRA adapter registry (engine/lora/adapter_registry.h) over the fake backend: load,
// unload, find, --max-loras and --max-lora-rank, refusals naming the adapter, and never a
// half-loaded adapter under concurrent loads, unloads and lookups.
#include "engine/lora/adapter_registry.h"

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/engine/fake_backend.h"
#include "tests/engine/lora/lora_test_support.h"
#include "tests/engine/test_support.h"

namespace mamba::engine {
namespace {

using namespace std::chrono_literals;
using testing::FakeBackend;
using testing::TempDir;
using Adapter = std::shared_ptr<const ServedAdapter>;

// The adapters of kSpecs, written once for SmallConfig's base model.
class AdapterRegistryTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    written_ = new absl::Status(testing::WriteSpecAdapters(testing::SmallConfig(), dir_->path()));
  }
  static void TearDownTestSuite() {
    delete written_;
    delete dir_;
  }
  void SetUp() override { ASSERT_TRUE(written_->ok()) << *written_; }

  static std::filesystem::path Path(std::string_view name) { return dir_->path() / name; }

  static TempDir* dir_;
  static absl::Status* written_;
};
TempDir* AdapterRegistryTest::dir_ = nullptr;
absl::Status* AdapterRegistryTest::written_ = nullptr;

// A fake backend's adapter as the registry hands it out: wholly there, its weights the ones
// made from its own parsed adapter.
bool Whole(const ServedAdapter& s, std::string_view name) {
  return s.name == name && s.host && s.weights && s.key != 0 && !s.host->fingerprint().empty() &&
         FakeBackend::SaltOf(s.weights.get()) == FakeBackend::SaltOf(s.host->fingerprint());
}

TEST_F(AdapterRegistryTest, LoadsFindsListsAndUnloads) {
  FakeBackend fake(testing::SmallConfig(), 1);
  AdapterRegistry reg(fake, {});
  auto b = reg.Load("b", Path("b"));
  ASSERT_TRUE(b.ok()) << b.status();
  auto a = reg.Load("a", Path("a"));
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_TRUE(Whole(**a, "a"));
  EXPECT_EQ((*a)->path, Path("a"));
  EXPECT_GT((*a)->loaded_ms, 0);
  EXPECT_EQ(reg.Find("a"), *a);
  EXPECT_EQ(reg.Find("b"), *b);
  EXPECT_EQ(reg.Find("c"), nullptr);
  EXPECT_NE((*a)->key, (*b)->key);
  std::vector<std::string> names;
  for (const Adapter& s : reg.List()) names.push_back(s->name);
  EXPECT_EQ(names, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(reg.resident(), 2);
  // A name is served once; the same directory under another name is the same adapter (same
  // fingerprint, same state-cache key).
  auto again = reg.Load("a", Path("c"));
  EXPECT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists) << again.status();
  auto alias = reg.Load("a-too", Path("a"));
  ASSERT_TRUE(alias.ok()) << alias.status();
  EXPECT_EQ((*alias)->key, (*a)->key);
  EXPECT_EQ((*alias)->host->fingerprint(), (*a)->host->fingerprint());
  ASSERT_TRUE(reg.Unload("a").ok());
  EXPECT_EQ(reg.Find("a"), nullptr);
  EXPECT_EQ(reg.Unload("a").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(reg.Unload("never").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(reg.resident(), 3);  // `a` is still held here
  a->reset();
  EXPECT_EQ(reg.resident(), 2);
  // Unloaded, the name is free again.
  auto reloaded = reg.Load("a", Path("c"));
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  EXPECT_EQ(reg.Find("a")->path, Path("c"));
}

TEST_F(AdapterRegistryTest, RefusesBadNamesDirectoriesAndAdapters) {
  FakeBackend fake(testing::SmallConfig(), 1);
  AdapterRegistryOptions o;
  o.load.max_rank = 4;
  AdapterRegistry reg(fake, o);
  for (std::string bad :
       {std::string(), std::string(129, 'x'), std::string("a b"), std::string("a?b"),
        std::string("a\0b", 3), std::string("é"), std::string("a\\b"), std::string("a\nb")}) {
    auto s = reg.Load(bad, Path("b"));
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << bad << ": " << s.status();
  }
  auto ok = reg.Load(std::string(128, 'x'), Path("b"));
  EXPECT_TRUE(ok.ok()) << ok.status();
  auto odd = reg.Load("org/model:v1.2_x-y", Path("b"));
  EXPECT_TRUE(odd.ok()) << odd.status();
  // No such directory (or a file): NotFound naming the adapter.
  for (const std::filesystem::path& p : {Path("nope"), Path("a") / "adapter_config.json"}) {
    auto missing = reg.Load("m", p);
    EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound) << missing.status();
    EXPECT_NE(missing.status().message().find("'m'"), std::string::npos) << missing.status();
  }
  // A directory without an adapter, an adapter whose rank passes --max-lora-rank: the loader's
  // refusal, naming the adapter.
  TempDir empty;
  auto none = reg.Load("e", empty.path());
  EXPECT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("'e'"), std::string::npos) << none.status();
  auto big = reg.Load("big", Path("a"));  // rank 8
  EXPECT_EQ(big.status().code(), absl::StatusCode::kInvalidArgument) << big.status();
  EXPECT_NE(big.status().message().find("'big'"), std::string::npos) << big.status();
  EXPECT_EQ(reg.List().size(), 2u);
  EXPECT_EQ(reg.resident(), 2);
}

// --max-loras counts what is resident: loaded adapters and unloaded ones a request still holds.
TEST_F(AdapterRegistryTest, CountsUnloadedAdaptersStillInUse) {
  FakeBackend fake(testing::SmallConfig(), 1);
  AdapterRegistryOptions o;
  o.max_loras = 2;
  AdapterRegistry reg(fake, o);
  ASSERT_TRUE(reg.Load("a", Path("a")).ok());
  ASSERT_TRUE(reg.Load("b", Path("b")).ok());
  auto full = reg.Load("c", Path("c"));
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted) << full.status();
  EXPECT_NE(full.status().message().find("--max-loras 2"), std::string::npos) << full.status();
  Adapter held = reg.Find("a");  // as a running request holds it
  ASSERT_TRUE(reg.Unload("a").ok());
  EXPECT_EQ(reg.List().size(), 1u);
  EXPECT_EQ(reg.resident(), 2);
  EXPECT_EQ(reg.Load("c", Path("c")).status().code(), absl::StatusCode::kResourceExhausted);
  held.reset();  // the request ended
  EXPECT_EQ(reg.resident(), 1);
  auto c = reg.Load("c", Path("c"));
  EXPECT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(reg.resident(), 2);
}

TEST_F(AdapterRegistryTest, PassesOnBackendRefusals) {
  FakeBackend fake(testing::SmallConfig(), 1);
  AdapterRegistry reg(fake, {});
  fake.set_lora(false);
  auto none = reg.Load("a", Path("a"));
  EXPECT_EQ(none.status().code(), absl::StatusCode::kUnimplemented) << none.status();
  EXPECT_NE(none.status().message().find("'a'"), std::string::npos) << none.status();
  fake.set_lora(true);
  fake.FailNextLoadAdapter(absl::ResourceExhaustedError("out of device memory"));
  auto failed = reg.Load("a", Path("a"));
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kResourceExhausted) << failed.status();
  EXPECT_NE(failed.status().message().find("'a'"), std::string::npos) << failed.status();
  EXPECT_NE(failed.status().message().find("out of device memory"), std::string::npos);
  EXPECT_EQ(reg.Find("a"), nullptr);
  EXPECT_EQ(reg.resident(), 0);
  EXPECT_TRUE(reg.Load("a", Path("a")).ok());
}

// Holds the first LoadAdapter call of a fake backend until Open: a load stopped half way.
class LoadGate {
 public:
  explicit LoadGate(FakeBackend& fake) {
    fake.set_load_adapter_hook([this] {
      std::unique_lock<std::mutex> l(mu_);
      if (calls_++ > 0) return;
      inside_ = true;
      cv_.notify_all();
      cv_.wait(l, [&] { return open_; });
    });
  }
  bool WaitInside() {
    std::unique_lock<std::mutex> l(mu_);
    return cv_.wait_for(l, 60s, [&] { return inside_; });
  }
  void Open() {
    std::lock_guard<std::mutex> l(mu_);
    open_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int calls_ = 0;
  bool inside_ = false, open_ = false;
};

// An adapter parsed but not yet laid out by the backend is not found, listed or counted;
// lookups and other loads go on meanwhile; a load of the same name that finishes first wins.
TEST_F(AdapterRegistryTest, NeverShowsAHalfLoadedAdapter) {
  FakeBackend fake(testing::SmallConfig(), 1);
  AdapterRegistry reg(fake, {});
  LoadGate gate(fake);
  absl::StatusOr<Adapter> slow;
  std::thread t([&] { slow = reg.Load("a", Path("a")); });
  EXPECT_TRUE(gate.WaitInside());
  EXPECT_EQ(reg.Find("a"), nullptr);
  EXPECT_TRUE(reg.List().empty());
  EXPECT_EQ(reg.resident(), 0);
  auto b = reg.Load("b", Path("b"));
  EXPECT_TRUE(b.ok()) << b.status();
  auto fast = reg.Load("a", Path("c"));
  EXPECT_TRUE(fast.ok()) << fast.status();
  gate.Open();
  t.join();
  EXPECT_EQ(slow.status().code(), absl::StatusCode::kAlreadyExists) << slow.status();
  ASSERT_NE(reg.Find("a"), nullptr);
  EXPECT_EQ(reg.Find("a")->path, Path("c"));
  EXPECT_EQ(reg.resident(), 2);
}

// The last slot of --max-loras taken while a load was under way: that load is refused at its
// end, not inserted beyond the limit.
TEST_F(AdapterRegistryTest, LimitHoldsAgainstConcurrentLoads) {
  FakeBackend fake(testing::SmallConfig(), 1);
  AdapterRegistryOptions o;
  o.max_loras = 1;
  AdapterRegistry reg(fake, o);
  LoadGate gate(fake);
  absl::StatusOr<Adapter> slow;
  std::thread t([&] { slow = reg.Load("a", Path("a")); });
  EXPECT_TRUE(gate.WaitInside());
  EXPECT_TRUE(reg.Load("b", Path("b")).ok());
  gate.Open();
  t.join();
  EXPECT_EQ(slow.status().code(), absl::StatusCode::kResourceExhausted) << slow.status();
  EXPECT_EQ(reg.resident(), 1);
  EXPECT_EQ(reg.Find("a"), nullptr);
}

// Lookups from several threads while adapters are loaded and unloaded over and over: whatever
// they find is whole.
TEST_F(AdapterRegistryTest, LookupsDuringLoadsAndUnloadsSeeWholeAdapters) {
  FakeBackend fake(testing::SmallConfig(), 1);
  AdapterRegistryOptions o;
  o.max_loras = 64;
  AdapterRegistry reg(fake, o);
  std::atomic<bool> stop{false};
  std::atomic<int64_t> broken{0};
  std::vector<std::thread> finders;
  for (int i = 0; i < 3; ++i) {
    finders.emplace_back([&] {
      while (!stop.load()) {
        for (const char* name : {"a", "d"}) {
          if (Adapter s = reg.Find(name); s && !Whole(*s, name)) ++broken;
        }
        for (const Adapter& s : reg.List()) {
          if (!Whole(*s, s->name)) ++broken;
        }
      }
    });
  }
  for (int round = 0; round < 20; ++round) {
    auto a = reg.Load("a", Path("a"));
    auto d = reg.Load("d", Path("d"));
    EXPECT_TRUE(a.ok() && d.ok());
    a = Adapter();
    d = Adapter();
    EXPECT_TRUE(reg.Unload("a").ok());
    EXPECT_TRUE(reg.Unload("d").ok());
  }
  stop = true;
  for (std::thread& t : finders) t.join();
  EXPECT_EQ(broken.load(), 0);
  EXPECT_EQ(reg.resident(), 0);
}

}  // namespace
}  // namespace mamba::engine
