#pragma once

// What `ps` shows for the processes conflux starts from its own executable: a forked child
// and a cluster worker re-run this program through /proc/self/exe, whose name the kernel
// would show as "exe". The parent gives each one a title as argv[0] ("myprog: fork resize",
// "myprog: worker 2": the parent's program name and the child's role, after nginx's
// "nginx: worker process") and its program name in an environment variable; the child takes
// that name during static initialisation, renames itself with it (ps -o comm, top) and uses
// it in the titles of its own children.

#include <conflux/detail/process_self.hpp>

#include <cstdlib>
#include <string>
#include <string_view>

namespace conflux::detail {

/// Carries the program's name to a child that re-runs this executable; consumed at start-up.
inline constexpr const char* process_name_env = "CONFLUX_PROCESS_NAME";

/// The name the parent gave this process, if it did.
inline std::string& given_program_name() {
    static std::string name;
    return name;
}

/// The name this program goes by: the one its parent gave (in a forked child or a cluster
/// worker, whose argv[0] is a title), else the last component of argv[0], else the kernel's
/// name for the process.
inline std::string own_program_name() {
    if (!given_program_name().empty()) return given_program_name();
    std::string name = program_short_name();
    return name.empty() ? process_name() : name;
}

/// The last path component of `program` ("./bin/server" -> "server").
inline std::string program_base_name(std::string_view program) {
    const auto slash = program.find_last_of('/');
    return std::string(slash == std::string_view::npos ? program : program.substr(slash + 1));
}

/// "<name>: <role>", what `ps -o args` shows first for a child in that role.
inline std::string process_title(std::string_view name, std::string_view role) {
    std::string title(name);
    title += ": ";
    title += role;
    return title;
}

/// In a child started with a name: takes it, renames the process, and removes the variable
/// (the child's own children must not inherit it). Run once, during static initialisation.
inline bool adopt_given_program_name() noexcept {
    const char* name = std::getenv(process_name_env);
    if (name == nullptr) return false;
    try {
        given_program_name() = name;
    } catch (...) {
        // No memory during start-up: the program's own argv[0] names its children instead.
    }
    if (*name != '\0') set_process_name(name);
    unset_environment(process_name_env);
    return true;
}

// Before `main`, so that the child carries its name for all of its life, and before any
// thread starts, so that every thread inherits it.
inline const bool given_program_name_adopted = adopt_given_program_name();

} // namespace conflux::detail
