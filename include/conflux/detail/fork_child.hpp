#pragma once

// The child side of `conflux::fork`: what a process started by `fork` does before its
// entry point runs (finding its channel and its parent in the environment, watching the
// parent's exit) and after (flushing the channel, reporting an uncaught exception), and the
// registry of named entry points. `conflux::run` reaches it through fork_hooks.

#include <conflux/event_loop.hpp>
#include <conflux/ipc.hpp>
#include <conflux/task.hpp>
#include <conflux/detail/fork_hooks.hpp>
#include <conflux/detail/io_watch.hpp>
#include <conflux/detail/process_name.hpp>
#include <conflux/detail/process_self.hpp>
#include <conflux/detail/unique_fd.hpp>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <utility>

namespace conflux {

namespace detail {

inline constexpr const char* fork_fd_env = "CONFLUX_IPC_FD";
inline constexpr const char* fork_entry_env = "CONFLUX_FORK_ENTRY";
inline constexpr const char* fork_parent_env = "CONFLUX_PARENT_PID";
inline constexpr const char* fork_mode_env = "CONFLUX_IPC_MODE";
inline constexpr const char* fork_max_env = "CONFLUX_IPC_MAX_MESSAGE";

using entry_fn = std::function<task<int>()>;

inline std::map<std::string, entry_fn, std::less<>>& fork_entries() {
    static std::map<std::string, entry_fn, std::less<>> entries;
    return entries;
}

struct parent_link {
    std::unique_ptr<ipc_channel> channel;
    bool exit_when_orphaned = true;
};

inline parent_link& parent_slot() {
    static parent_link link;
    return link;
}

inline std::string current_exception_type() { return current_exception_type_name(); }

/// The message of the exception being handled (called inside a catch block).
inline std::string current_exception_message() {
    try {
        throw;
    } catch (const std::exception& e) {
        return e.what();
    } catch (...) {
        // Not a std::exception: it has no message to give.
    }
    return "(not a std::exception)";
}

/// Reports the exception being handled to the parent (called inside a catch block).
inline void report_current_exception() noexcept {
    ipc_channel* ch = parent_slot().channel.get();
    if (ch == nullptr || !ch->connected()) return;
    try {
        ch->send_error(current_exception_type(), current_exception_message());
    } catch (...) {
        // The report could not be queued (no memory, the channel broke): the parent still
        // sees the exit code 1 and, on stderr, what print_current_exception wrote.
    }
}

/// Prints the exception being handled on stderr (called inside a catch block), as Node
/// prints an uncaught error: the child's own output says why it exits with code 1.
inline void print_current_exception(std::string_view entry) noexcept {
    try {
        const std::string type = current_exception_type();
        const std::string what = current_exception_message();
        std::fprintf(stderr, "conflux: uncaught exception in forked entry point \"%.*s\": %s: %s\n",
                     static_cast<int>(entry.size()), entry.data(), type.c_str(), what.c_str());
        std::fflush(stderr);
    } catch (...) {
        // No memory to format the line: the exit code 1 and the parent's report remain.
    }
}

inline task<void> flush_parent() {
    if (ipc_channel* ch = parent_slot().channel.get(); ch != nullptr && ch->connected()) {
        try {
            co_await ch->flush();
        } catch (const ipc_error&) {
        }
    }
}

inline void close_parent(event_loop& loop) noexcept {
    try {
        loop.run_until_complete(flush_parent());
    } catch (...) {
        // The child is on its way out: what could not be flushed is lost with the channel,
        // as when a Node child exits with messages still queued.
    }
    parent_slot().channel.reset();
}

/// Exits the child once the parent process is gone, whether or not anyone reads the
/// channel: a pidfd of the parent becomes readable when it exits.
inline task<void> watch_parent(unique_fd pidfd) {
    event_loop& loop = require_loop("conflux::fork");
    io_watch watch(loop, pidfd.get());
    co_await watch.readable(std::stop_token());
    if (!parent_slot().exit_when_orphaned) co_return;
    std::fflush(nullptr);
    exit_now(0);
}

inline task<int> run_entry(const entry_fn& fn, std::string_view entry) {
    try {
        co_return co_await fn();
    } catch (...) {
        print_current_exception(entry);
        report_current_exception();
    }
    co_return 1;
}

inline bool start_forked_child(event_loop& loop) {
    const char* fd_text = std::getenv(fork_fd_env);
    const char* node_fd_text = std::getenv("NODE_CHANNEL_FD");
    if (fd_text == nullptr && node_fd_text == nullptr) return false;
    ipc_options options;
    int fd = -1;
    std::string entry;
    long parent_pid = 0;
    if (fd_text != nullptr) {
        fd = std::atoi(fd_text);
        if (const char* m = std::getenv(fork_mode_env); m && std::string_view(m) == "json") {
            options.mode = ipc_mode::json;
        }
        if (const char* e = std::getenv(fork_entry_env)) entry = e;
        if (const char* p = std::getenv(fork_parent_env)) parent_pid = std::atol(p);
        // Both ends agree on the largest message the parent configured.
        if (const char* m = std::getenv(fork_max_env); m && std::strtoull(m, nullptr, 10) > 0) {
            options.max_message_size = static_cast<std::size_t>(std::strtoull(m, nullptr, 10));
        }
    } else {
        // Forked by Node.js: its channel, in its json serialisation.
        fd = std::atoi(node_fd_text);
        const char* mode = std::getenv("NODE_CHANNEL_SERIALIZATION_MODE");
        if (mode != nullptr && std::string_view(mode) != "json") {
            std::fprintf(stderr,
                         "conflux: Node.js parent uses serialization '%s'; only 'json' "
                         "is supported\n",
                         mode);
            return false;
        }
        options.mode = ipc_mode::json;
        parent_pid = static_cast<long>(parent_process_id());
    }
    // Consumed: grandchildren started with spawn must not believe they were forked.
    for (const char* name : {fork_fd_env, fork_entry_env, fork_parent_env, fork_mode_env,
                             fork_max_env, "NODE_CHANNEL_FD", "NODE_CHANNEL_SERIALIZATION_MODE"}) {
        unset_environment(name);
    }
    if (fd < 0) return false;
    parent_slot().channel = std::make_unique<ipc_channel>(loop, file_descriptor(fd), options);

    if (parent_pid > 0) {
        unique_fd pidfd = watch_process_exit(parent_pid);
        // Opened after the parent already died (we were reparented): leave now.
        if (!pidfd || parent_process_id() != parent_pid) {
            std::fflush(nullptr);
            exit_now(0);
        }
        loop.detach(watch_parent(std::move(pidfd)));
    }

    if (entry.empty()) return true;
    int code = 127;
    auto& entries = fork_entries();
    if (auto it = entries.find(entry); it != entries.end()) {
        try {
            code = loop.run_until_complete(run_entry(it->second, entry));
        } catch (...) {
            code = 1;
        }
    } else {
        auto report = [](std::string name) -> task<void> {
            parent_slot().channel->send_error("conflux::fork_error",
                                              "no entry point named \"" + name +
                                                  "\" was registered in the child");
            co_return;
        };
        try {
            loop.run_until_complete(report(entry));
        } catch (...) {
            // The parent cannot be told why: it still sees the exit code 127.
        }
    }
    close_parent(loop);
    std::fflush(nullptr);
    std::exit(code);
}

inline void finish_forked_child(event_loop& loop) noexcept { close_parent(loop); }

inline void failed_forked_child(event_loop& loop) noexcept {
    report_current_exception();
    close_parent(loop);
}

inline constexpr fork_child_hooks fork_hooks_impl{&start_forked_child, &finish_forked_child,
                                                  &failed_forked_child};

// Installed during static initialisation of any program that includes this header: one
// pointer store, so that `conflux::run` can find the entry points (it cannot include fork.hpp).
inline const bool fork_hooks_installed = (fork_hooks() = &fork_hooks_impl, true);

} // namespace detail
} // namespace conflux
