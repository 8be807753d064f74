#include "engine/serving/state_store.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <utility>

namespace mamba::engine {

// A node of the radix tree: the end of an edge (a run of tokens from its parent). A non-root node
// holds a snapshot or has >= 2 children; a path exists only while a snapshot lies at or below it.
struct StateStore::Node {
  std::vector<TokenId> edge;  // the tokens from the parent to here (empty only at a root)
  Node* parent = nullptr;
  std::vector<std::unique_ptr<Node>> children;  // sorted by edge[0]
  int64_t depth = 0;                            // tokens from the root to here
  StateKey key;                                 // roots only: which tree this is

  // The entry, when the node holds one.
  std::shared_ptr<const StateSnapshot> snapshot;
  int64_t bytes = 0;
  double last_use = 0;
  double base = 0;  // kCost: the inflation when last inserted or refreshed
  int64_t hits = 0;
  int64_t seq = 0;
  size_t entry_index = 0;  // into StateStore::entries_

  // The child whose edge starts with `t`, or where it would go.
  std::vector<std::unique_ptr<Node>>::iterator Slot(TokenId t) {
    return std::lower_bound(
        children.begin(), children.end(), t,
        [](const std::unique_ptr<Node>& c, TokenId v) { return c->edge[0] < v; });
  }
  Node* Child(TokenId t) {
    auto it = Slot(t);
    return it != children.end() && (*it)->edge[0] == t ? it->get() : nullptr;
  }
};

namespace {

// How many leading tokens `edge` and `rest` share.
size_t CommonPrefix(const std::vector<TokenId>& edge, std::span<const TokenId> rest) {
  const size_t n = std::min(edge.size(), rest.size());
  return static_cast<size_t>(
      std::mismatch(edge.begin(), edge.begin() + static_cast<ptrdiff_t>(n), rest.begin()).first -
      edge.begin());
}

[[noreturn]] void Broken(const char* what) {
  std::fprintf(stderr, "engine: state store: %s\n", what);
  std::abort();
}

}  // namespace

StateStore::StateStore(const StateStoreOptions& options) : options_(options) {}

StateStore::~StateStore() { Clear(); }

void StateStore::Clear() {
  // Iteratively, so that a long chain of nodes cannot exhaust the stack.
  std::vector<std::unique_ptr<Node>> doomed;
  for (auto& [key, root] : roots_) doomed.push_back(std::move(root));
  roots_.clear();
  while (!doomed.empty()) {
    std::unique_ptr<Node> n = std::move(doomed.back());
    doomed.pop_back();
    for (auto& c : n->children) doomed.push_back(std::move(c));
  }
  entries_.clear();
  stats_.entries = 0;
  stats_.bytes = 0;
  stats_.nodes = 0;
}

StateStore::Match StateStore::Lookup(const StateKey& key, std::span<const TokenId> tokens,
                                     int64_t max_length, double now) {
  Match match;
  const int64_t limit = std::clamp<int64_t>(max_length, 0, static_cast<int64_t>(tokens.size()));
  Node* best = nullptr;
  if (auto it = roots_.find(key); it != roots_.end()) {
    Node* node = it->second.get();
    size_t pos = 0;
    while (pos < tokens.size()) {
      Node* child = node->Child(tokens[pos]);
      if (child == nullptr) break;
      const size_t k = CommonPrefix(child->edge, tokens.subspan(pos));
      pos += k;
      if (k < child->edge.size()) break;
      node = child;
      if (node->snapshot != nullptr && node->depth <= limit) best = node;
    }
    match.branch = static_cast<int64_t>(pos);
  }
  if (best == nullptr) {
    ++stats_.misses;
    return match;
  }
  match.length = best->depth;
  match.snapshot = best->snapshot;
  ++best->hits;
  ++(match.length == limit ? stats_.hits : stats_.partial_hits);
  for (Node* p = best; p != nullptr; p = p->parent) {
    p->last_use = std::max(p->last_use, now);
    p->base = inflation_;
  }
  return match;
}

StateStore::Node* StateStore::FindExact(const StateKey& key, std::span<const TokenId> tokens,
                                        int64_t* ancestor) const {
  if (ancestor != nullptr) *ancestor = 0;
  auto it = roots_.find(key);
  if (it == roots_.end()) return nullptr;
  Node* node = it->second.get();
  size_t pos = 0;
  while (pos < tokens.size()) {
    if (ancestor != nullptr && node->snapshot != nullptr) *ancestor = node->depth;
    Node* child = node->Child(tokens[pos]);
    if (child == nullptr || child->edge.size() > tokens.size() - pos ||
        CommonPrefix(child->edge, tokens.subspan(pos)) < child->edge.size()) {
      return nullptr;
    }
    pos += child->edge.size();
    node = child;
  }
  return node;
}

bool StateStore::Contains(const StateKey& key, std::span<const TokenId> tokens) const {
  const Node* n = FindExact(key, tokens);
  return n != nullptr && n->snapshot != nullptr;
}

// The node at exactly `tokens` under `root`, creating a leaf or splitting an edge as needed.
StateStore::Node* StateStore::MakePath(Node* root, std::span<const TokenId> tokens) {
  Node* node = root;
  size_t pos = 0;
  while (pos < tokens.size()) {
    auto it = node->Slot(tokens[pos]);
    if (it == node->children.end() || (*it)->edge[0] != tokens[pos]) {
      auto leaf = std::make_unique<Node>();
      leaf->edge.assign(tokens.begin() + static_cast<ptrdiff_t>(pos), tokens.end());
      leaf->parent = node;
      leaf->depth = static_cast<int64_t>(tokens.size());
      ++stats_.nodes;
      return node->children.insert(it, std::move(leaf))->get();
    }
    Node* child = it->get();
    const size_t k = CommonPrefix(child->edge, tokens.subspan(pos));
    if (k < child->edge.size()) {
      // Split: a new node for the shared part takes the child's place, the child keeps the rest.
      auto mid = std::make_unique<Node>();
      mid->edge.assign(child->edge.begin(), child->edge.begin() + static_cast<ptrdiff_t>(k));
      mid->parent = node;
      mid->depth = node->depth + static_cast<int64_t>(k);
      child->edge.erase(child->edge.begin(), child->edge.begin() + static_cast<ptrdiff_t>(k));
      child->parent = mid.get();
      mid->children.push_back(std::move(*it));
      *it = std::move(mid);  // same first token: the order of the children holds
      ++stats_.nodes;
      child = it->get();
    }
    node = child;
    pos += k;
  }
  return node;
}

bool StateStore::Insert(const StateKey& key, std::span<const TokenId> tokens,
                        std::shared_ptr<const StateSnapshot> s, double now) {
  if (s == nullptr || tokens.empty()) return false;
  const int64_t bytes = s->bytes();
  if (bytes > options_.capacity_bytes) return false;
  // An entry already at `tokens` is replaced, never evicted (nor pruned) to make room. A node
  // there without a snapshot may be pruned by the evictions, so the path is made after them.
  Node* node = FindExact(key, tokens);
  if (node != nullptr && node->snapshot == nullptr) node = nullptr;
  const int64_t freed = node != nullptr ? node->bytes : 0;
  // The entries to displace, cheapest first. kCost stores nothing rather than displace an entry
  // worth more than the new one (a replacement is always stored).
  std::vector<Node*> victims;
  int64_t room = options_.capacity_bytes - (stats_.bytes - freed);
  while (room < bytes) {
    Node* v = PickVictim(node, victims);
    victims.push_back(v);
    room += v->bytes;
  }
  if (options_.policy == EvictionPolicy::kCost && node == nullptr && !victims.empty()) {
    // The new entry's priority, against its nearest ancestor that holds a snapshot now.
    int64_t ancestor = 0;
    FindExact(key, tokens, &ancestor);
    Node probe;
    probe.depth = static_cast<int64_t>(tokens.size());
    probe.bytes = bytes;
    const double h = inflation_ + Value(probe, ancestor);
    for (const Node* v : victims) {
      if (Score(*v) > h) {
        inflation_ = std::max(inflation_, h);
        ++stats_.refused;
        return false;
      }
    }
  }
  for (Node* v : victims) {
    if (options_.policy == EvictionPolicy::kCost) inflation_ = std::max(inflation_, Score(*v));
    Evict(v);
  }

  if (node == nullptr) {
    std::unique_ptr<Node>& root = roots_[key];
    if (root == nullptr) {
      root = std::make_unique<Node>();
      root->key = key;
      ++stats_.nodes;
    }
    node = MakePath(root.get(), tokens);
    node->entry_index = entries_.size();
    entries_.push_back(node);
    ++stats_.entries;
  }
  stats_.bytes += bytes - freed;
  ++stats_.inserts;
  node->snapshot = std::move(s);
  node->bytes = bytes;
  node->last_use = now;
  node->base = inflation_;
  node->seq = next_seq_++;
  return true;
}

int64_t StateStore::SnapshotAncestorDepth(const Node& n) const {
  for (const Node* p = n.parent; p != nullptr; p = p->parent) {
    if (p->snapshot != nullptr) return p->depth;
  }
  return 0;
}

// kCost's (1 + hits) * marginal tokens per byte, in tokens per MB.
double StateStore::Value(const Node& n, int64_t ancestor_depth) const {
  return static_cast<double>(1 + n.hits) * static_cast<double>(n.depth - ancestor_depth) * 1e6 /
         static_cast<double>(n.bytes);
}

// Lower is evicted first.
double StateStore::Score(const Node& n) const {
  if (options_.policy == EvictionPolicy::kLru) return n.last_use;
  return n.base + Value(n, SnapshotAncestorDepth(n));
}

// The entry to evict next, other than `keep` and those already `chosen`.
StateStore::Node* StateStore::PickVictim(const Node* keep, std::span<Node* const> chosen) const {
  Node* victim = nullptr;
  double victim_score = std::numeric_limits<double>::infinity();
  for (Node* n : entries_) {
    if (n == keep || std::find(chosen.begin(), chosen.end(), n) != chosen.end()) continue;
    const double score = Score(*n);
    // Ties: the least recently used, then the oldest insert.
    if (victim == nullptr || score < victim_score ||
        (score == victim_score && (n->last_use < victim->last_use ||
                                   (n->last_use == victim->last_use && n->seq < victim->seq)))) {
      victim = n;
      victim_score = score;
    }
  }
  if (victim == nullptr) Broken("over budget with nothing left to evict");
  return victim;
}

void StateStore::Evict(Node* n) {
  stats_.bytes -= n->bytes;
  --stats_.entries;
  ++stats_.evictions;
  if (n->hits == 0) ++stats_.evicted_never_hit;
  Node* moved = entries_.back();
  entries_[n->entry_index] = moved;
  moved->entry_index = n->entry_index;
  entries_.pop_back();
  n->snapshot.reset();
  n->bytes = 0;
  n->hits = 0;
  Prune(n);
}

// Restores the node invariant after `n` lost its snapshot: removes the nodes that lead to no
// snapshot any more, then merges a remaining snapshot-less node with its only child.
void StateStore::Prune(Node* n) {
  while (n->parent != nullptr && n->snapshot == nullptr && n->children.empty()) {
    Node* parent = n->parent;
    parent->children.erase(parent->Slot(n->edge[0]));  // destroys n
    --stats_.nodes;
    n = parent;
  }
  if (n->parent == nullptr) {
    if (n->children.empty()) {
      --stats_.nodes;
      roots_.erase(n->key);  // destroys n
    }
    return;
  }
  if (n->snapshot != nullptr || n->children.size() != 1) return;
  std::unique_ptr<Node> child = std::move(n->children.front());
  child->edge.insert(child->edge.begin(), n->edge.begin(), n->edge.end());
  child->parent = n->parent;
  *n->parent->Slot(n->edge[0]) = std::move(child);  // destroys n
  --stats_.nodes;
}

StateStore::Stats StateStore::stats() const { return stats_; }

}  // namespace mamba::engine
