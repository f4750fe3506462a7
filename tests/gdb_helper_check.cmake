# Test of the gdb helper, run with cmake -P. Definitions:
#   GDB     the gdb program
#   TARGET  tests/gdb_target, built with debug info
#   HELPER  tools/gdb/weft.py
#
# gdb runs TARGET to its breakpoint in gdb_target_stop, where two named
# coroutines are parked: "receiver" in a channel receive and "sleeper" in
# a sleep, and weft_main's coroutine is running. The test checks that
# `weft coroutines` lists the three with the right state, wait reason and
# spawn site. It checks that `weft bt` shows each parked coroutine's own
# function, and that the thread's registers are back afterwards: `bt 1`
# still starts in gdb_target_stop. Each section of gdb's output follows an
# "==== name" line, so a check reads only its own command's output.

foreach(var GDB TARGET HELPER)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "gdb_helper_check.cmake: -D${var}=... is missing")
  endif()
endforeach()

execute_process(
  COMMAND ${GDB} -nx -batch
    -ex "source ${HELPER}"
    -ex "break gdb_target_stop"
    -ex "run"
    -ex "echo ==== coroutines\\n" -ex "weft coroutines"
    -ex "echo ==== bt receiver\\n" -ex "weft bt receiver_id"
    -ex "echo ==== bt sleeper\\n" -ex "weft bt sleeper_id"
    -ex "echo ==== bt running\\n" -ex "weft bt 1"
    -ex "echo ==== bt after\\n" -ex "bt 1"
    -ex "echo ==== end\\n"
    -ex "kill"
    ${TARGET}
  OUTPUT_VARIABLE out
  ERROR_VARIABLE out
  RESULT_VARIABLE status
  TIMEOUT 100)
message("${out}")

set(failures "")

# The text between "==== name" and the next "====" line.
function(section name result)
  string(FIND "${out}" "==== ${name}\n" begin)
  if(begin LESS 0)
    set(${result} "" PARENT_SCOPE)
    return()
  endif()
  string(LENGTH "==== ${name}\n" marker_length)
  math(EXPR begin "${begin} + ${marker_length}")
  string(SUBSTRING "${out}" ${begin} -1 rest)
  string(FIND "${rest}" "==== " end)
  string(SUBSTRING "${rest}" 0 ${end} text)
  set(${result} "${text}" PARENT_SCOPE)
endfunction()

# Add a failure unless text matches regex.
function(expect text regex what)
  if(NOT text MATCHES "${regex}")
    list(APPEND failures "${what}: no match for '${regex}'")
    set(failures "${failures}" PARENT_SCOPE)
  endif()
endfunction()

# Add a failure unless text has a backtrace line for function name. gdb
# shows most frames as "#N  0x... in name (", and frame 0 and inlined
# frames as "#N  name (".
function(expect_frame text name what)
  set(regex "(^|\n)#[0-9]+ +(0x[0-9a-f]+ in )?${name} \\(")
  if(NOT text MATCHES "${regex}")
    list(APPEND failures "${what}: no frame of ${name}")
    set(failures "${failures}" PARENT_SCOPE)
  endif()
endfunction()

if(NOT status EQUAL 0)
  list(APPEND failures "gdb exited with status ${status}")
endif()
if(out MATCHES "Python Exception|Error occurred in Python")
  list(APPEND failures "a weft command raised a Python exception")
endif()

# The target prints the ids before it stops.
if(out MATCHES "receiver ([0-9]+), sleeper ([0-9]+)")
  set(receiver ${CMAKE_MATCH_1})
  set(sleeper ${CMAKE_MATCH_2})
else()
  list(APPEND failures "gdb_target did not print the coroutine ids")
  set(receiver "[0-9]+")
  set(sleeper "[0-9]+")
endif()

section("coroutines" coroutines)
expect("${coroutines}" "(^|\n)3 coroutines\n" "weft coroutines count")
expect("${coroutines}" "\n +${receiver}  waiting +chan receive +receiver +[^\n]*gdb_target\\.c:[0-9]+\n"
  "weft coroutines row of the receiver")
expect("${coroutines}" "\n +${sleeper}  waiting +sleep +sleeper +[^\n]*gdb_target\\.c:[0-9]+\n"
  "weft coroutines row of the sleeper")
expect("${coroutines}" "\n +[0-9]+  running on P0 +main +by weft_main\n"
  "weft coroutines row of weft_main's coroutine")

section("bt receiver" bt_receiver)
expect("${bt_receiver}" "coroutine ${receiver}, from its saved context" "weft bt receiver header")
expect_frame("${bt_receiver}" "weft_chan_recv" "weft bt receiver channel frame")
expect_frame("${bt_receiver}" "receive_forever" "weft bt receiver function")
expect_frame("${bt_receiver}" "g_entry" "weft bt receiver entry frame")

section("bt sleeper" bt_sleeper)
expect("${bt_sleeper}" "coroutine ${sleeper}, from its saved context" "weft bt sleeper header")
expect_frame("${bt_sleeper}" "weft_sleep" "weft bt sleeper sleep frame")
expect_frame("${bt_sleeper}" "sleep_long" "weft bt sleeper function")

section("bt running" bt_running)
expect("${bt_running}" "coroutine 1 is running on P0" "weft bt of the running coroutine")
expect_frame("${bt_running}" "gdb_target_stop" "weft bt running frame 0")

section("bt after" bt_after)
expect_frame("${bt_after}" "gdb_target_stop" "registers restored after weft bt")

if(failures)
  list(JOIN failures "\n  " report)
  message(FATAL_ERROR "gdb helper test failed:\n  ${report}")
endif()
message("gdb helper test passed")
