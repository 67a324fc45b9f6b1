# The layer rules of docs/internals.md, checked on the include lines of every header:
#
#  1. Platform headers (<sys/...>, <unistd.h>, <windows.h>: any include that is neither a
#     C++ standard header nor a conflux header) appear only in the backend folders,
#     detail/posix/, detail/linux/, detail/windows/ and detail/bsd/.
#  2. A leaf (every header of a backend folder, and the portable utilities listed in
#     leaves.txt) includes no public header and no detail header that is not a leaf.
#  3. Nothing in detail/ includes conflux.hpp, and no public header includes a backend
#     header directly: it goes through a portable detail header.
#
# Feature internals that still make system calls themselves are listed, with a reason, in
# platform_allowed.txt. The list may only shrink: a file on it that no longer includes a
# platform header fails the check until it is taken off.
#
# Run with: cmake -DINCLUDE_DIR=<repo>/include -DLIST_DIR=<this folder> -P check_layers.cmake

cmake_minimum_required(VERSION 3.25)

set(backends "detail/posix/|detail/linux/|detail/windows/|detail/bsd/")

function(read_list file out)
    file(STRINGS "${file}" lines)
    set(result "")
    foreach(line IN LISTS lines)
        string(REGEX REPLACE "#.*$" "" line "${line}")
        string(STRIP "${line}" line)
        if(line)
            string(REGEX REPLACE "[ \t].*$" "" name "${line}")
            list(APPEND result "${name}")
        endif()
    endforeach()
    set(${out} "${result}" PARENT_SCOPE)
endfunction()

read_list("${LIST_DIR}/leaves.txt" listed_leaves)
read_list("${LIST_DIR}/platform_allowed.txt" platform_allowed)

file(GLOB_RECURSE headers RELATIVE "${INCLUDE_DIR}" "${INCLUDE_DIR}/conflux/*.hpp")
list(SORT headers)

set(errors "")
set(still_allowed "")
foreach(header IN LISTS headers)
    string(REGEX REPLACE "^conflux/" "" rel "${header}")
    set(is_public FALSE)
    if(NOT rel MATCHES "/")
        set(is_public TRUE)
    endif()
    set(is_backend FALSE)
    if(rel MATCHES "^(${backends})")
        set(is_backend TRUE)
    endif()
    set(is_leaf ${is_backend})
    if(rel IN_LIST listed_leaves)
        set(is_leaf TRUE)
    endif()

    file(STRINGS "${INCLUDE_DIR}/${header}" includes REGEX "^[ \t]*#[ \t]*include[ \t]*<")
    set(platform_here FALSE)
    foreach(line IN LISTS includes)
        string(REGEX REPLACE "^[ \t]*#[ \t]*include[ \t]*<([^>]*)>.*$" "\\1" included "${line}")
        if(included MATCHES "^conflux/")
            string(REGEX REPLACE "^conflux/" "" target "${included}")
            if(NOT target MATCHES "/")
                if(is_leaf)
                    list(APPEND errors "${header}: a leaf includes the public header <${included}>")
                endif()
                if(NOT is_public AND target STREQUAL "conflux.hpp")
                    list(APPEND errors "${header}: includes the umbrella <${included}>")
                endif()
            elseif(target MATCHES "^(${backends})")
                if(is_public)
                    list(APPEND errors "${header}: a public header includes the backend header <${included}>")
                endif()
            elseif(is_leaf AND NOT target IN_LIST listed_leaves
                   AND NOT target MATCHES "^detail/compilation_stopped_by_the_error_above$")
                list(APPEND errors "${header}: a leaf includes <${included}>, which is not a leaf (leaves.txt)")
            endif()
        elseif(included MATCHES "[./]")
            # Not a C++ standard header (those have neither a dot nor a slash).
            set(platform_here TRUE)
            if(NOT is_backend AND NOT rel IN_LIST platform_allowed)
                list(APPEND errors "${header}: includes the platform header <${included}> outside detail/<platform>/")
            endif()
        endif()
    endforeach()
    if(rel IN_LIST platform_allowed)
        if(is_public)
            list(APPEND errors "${header}: a public header cannot be on platform_allowed.txt")
        elseif(NOT platform_here)
            list(APPEND errors "${header}: includes no platform header any more: take it off platform_allowed.txt")
        endif()
    endif()
endforeach()

foreach(name IN LISTS listed_leaves platform_allowed)
    if(NOT EXISTS "${INCLUDE_DIR}/conflux/${name}")
        list(APPEND errors "${name}: listed in ${LIST_DIR}, but there is no such header")
    endif()
endforeach()

list(LENGTH headers count)
list(LENGTH platform_allowed allowed_count)
if(errors)
    list(JOIN errors "\n  " text)
    message(FATAL_ERROR "layer rules broken:\n  ${text}")
endif()
message(STATUS "layer rules hold for ${count} headers (${allowed_count} feature internals still make system calls)")
