"""gdb commands for programs that use weft.

Load with `source tools/gdb/weft.py` (or from ~/.gdbinit), then:

  weft coroutines      list every coroutine record that is not free: id,
                       state, wait reason, name and spawn site
  weft bt ID [ARGS]    backtrace of coroutine ID, an integer or any gdb
                       expression (`weft bt receiver_id`); ARGS go to `bt`
                       (for example `full` or a frame count)

How the coroutines are found. Every G record lives in a chunk of
WEFT__GCHUNK_SIZE records, and the runtime links every chunk into
weft__rt.chunks and frees none while it runs. The commands walk that list
and skip records whose state is WEFT__G_FREE. The chunk size is the length
of the `gs` array in the debug info, so the program needs -g (the default
RelWithDebInfo build has it).

How `weft bt` unwinds a parked coroutine. A coroutine that is not running
left its callee-saved registers and return address on its own stack, in
the frame weft__ctx_switch pushed, and ctx.sp points at that frame (see
src/arch/switch_*.S). The command sets the selected thread's stack pointer,
program counter and callee-saved registers to the values the switch would
restore, runs `bt` from there and then puts every register back, even when
`bt` fails. The first frame shown is the function that called
weft__ctx_switch. A running coroutine's backtrace is its P's thread's
backtrace, so the command switches to that thread instead.

Limits: registers can only be written in a live process, so `weft bt` of a
parked coroutine does not work on a core file, but `weft coroutines` does.
Supported contexts: the assembly switch on x86-64 and AArch64, and the
ucontext fallback on x86-64. NOTE: the AArch64 layout follows
switch_aarch64.S but has not been run under gdb; the test suite runs the
x86-64 ones.
"""

import gdb

# Layouts of the frame weft__ctx_switch leaves on a parked coroutine's
# stack, as byte offsets from the saved stack pointer to each saved
# register. They must match src/arch/switch_x86_64.S and
# src/arch/switch_aarch64.S.
X86_64_FRAME = {
    "r15": 8, "r14": 16, "r13": 24, "r12": 32, "rbx": 40, "rbp": 48,
}
X86_64_RETURN_OFFSET = 56   # return address, the resumed pc
X86_64_FRAME_BYTES = 64     # the stack pointer after the switch returns

AARCH64_FRAME = {
    "x19": 0, "x20": 8, "x21": 16, "x22": 24, "x23": 32, "x24": 40,
    "x25": 48, "x26": 56, "x27": 64, "x28": 72, "x29": 80,
}
AARCH64_RETURN_OFFSET = 88  # x30, the link register the switch returns through
AARCH64_FRAME_BYTES = 176

# Indexes into ucontext_t's uc_mcontext.gregs on x86-64 Linux (REG_* in
# glibc's <sys/ucontext.h>).
UCONTEXT_X86_64_GREGS = {
    "r12": 4, "r13": 5, "r14": 6, "r15": 7, "rbp": 10, "rbx": 11,
    "rsp": 15, "rip": 16,
}

# enum weft__g_state in src/sched/sched.h. gcc drops an enum type that no
# variable uses from the debug info, so the values are repeated here and
# used when the type is missing.
G_STATE_FALLBACK = {0: "free", 1: "runnable", 2: "running", 3: "waiting"}
G_FREE = 0
G_RUNNING = 2
G_WAITING = 3


def _lookup_value(name):
    """Return the value of a global or file-static variable of the program."""
    if hasattr(gdb, "lookup_static_symbol"):
        symbol = gdb.lookup_static_symbol(name)
        if symbol is not None:
            return symbol.value()
    symbol = gdb.lookup_global_symbol(name)
    if symbol is not None:
        return symbol.value()
    return gdb.parse_and_eval(name)


def _state_names():
    """Map each G state to its name, from the debug info when it has one."""
    try:
        enum = gdb.lookup_type("enum weft__g_state")
    except gdb.error:
        return dict(G_STATE_FALLBACK)
    names = {}
    for field in enum.fields():
        names[int(field.enumval)] = field.name.replace("WEFT__G_", "").lower()
    return names


def _wait_reason_names():
    """Read the wait_reason_strings table of src/sched/sched.c."""
    try:
        table = _lookup_value("wait_reason_strings")
    except gdb.error:
        return None
    low, high = table.type.range()
    names = {}
    for i in range(low, high + 1):
        text = table[i]
        names[i] = text.string() if int(text) != 0 else ""
    return names


