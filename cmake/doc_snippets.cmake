# Extracts the ```cpp blocks of Markdown files into C++ sources, so that the documentation is
# compiled (and its whole programs run) like the examples.
#
# A block is classified by the HTML comment on the last non-blank line before its fence
# (invisible in rendered Markdown):
#
#   (no comment)                        a whole program: it must define `main`; it is built
#   <!-- program -->                    and run, and must exit 0 within seconds.
#   <!-- fragment: namespace -->        declarations and definitions, compiled at namespace
#                                       scope after the prelude.
#   <!-- fragment: coroutine(PARAMS) --> statements, compiled as the body of
#                                       `inline conflux::task<void> f(PARAMS)` after the
#                                       prelude; `(PARAMS)` may be left out.
#   <!-- fragment: function(PARAMS) -->  statements, the body of `inline void f(PARAMS)`.
#   <!-- no-compile: REASON -->         not compiled (signatures, pseudo-code); say why.
#
# The prelude (docs/snippets/prelude.hpp) includes <conflux/conflux.hpp>, brings in the
# chrono literals and declares the placeholder names fragments use (`sha256`, `handle`...).
# All fragments of one Markdown file form one translation unit (built, not linked); each
# program is its own executable. `#line` directives make diagnostics name the Markdown file.
# Fragment functions are inline: GCC 12 warns (-Wsubobject-linkage) when a lambda written in a
# non-inline function of the main file is handed to a coroutine template such as `offload`.

# Writes `content` to `path` only when it differs, so an unchanged block is not rebuilt.
function(_conflux_doc_write path content)
    set(tmp "${path}.tmp")
    file(WRITE "${tmp}" "${content}")
    configure_file("${tmp}" "${path}" COPYONLY)
    file(REMOVE "${tmp}")
endfunction()

# Turns the stand-in characters back into ';', '[', ']' and '\'.
macro(_conflux_doc_restore var)
    string(ASCII 1 _semi)
    string(ASCII 2 _lbr)
    string(ASCII 3 _rbr)
    string(ASCII 4 _bsl)
    string(REPLACE "${_lbr}" "[" ${var} "${${var}}")
    string(REPLACE "${_rbr}" "]" ${var} "${${var}}")
    string(REPLACE "${_bsl}" "\\" ${var} "${${var}}")
    string(REPLACE "${_semi}" ";" ${var} "${${var}}")
endmacro()

