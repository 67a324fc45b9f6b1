import os
import re

from conan import ConanFile
from conan.errors import ConanInvalidConfiguration
from conan.tools.cmake import CMake, CMakeDeps, CMakeToolchain, cmake_layout
from conan.tools.files import copy, load, rmdir
from conan.tools.scm import Version

required_conan_version = ">=2.0"


class ConfluxConan(ConanFile):
    name = "conflux"
    description = ("Header-only C++20 coroutines for worker threads, child processes, IPC "
                   "and clusters")
    license = "MIT"
    topics = ("coroutines", "async", "concurrency", "process", "ipc", "header-only")
    package_type = "header-library"
    settings = "os", "arch", "compiler", "build_type"
    # Running the project's own tests needs doctest; creating the package never does, so a
    # machine without network can `conan create` with the default options.
    options = {"with_tests": [True, False]}
    default_options = {"with_tests": False}
    exports_sources = ("CMakeLists.txt", "LICENSE", "cmake/*", "include/*", "tests/*",
                       "examples/*", "bench/*")
    no_copy_source = True

    def set_version(self):
        # One version number, kept in CMakeLists.txt.
        text = load(self, os.path.join(self.recipe_folder, "CMakeLists.txt"))
        self.version = re.search(r"project\(conflux\s+VERSION\s+([0-9.]+)", text).group(1)

    def layout(self):
        cmake_layout(self, src_folder=".")

    def build_requirements(self):
        if self.options.with_tests:
            self.test_requires("doctest/[>=2.4 <3]")

    def package_id(self):
        self.info.clear()

    def validate(self):
        # Without compiler.cppstd nothing would ask for C++20 and consumers would be compiled
        # in the compiler's default mode (gnu17 for GCC 12 and Clang 14): say so here instead.
        cppstd = self.settings.get_safe("compiler.cppstd")
        if not cppstd:
            raise ConanInvalidConfiguration(
                f"{self.ref} requires C++20 and the profile sets no compiler.cppstd: add "
                "-s compiler.cppstd=20 (or gnu20), or set it in the profile")
        digits = str(cppstd).replace("gnu", "")
        if int(("19" if digits == "98" else "20") + digits) < 2020:
            raise ConanInvalidConfiguration(
                f"{self.ref} requires C++20 but the profile has compiler.cppstd={cppstd} "
                "(conan profile detect picks the compiler's default, gnu17 for GCC 12 and "
                "Clang 14): add -s compiler.cppstd=20 (or gnu20), or set it in the profile")
        if self.settings.os != "Linux":
            raise ConanInvalidConfiguration(f"{self.ref} supports only Linux for now")
        minimum = {"gcc": "12", "clang": "14"}
        compiler = str(self.settings.compiler)
        if compiler not in minimum:
            raise ConanInvalidConfiguration(f"{self.ref} is tested with GCC and Clang only")
        if Version(self.settings.compiler.version) < minimum[compiler]:
            raise ConanInvalidConfiguration(
                f"{self.ref} needs {compiler} >= {minimum[compiler]}")

    def generate(self):
        toolchain = CMakeToolchain(self)
        toolchain.cache_variables["CONFLUX_BUILD_TESTS"] = bool(self.options.with_tests)
        toolchain.cache_variables["CONFLUX_BUILD_EXAMPLES"] = False
        toolchain.cache_variables["CONFLUX_BUILD_BENCH"] = False
        toolchain.generate()
        if self.options.with_tests:
            CMakeDeps(self).generate()

    def build(self):
        cmake = CMake(self)
        cmake.configure()
        if self.options.with_tests:
            cmake.build()
            cmake.test()

    def package(self):
        copy(self, "LICENSE", self.source_folder, os.path.join(self.package_folder, "licenses"))
        CMake(self).install()
        # Conan's own generators write the CMake and pkg-config files from package_info().
        rmdir(self, os.path.join(self.package_folder, "share"))

    def package_info(self):
        self.cpp_info.set_property("cmake_file_name", "conflux")
        self.cpp_info.set_property("cmake_target_name", "conflux::conflux")
        self.cpp_info.set_property("pkg_config_name", "conflux")
        self.cpp_info.bindirs = []
        self.cpp_info.libdirs = []
        self.cpp_info.system_libs = ["pthread"]
