#pragma once

// From the public options to a running child on Windows (included by launch.hpp, whose
// launch_request, validation and environment it shares): the program found by conflux, the
// command line, the three standard handles and CreateProcessW (detail/windows/spawn.hpp).

#include <conflux/detail/platform.hpp>

#if CONFLUX_PLATFORM_WINDOWS
#include <conflux/process_options.hpp>
#include <conflux/detail/child_exit.hpp>
#include <conflux/detail/launch.hpp>
#include <conflux/detail/spawn.hpp>

#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace conflux::detail {

/// The parent's end of a pipe to the child's standard handle `child_fd`.
struct parent_pipe {
    int child_fd = -1;
    bool parent_writes = false;
    unique_handle handle;
};

struct launched {
    unsigned long pid = 0;
    unique_handle process;
    unique_handle job;
    std::vector<parent_pipe> pipes;
};

/// `spawn "prog"`, `spawn "prog" (chdir "C:\dir")` or `spawn "prog" (job object)`: what a
/// spawn error names, with the system's error code.
[[noreturn]] inline void throw_spawn_error(unsigned long err, std::string_view program,
                                           std::string_view step) {
    std::string what = "spawn \"";
    what += program;
    what += '"';
    if (!step.empty()) {
        what += " (";
        what += step;
        what += ')';
    }
    throw std::system_error(static_cast<int>(err), std::system_category(), what);
}

inline const std::string* find_var(const env_vars& env, std::string_view name) {
    const std::string key = environment_key(name);
    for (const auto& [n, value] : env) {
        if (environment_key(n) == key) return &value;
    }
    return nullptr;
}

