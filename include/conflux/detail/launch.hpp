#pragma once

// From the public options to a running child: validation, PATH lookup, the environment, the
// descriptor plan and its pipes. All of it runs in the parent before clone(); the child only
// executes the prepared plan (detail/spawn.hpp).

#include <conflux/process_options.hpp>
#include <conflux/detail/platform.hpp>
#include <conflux/detail/spawn.hpp>
#include <conflux/detail/system_error.hpp>
#if CONFLUX_PLATFORM_POSIX
#include <conflux/detail/launch_io.hpp>
#include <conflux/detail/orphans.hpp>
#include <conflux/detail/unique_fd.hpp>
#endif

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <vector>

namespace conflux::detail {

/// The common fields of `spawn_options` and `exec_options`, read by reference.
struct launch_request {
    std::string_view program;
    std::span<const std::string> args;
    const std::filesystem::path* cwd = nullptr;
    const std::optional<env_vars>* env = nullptr;
    const env_vars* env_set = nullptr;
    const std::vector<std::string>* env_unset = nullptr;
    const std::optional<std::string>* argv0 = nullptr;
    const std::vector<stdio_spec>* stdio = nullptr;
    bool detached = false;
    bool new_group = false;
    bool cleanup = false;
    std::optional<std::uint32_t> uid;
    std::optional<std::uint32_t> gid;
    const std::vector<resource_limit>* rlimits = nullptr;
};

template <class Options>
launch_request make_launch_request(std::string_view program, std::span<const std::string> args,
                                   const Options& o) {
    launch_request r;
    r.program = program;
    r.args = args;
    r.cwd = &o.cwd;
    r.env = &o.env;
    r.env_set = &o.env_set;
    r.env_unset = &o.env_unset;
    r.argv0 = &o.argv0;
    r.stdio = &o.stdio;
    r.detached = o.detached;
    r.new_group = o.kill_tree && !o.detached;
    r.cleanup = o.cleanup && !o.detached;
    r.uid = o.uid;
    r.gid = o.gid;
    r.rlimits = &o.rlimits;
    return r;
}

/// The stdio of a child whose stdout and stderr share one pipe (the `all` options): entries
/// 1 and 2 of `given` must be absent or `pipe`; fd 1 becomes the pipe, fd 2 a duplicate of it.
inline std::vector<stdio_spec> shared_output_stdio(std::vector<stdio_spec> given,
                                                   const char* operation) {
    for (std::size_t i = 1; i < 3 && i < given.size(); ++i) {
        if (given[i].how != stdio_spec::kind::pipe) {
            throw std::invalid_argument(std::string(operation) +
                                        ": `all` needs stdout and stderr to be pipes (fd " +
                                        std::to_string(i) + " is given another stdio_spec)");
        }
    }
    if (given.size() < 3) given.resize(3);
    given[1] = stdio_spec::pipe();
    given[2] = stdio_spec::same_as(1);
    return given;
}

inline void reject_nul(std::string_view s, const char* what) {
    if (s.find('\0') != std::string_view::npos) {
        throw std::invalid_argument(std::string("conflux::spawn: NUL byte in ") + what);
    }
}

#if CONFLUX_PLATFORM_POSIX
/// `spawn "prog"` or `spawn "prog" (chdir "/dir")`: what a spawn error names.
[[noreturn]] inline void throw_spawn_error(int err, std::string_view program, spawn_step step,
                                           const std::filesystem::path& cwd) {
    std::string what = "spawn \"";
    what += program;
    what += '"';
    if (step == spawn_step::chdir) {
        what += " (chdir \"" + cwd.string() + "\")";
    } else if (step != spawn_step::exec && step != spawn_step::none) {
        what += " (";
        what += spawn_step_name(step);
        what += ')';
    }
    throw std::system_error(err, std::system_category(), what);
}

#endif

/// The key a variable is found by: its name, and on Windows, where names differ only in
/// case are the same variable, its name in upper case.
inline std::string environment_key(std::string_view name) {
    std::string key(name);
#if CONFLUX_PLATFORM_WINDOWS
    for (char& c : key) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
#endif
    return key;
}

/// The child's environment as (name, value) pairs.
inline env_vars build_environment_vars(const launch_request& r) {
    std::vector<std::pair<std::string, std::string>> vars;
    std::unordered_map<std::string, std::size_t> index;
    auto put = [&](std::string name, std::string value) {
        auto [it, fresh] = index.try_emplace(environment_key(name), vars.size());
        if (fresh) {
            vars.emplace_back(std::move(name), std::move(value));
        } else {
            vars[it->second].second = std::move(value); // the last duplicate wins
        }
    };
    auto check = [](const std::string& name, const std::string& value) {
        if (name.empty() || name.find('=') != std::string::npos) {
            throw std::invalid_argument("conflux::spawn: environment variable name \"" + name +
                                        "\" is empty or contains '='");
        }
        reject_nul(name, "an environment variable name");
        reject_nul(value, "an environment variable value");
    };
    if (r.env->has_value()) {
        for (const auto& [name, value] : **r.env) {
            check(name, value);
            put(name, value);
        }
    } else {
        for (auto& [name, value] : inherited_environment()) put(std::move(name), std::move(value));
    }
    for (const auto& [name, value] : *r.env_set) {
        check(name, value);
        put(name, value);
    }
    for (const auto& name : *r.env_unset) {
        reject_nul(name, "an environment variable name");
        if (auto it = index.find(environment_key(name)); it != index.end()) {
            vars[it->second].first.clear();
        }
    }
    std::erase_if(vars, [](const auto& v) { return v.first.empty(); });
    return vars;
}

/// The child's environment as "NAME=value" strings.
inline std::vector<std::string> build_environment(const launch_request& r) {
    std::vector<std::string> out;
    for (auto& [name, value] : build_environment_vars(r)) out.push_back(name + "=" + value);
    return out;
}

#if CONFLUX_PLATFORM_POSIX
/// The parent's end of a pipe to the child's descriptor `child_fd`.
struct parent_pipe {
    int child_fd = -1;
    bool parent_writes = false;
    unique_fd fd;
};

struct launched {
    pid_t pid = -1;
    unique_fd pidfd;
    std::vector<parent_pipe> pipes;
};

inline const std::string* find_var(const std::vector<std::string>& env, std::string_view name) {
    for (const auto& entry : env) {
        if (entry.size() > name.size() && entry[name.size()] == '=' &&
            std::string_view(entry).substr(0, name.size()) == name) {
            return &entry;
        }
    }
    return nullptr;
}

/// Validates, prepares and starts the child. Throws `std::invalid_argument` for bad input
/// (before anything is started) and `std::system_error` naming the program for every OS
/// failure, including the child's failure to exec; nothing leaks on any path.
inline launched launch(const launch_request& r) {
    orphan_children::instance().reap_exited();
    // 1. Validation: everything is checked before a descriptor is opened.
    reject_nul(r.program, "the program");
    if (r.program.empty()) throw std::invalid_argument("conflux::spawn: empty program");
    for (const auto& a : r.args) reject_nul(a, "an argument");
    if (r.argv0->has_value()) reject_nul(**r.argv0, "argv0");
    const std::string cwd = r.cwd->string();
    reject_nul(cwd, "cwd");
    const std::vector<stdio_spec>& specs = *r.stdio;
    const std::size_t n_fds = std::max<std::size_t>(3, specs.size());
    if (n_fds > 64) throw std::invalid_argument("conflux::spawn: more than 64 stdio entries");
    for (std::size_t i = 0; i < specs.size(); ++i) {
        const auto& s = specs[i];
        if (s.how == stdio_spec::kind::same_as &&
            (s.fd < 0 || static_cast<std::size_t>(s.fd) >= n_fds ||
             static_cast<std::size_t>(s.fd) == i ||
             (static_cast<std::size_t>(s.fd) < specs.size() &&
              specs[static_cast<std::size_t>(s.fd)].how == stdio_spec::kind::same_as))) {
            throw std::invalid_argument("conflux::spawn: stdio_spec::same_as(" +
                                        std::to_string(s.fd) + ") at fd " + std::to_string(i) +
                                        " names no other descriptor");
        }
        if (s.how == stdio_spec::kind::fd && s.fd < 0) {
            throw std::invalid_argument("conflux::spawn: stdio_spec::from_fd with a negative fd");
        }
        if (s.how == stdio_spec::kind::file) reject_nul(s.path.string(), "a stdio file path");
    }
    const std::vector<std::string> env = build_environment(r);

    // 2. PATH lookup in the child's environment.
    std::string_view path_value = "/usr/local/bin:/usr/bin:/bin";
    if (const std::string* p = find_var(env, "PATH")) {
        path_value = std::string_view(*p).substr(5);
    }
    int lookup_err = 0;
    const std::string path = find_program(r.program, path_value, lookup_err);
    if (lookup_err != 0) throw_spawn_error(lookup_err, r.program, spawn_step::exec, *r.cwd);

    // 3. Descriptors: every one the library opens is O_CLOEXEC; the child gets copies
    //    without the flag only at the numbers it asked for.
    launched out;
    std::vector<unique_fd> child_ends; // closed in the parent once the child has them
    std::vector<fd_assignment> plan_fds(n_fds);
    unique_fd dev_null;
    for (std::size_t i = 0; i < n_fds; ++i) {
        plan_fds[i].target = static_cast<int>(i);
        const stdio_spec s = i < specs.size() ? specs[i] : stdio_spec::pipe();
        switch (s.how) {
        case stdio_spec::kind::pipe:
        case stdio_spec::kind::pipe_to_child: {
            auto [read_end, write_end] = open_pipe();
            if (!read_end) throw_spawn_error(errno, r.program, {}, *r.cwd);
            const bool parent_writes = i == 0 || s.how == stdio_spec::kind::pipe_to_child;
            plan_fds[i].source = parent_writes ? read_end.get() : write_end.get();
            out.pipes.push_back(
                parent_pipe{static_cast<int>(i), parent_writes,
                            parent_writes ? std::move(write_end) : std::move(read_end)});
            child_ends.push_back(parent_writes ? std::move(read_end) : std::move(write_end));
            break;
        }
        case stdio_spec::kind::inherit:
            plan_fds[i].source = static_cast<int>(i);
            break;
        case stdio_spec::kind::ignore:
            if (!dev_null) {
                dev_null = open_null_device();
                if (!dev_null) throw_spawn_error(errno, r.program, {}, *r.cwd);
            }
            plan_fds[i].source = dev_null.get();
            break;
        case stdio_spec::kind::fd:
            plan_fds[i].source = s.fd;
            break;
        case stdio_spec::kind::file: {
            unique_fd f = open_stdio_file(s.path, s.flags, s.mode, i == 0);
            if (!f) {
                const int err = errno;
                throw std::system_error(err, std::system_category(),
                                        "spawn \"" + std::string(r.program) + "\" (open \"" +
                                            s.path.string() + "\" for fd " + std::to_string(i) +
                                            ")");
            }
            plan_fds[i].source = f.get();
            child_ends.push_back(std::move(f));
            break;
        }
        case stdio_spec::kind::same_as:
            break; // resolved below, once every source is known
        case stdio_spec::kind::closed:
            plan_fds[i].source = -1;
            break;
        }
    }
    for (std::size_t i = 0; i < specs.size(); ++i) {
        if (specs[i].how == stdio_spec::kind::same_as) {
            plan_fds[i].source = plan_fds[static_cast<std::size_t>(specs[i].fd)].source;
        }
    }

    // 4. The null-terminated arrays the child's execve needs.
    std::vector<char*> argv;
    argv.reserve(r.args.size() + 2);
    std::string argv0 = r.argv0->has_value() ? **r.argv0 : std::string(r.program);
    argv.push_back(argv0.data());
    for (const auto& a : r.args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    std::vector<char*> envp;
    envp.reserve(env.size() + 1);
    for (const auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
    std::vector<rlimit_assignment> limits;
    for (const auto& l : *r.rlimits) {
        rlimit_assignment a;
        a.resource = l.resource;
        a.limit.rlim_cur = l.soft;
        a.limit.rlim_max = l.hard.value_or(l.soft);
        limits.push_back(a);
    }

    spawn_plan plan;
    plan.path = path.c_str();
    plan.argv = argv.data();
    plan.envp = envp.data();
    plan.cwd = cwd.empty() ? nullptr : cwd.c_str();
    plan.fds = plan_fds.data();
    plan.fd_count = plan_fds.size();
    plan.rlimits = limits.data();
    plan.rlimit_count = limits.size();
    plan.new_session = r.detached;
    plan.new_group = r.new_group;
    plan.set_uid = r.uid.has_value();
    plan.set_gid = r.gid.has_value();
    plan.uid = r.uid.value_or(0);
    plan.gid = r.gid.value_or(0);

    spawn_failure failure;
    spawned child;
    if (r.cleanup) {
        child = death_signal_spawner::spawn(plan, failure);
    } else {
        child = clone_spawn(plan, failure);
    }
    if (child.pid < 0) throw_spawn_error(failure.error, r.program, failure.step, *r.cwd);
    out.pid = child.pid;
    out.pidfd = std::move(child.pidfd);
    return out; // child_ends and dev_null close here: only the child holds them now
}

#endif

} // namespace conflux::detail

#if CONFLUX_PLATFORM_WINDOWS
#include <conflux/detail/launch_windows.hpp>
#endif
