// StateStore as a pure data structure: longest-prefix lookup, branch points, replacement, keys,
// the byte budget, the cost and LRU eviction policies, pruning of the radix tree, and random
// operations against a naive map-based reference. Time is passed in; no clock, no backend.
#include "engine/serving/state_store.h"

#include <algorithm>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace mamba::engine {
namespace {

using Tokens = std::vector<TokenId>;
using Snap = std::shared_ptr<const StateSnapshot>;

constexpr StateKey kKey{.model = 7, .adapter = 0};

Snap MakeSnap(int64_t state_floats, int64_t logit_floats = 0) {
  auto s = std::make_shared<StateSnapshot>();
  s->state.assign(static_cast<size_t>(state_floats), 1.0f);
  s->logits.assign(static_cast<size_t>(logit_floats), 2.0f);
  return s;
}

// first, first + 1, ..., first + n - 1
Tokens Seq(int n, TokenId first = 1) {
  Tokens t(static_cast<size_t>(n));
  std::iota(t.begin(), t.end(), first);
  return t;
}

Tokens Cat(Tokens a, const Tokens& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

StateStoreOptions Options(int64_t capacity, EvictionPolicy policy = EvictionPolicy::kCost) {
  StateStoreOptions o;
  o.capacity_bytes = capacity;
  o.policy = policy;
  return o;
}

// ---- Lookup over a fixed tree, table-driven ----

enum class Outcome { kHit, kPartial, kMiss };

struct LookupCase {
  std::string name;
  Tokens tokens;
  int64_t max_length;
  int64_t length;  // expected
  int64_t branch;
  Outcome outcome;
};

// Entries: [1..3], [1..10], [1..12], [1..10, 50, 51, 52], [7, 7, 7].
std::vector<Tokens> FixedPaths() {
  return {Seq(3), Seq(10), Seq(12), Cat(Seq(10), {50, 51, 52}), {7, 7, 7}};
}

std::vector<LookupCase> LookupCases() {
  using enum Outcome;
  return {
      {"exact_hit", Seq(12), 12, 12, 12, kHit},
      {"exact_hit_short", Seq(3), 3, 3, 3, kHit},
      {"exact_hit_other_branch", Cat(Seq(10), {50, 51, 52}), 13, 13, 13, kHit},
      {"longest_prefix_past_the_tree", Cat(Seq(12), {99}), 13, 12, 12, kPartial},
      {"extension_by_one_token", Seq(13), 13, 12, 12, kPartial},
      {"between_entries_strict_prefix_of_path", Seq(8), 8, 3, 8, kPartial},
      {"diverges_inside_an_edge", Cat(Seq(10), {50, 99}), 12, 10, 11, kPartial},
      {"diverges_before_any_entry", {1, 2, 9}, 3, 0, 2, kMiss},
      {"miss", {5, 6}, 2, 0, 0, kMiss},
      {"max_length_equal_to_an_entry_reports_it", Seq(12), 10, 10, 12, kHit},
      {"max_length_hides_longer_entries", Seq(12), 11, 10, 12, kPartial},
      {"max_length_below_two_entries", Seq(12), 9, 3, 12, kPartial},
      {"max_length_below_every_entry", Seq(12), 2, 0, 12, kMiss},
      {"max_length_past_the_tokens", Seq(10), 100, 10, 10, kHit},
      {"max_length_zero", Seq(10), 0, 0, 10, kMiss},
      {"max_length_negative", Seq(10), -1, 0, 10, kMiss},
      {"empty_tokens", {}, 5, 0, 0, kMiss},
      {"repeated_tokens", {7, 7, 7, 7}, 4, 3, 3, kPartial},
  };
}

TEST(StateStore, LookupTable) {
  for (const LookupCase& c : LookupCases()) {
    SCOPED_TRACE(c.name);
    StateStore store(Options(1 << 20));
    std::map<Tokens, Snap> snaps;
    for (const Tokens& p : FixedPaths()) {
      snaps[p] = MakeSnap(4);
      ASSERT_TRUE(store.Insert(kKey, p, snaps[p], 0));
    }
    const StateStore::Match m = store.Lookup(kKey, c.tokens, c.max_length, 1);
    EXPECT_EQ(m.length, c.length);
    EXPECT_EQ(m.branch, c.branch);
    if (c.length == 0) {
      EXPECT_EQ(m.snapshot, nullptr);
    } else {
      // The very object inserted: Lookup copies nothing.
      EXPECT_EQ(m.snapshot, snaps.at(Tokens(c.tokens.begin(), c.tokens.begin() + c.length)));
    }
    const StateStore::Stats s = store.stats();
    EXPECT_EQ(s.hits, c.outcome == Outcome::kHit ? 1 : 0);
    EXPECT_EQ(s.partial_hits, c.outcome == Outcome::kPartial ? 1 : 0);
    EXPECT_EQ(s.misses, c.outcome == Outcome::kMiss ? 1 : 0);
    EXPECT_EQ(s.entries, 5);
    EXPECT_EQ(s.inserts, 5);
    // root, [1,2,3], [..10], [..12], [..13 via 50], [7,7,7]
    EXPECT_EQ(s.nodes, 6);
  }
}

TEST(StateStore, BranchPointLetsTheNextSiblingHit) {
  StateStore store(Options(1 << 20));
  const Tokens shared = Seq(10);
  const Tokens first = Cat(shared, Seq(10, 100));
  const Tokens second = Cat(shared, Seq(10, 200));
  const Tokens third = Cat(shared, Seq(5, 300));
  ASSERT_TRUE(store.Insert(kKey, first, MakeSnap(4, 4), 0));

  StateStore::Match m = store.Lookup(kKey, second, 20, 1);
  EXPECT_EQ(m.length, 0);
  EXPECT_EQ(m.branch, 10);  // split the prefill here and snapshot
  ASSERT_TRUE(
      store.Insert(kKey, Tokens(second.begin(), second.begin() + m.branch), MakeSnap(4), 1));
  ASSERT_TRUE(store.Insert(kKey, second, MakeSnap(4, 4), 1));
  EXPECT_EQ(store.stats().nodes, 4);  // root, the shared 10, two leaves

  m = store.Lookup(kKey, third, 15, 2);
  EXPECT_EQ(m.length, 10);
  EXPECT_EQ(m.branch, 10);
  EXPECT_EQ(store.stats().partial_hits, 1);

  // A prompt that is a strict prefix of a cached path: the path covers all of it.
  m = store.Lookup(kKey, Tokens(first.begin(), first.begin() + 15), 15, 3);
  EXPECT_EQ(m.length, 10);
  EXPECT_EQ(m.branch, 15);
  EXPECT_TRUE(store.Contains(kKey, shared));
  EXPECT_FALSE(store.Contains(kKey, Tokens(first.begin(), first.begin() + 15)));
}

TEST(StateStore, InsertReplacesAnEntry) {
  StateStore store(Options(1 << 20));
  const Snap old_snap = MakeSnap(10);
  const Snap new_snap = MakeSnap(10, 50);
  ASSERT_TRUE(store.Insert(kKey, Seq(5), old_snap, 0));
  ASSERT_TRUE(store.Insert(kKey, Seq(5), new_snap, 1));
  EXPECT_EQ(store.Lookup(kKey, Seq(5), 5, 2).snapshot, new_snap);
  const StateStore::Stats s = store.stats();
  EXPECT_EQ(s.entries, 1);
  EXPECT_EQ(s.inserts, 2);
  EXPECT_EQ(s.bytes, new_snap->bytes());
  EXPECT_EQ(s.nodes, 2);
  EXPECT_EQ(old_snap.use_count(), 1);  // the store let go of it
}

TEST(StateStore, DifferentKeysNeverShare) {
  StateStore store(Options(1 << 20));
  const StateKey other_model{.model = 8, .adapter = 0};
  const StateKey other_adapter{.model = 7, .adapter = 1};
  ASSERT_TRUE(store.Insert(kKey, Seq(5), MakeSnap(4), 0));
  for (const StateKey& k : {other_model, other_adapter}) {
    EXPECT_FALSE(store.Contains(k, Seq(5)));
    const StateStore::Match m = store.Lookup(k, Seq(5), 5, 1);
    EXPECT_EQ(m.length, 0);
    EXPECT_EQ(m.branch, 0);
  }
  const Snap mine = MakeSnap(4);
  ASSERT_TRUE(store.Insert(other_adapter, Seq(5), mine, 2));
  EXPECT_EQ(store.Lookup(other_adapter, Seq(5), 5, 3).snapshot, mine);
  EXPECT_NE(store.Lookup(kKey, Seq(5), 5, 3).snapshot, mine);
  EXPECT_EQ(store.stats().nodes, 4);  // two trees of root + leaf
}

TEST(StateStore, BudgetRespectedAfterEveryInsert) {
  const int64_t capacity = 20000;
  StateStore store(Options(capacity));
  std::mt19937 rng(5);
  std::vector<Tokens> inserted;
  for (int i = 0; i < 500; ++i) {
    Tokens t = Seq(1 + static_cast<int>(rng() % 40), static_cast<TokenId>(rng() % 3));
    const Snap s =
        MakeSnap(static_cast<int64_t>(rng() % 1500), static_cast<int64_t>(rng() % 2) * 100);
    // kCost may refuse an entry worth less than what it would displace.
    if (!store.Insert(kKey, t, s, i)) continue;
    inserted.push_back(t);
    EXPECT_TRUE(store.Contains(kKey, t));  // never evicts the entry being inserted
    EXPECT_LE(store.stats().bytes, capacity);
    int64_t sum = 0;
    std::set<Tokens> held;
    for (const Tokens& p : inserted) {
      if (store.Contains(kKey, p) && held.insert(p).second) {
        sum += store.Lookup(kKey, p, static_cast<int64_t>(p.size()), i).snapshot->bytes();
      }
    }
    EXPECT_EQ(store.stats().bytes, sum);
    EXPECT_EQ(store.stats().entries, static_cast<int64_t>(held.size()));
  }
  EXPECT_GT(store.stats().evictions, 0);
}

TEST(StateStore, ZeroCapacityStoresNothing) {
  StateStore store(Options(0));
  EXPECT_FALSE(store.Insert(kKey, Seq(4), MakeSnap(0), 0));
  EXPECT_FALSE(store.Contains(kKey, Seq(4)));
  EXPECT_EQ(store.Lookup(kKey, Seq(4), 4, 1).length, 0);
  const StateStore::Stats s = store.stats();
  EXPECT_EQ(s.entries, 0);
  EXPECT_EQ(s.bytes, 0);
  EXPECT_EQ(s.inserts, 0);
  EXPECT_EQ(s.misses, 1);
  EXPECT_EQ(s.nodes, 0);
}

TEST(StateStore, RefusesWhatCannotFitAndBadArguments) {
  const Snap small = MakeSnap(100);
  StateStore store(Options(2 * small->bytes()));
  ASSERT_TRUE(store.Insert(kKey, Seq(4), small, 0));
  EXPECT_FALSE(store.Insert(kKey, Seq(5), MakeSnap(2 * 100 + 65), 1));  // 4 bytes over
  EXPECT_FALSE(store.Insert(kKey, Seq(5), nullptr, 1));
  EXPECT_FALSE(store.Insert(kKey, {}, MakeSnap(1), 1));
  EXPECT_TRUE(store.Contains(kKey, Seq(4)));  // nothing was evicted for the refused ones
  EXPECT_EQ(store.stats().evictions, 0);
  EXPECT_EQ(store.stats().inserts, 1);
  // Exactly the capacity fits, evicting the rest (LRU: kCost would refuse an entry worth less).
  StateStore lru(Options(2 * small->bytes(), EvictionPolicy::kLru));
  ASSERT_TRUE(lru.Insert(kKey, Seq(4), small, 0));
  EXPECT_TRUE(lru.Insert(kKey, Seq(5), MakeSnap(2 * 100 + 64, 0), 2));
  EXPECT_EQ(lru.stats().bytes, 2 * small->bytes());
  EXPECT_EQ(lru.stats().entries, 1);
}

// ---- Eviction policies ----

// A 1000-token prefix (the system prompt) with 10-token leaves under it, all snapshots alike;
// room for 5 of them. `hot`: every leaf is looked up once after its insert (a hit through the
// leaf refreshes the parent). Returns whether the parent survived 10 more leaves.
bool ParentSurvives(EvictionPolicy policy, bool hot) {
  const Snap snap = MakeSnap(1000);
  StateStore store(Options(5 * snap->bytes(), policy));
  const Tokens parent = Seq(1000);
  double now = 0;
  EXPECT_TRUE(store.Insert(kKey, parent, snap, now));
  for (int leaf = 0; leaf < 14; ++leaf) {
    now += 1;
    const Tokens t = Cat(parent, Seq(10, 5000 + 10 * leaf));
    // kCost refuses a new leaf once the held ones were hit (each is worth more than a new one).
    const bool stored = store.Insert(kKey, t, snap, now);
    EXPECT_TRUE(stored || policy == EvictionPolicy::kCost);
    if (hot && stored) {
      EXPECT_EQ(store.Lookup(kKey, t, 1010, now + 0.5).length, 1010);
    }
    EXPECT_LE(store.stats().bytes, 5 * snap->bytes());
  }
  EXPECT_EQ(store.stats().entries, 5);
  EXPECT_EQ(store.stats().evictions + store.stats().refused, 10);
  return store.Contains(kKey, parent);
}

TEST(StateStore, CostModelEvictsLeavesBeforeTheSharedParent) {
  EXPECT_TRUE(ParentSurvives(EvictionPolicy::kCost, /*hot=*/true));
  // Even untouched since its insert, the parent saves 100x the work of a leaf per byte.
  EXPECT_TRUE(ParentSurvives(EvictionPolicy::kCost, /*hot=*/false));
  // LRU keeps it only while hits through its leaves refresh it.
  EXPECT_TRUE(ParentSurvives(EvictionPolicy::kLru, /*hot=*/true));
  EXPECT_FALSE(ParentSurvives(EvictionPolicy::kLru, /*hot=*/false));
}

// An entry that saved much work once but is never used again ages out as the store churns:
// newer, cheaper entries are refused at first (each refusal raises the inflation), then take its
// place. Under LRU-like ties the newest wins.
TEST(StateStore, CostModelAgesColdEntriesByChurn) {
  const Snap snap = MakeSnap(100);
  StateStore store(Options(2 * snap->bytes()));
  ASSERT_TRUE(store.Insert(kKey, Seq(100), snap, 0));      // 100 tokens, never used again
  ASSERT_TRUE(store.Insert(kKey, Seq(10, 500), snap, 1));  // room for two
  EXPECT_TRUE(store.Insert(kKey, Seq(10, 900), snap, 2));  // displaces the 10-token one
  EXPECT_TRUE(store.Contains(kKey, Seq(100)));
  int refused = 0;
  for (int i = 0; i < 100 && store.Contains(kKey, Seq(100)); ++i) {
    if (!store.Insert(kKey, Seq(1 + i % 7, 2000 + 100 * i), snap, 3 + i)) ++refused;
  }
  EXPECT_FALSE(store.Contains(kKey, Seq(100)));  // aged out
  EXPECT_GT(refused, 0);
  EXPECT_EQ(store.stats().refused, refused);
  EXPECT_LE(store.stats().bytes, 2 * snap->bytes());
}

// A new entry worth less than everything it would displace is not stored, and nothing is evicted
// for it; a replacement of an existing entry is always stored.
TEST(StateStore, CostModelRefusesWhatIsWorthLess) {
  const Snap snap = MakeSnap(100);
  StateStore store(Options(2 * snap->bytes()));
  ASSERT_TRUE(store.Insert(kKey, Seq(500), snap, 0));
  ASSERT_TRUE(store.Insert(kKey, Seq(400, 1000), snap, 0));
  EXPECT_FALSE(store.Insert(kKey, Seq(5, 3000), snap, 1));
  EXPECT_TRUE(store.Contains(kKey, Seq(500)));
  EXPECT_TRUE(store.Contains(kKey, Seq(400, 1000)));
  EXPECT_EQ(store.stats().evictions, 0);
  EXPECT_TRUE(store.Insert(kKey, Seq(500), MakeSnap(100, 1), 2));  // replaced
  // LRU stores every new entry.
  StateStore lru(Options(2 * snap->bytes(), EvictionPolicy::kLru));
  ASSERT_TRUE(lru.Insert(kKey, Seq(500), snap, 0));
  ASSERT_TRUE(lru.Insert(kKey, Seq(400, 1000), snap, 0));
  EXPECT_TRUE(lru.Insert(kKey, Seq(5, 3000), snap, 1));
}

TEST(StateStore, CostModelCountsMarginalTokens) {
  // A 900-token entry right under an 890-token one saves only 10 tokens beyond it: it goes before
  // a lone 100-token entry, although it is longer.
  const Snap snap = MakeSnap(100);
  StateStore store(Options(3 * snap->bytes()));
  ASSERT_TRUE(store.Insert(kKey, Seq(890), snap, 0));
  ASSERT_TRUE(store.Insert(kKey, Seq(900), snap, 0));
  ASSERT_TRUE(store.Insert(kKey, Seq(100, 5000), snap, 0));
  ASSERT_TRUE(store.Insert(kKey, Seq(200, 9000), snap, 0));
  EXPECT_FALSE(store.Contains(kKey, Seq(900)));
  EXPECT_TRUE(store.Contains(kKey, Seq(890)));
  EXPECT_TRUE(store.Contains(kKey, Seq(100, 5000)));
}

TEST(StateStore, LruEvictsTheLeastRecentlyUsed) {
  const Snap snap = MakeSnap(10);
  StateStore store(Options(3 * snap->bytes(), EvictionPolicy::kLru));
  const Tokens a = Seq(5, 100), b = Seq(5, 200), c = Seq(5, 300);
  ASSERT_TRUE(store.Insert(kKey, a, snap, 0));
  ASSERT_TRUE(store.Insert(kKey, b, snap, 1));
  ASSERT_TRUE(store.Insert(kKey, c, snap, 2));
  EXPECT_EQ(store.Lookup(kKey, a, 5, 3).length, 5);
  ASSERT_TRUE(store.Insert(kKey, Seq(5, 400), snap, 4));
  EXPECT_FALSE(store.Contains(kKey, b));
  ASSERT_TRUE(store.Insert(kKey, Seq(5, 500), snap, 5));
  EXPECT_FALSE(store.Contains(kKey, c));
  EXPECT_TRUE(store.Contains(kKey, a));
  EXPECT_EQ(store.stats().evictions, 2);
  EXPECT_EQ(store.stats().evicted_never_hit, 2);
}

TEST(StateStore, EvictedNeverHitCountsOnlyUnusedEntries) {
  const Snap snap = MakeSnap(10);
  StateStore store(Options(2 * snap->bytes(), EvictionPolicy::kLru));
  ASSERT_TRUE(store.Insert(kKey, Seq(5, 100), snap, 0));
  EXPECT_EQ(store.Lookup(kKey, Seq(5, 100), 5, 1).length, 5);
  ASSERT_TRUE(store.Insert(kKey, Seq(5, 200), snap, 2));
  ASSERT_TRUE(store.Insert(kKey, Seq(5, 300), snap, 3));  // evicts the hit one
  ASSERT_TRUE(store.Insert(kKey, Seq(5, 400), snap, 4));  // evicts a never-hit one
  EXPECT_EQ(store.stats().evictions, 2);
  EXPECT_EQ(store.stats().evicted_never_hit, 1);
}

TEST(StateStore, EvictionPrunesAndMergesTheTree) {
  const Snap snap = MakeSnap(10);
  StateStore store(Options(2 * snap->bytes(), EvictionPolicy::kLru));
  const Tokens a = Seq(10);
  const Tokens b = Cat(Seq(5), {9, 9});
  ASSERT_TRUE(store.Insert(kKey, a, snap, 0));
  ASSERT_TRUE(store.Insert(kKey, b, snap, 1));
  EXPECT_EQ(store.stats().nodes, 4);  // root, [1..5], two tails
  EXPECT_EQ(store.Lookup(kKey, a, 10, 2).length, 10);
  ASSERT_TRUE(store.Insert(kKey, Tokens{42}, snap, 3));  // evicts b: [1..5] merges into a's node
  EXPECT_FALSE(store.Contains(kKey, b));
  EXPECT_EQ(store.stats().nodes, 3);                 // root, a, [42]
  EXPECT_EQ(store.Lookup(kKey, b, 7, 4).branch, 5);  // a's path still leads there
  EXPECT_EQ(store.Lookup(kKey, a, 10, 5).length, 10);

  // A snapshot as big as the budget evicts everything else: only its own root and leaf remain,
  // and a tree left empty is dropped.
  const StateKey other{.model = 9, .adapter = 0};
  ASSERT_TRUE(store.Insert(other, Seq(3), MakeSnap(2 * 10 + 64), 6));
  EXPECT_EQ(store.stats().entries, 1);
  EXPECT_EQ(store.stats().nodes, 2);
  EXPECT_EQ(store.Lookup(kKey, a, 10, 7).branch, 0);
  store.Clear();
  EXPECT_EQ(store.stats().nodes, 0);
  EXPECT_EQ(store.stats().bytes, 0);
}

TEST(StateStore, CallerKeepsAnEvictedSnapshot) {
  const Snap snap = MakeSnap(10, 3);
  StateStore store(Options(snap->bytes(), EvictionPolicy::kLru));
  ASSERT_TRUE(store.Insert(kKey, Seq(4), snap, 0));
  const StateStore::Match m = store.Lookup(kKey, Seq(4), 4, 1);
  ASSERT_TRUE(store.Insert(kKey, Seq(4, 50), MakeSnap(10, 3), 2));
  EXPECT_FALSE(store.Contains(kKey, Seq(4)));
  ASSERT_NE(m.snapshot, nullptr);
  EXPECT_EQ(m.snapshot->logits.size(), 3u);
}

// ---- Random operations against a naive reference ----

// The map-based reference: exact keys, longest prefix by trying every length.
class Reference {
 public:
  std::map<StateKey, std::map<Tokens, Snap>> entries;

  StateStore::Match Lookup(const StateKey& key, const Tokens& t, int64_t max_length) const {
    StateStore::Match m;
    auto it = entries.find(key);
    if (it == entries.end()) return m;
    const int64_t limit = std::clamp<int64_t>(max_length, 0, static_cast<int64_t>(t.size()));
    for (int64_t l = limit; l > 0 && m.length == 0; --l) {
      auto e = it->second.find(Tokens(t.begin(), t.begin() + l));
      if (e != it->second.end()) m = {l, e->second, 0};
    }
    for (const auto& [path, snap] : it->second) {
      const auto lcp = std::mismatch(t.begin(), t.end(), path.begin(), path.end()).first;
      m.branch = std::max<int64_t>(m.branch, lcp - t.begin());
    }
    return m;
  }

  // The nodes of the minimal compressed trie: per non-empty tree, the root plus every prefix
  // that is an entry or where paths fork.
  int64_t Nodes() const {
    int64_t nodes = 0;
    for (const auto& [key, tree] : entries) {
      if (tree.empty()) continue;
      std::map<Tokens, std::set<TokenId>> next;
      for (const auto& [path, snap] : tree) {
        for (size_t i = 1; i <= path.size(); ++i) {
          auto& n = next[Tokens(path.begin(), path.begin() + static_cast<ptrdiff_t>(i))];
          if (i < path.size()) n.insert(path[i]);
        }
      }
      ++nodes;
      for (const auto& [prefix, forks] : next) nodes += (tree.count(prefix) || forks.size() >= 2);
    }
    return nodes;
  }

  int64_t Bytes() const {
    int64_t bytes = 0;
    for (const auto& [key, tree] : entries) {
      for (const auto& [path, snap] : tree) bytes += snap->bytes();
    }
    return bytes;
  }
};

// Prompts on a 3-token alphabet, so that prefixes collide; half are built from paths already
// inserted (extensions, strict prefixes, forks).
Tokens RandomTokens(std::mt19937& rng, const std::vector<Tokens>& seen) {
  Tokens t;
  if (!seen.empty() && rng() % 2 == 0) {
    t = seen[rng() % seen.size()];
    t.resize(std::max<size_t>(1, rng() % (t.size() + 1)));
  }
  for (int extra = static_cast<int>(rng() % 6); extra > 0 || t.empty(); --extra) {
    t.push_back(static_cast<TokenId>(rng() % 3));
  }
  return t;
}

// Runs random inserts / lookups / contains; with a small capacity the reference drops whatever
// the store evicted (read back through Contains), so that lookups, bytes and the tree's shape can
// still be compared exactly.
void RandomOps(int64_t capacity, int ops, uint32_t seed, StateStore::Stats* final_stats) {
  StateStore store(Options(capacity));
  Reference ref;
  std::mt19937 rng(seed);
  std::vector<Tokens> seen;
  const StateKey keys[] = {kKey, {.model = 7, .adapter = 3}};
  StateStore::Stats want;
  for (int op = 0; op < ops; ++op) {
    SCOPED_TRACE("op " + std::to_string(op));
    const StateKey& key = keys[rng() % 2];
    const Tokens t = RandomTokens(rng, seen);
    const double now = op;
    const int kind = static_cast<int>(rng() % 10);
    if (kind < 4) {
      const Snap snap = MakeSnap(static_cast<int64_t>(rng() % 64), static_cast<int64_t>(rng() % 2));
      // kCost may refuse a new entry worth less than what it would displace (never a
      // replacement); then nothing changed.
      const bool existed = store.Contains(key, t);
      const bool stored = store.Insert(key, t, snap, now);
      if (existed) {
        ASSERT_TRUE(stored);
      }
      if (stored) ref.entries[key][t] = snap;
      seen.push_back(t);
      for (auto& entry : ref.entries) {
        const StateKey k = entry.first;
        std::erase_if(entry.second, [&](const auto& e) { return !store.Contains(k, e.first); });
      }
    } else if (kind < 9) {
      const int64_t max_length = static_cast<int64_t>(rng() % (t.size() + 3)) - 1;
      const StateStore::Match got = store.Lookup(key, t, max_length, now);
      const StateStore::Match exp = ref.Lookup(key, t, max_length);
      ASSERT_EQ(got.length, exp.length);
      ASSERT_EQ(got.snapshot, exp.snapshot);
      ASSERT_EQ(got.branch, exp.branch);
      const int64_t limit = std::clamp<int64_t>(max_length, 0, static_cast<int64_t>(t.size()));
      ++(exp.length == 0 ? want.misses : exp.length == limit ? want.hits : want.partial_hits);
    } else {
      ASSERT_EQ(store.Contains(key, t), ref.entries[key].count(t) == 1);
    }
    const StateStore::Stats s = store.stats();
    int64_t entries = 0;
    for (const auto& [k, tree] : ref.entries) entries += static_cast<int64_t>(tree.size());
    ASSERT_EQ(s.entries, entries);
    ASSERT_EQ(s.bytes, ref.Bytes());
    ASSERT_LE(s.bytes, capacity);
    if (op % 16 == 0 || op == ops - 1) {  // the reference is slow
      ASSERT_EQ(s.nodes, ref.Nodes());
    }
    ASSERT_EQ(s.hits, want.hits);
    ASSERT_EQ(s.partial_hits, want.partial_hits);
    ASSERT_EQ(s.misses, want.misses);
  }
  *final_stats = store.stats();
}

TEST(StateStore, RandomOpsMatchReference) {
  StateStore::Stats s;
  RandomOps(int64_t{1} << 40, 4000, 1, &s);
  EXPECT_EQ(s.evictions, 0);
  EXPECT_GT(s.entries, 500);
  EXPECT_GT(s.hits, 500);  // the draw exercises every outcome
  EXPECT_GT(s.partial_hits, 200);
  EXPECT_GT(s.misses, 200);
}

TEST(StateStore, RandomOpsUnderEvictionMatchSurvivors) {
  StateStore::Stats s;
  RandomOps(100 * MakeSnap(32)->bytes(), 4000, 2, &s);
  EXPECT_GT(s.evictions, 500);
  EXPECT_GT(s.hits, 200);
  EXPECT_GT(s.partial_hits, 200);
}

}  // namespace
}  // namespace mamba::engine