/// Validates, prepares and starts the child. Throws `std::invalid_argument` for bad input and
/// for what Windows lacks (uid, gid, rlimits, descriptors beyond 2), before anything starts;
/// `std::system_error` naming the program for every system failure. `shell_command`: run it
/// through the shell `r.program` (empty: %COMSPEC%, else cmd.exe) instead of `r.args`.
inline launched launch(const launch_request& r, const std::string* shell_command = nullptr) {
    kept_jobs::instance().close_empty();
    reject_nul(r.program, "the program");
    if (r.program.empty() && shell_command == nullptr) {
        throw std::invalid_argument("conflux::spawn: empty program");
    }
    for (const auto& a : r.args) reject_nul(a, "an argument");
    if (r.argv0->has_value()) reject_nul(**r.argv0, "argv0");
    if (r.uid || r.gid || !r.rlimits->empty()) {
        throw std::invalid_argument("conflux::spawn: uid, gid and rlimits are POSIX only");
    }
    const std::vector<stdio_spec>& specs = *r.stdio;
    if (specs.size() > 3) {
        throw std::invalid_argument(
            "conflux::spawn: a Windows child has three standard handles (stdio entries 0-2)");
    }
    for (std::size_t i = 0; i < specs.size(); ++i) {
        const auto& s = specs[i];
        if (s.how == stdio_spec::kind::same_as &&
            (s.fd < 0 || s.fd > 2 || static_cast<std::size_t>(s.fd) == i ||
             (static_cast<std::size_t>(s.fd) < specs.size() &&
              specs[static_cast<std::size_t>(s.fd)].how == stdio_spec::kind::same_as))) {
            throw std::invalid_argument("conflux::spawn: stdio_spec::same_as(" +
                                        std::to_string(s.fd) + ") at fd " + std::to_string(i) +
                                        " names no other descriptor");
        }
        if (s.how == stdio_spec::kind::fd && (s.fd < 0 || s.fd > 2)) {
            throw std::invalid_argument("conflux::spawn: stdio_spec::from_fd takes 0, 1 or 2 on "
                                        "Windows (this process's standard handles)");
        }
        if (s.how == stdio_spec::kind::file) reject_nul(s.path.string(), "a stdio file path");
    }
    const std::filesystem::path& cwd = *r.cwd;
    reject_nul(cwd.string(), "cwd");
    const env_vars env = build_environment_vars(r);

    // The directory first: CreateProcessW's own error for it does not say which path it was.
    std::error_code ec;
    if (!cwd.empty() && !std::filesystem::is_directory(cwd, ec)) {
        throw_spawn_error(error_bad_directory, r.program, "chdir \"" + cwd.string() + "\"");
    }

    // The program, looked up by conflux in the child's PATH (never in the current directory);
    // a relative path with a directory part is taken relative to the child's cwd.
    const std::string* path_var = find_var(env, "PATH");
    const std::string* pathext_var = find_var(env, "PATHEXT");
    const std::wstring path = windows::widen(path_var ? *path_var : std::string());
    const std::wstring pathext =
        windows::widen(pathext_var ? *pathext_var : std::string(".COM;.EXE;.BAT;.CMD"));
    auto locate = [&](std::string_view name) {
        std::filesystem::path p(windows::widen(name));
        if (p.has_parent_path() && p.is_relative() && !cwd.empty()) p = cwd / p;
        std::optional<std::wstring> found = windows::find_program(p.native(), path, pathext);
        if (!found) throw_spawn_error(error_file_not_found, name, {});
        return *found;
    };
    const std::string* comspec_var = find_var(env, "COMSPEC");
    auto comspec = [&] { return locate(comspec_var ? *comspec_var : std::string("cmd.exe")); };

    windows_spawn_plan plan;
    const std::wstring block = windows::environment_block(env);
    plan.environment = &block;
    const std::wstring wide_cwd = cwd.native();
    plan.cwd = &wide_cwd;
    if (shell_command != nullptr) {
        plan.application = r.program.empty() ? comspec() : locate(r.program);
        // The line is cmd.exe's (/d /s /c "..."): another shell would misread it, so it is
        // refused rather than run with arguments it does not understand.
        if (!windows::is_cmd_exe(plan.application)) {
            throw std::invalid_argument("conflux::exec: shell \"" + std::string(r.program) +
                                        "\" is not cmd.exe; on Windows exec runs commands "
                                        "through cmd.exe only (leave shell empty for %COMSPEC%)");
        }
        plan.command_line = windows::shell_command_line(*shell_command, plan.application);
    } else {
        const std::wstring program = locate(r.program);
        if (windows::is_batch_file(program)) {
            plan.application = comspec();
            plan.command_line = windows::batch_command_line(program, r.args, plan.application);
        } else {
            plan.application = program;
            std::vector<std::string> argv;
            argv.reserve(r.args.size() + 1);
            argv.push_back(r.argv0->has_value() ? **r.argv0 : std::string(r.program));
            argv.insert(argv.end(), r.args.begin(), r.args.end());
            plan.command_line = windows::command_line(argv);
        }
    }

    // The standard handles: the parent's ends of pipes go to `out`, everything the child
    // alone uses is closed here once it has its copies.
    launched out;
    std::vector<unique_handle> child_ends;
    for (int i = 0; i < 3; ++i) {
        const stdio_spec s = static_cast<std::size_t>(i) < specs.size()
                                 ? specs[static_cast<std::size_t>(i)]
                                 : stdio_spec::pipe();
        switch (s.how) {
        case stdio_spec::kind::pipe:
        case stdio_spec::kind::pipe_to_child: {
            const bool parent_writes = i == 0 || s.how == stdio_spec::kind::pipe_to_child;
            child_pipe p;
            if (const unsigned long err = create_child_pipe(parent_writes, p)) {
                throw_spawn_error(err, r.program, "pipe");
            }
            plan.stdio[i] = p.child.get();
            out.pipes.push_back(parent_pipe{i, parent_writes, std::move(p.parent)});
            child_ends.push_back(std::move(p.child));
            break;
        }
        case stdio_spec::kind::inherit:
            plan.stdio[i] = standard_handle(i);
            break;
        case stdio_spec::kind::fd:
            plan.stdio[i] = standard_handle(s.fd);
            break;
        case stdio_spec::kind::ignore: {
            unique_handle nul(open_null_device(i == 0));
            if (!nul) throw_spawn_error(last_error(), r.program, "open NUL");
            plan.stdio[i] = nul.get();
            child_ends.push_back(std::move(nul));
            break;
        }
        case stdio_spec::kind::file: {
            unique_handle f(open_stdio_file(s.path, s.flags, i == 0));
            if (!f) {
                throw_spawn_error(last_error(), r.program,
                                  "open \"" + s.path.string() + "\" for fd " + std::to_string(i));
            }
            plan.stdio[i] = f.get();
            child_ends.push_back(std::move(f));
            break;
        }
        case stdio_spec::kind::same_as:
        case stdio_spec::kind::closed:
            break;
        }
    }
    for (std::size_t i = 0; i < specs.size(); ++i) {
        if (specs[i].how == stdio_spec::kind::same_as) {
            plan.stdio[i] = plan.stdio[static_cast<std::size_t>(specs[i].fd)];
        }
    }

    plan.job = r.cleanup || r.new_group;
    plan.kill_on_job_close = r.cleanup;
    plan.new_process_group = r.detached;
    windows_spawned child = create_child(plan);
    if (!child.process) {
        throw_spawn_error(child.error, r.program,
                          std::string_view(child.step) == "CreateProcess" ? "" : child.step);
    }
    out.pid = child.pid;
    out.process = std::move(child.process);
    out.job = std::move(child.job);
    return out; // child_ends close here: only the child holds them now
}

} // namespace conflux::detail
#endif
