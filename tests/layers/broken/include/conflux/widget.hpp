#pragma once
// A public header that breaks every rule it can: the check must name each.
#include <conflux/detail/linux/backend.hpp>
#include <vector>
#include <unistd.h>
