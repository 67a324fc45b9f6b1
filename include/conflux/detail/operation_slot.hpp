#pragma once

// The one "one operation at a time" guard of conflux's I/O objects: the reads and the writes
// of pipes and sockets, a listener's accepts, an IPC channel's receives. Each direction of an
// object owns a slot; an operation claims it for as long as its coroutine frame lives, and a
// second claim meanwhile is a logic error, because two coroutines waiting on one direction of
// one descriptor would steal each other's wake-ups and interleave their bytes.

#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace conflux::detail {

class operation_slot {
public:
    /// Holds the slot until destroyed (or moved from). Empty when default-constructed.
    class claim {
    public:
        claim() noexcept = default;
        claim(claim&& other) noexcept : m_slot(std::exchange(other.m_slot, nullptr)) {}
        claim& operator=(claim&& other) noexcept {
            if (this != &other) {
                release();
                m_slot = std::exchange(other.m_slot, nullptr);
            }
            return *this;
        }
        ~claim() { release(); }

    private:
        friend class operation_slot;
        explicit claim(operation_slot& slot) noexcept : m_slot(&slot) { slot.m_busy = true; }
        void release() noexcept {
            if (m_slot != nullptr) std::exchange(m_slot, nullptr)->m_busy = false;
        }

        operation_slot* m_slot = nullptr;
    };

    operation_slot() noexcept = default;
    // A claim points at its slot: the slot stays where it is while claimed, and a moved-to
    // object starts idle.
    operation_slot(operation_slot&&) noexcept {}
    operation_slot& operator=(operation_slot&&) noexcept { return *this; }

    bool busy() const noexcept { return m_busy; }

    /// Claims the slot for one `operation` ("read", "write", "accept", "receive") on the
    /// `object` ("stream", "listener") called `name`. While a claim lives, another throws
    /// `std::logic_error`: `conflux: two writes at once on stream "cat"`.
    [[nodiscard]] claim enter(std::string_view operation, std::string_view object,
                              std::string_view name) {
        if (m_busy)
            throw std::logic_error(describe("two ", operation, "s at once on ", object, name));
        return claim(*this);
    }

    /// For `close()`: throws `std::logic_error` while an operation holds the slot.
    void require_idle(std::string_view operation, std::string_view object,
                      std::string_view name) const {
        if (!m_busy) return;
        std::string what = describe("closing ", object, "", "", name);
        what += " while a";
        if (!operation.empty() &&
            std::string_view("aeiou").find(operation.front()) != std::string_view::npos) {
            what += 'n';
        }
        what += ' ';
        what += operation;
        what += " on it is pending";
        throw std::logic_error(what);
    }

    /// The error of an operation started on a closed object: `conflux: stream "cat" is closed`.
    [[noreturn]] static void throw_closed(std::string_view object, std::string_view name) {
        throw std::logic_error(describe("", object, "", "", name) + " is closed");
    }

private:
    static std::string describe(std::string_view a, std::string_view b, std::string_view c,
                                std::string_view d, std::string_view name) {
        std::string out = "conflux: ";
        out += a;
        out += b;
        out += c;
        out += d;
        if (!name.empty()) {
            out += " \"";
            out += name;
            out += '"';
        }
        return out;
    }

    bool m_busy = false;
};

} // namespace conflux::detail
