#pragma once

#include <conflux/detail/cpp20.hpp>

/// The whole public API of conflux. See docs/ for a guide per feature. Where the platform
/// lacks a facility (child processes, fork and IPC, sockets on Windows for now), the umbrella
/// leaves its headers out instead of stopping at their #error: docs/install.md lists them.

#include <conflux/atomic_view.hpp>
#include <conflux/buffer.hpp>
#include <conflux/channel.hpp>
#include <conflux/error.hpp>
#include <conflux/event_loop.hpp>
#include <conflux/executor.hpp>
#include <conflux/exit_status.hpp>
#include <conflux/pool.hpp>
#include <conflux/receive_any.hpp>
#include <conflux/run.hpp>
#include <conflux/shared_buffer.hpp>
#include <conflux/sleep.hpp>
#include <conflux/spawn_thread.hpp>
#include <conflux/task.hpp>
#include <conflux/thread_pool.hpp>
#include <conflux/version.hpp>
#include <conflux/when_all.hpp>
#include <conflux/when_any.hpp>
#include <conflux/worker.hpp>

#if CONFLUX_HAS_PROCESSES
#include <conflux/exec.hpp>
#include <conflux/process.hpp>
#include <conflux/process_options.hpp>
#include <conflux/stream.hpp>
#endif

#if CONFLUX_HAS_PIPELINES
#include <conflux/pipeline.hpp>
#endif

#if CONFLUX_HAS_FORK_IPC
#include <conflux/cluster.hpp>
#include <conflux/codec.hpp>
#include <conflux/file_descriptor.hpp>
#include <conflux/fork.hpp>
#include <conflux/ipc.hpp>
#include <conflux/process_pool.hpp>
#endif

#if CONFLUX_HAS_NET
#include <conflux/net.hpp>
#endif
