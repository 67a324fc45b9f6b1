#pragma once

// What process options name on POSIX systems: the RLIMIT_* resources and RLIM_INFINITY
// for `resource_limit`, and the checks that conflux's portable spellings of the ids and
// limits are exactly the system's types.

#include <cstdint>
#include <type_traits>

#include <sys/resource.h>
#include <sys/types.h>

namespace conflux::detail {

static_assert(std::is_same_v<uid_t, std::uint32_t> && std::is_same_v<gid_t, std::uint32_t>,
              "conflux spells uid_t and gid_t std::uint32_t");
static_assert(std::is_same_v<pid_t, int>, "conflux spells pid_t int (conflux::pid_type)");
static_assert(sizeof(rlim_t) <= sizeof(std::uint64_t) && std::is_unsigned_v<rlim_t>,
              "conflux spells rlim_t std::uint64_t");
static_assert(static_cast<rlim_t>(~std::uint64_t{0}) == RLIM_INFINITY,
              "conflux spells RLIM_INFINITY resource_limit::unlimited");

} // namespace conflux::detail
