#pragma once

#include <exception>
#include <memory>
#include <type_traits>
#include <utility>
#include <variant>

namespace conflux::detail {

/// `void` as a value: the element type `when_all` and `when_any` use for a `task<void>`.
template <class T>
using non_void_t = std::conditional_t<std::is_void_v<T>, std::monostate, T>;

/// The outcome of a coroutine: nothing yet, a value (a pointer for references), or an
/// exception.
template <class T>
class result {
    using stored_t =
        std::conditional_t<std::is_void_v<T>, std::monostate,
                           std::conditional_t<std::is_reference_v<T>,
                                              std::add_pointer_t<std::remove_reference_t<T>>, T>>;

public:
    template <class... Args>
    void set_value(Args&&... args) {
        if constexpr (std::is_reference_v<T>) {
            m_state.template emplace<1>(std::addressof(args)...);
        } else {
            m_state.template emplace<1>(std::forward<Args>(args)...);
        }
    }

    void set_exception(std::exception_ptr e) noexcept { m_state.template emplace<2>(std::move(e)); }

    bool ready() const noexcept { return m_state.index() != 0; }
    bool has_exception() const noexcept { return m_state.index() == 2; }
    const std::exception_ptr& exception() const noexcept { return std::get<2>(m_state); }

    /// The value, or rethrows the exception. Precondition: ready().
    T take() {
        if (m_state.index() == 2) {
            std::rethrow_exception(std::get<2>(m_state));
        }
        if constexpr (std::is_void_v<T>) {
            return;
        } else if constexpr (std::is_reference_v<T>) {
            return static_cast<T>(*std::get<1>(m_state));
        } else {
            return std::move(std::get<1>(m_state));
        }
    }

    /// Like take(), with `void` turned into `std::monostate`.
    non_void_t<T> take_non_void() {
        if constexpr (std::is_void_v<T>) {
            take();
            return {};
        } else {
            return take();
        }
    }

private:
    std::variant<std::monostate, stored_t, std::exception_ptr> m_state;
};

} // namespace conflux::detail