def _string_or(value, default):
    """Read a char * as a string; default when it is NULL."""
    if int(value) == 0:
        return default
    try:
        return value.string()
    except gdb.MemoryError:
        return "<unreadable %s>" % hex(int(value))


def _spawn_site(g):
    """Return "FILE:LINE", or "by weft_main" for the coroutine the runtime
    spawned itself (line 0, as weft_dump prints it)."""
    where = _string_or(g["file"], "?")
    line = int(g["line"])
    if line <= 0:
        return "by " + where
    return "%s:%d" % (where, line)


def _field_offset(struct_type, name):
    for field in struct_type.strip_typedefs().fields():
        if field.name == name:
            return field.bitpos // 8
    raise gdb.GdbError("weft: %s has no field %s" % (struct_type, name))


def _coroutines():
    """Yield every G record in use, as a gdb.Value of type weft__g."""
    runtime = _lookup_value("weft__rt")
    g_type = gdb.lookup_type("struct weft__g")
    g_pointer = g_type.pointer()
    g_size = g_type.sizeof
    state_offset = _field_offset(g_type, "state")
    inferior = gdb.selected_inferior()
    chunk = runtime["chunks"]
    while int(chunk) != 0:
        records = chunk.dereference()["gs"]
        low, high = records.type.range()
        count = high - low + 1
        base = int(records.address)
        # One memory read per chunk; only the records in use become gdb
        # values. A chunk can exceed gdb's max-value-size (64 KiB by
        # default) with the ucontext backend, whose records are 1 KiB.
        data = inferior.read_memory(base, g_size * count).tobytes()
        for i in range(count):
            at = i * g_size + state_offset
            state = int.from_bytes(data[at:at + 4], "little")
            if state != G_FREE:
                yield gdb.Value(base + i * g_size).cast(g_pointer).dereference()
        chunk = chunk.dereference()["next"]


def _running_ps():
    """Map the address of each running G to (P id, P thread's pthread_t)."""
    runtime = _lookup_value("weft__rt")
    ps = runtime["ps"]
    running = {}
    if int(ps) == 0:
        return running
    for i in range(int(runtime["nprocs"])):
        p = ps[i]
        if int(p) == 0:
            continue
        curg = p["curg"]
        if int(curg) != 0:
            running[int(curg)] = (int(p["id"]), int(p["thread"]))
    return running


def _find_coroutine(coroutine_id):
    for g in _coroutines():
        if int(g["id"]) == coroutine_id:
            return g
    return None


class WeftCommand(gdb.Command):
    """Inspect weft coroutines.

weft coroutines   list every coroutine that is not free
weft bt ID [ARGS] backtrace of coroutine ID (an integer or an expression)"""

    def __init__(self):
        super().__init__("weft", gdb.COMMAND_USER, gdb.COMPLETE_COMMAND, True)


class WeftCoroutinesCommand(gdb.Command):
    """List every weft coroutine that is not free.

Columns: id, state (runnable, running on a P, or waiting), wait reason
(for waiting coroutines, in the words Go's runtime uses), name from
weft_go_opts, and the spawn site."""

    def __init__(self):
        super().__init__("weft coroutines", gdb.COMMAND_USER, gdb.COMPLETE_NONE)

    def invoke(self, argument, from_tty):
        if argument.strip():
            raise gdb.GdbError("weft coroutines takes no arguments")
        states = _state_names()
        reasons = _wait_reason_names()
        running = _running_ps()
        rows = []
        for g in _coroutines():
            state = int(g["state"])
            state_text = states.get(state, "state %d" % state)
            on_p = running.get(int(g.address))
            if on_p is not None:
                state_text = "running on P%d" % on_p[0]
            reason = ""
            if state == G_WAITING:
                code = int(g["wait_reason"])
                if reasons is None:
                    reason = "reason %d" % code
                else:
                    reason = reasons.get(code, "reason %d" % code)
            site = _spawn_site(g)
            rows.append((int(g["id"]), state_text, reason,
                         _string_or(g["name"], ""), site))
        rows.sort()
        gdb.write("%d coroutines\n" % len(rows))
        gdb.write("%8s  %-14s  %-24s  %-16s  %s\n"
                  % ("id", "state", "wait reason", "name", "spawned at"))
        for row in rows:
            gdb.write("%8d  %-14s  %-24s  %-16s  %s\n" % row)


