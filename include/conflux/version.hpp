#pragma once

#include <conflux/detail/cpp20.hpp>

/// conflux's version. CMakeLists.txt holds the same number and refuses to configure when the
/// two disagree, so these macros can be trusted in preprocessor checks.

/// Major version: bumped on incompatible API changes.
#define CONFLUX_VERSION_MAJOR 0
/// Minor version: bumped when features are added compatibly.
#define CONFLUX_VERSION_MINOR 1
/// Patch version: bumped for fixes only.
#define CONFLUX_VERSION_PATCH 0
/// "MAJOR.MINOR.PATCH" as a string literal.
#define CONFLUX_VERSION_STRING "0.1.0"

namespace conflux {

/// The major version as a constant, for `if constexpr` and `static_assert`.
inline constexpr int version_major = CONFLUX_VERSION_MAJOR;
/// The minor version as a constant.
inline constexpr int version_minor = CONFLUX_VERSION_MINOR;
/// The patch version as a constant.
inline constexpr int version_patch = CONFLUX_VERSION_PATCH;

} // namespace conflux