# conflux_doc_snippets(<markdown> <stem> <out_dir> <programs_var> <fragments_var>)
# Generates <out_dir>/<stem>_<n>.cpp for each program block and <out_dir>/<stem>_fragments.cpp
# for the fragments; appends the program sources to <programs_var> and the fragment source
# (when there are fragments) to <fragments_var>.
function(conflux_doc_snippets markdown stem out_dir programs_var fragments_var)
    set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${markdown}")
    file(RELATIVE_PATH shown "${PROJECT_SOURCE_DIR}" "${markdown}")
    file(READ "${markdown}" text)

    # CMake lists split on ';' and treat '[', ']' and '\' specially: swap them for control
    # characters that Markdown never contains, split into lines, and swap them back on output.
    string(ASCII 1 semi)
    string(ASCII 2 lbr)
    string(ASCII 3 rbr)
    string(ASCII 4 bsl)
    string(REPLACE "\\" "${bsl}" text "${text}")
    string(REPLACE ";" "${semi}" text "${text}")
    string(REPLACE "[" "${lbr}" text "${text}")
    string(REPLACE "]" "${rbr}" text "${text}")
    string(REPLACE "\n" ";" lines "${text}")

    set(programs "${${programs_var}}")
    set(fragment_code "")
    set(in_block FALSE)
    set(line_no 0)
    set(block_count 0)
    set(fragment_count 0)
    set(last_text "")
    foreach(line IN LISTS lines)
        math(EXPR line_no "${line_no} + 1")
        if(NOT in_block)
            if(line MATCHES "^([ ]*)```cpp[ ]*$")
                set(in_block TRUE)
                set(indent "${CMAKE_MATCH_1}")
                string(LENGTH "${indent}" indent_len)
                math(EXPR first_line "${line_no} + 1")
                set(marker "${last_text}")
                set(body "")
            elseif(NOT line MATCHES "^[ ]*$")
                set(last_text "${line}")
            endif()
            continue()
        endif()
        if(NOT line MATCHES "^[ ]*```[ ]*$")
            # Drop the fence's indentation (a block inside a list item).
            if(indent_len GREATER 0 AND line MATCHES "^${indent}")
                string(SUBSTRING "${line}" ${indent_len} -1 line)
            endif()
            string(APPEND body "${line}\n")
            continue()
        endif()

        # The closing fence: classify the block.
        set(in_block FALSE)
        set(last_text "")
        math(EXPR block_count "${block_count} + 1")
        math(EXPR fence_line "${first_line} - 1")
        set(where "${shown}:${fence_line}")
        string(STRIP "${marker}" marker)
        set(kind "")
        set(params "")
        if(marker MATCHES "^<!--[ ]*no-compile:[ ]*[^ ].*-->$")
            continue()
        elseif(marker MATCHES "^<!--[ ]*program[ ]*-->$")
            set(kind program)
        elseif(marker MATCHES "^<!--[ ]*fragment:[ ]*namespace[ ]*-->$")
            set(kind namespace)
        elseif(marker MATCHES "^<!--[ ]*fragment:[ ]*(coroutine|function)[ ]*(\\((.*)\\))?[ ]*-->$")
            set(kind "${CMAKE_MATCH_1}")
            set(params "${CMAKE_MATCH_3}")
        elseif(marker MATCHES "^<!--")
            message(FATAL_ERROR "${where}: unknown marker before a cpp block: ${marker}")
        elseif(body MATCHES "(^|[^A-Za-z0-9_])main[ ]*\\(")
            set(kind program)
        else()
            message(FATAL_ERROR "${where}: a cpp block without `main` needs a marker on the line "
                                "before it: <!-- fragment: namespace -->, <!-- fragment: "
                                "coroutine(...) -->, <!-- fragment: function(...) --> or "
                                "<!-- no-compile: reason --> (see cmake/doc_snippets.cmake)")
        endif()

        set(located "#line ${first_line} \"${shown}\"\n${body}")
        if(kind STREQUAL "program")
            set(source "${out_dir}/${stem}_${block_count}.cpp")
            set(code "// Generated from ${where} by cmake/doc_snippets.cmake.\n${located}")
            _conflux_doc_restore(code)
            _conflux_doc_write("${source}" "${code}")
            list(APPEND programs "${source}")
        else()
            math(EXPR fragment_count "${fragment_count} + 1")
            set(name "conflux_doc_fragment_${block_count}")
            string(APPEND fragment_code "\n// ${where}\n")
            if(kind STREQUAL "namespace")
                string(APPEND fragment_code "${located}")
            elseif(kind STREQUAL "coroutine")
                string(APPEND fragment_code
                       "inline conflux::task<void> ${name}(${params}) {\n${located}    co_return${semi}\n}\n")
            else()
                string(APPEND fragment_code "inline void ${name}(${params}) {\n${located}}\n")
            endif()
        endif()
    endforeach()
    if(in_block)
        message(FATAL_ERROR "${shown}: a cpp block is not closed")
    endif()

    if(fragment_count GREATER 0)
        set(source "${out_dir}/${stem}_fragments.cpp")
        set(code "// Generated from ${shown} by cmake/doc_snippets.cmake.\n"
                 "#include \"prelude.hpp\"\n"
                 "// Fragments show how a call reads, not what is done with every result.\n"
                 "#pragma GCC diagnostic ignored \"-Wunused-variable\"\n"
                 "#pragma GCC diagnostic ignored \"-Wunused-parameter\"\n"
                 "#pragma GCC diagnostic ignored \"-Wunused-but-set-variable\"\n"
                 "${fragment_code}")
        string(REPLACE ";" "" code "${code}")
        _conflux_doc_restore(code)
        _conflux_doc_write("${source}" "${code}")
        set(${fragments_var} "${${fragments_var}};${source}" PARENT_SCOPE)
    endif()
    set(${programs_var} "${programs}" PARENT_SCOPE)
endfunction()