def _saved_registers(g, arch):
    """Return {register: value} that resumes g's saved context."""
    ctx = g["ctx"]
    field_names = [f.name for f in ctx.type.strip_typedefs().fields()]
    inferior = gdb.selected_inferior()

    def read_u64(address):
        data = inferior.read_memory(address, 8).tobytes()
        return int.from_bytes(data, "little")

    if "sp" in field_names:
        sp = int(ctx["sp"])
        if arch.startswith("i386:x86-64"):
            regs = {name: read_u64(sp + off) for name, off in X86_64_FRAME.items()}
            regs["rip"] = read_u64(sp + X86_64_RETURN_OFFSET)
            regs["rsp"] = sp + X86_64_FRAME_BYTES
            return regs
        if arch.startswith("aarch64"):
            regs = {name: read_u64(sp + off) for name, off in AARCH64_FRAME.items()}
            regs["pc"] = read_u64(sp + AARCH64_RETURN_OFFSET)
            regs["sp"] = sp + AARCH64_FRAME_BYTES
            return regs
    elif "uc" in field_names and arch.startswith("i386:x86-64"):
        gregs = ctx["uc"]["uc_mcontext"]["gregs"]
        return {name: int(gregs[i]) & 0xFFFFFFFFFFFFFFFF
                for name, i in UCONTEXT_X86_64_GREGS.items()}
    raise gdb.GdbError("weft bt: saved contexts on %s are not supported" % arch)


def _set_registers(values):
    for name, value in values.items():
        gdb.execute("set $%s = 0x%x" % (name, value), to_string=True)


def _thread_for_pthread(handle):
    """Return the gdb thread whose pthread_t is handle, or None."""
    for thread in gdb.selected_inferior().threads():
        try:
            thread_handle = int.from_bytes(thread.handle(), "little")
        except (AttributeError, gdb.error):
            return None
        if thread_handle == handle:
            return thread
    return None


class WeftBacktraceCommand(gdb.Command):
    """Show the backtrace of a weft coroutine: weft bt ID [ARGS].

ID is a coroutine id or any gdb expression that evaluates to one. ARGS are
passed on to `bt` (for example `full` or a frame count). For a parked
coroutine, the selected thread's registers are set from the coroutine's
saved context for the backtrace and put back afterwards. That needs a live
process. For a running coroutine, the backtrace is taken on its P's
thread."""

    def __init__(self):
        super().__init__("weft bt", gdb.COMMAND_USER, gdb.COMPLETE_EXPRESSION)

    def invoke(self, argument, from_tty):
        words = argument.split(None, 1)
        if not words:
            raise gdb.GdbError("usage: weft bt ID [bt arguments]")
        coroutine_id = int(gdb.parse_and_eval(words[0]))
        bt_args = words[1] if len(words) > 1 else ""

        g = _find_coroutine(coroutine_id)
        if g is None:
            raise gdb.GdbError("weft bt: no live coroutine has id %d" % coroutine_id)
        state = int(g["state"])

        on_p = _running_ps().get(int(g.address))
        if on_p is not None or state == G_RUNNING:
            self._running_backtrace(coroutine_id, on_p, bt_args)
            return
        if not bool(g["started"]):
            gdb.write("coroutine %d has not started yet, so it has no stack\n"
                      % coroutine_id)
            return
        self._parked_backtrace(coroutine_id, g, bt_args)

    def _running_backtrace(self, coroutine_id, on_p, bt_args):
        thread = _thread_for_pthread(on_p[1]) if on_p is not None else None
        if thread is None:
            raise gdb.GdbError("weft bt: coroutine %d is running, but its P's "
                               "thread was not found; see `info threads`"
                               % coroutine_id)
        previous = gdb.selected_thread()
        gdb.write("coroutine %d is running on P%d, thread %d:\n"
                  % (coroutine_id, on_p[0], thread.num))
        thread.switch()
        try:
            gdb.execute("bt " + bt_args)
        finally:
            previous.switch()

    def _parked_backtrace(self, coroutine_id, g, bt_args):
        frame = gdb.selected_frame()
        level = frame.level()
        newest = gdb.newest_frame()
        arch = newest.architecture().name()
        saved = _saved_registers(g, arch)

        newest.select()
        original = {name: int(newest.read_register(name)) & 0xFFFFFFFFFFFFFFFF
                    for name in saved}
        gdb.write("coroutine %d, from its saved context:\n" % coroutine_id)
        try:
            _set_registers(saved)
            gdb.execute("bt " + bt_args)
        finally:
            _set_registers(original)
            gdb.execute("frame %d" % level, to_string=True)


WeftCommand()
WeftCoroutinesCommand()
WeftBacktraceCommand()
