#pragma once

// Every public header includes this first, before any standard header, so that an older
// language mode or a standard library without what conflux uses ends in one error that says
// what to do, instead of pages of errors from the code after it.
//
// #error does not stop GCC or Clang, so each #error is followed by the include of a header
// that does not exist: that is fatal, and compilation ends there.

// MSVC keeps __cplusplus at 199711L unless /Zc:__cplusplus is given; _MSVC_LANG is reliable.
#if (defined(_MSVC_LANG) ? _MSVC_LANG : __cplusplus) < 202002L
#error "conflux requires C++20 or later: compile with -std=c++20 (GCC >= 12, Clang >= 14)"
#include <conflux/detail/compilation_stopped_by_the_error_above>
#else
#include <version>
#if !defined(__cpp_lib_atomic_ref)
#error "conflux needs std::atomic_ref: use libstdc++ >= 12 or libc++ >= 19"
#include <conflux/detail/compilation_stopped_by_the_error_above>
#elif !defined(__cpp_lib_jthread)
#error "conflux needs <stop_token>: libc++ 19 has it only with -fexperimental-library"
#include <conflux/detail/compilation_stopped_by_the_error_above>
#endif
#endif

// Then the platform: an unsupported one stops here too, with one error (see platform.hpp).
#include <conflux/detail/platform.hpp>
