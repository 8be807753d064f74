// LoRA adapters over HTTP (issue 15), vLLM's routes: POST /v1/load_lora_adapter
// {"lora_name", "lora_path"} and POST /v1/unload_lora_adapter {"lora_name"}, answered at once
// (the load reads the adapter on the connection's strand), and the adapters' /v1/models cards.
#pragma once

#include "engine/lora/adapter_registry.h"
#include "server/http/exchange.h"
#include "server/http/generation_call.h"
#include "server/http/json_util.h"

namespace mamba::server::http {

// 200 "Success: LoRA adapter '<name>' added successfully." (text, as vLLM). Errors (OpenAI
// shape): 400 for a body that is not a JSON object, a missing or non-string field, a name that
// is the served model's or malformed, and an adapter refused by the loader (its message: the
// adapter's name and the reason); 404 no such directory; 409 the name is taken; 429 --max-loras
// adapters resident; 501 a backend without LoRA; 503 no engine.
HttpResponse HandleLoadLora(const HandlerContext& ctx, const HttpRequest& request);

// 200 "Success: LoRA adapter '<name>' removed successfully."; 404 no adapter has that name.
// Requests already running on it finish under it; new ones no longer find it.
HttpResponse HandleUnloadLora(const HandlerContext& ctx, const HttpRequest& request);

// An adapter's /v1/models entry, as vLLM's: {"id", "object": "model", "created" (when loaded,
// Unix seconds), "owned_by", "root" (its directory), "parent" (the base model's name)}.
OrderedJson AdapterCard(const engine::ServedAdapter& adapter, const std::string& parent);

}  // namespace mamba::server::http
