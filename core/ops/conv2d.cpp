// Placeholder until the kernel lands.
#include "core/ops/conv2d.h"
