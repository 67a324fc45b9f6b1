#pragma once

#include <conflux/detail/windows/section.hpp>

#include <memory>

namespace conflux::detail {

/// The watcher that carries a `notify` made in another process to this process's
/// `wait_async` waiters. On Windows shared memory does not cross processes yet, so a section
/// has no doorbell (`wake()` is null) and there is never anything to watch: the interface of
/// detail/linux/doorbell_watcher.hpp, doing nothing. Across processes it will be an event per
/// section and one thread waiting on several of them.
class doorbell_watcher {
public:
    using ring_handler = void (*)(const section_mapping&) noexcept;

    static doorbell_watcher& instance() noexcept {
        static doorbell_watcher watcher;
        return watcher;
    }

    /// Nothing to watch: the mapping has no doorbell.
    void watch(const std::shared_ptr<section_mapping>&, ring_handler) noexcept {}

    /// No thread to stop.
    void stop() noexcept {}
};

} // namespace conflux::detail
