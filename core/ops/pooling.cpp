// Placeholder until the kernel lands.
#include "core/ops/pooling.h"
