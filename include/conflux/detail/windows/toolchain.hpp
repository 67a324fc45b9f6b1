#pragma once

// A check of the Windows toolchain, made once, at the first conflux header.
//
// MinGW-w64's libstdc++ (seen with GCC 12) has no futex to build std::atomic waits on, and its
// fallback loses wake-ups: a waiter checks the word, then locks a mutex and sleeps on a
// condition variable, while a notifier stores and signals without taking that mutex, so a
// signal sent between the check and the sleep reaches nobody. std::stop_callback's destructor
// waits that way (on a binary_semaphore) when a std::stop_source runs the callback on another
// thread at the same moment, so a cancelled wait could hang its thread forever; conflux
// destroys a stop_callback at the end of every cancellable wait. _GLIBCXX_USE_POSIX_SEMAPHORE
// makes libstdc++ build its semaphores on sem_t (winpthreads: a Windows semaphore), which
// does not lose wake-ups. It changes the layout of std::binary_semaphore and of the stop-token
// internals, so the whole program must be compiled with it: the conflux CMake target and
// pkg-config file define it for MinGW builds (docs/install.md).

#include <version>

#if defined(__GLIBCXX__) && defined(__MINGW32__) && !_GLIBCXX_USE_POSIX_SEMAPHORE &&               \
    !defined(CONFLUX_ACCEPT_LOST_STOP_WAKEUPS)
#error                                                                                             \
    "conflux on MinGW-w64 needs -D_GLIBCXX_USE_POSIX_SEMAPHORE=1 for the whole program: libstdc++'s own semaphores can lose a wake-up and hang a cancelled wait (docs/install.md, Windows)"
#include <conflux/detail/compilation_stopped_by_the_error_above>
#endif
