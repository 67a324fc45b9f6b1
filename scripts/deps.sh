# Sourced by scripts/test and scripts/examples: makes sure the build tools are there.
# Usage: conflux_require_tools [doctest]

conflux_require_tools() {
    local missing=()
    command -v cmake >/dev/null || missing+=(cmake)
    command -v ninja >/dev/null || missing+=(ninja-build)
    command -v g++ >/dev/null || missing+=(g++)
    command -v pkg-config >/dev/null || missing+=(pkg-config)
    if [[ "${1:-}" == doctest ]] && command -v g++ >/dev/null &&
        ! echo '#include <doctest/doctest.h>' | g++ -x c++ -fsyntax-only - 2>/dev/null; then
        missing+=(doctest-dev)
    fi
    ((${#missing[@]} == 0)) && return 0

    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
        echo "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    else
        echo "missing: ${missing[*]}" >&2
        echo "install them with: sudo apt-get install ${missing[*]}" >&2
        echo "(needs CMake >= 3.25, Ninja, GCC >= 12 or Clang >= 14 and, for tests, doctest)" >&2
        exit 1
    fi
}
