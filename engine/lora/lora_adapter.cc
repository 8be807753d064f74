#include "engine/lora/lora_adapter.h"

// Being written (issue 15): see lora_adapter.h.
