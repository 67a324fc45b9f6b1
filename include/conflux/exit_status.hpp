#pragma once

#include <conflux/detail/cpp20.hpp>

#include <csignal>
#include <cstring>
#include <optional>
#include <string>

namespace conflux {

/// How a child process ended: with an exit code, or killed by a signal.
///
/// ```
/// conflux::exit_status st = co_await child.wait();
/// if (!st.success()) std::println("{}", st.to_string()); // "killed by signal 9 (SIGKILL)"
/// ```
class exit_status {
public:
    /// A status that says nothing (`success()` false): also what a default-constructed one is.
    constexpr exit_status() noexcept = default;

    /// The child called exit(`code`) (or returned it from main).
    static constexpr exit_status exited(int code) noexcept { return exit_status(code, 0, false); }

    /// The child was killed by `signal`, dumping core when `core_dumped`.
    static constexpr exit_status killed(int signal, bool core_dumped = false) noexcept {
        return exit_status(-1, signal, core_dumped);
    }

    /// The exit code, or empty when the child was killed by a signal.
    constexpr std::optional<int> code() const noexcept {
        if (m_code < 0) return std::nullopt;
        return m_code;
    }

    /// The signal that killed the child, or empty when it exited.
    constexpr std::optional<int> signal() const noexcept {
        if (m_signal == 0) return std::nullopt;
        return m_signal;
    }

    /// True when the child exited with code 0.
    constexpr bool success() const noexcept { return m_code == 0; }

    /// True when the killing signal dumped core.
    constexpr bool core_dumped() const noexcept { return m_core; }

    /// "exited with code 3", "killed by signal 15 (SIGTERM)".
    std::string to_string() const {
        if (m_code >= 0) return "exited with code " + std::to_string(m_code);
        if (m_signal == 0) return "unknown status";
        std::string out = "killed by signal " + std::to_string(m_signal);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 32)
        if (const char* abbrev = ::sigabbrev_np(m_signal)) {
            out += " (SIG";
            out += abbrev;
            out += ')';
        }
#endif
        if (m_core) out += ", core dumped";
        return out;
    }

    friend constexpr bool operator==(const exit_status&, const exit_status&) noexcept = default;

private:
    constexpr exit_status(int code, int signal, bool core) noexcept
        : m_code(code), m_signal(signal), m_core(core) {}

    int m_code = -1;
    int m_signal = 0;
    bool m_core = false;
};

} // namespace conflux
