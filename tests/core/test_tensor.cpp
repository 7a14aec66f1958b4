// Tests land with the op.
#include <doctest/doctest.h>
