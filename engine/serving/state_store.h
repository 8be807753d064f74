// The host-memory state store (issue 13): snapshots of a slot's recurrent state at exact token
// positions, in a radix tree over token ids per (model, adapter), under a byte budget with
// cost-aware eviction. A pure data structure: no clock, no backend, not thread-safe (the engine
// thread owns it).
#pragma once

#include <compare>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <vector>

#include "engine/types.h"

namespace mamba::engine {

// What, besides the tokens, determines a state: the model (fingerprint) and, later, the LoRA
// adapter.
struct StateKey {
  uint64_t model = 0;
  uint64_t adapter = 0;
  auto operator<=>(const StateKey&) const = default;
};

// One snapshot: a slot's whole recurrent state (conv + SSM, all layers, as the backend lays it
// out) and, optionally, the logits after its last token (a prompt-end snapshot keeps them, so an
// identical prompt needs no forward pass; empty otherwise).
struct StateSnapshot {
  // Bookkeeping charged to each entry besides its floats: the tree node, the shared_ptr control
  // block, the vectors' headers. The tokens on the tree's edges are not charged (4 bytes a token,
  // negligible beside a state of megabytes).
  static constexpr int64_t kEntryOverheadBytes = 256;

  std::vector<float> state;
  std::vector<float> logits;
  int64_t bytes() const {
    return static_cast<int64_t>(state.size() + logits.size()) * 4 + kEntryOverheadBytes;
  }
};

// Eviction policy. kCost (the default) is Greedy-Dual-Size-Frequency over prefill work: an
// entry's priority is
//   H = L + (1 + hits) * marginal_tokens / bytes
// where marginal_tokens is the entry's length minus that of its nearest ancestor holding a
// snapshot (the tokens it saves beyond what the ancestor already saves), hits counts the
// lookups it served, and L ("inflation") is the priority of the last entry evicted or refused,
// taken into H when the entry is inserted and whenever a Lookup is served by it or by any of its
// descendants. The lowest H goes first, and a new entry whose H is below everything it would
// displace is not stored at all. So a shared system prompt (many tokens, hit by every sibling,
// refreshed by their hits) outlives the short per-request suffixes below it; and entries that
// stop being used age out as L rises with every eviction, however much work they once saved
// (ageing by the store's own churn, not by the clock: an idle server keeps its entries).
// kLru evicts the least recently used entry (same refresh rule), for comparison in benchmarks.
// Each eviction scans all entries (O(entries x tree depth)): fine up to ~10k entries, i.e. far
// beyond any budget of real states (2.8 MB each for 130m).
enum class EvictionPolicy { kCost, kLru };

struct StateStoreOptions {
  int64_t capacity_bytes = 0;  // 0: the store keeps nothing (Insert refuses, Lookup misses)
  EvictionPolicy policy = EvictionPolicy::kCost;
};

class StateStore {
 public:
  explicit StateStore(const StateStoreOptions& options);
  ~StateStore();
  StateStore(const StateStore&) = delete;
  StateStore& operator=(const StateStore&) = delete;

  struct Match {
    int64_t length = 0;                             // tokens covered by `snapshot` (0: none)
    std::shared_ptr<const StateSnapshot> snapshot;  // null on a miss
    // The longest common prefix of all of `tokens` (not limited by max_length) with any path the
    // tree holds (>= length): where a new snapshot would let the next sibling hit.
    int64_t branch = 0;
  };
  // The longest prefix of tokens[0, max_length) that has a snapshot (a snapshot at length L serves
  // a prompt of L tokens only if it has logits, which the caller checks; Lookup just reports it).
  // Counts a hit (length == min(max_length, tokens.size()) > 0), a partial hit (0 < length <
  // that) or a miss, and refreshes the last use of the entry and of every ancestor on its path.
  // `now` is passed in (no clock inside: tests drive time). No allocation.
  Match Lookup(const StateKey& key, std::span<const TokenId> tokens, int64_t max_length,
               double now);
  // Stores a snapshot of the state after exactly `tokens` (replacing one already there, whose hit
  // count carries over), evicting by the policy to stay within capacity_bytes. Returns false
  // (storing nothing, evicting nothing) if it cannot fit at all, if `tokens` is empty or `s` null,
  // or (kCost) if it is worth less than the entries it would displace.
  bool Insert(const StateKey& key, std::span<const TokenId> tokens,
              std::shared_ptr<const StateSnapshot> s, double now);
  // Whether a snapshot exists at exactly `tokens` (no stats, no refresh).
  bool Contains(const StateKey& key, std::span<const TokenId> tokens) const;
  // Drops every entry (not counted as evictions); the counters stay.
  void Clear();

  struct Stats {
    int64_t entries = 0, bytes = 0, hits = 0, partial_hits = 0, misses = 0, inserts = 0,
            evictions = 0, evicted_never_hit = 0;
    int64_t refused = 0;  // kCost: inserts not stored, worth less than what they would displace
    int64_t nodes = 0;  // tree nodes, one root per key that holds entries (empty trees are dropped)
  };
  Stats stats() const;
  const StateStoreOptions& options() const { return options_; }

 private:
  struct Node;
  // The node at exactly `tokens`, or null; `ancestor` (when given) gets the depth of the deepest
  // node holding a snapshot on the way there, short of `tokens` (0: none), found or not.
  Node* FindExact(const StateKey& key, std::span<const TokenId> tokens,
                  int64_t* ancestor = nullptr) const;
  Node* MakePath(Node* root, std::span<const TokenId> tokens);
  Node* PickVictim(const Node* keep, std::span<Node* const> chosen) const;
  double Score(const Node& n) const;
  double Value(const Node& n, int64_t ancestor_depth) const;
  int64_t SnapshotAncestorDepth(const Node& n) const;
  void Evict(Node* n);
  void Prune(Node* n);

  StateStoreOptions options_;
  std::map<StateKey, std::unique_ptr<Node>> roots_;
  std::vector<Node*> entries_;  // the nodes holding a snapshot; Node::entry_index points back
  Stats stats_;
  int64_t next_seq_ = 0;  // insertion order, the last tie-break of eviction
  double inflation_ = 0;  // kCost's L: the priority of the last entry evicted or refused
};

}  // namespace mamba::engine
