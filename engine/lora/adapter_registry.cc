#include "engine/lora/adapter_registry.h"

// Being written (issue 15): see adapter_registry.h.
