# A must-not-compile check that also wants the failure to be short: passes when COMPILER
# rejects SOURCE with a diagnostic matching EXPECT, and every error it reports lies in a file
# whose path matches ONLY_IN (so the user sees that error, not pages of others after it).
#   cmake -DCOMPILER=c++ -DSTD=c++17 -DINCLUDE=dir -DSOURCE=file.cpp -DEXPECT=regex
#         -DONLY_IN=regex -P one_error.cmake
execute_process(
    COMMAND "${COMPILER}" "-std=${STD}" -fsyntax-only "-I${INCLUDE}" "${SOURCE}"
    RESULT_VARIABLE result OUTPUT_VARIABLE output ERROR_VARIABLE output)
if(result EQUAL 0)
    message(FATAL_ERROR "${SOURCE} compiled with -std=${STD}")
endif()
if(NOT output MATCHES "${EXPECT}")
    message(FATAL_ERROR "no diagnostic matches '${EXPECT}':\n${output}")
endif()
string(REGEX MATCHALL "[^\n]*:[0-9]+:[0-9]+: (fatal )?error:[^\n]*" errors "${output}")
foreach(error IN LISTS errors)
    if(NOT error MATCHES "${ONLY_IN}:[0-9]+:[0-9]+: ")
        message(FATAL_ERROR "an error outside '${ONLY_IN}':\n${output}")
    endif()
endforeach()
