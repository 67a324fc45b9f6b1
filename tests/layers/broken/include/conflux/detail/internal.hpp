#pragma once
// A feature internal listed as allowed to make system calls, which makes none.
#include <conflux/conflux.hpp>
