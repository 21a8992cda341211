# Conan 2 recipe for postal. It describes the same dependencies as scripts/setup.sh installs from Debian.
# Note: Conan Center dropped caf/0.17.6 from its index in 2023, so `caf/0.17.6` must come from your own
# remote or a local `conan export` of the old recipe; see the README ("Using postal from Conan").
import os

from conan import ConanFile
from conan.tools.build import check_min_cppstd
from conan.tools.cmake import CMake, CMakeDeps, CMakeToolchain, cmake_layout
from conan.tools.files import copy


class PostalConan(ConanFile):
    name = "postal"
    version = "0.1.0"
    description = "Typed, bounded mailboxes and Tokio's channels for C++20 actors on CAF"
    license = "MIT"
    topics = ("actors", "channels", "mpsc", "caf", "coroutines")
    settings = "os", "arch", "compiler", "build_type"
    options = {"fPIC": [True, False]}
    default_options = {"fPIC": True}
    exports_sources = ("CMakeLists.txt", "cmake/*", "mailboxes/*", "actors/*", "patterns/*", "LICENSE")

    def export_sources(self):
        # The recipe lives in conan/; the sources are one folder up.
        root = os.path.join(self.recipe_folder, "..")
        for pattern in ("CMakeLists.txt", "cmake/*", "mailboxes/*", "actors/*", "patterns/*", "LICENSE"):
            copy(self, pattern, root, self.export_sources_folder)

    def requirements(self):
        self.requires("caf/0.17.6")
        self.requires("nlohmann_json/3.11.2")

    def build_requirements(self):
        self.test_requires("catch2/2.13.10")

    def validate(self):
        check_min_cppstd(self, 20)

    def layout(self):
        cmake_layout(self)

    def generate(self):
        CMakeDeps(self).generate()
        toolchain = CMakeToolchain(self)
        toolchain.variables["POSTAL_BUILD_TESTS"] = False
        toolchain.variables["POSTAL_BUILD_SAMPLES"] = False
        toolchain.variables["POSTAL_BUILD_BENCH"] = False
        toolchain.generate()

    def build(self):
        cmake = CMake(self)
        cmake.configure()
        cmake.build()

    def package(self):
        CMake(self).install()

    def package_info(self):
        self.cpp_info.set_property("cmake_file_name", "postal")

        mailboxes = self.cpp_info.components["mailboxes"]
        mailboxes.set_property("cmake_target_name", "postal::mailboxes")
        mailboxes.bindirs = []
        mailboxes.libdirs = []
        mailboxes.system_libs = ["pthread"]

        # TCP for tasks (no CAF, no runtime: postal::task is header-only).
        net = self.cpp_info.components["net"]
        net.set_property("cmake_target_name", "postal::net")
        net.libs = ["postal_net"]
        net.requires = ["mailboxes"]

        actors = self.cpp_info.components["actors"]
        actors.set_property("cmake_target_name", "postal::actors")
        actors.libs = ["postal_actors"]
        actors.requires = ["mailboxes", "net", "caf::caf_core", "caf::caf_io"]

        patterns = self.cpp_info.components["patterns"]
        patterns.set_property("cmake_target_name", "postal::patterns")
        patterns.libs = ["postal_patterns"]
        patterns.requires = ["actors", "nlohmann_json::nlohmann_json"]
