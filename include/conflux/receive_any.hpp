#pragma once

#include <conflux/detail/cpp20.hpp>

// `receive_any`: one wait on several channels (Go's `select` over receives). channel.hpp
// includes this header after defining `channel`; included first, this header includes
// channel.hpp, whose own include of it is then skipped.
#include <conflux/channel.hpp>

#include <conflux/executor.hpp>
#include <conflux/detail/waiter_list.hpp>

#include <atomic>
#include <coroutine>
#include <cstddef>
#include <mutex>
#include <optional>
#include <stop_token>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>

namespace conflux {

namespace detail {

template <std::size_t N, class F>
void with_index(std::size_t i, F&& f) {
    [&]<std::size_t... I>(std::index_sequence<I...>) {
        ((i == I ? (f(std::integral_constant<std::size_t, I>{}), 0) : 0), ...);
    }
    (std::make_index_sequence<N>{});
}

/// The awaiter of `receive_any`: one wait linked into several channels' receiver lists; the
/// first channel to claim it delivers, the others skip it.
template <class... T>
class select_awaiter {
    static constexpr std::size_t count = sizeof...(T);

public:
    using result_type = std::variant<std::optional<T>...>;

    explicit select_awaiter(std::stop_token token, channel<T>&... channels) noexcept
        : m_channels(&channels...), m_token(std::move(token)) {
        point_at_nodes();
    }
    /// Movable until awaited (as `when_all`/`when_any` do with an rvalue awaitable).
    select_awaiter(select_awaiter&& other) noexcept
        : m_channels(other.m_channels), m_token(std::move(other.m_token)) {
        point_at_nodes();
    }
    select_awaiter(const select_awaiter&) = delete;
    select_awaiter& operator=(const select_awaiter&) = delete;
    ~select_awaiter() {
        if (!m_pending) return;
        m_callback.reset();
        m_core.try_claim(wait_core::cancelled);
        withdraw_all();
    }

    bool await_ready() const noexcept { return false; }

    template <class Promise>
    bool await_suspend(std::coroutine_handle<Promise> h) {
        if (!m_token.stop_possible()) m_token = stop_token_of(h);
        if (m_token.stop_requested()) {
            m_cancelled_early = true;
            return false;
        }
        m_core.park.prepare(h, require_executor("conflux::receive_any"));
        // Rotate the starting channel so that a busy first channel cannot starve the others.
        static std::atomic<unsigned> rotor{0};
        const std::size_t start = rotor.fetch_add(1, std::memory_order_relaxed) % count;
        bool spin = false;
        for (;;) {
            step_result outcome = step_result::linked;
            for (std::size_t k = 0; k < count && outcome == step_result::linked; ++k) {
                with_index<count>((start + k) % count, [&](auto index) {
                    outcome = step<decltype(index)::value>();
                    if (outcome == step_result::linked) {
                        spin = spin || std::get<decltype(index)::value>(m_channels)
                                           ->m_spin.load(std::memory_order_relaxed);
                    }
                });
            }
            if (outcome == step_result::won) {
                withdraw_all();
                return false;
            }
            if (outcome != step_result::retry) break;
            // We claimed a channel whose waiting senders had all been cancelled meanwhile:
            // nothing was taken. No stop callback exists yet, so only channels' completers
            // can have seen the claim, and they skipped our nodes without handing anything
            // over. Reopen, forget every node and start again.
            m_core.claim.store(wait_core::open, std::memory_order_release);
            withdraw_all();
        }
        m_pending = true;
        if (m_token.stop_possible()) {
            m_callback.emplace(m_token, cancel_wait{&m_core, m_node_ptrs, count});
        }
        return m_core.park.finish_suspend(spin);
    }

