# Overlay port: conflux is not in a vcpkg registry yet, so this port builds the source tree
# it lives in (ports/conflux/../..). Use it with
#   vcpkg install conflux --overlay-ports=<conflux checkout>/ports
# Once releases are tagged, SOURCE_PATH will come from vcpkg_from_github with a SHA512.
get_filename_component(SOURCE_PATH "${CMAKE_CURRENT_LIST_DIR}/../.." ABSOLUTE)

# Header-only: a single release configuration installs everything there is.
set(VCPKG_BUILD_TYPE release)

vcpkg_cmake_configure(
    SOURCE_PATH "${SOURCE_PATH}"
    OPTIONS
        -DCONFLUX_BUILD_TESTS=OFF
        -DCONFLUX_BUILD_EXAMPLES=OFF
        -DCONFLUX_BUILD_BENCH=OFF
)
vcpkg_cmake_install()
vcpkg_cmake_config_fixup(CONFIG_PATH share/cmake/conflux)
vcpkg_fixup_pkgconfig()

# The licence goes to share/conflux/copyright instead.
file(REMOVE_RECURSE "${CURRENT_PACKAGES_DIR}/share/doc")
file(INSTALL "${CMAKE_CURRENT_LIST_DIR}/usage" DESTINATION "${CURRENT_PACKAGES_DIR}/share/${PORT}")
vcpkg_install_copyright(FILE_LIST "${SOURCE_PATH}/LICENSE")
