// Placeholder until the kernel lands.
#include "core/ops/shortcut.h"