    result_type await_resume() {
        m_callback.reset();
        if (m_pending) {
            withdraw_all();
            m_pending = false;
        }
        if (m_cancelled_early) throw operation_cancelled();
        const std::uint32_t winner = m_core.winner();
        if (winner == wait_core::cancelled) throw operation_cancelled();
        std::optional<result_type> out;
        with_index<count>(winner, [&](auto index) {
            constexpr std::size_t I = decltype(index)::value;
            out.emplace(std::in_place_index<I>, std::move(std::get<I>(m_slots)));
        });
        if (m_token.stop_requested()) {
            // Stopped after a channel handed a value over: it goes back (see receive).
            give_back(std::move(*out));
            throw operation_cancelled();
        }
        return std::move(*out);
    }

    /// Puts a value this wait produced back into the channel it came from, first in line
    /// (`when_any` calls it when the wait took a value after another argument had won).
    void give_back(result_type&& r) {
        with_index<count>(r.index(), [&](auto index) {
            constexpr std::size_t I = decltype(index)::value;
            auto& value = std::get<I>(r);
            if (value) std::get<I>(m_channels)->restore(std::move(*value));
            value.reset();
        });
    }

private:
    enum class step_result { linked, won, lost, retry };

    template <std::size_t I>
    step_result step() {
        auto& ch = *std::get<I>(m_channels);
        wake_list wake;
        std::lock_guard lock(ch.m_mutex);
        if (m_core.winner() != wait_core::open) return step_result::lost;
        if (ch.ready_locked()) {
            if (!m_core.try_claim(static_cast<std::uint32_t>(I))) return step_result::lost;
            return ch.take_locked(std::get<I>(m_slots), wake) ? step_result::won
                                                              : step_result::retry;
        }
        ch.link_receiver(std::get<I>(m_nodes), m_core, &std::get<I>(m_slots),
                         static_cast<std::uint32_t>(I));
        return step_result::linked;
    }

    void point_at_nodes() noexcept {
        [&]<std::size_t... I>(std::index_sequence<I...>) {
            ((m_node_ptrs[I] = &std::get<I>(m_nodes)), ...);
        }
        (std::make_index_sequence<count>{});
    }

    void withdraw_all() noexcept {
        for (waiter_node* n : m_node_ptrs) {
            if (n->withdraw) n->withdraw(n);
        }
    }

    std::tuple<channel<T>*...> m_channels;
    std::tuple<channel_receive_node<T>...> m_nodes;
    std::tuple<std::optional<T>...> m_slots;
    waiter_node* m_node_ptrs[count] = {};
    wait_core m_core;
    std::stop_token m_token;
    bool m_cancelled_early = false;
    bool m_pending = false;
    std::optional<std::stop_callback<cancel_wait>> m_callback;
};

} // namespace detail

/// Waits on several channels at once (Go's `select` over receives) and takes exactly one
/// value: the result's `index()` says which channel delivered, and its `std::optional` is
/// empty when that channel is closed and drained. No value is ever lost: a channel that
/// could not deliver to this wait keeps its value for other receivers.
///
/// Resumes on the awaiting coroutine's executor. Cancelled by `token` (or the inherited stop
/// token) with `operation_cancelled`, taking nothing. Throws `std::logic_error` outside an
/// executor. Every channel must outlive the wait.
///
/// ```
/// auto r = co_await conflux::receive_any(jobs, control);
/// if (r.index() == 0) handle(*std::get<0>(r));
/// ```
template <class... T>
[[nodiscard]] detail::select_awaiter<T...> receive_any(channel<T>&... channels) {
    static_assert(sizeof...(T) > 0, "conflux::receive_any needs at least one channel");
    return detail::select_awaiter<T...>(std::stop_token{}, channels...);
}

/// `receive_any` cancelled by an explicit `token`.
template <class... T>
[[nodiscard]] detail::select_awaiter<T...> receive_any(std::stop_token token,
                                                       channel<T>&... channels) {
    static_assert(sizeof...(T) > 0, "conflux::receive_any needs at least one channel");
    return detail::select_awaiter<T...>(std::move(token), channels...);
}

} // namespace conflux
