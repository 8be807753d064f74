// Splitting a long text into pieces that a byte-level BPE tokenizer (GPT-NeoX, GPT-2 style)
// encodes exactly as it encodes the whole: `mamba-client score` tokenizes a document of any
// length on the server, piece by piece, each under the server's request-size limit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace mamba::client {

// True when `p` starts a line that a byte-level pre-tokenizer cannot join to what precedes it:
// text[p-1] is '\n', text[p-2] is not whitespace (so the newline is a run of one whitespace
// character, its own pre-token) and text[p] is not whitespace (so nothing before p reaches
// past it). Merges never cross pre-tokens, so encode(text) = encode(text[..p)) + encode(text[p..)).
bool IsSafeSplit(std::string_view text, size_t p);

// Pieces of at most `max_bytes` bytes where possible, each ending just before a safe split (the
// last split within the limit). A stretch of more than `max_bytes` without a safe split becomes
// one longer piece, up to the next one. Empty text gives no pieces.
std::vector<std::string_view> SplitAtSafeLineStarts(std::string_view text, size_t max_bytes);

using TokenizeFn = std::function<absl::StatusOr<std::vector<int32_t>>(std::string_view)>;

// The whole text's tokens through `tokenize` (a server's tokenize call), in pieces of at most
// `piece_bytes` split at safe line starts when the text is longer. Each split is checked first:
// the lines on both sides must encode to the same tokens together as apart (a tokenizer that
// adds a BOS or a prefix space to every call fails this); if one does not, the text goes whole
// in one call after all.
absl::StatusOr<std::vector<int32_t>> TokenizeInPieces(std::string_view text, size_t piece_bytes,
                                                      const TokenizeFn& tokenize);

}  // namespace mamba::client
