/* Start a program in a cgroup of its own: the child joins the cgroup, then execs the program.
 *
 * What `sh -c 'echo $$ > cgroup.procs; exec "$@"'` did for every attempt, without the shell:
 * the shell was a second program to exec (about half a millisecond of CPU on every attempt),
 * and CPython 3.11 holds the GIL while its vfork child runs, so every thread of the executor
 * waited on each spawn.  Here the child is a clone(CLONE_VM | CLONE_VFORK) on a stack of its
 * own, as glibc's posix_spawn makes it, and the GIL is released while it runs.
 *
 * Between the clone and the exec the child calls only async-signal-safe functions: it shares
 * the parent's memory, so it must not allocate, lock, or run a signal handler of the parent's
 * (all signals are blocked around the clone; the child sets every handled signal back to its
 * default before it unblocks them).  A step that fails is reported through the shared memory
 * (which step, and errno) and the child exits 127; the parent reaps it and raises OSError.
 *
 * Where the kernel allows it (Linux 5.7 and later, a cgroup v2, clone3 not filtered away as some
 * container runtimes do), the child is born in its cgroup: clone3(CLONE_INTO_CGROUP).  Joining
 * afterwards by writing cgroup.procs moves a live process, and the kernel holds every fork, exec
 * and exit on the machine while it does (cgroup_threadgroup_rwsem, taken for writing, waits for
 * an RCU grace period): a tenth of a millisecond to several on every attempt, the executor
 * waiting the whole time.  Elsewhere the child writes its pid as before.
 *
 * The Python side (backends/spawn.py) finds the program on PATH and builds argv and the
 * environment; this file only carries them out.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h> /* first, as Python asks; its pyconfig.h defines _GNU_SOURCE (clone) */

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHILD_STACK_SIZE (64 * 1024)

#if defined(__linux__) && defined(__x86_64__)
#define HAVE_CLONE3_RUN 1
/* clone3's argument, as <linux/sched.h> of Linux 5.7 has it: spelled out so that older
   headers build this file too (the kernel then says whether it knows the call). */
struct clone3_args {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid, set_tid_size,
        cgroup;
};
#define CLONE3_INTO_CGROUP 0x200000000ULL
#define NR_CLONE3 435

/* clone3 with the child on its own stack calling fn(arg), then _exit with what it returns: what
   glibc's clone() does for clone(2), which glibc 2.36 does not offer for clone3.  The child
   starts with the stack pointer at the top of the given stack; fn and arg wait in r8 and r9,
   which the syscall instruction keeps.  Returns the child's pid, or -errno. */
long te_clone3_run(struct clone3_args *args, size_t size, int (*fn)(void *), void *arg)
    __attribute__((visibility("hidden")));
__asm__(
    ".text\n"
    ".globl te_clone3_run\n"
    ".hidden te_clone3_run\n"
    ".type te_clone3_run, @function\n"
    "te_clone3_run:\n"
    "    mov %rdx, %r8\n"
    "    mov %rcx, %r9\n"
    "    mov $435, %eax\n"
    "    syscall\n"
    "    test %rax, %rax\n"
    "    jnz 1f\n"
    "    xor %ebp, %ebp\n" /* the child: no frame above this one */
    "    mov %r9, %rdi\n"
    "    call *%r8\n"
    "    mov %eax, %edi\n"
    "    mov $60, %eax\n" /* SYS_exit: only this thread, as _exit would after a clone */
    "    syscall\n"
    "    hlt\n"
    "1:  ret\n"
    ".size te_clone3_run, .-te_clone3_run\n");

/* 1 until the kernel says it cannot (no clone3, no CLONE_INTO_CGROUP, a cgroup v1): then every
   later child joins by writing its pid.  Read and written without the GIL, hence atomics. */
static int clone3_usable = 1;
#endif
/* How many children were born in their cgroup (tests and `executor doctor` ask). */
static long born_in_cgroup = 0;

enum step { STEP_NONE = 0, STEP_CGROUP, STEP_SESSION, STEP_FDS, STEP_CWD, STEP_EXEC };

struct child_args {
    const char *path;
    char *const *argv;
    char *const *envp;
    const char *cwd;      /* NULL: stay */
    int fds[3];           /* become 0, 1, 2 */
    int cgroup_fd;        /* the cgroup's folder, open; -1: none */
    int born_in_cgroup;   /* clone3 put the child there: nothing to join */
    int own_group;        /* a process group of its own, and no controlling terminal */
    int nice;             /* added to the niceness; 0: left alone */
    int max_fd;           /* close_range's fallback: close up to here */
    sigset_t old_mask;    /* the parent's mask, restored before the exec */
    /* Written by the child when a step fails (shared memory: CLONE_VM). */
    volatile int failed_step;
    volatile int failed_errno;
};

static void fail(struct child_args *args, enum step step) {
    args->failed_errno = errno;
    args->failed_step = step;
    _exit(127);
}

static int write_pid(int fd) {
    char digits[24];
    char *end = digits + sizeof(digits);
    char *at = end;
    long pid = (long)syscall(SYS_getpid);
    do {
        *--at = (char)('0' + pid % 10);
        pid /= 10;
    } while (pid > 0);
    ssize_t length = end - at;
    return write(fd, at, (size_t)length) == length ? 0 : -1;
}

/* A process group of the child's own (the run signals it as one), with no controlling terminal
 * (it can neither read the terminal nor be stopped for trying), but in the executor's session.
 * setsid() did both, and also gave every child a scheduling group of its own where the kernel
 * groups by session (autogroup, on by default on most desktop Linux): there the niceness an
 * agent is given only ranked it among its own descendants, and eight agents got eight times
 * the executor's share of the CPU.  In the executor's session they share its group, below it.
 * Where the terminal cannot be left that way (TIOCNOTTY refused), setsid() as before. */
static int leave_the_terminal(void) {
    int detached;
    /* O_NONBLOCK: a serial line's open would otherwise wait for its carrier, and we with it. */
    int tty = open("/dev/tty", O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
    if (tty >= 0) {
        /* Not a session leader: this clears the child's own terminal, nobody else's. */
        detached = ioctl(tty, TIOCNOTTY) == 0;
        close(tty);
    } else {
        detached = errno == ENXIO; /* no controlling terminal to begin with */
    }
    return detached ? setpgid(0, 0) : (setsid() < 0 ? -1 : 0);
}

static int child_main(void *opaque) {
    struct child_args *args = opaque;
    /* The parent's handlers are Python's: in this child they would run on shared memory. */
    for (int sig = 1; sig < NSIG; sig++) {
        struct sigaction action;
        if (sig == SIGKILL || sig == SIGSTOP) continue;
        if (sigaction(sig, NULL, &action) != 0) continue; /* glibc's own signals */
        if (action.sa_handler == SIG_DFL) continue;
        /* Python ignores SIGPIPE and SIGXFSZ; Popen's restore_signals gives the child the
           defaults back, and so do we.  Any other ignored signal stays ignored, as with Popen. */
        if (action.sa_handler == SIG_IGN && sig != SIGPIPE && sig != SIGXFSZ) continue;
        memset(&action, 0, sizeof(action));
        action.sa_handler = SIG_DFL;
        sigaction(sig, &action, NULL);
    }
    if (args->cgroup_fd >= 0 && !args->born_in_cgroup) {
        int procs = openat(args->cgroup_fd, "cgroup.procs", O_WRONLY | O_CLOEXEC);
        if (procs < 0 || write_pid(procs) != 0) fail(args, STEP_CGROUP);
        close(procs);
    }
    if (args->own_group && leave_the_terminal() != 0) fail(args, STEP_SESSION);
    if (args->nice != 0) {
        errno = 0;
        int now = getpriority(PRIO_PROCESS, 0);
        if (!(now == -1 && errno != 0)) {
            int wanted = now + args->nice > 19 ? 19 : now + args->nice;
            setpriority(PRIO_PROCESS, 0, wanted); /* as with setpriority after a spawn: best effort */
        }
    }
    /* A source below 3 could be overwritten by an earlier dup2: move it out of the way first. */
    int fds[3];
    for (int i = 0; i < 3; i++) {
        fds[i] = args->fds[i];
        if (fds[i] < 3) {
            fds[i] = fcntl(fds[i], F_DUPFD, 3);
            if (fds[i] < 0) fail(args, STEP_FDS);
        }
    }
    for (int i = 0; i < 3; i++) {
        if (dup2(fds[i], i) < 0) fail(args, STEP_FDS);
    }
    if (syscall(SYS_close_range, 3U, ~0U, 0U) != 0) {
        for (int fd = 3; fd <= args->max_fd; fd++) close(fd);
    }
    if (args->cwd != NULL && chdir(args->cwd) != 0) fail(args, STEP_CWD);
    sigprocmask(SIG_SETMASK, &args->old_mask, NULL);
    execve(args->path, args->argv, args->envp);
    fail(args, STEP_EXEC);
    return 127;
}

/* A NULL-terminated array of the bytes objects in `sequence`, pointing into them (they are
   kept alive by `keep`); NULL with an exception set on error. */
static char **string_array(PyObject *sequence, const char *what, PyObject **keep) {
    PyObject *fast = PySequence_Fast(sequence, what);
    if (fast == NULL) return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(fast);
    char **array = PyMem_Calloc((size_t)count + 1, sizeof(char *));
    if (array == NULL) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(fast, i);
        if (!PyBytes_Check(item)) {
            PyErr_Format(PyExc_TypeError, "%s must hold bytes", what);
            PyMem_Free(array);
            Py_DECREF(fast);
            return NULL;
        }
        char *text = PyBytes_AS_STRING(item);
        if ((Py_ssize_t)strlen(text) != PyBytes_GET_SIZE(item)) {
            PyErr_Format(PyExc_ValueError, "%s: embedded null byte", what);
            PyMem_Free(array);
            Py_DECREF(fast);
            return NULL;
        }
        array[i] = text;
    }
    *keep = fast;
    return array;
}

static const char *step_name(int step) {
    switch (step) {
        case STEP_CGROUP: return "cgroup";
        case STEP_SESSION: return "session";
        case STEP_FDS: return "fds";
        case STEP_CWD: return "cwd";
        default: return "exec";
    }
}

PyDoc_STRVAR(spawn_doc,
"spawn(path, argv, envp, cwd, stdin, stdout, stderr, cgroup_folder_fd, own_group, nice, max_fd) -> pid\n\n"
"Start `path` (bytes, as found: no PATH search) with `argv` and `envp` (lists of bytes) in\n"
"`cwd` (bytes, or None to stay), the three file descriptors as its 0, 1 and 2, in the\n"
"cgroup whose folder `cgroup_folder_fd` is open (-1: none), in a process group of its own and without\n"
"a controlling terminal if `own_group`, `nice` added to its niceness.  Every other\n"
"descriptor is closed in the child.  Raises OSError for a step that failed; its `filename`\n"
"is the path for the exec, the cwd for chdir, and '<cgroup>' for joining the cgroup.");

static PyObject *spawn(PyObject *module, PyObject *arguments) {
    (void)module;
    const char *path;
    PyObject *argv_list, *envp_list, *cwd_object;
    struct child_args args;
    memset(&args, 0, sizeof(args));
    if (!PyArg_ParseTuple(arguments, "yOOOiiiipii:spawn", &path, &argv_list, &envp_list, &cwd_object,
                          &args.fds[0], &args.fds[1], &args.fds[2], &args.cgroup_fd, &args.own_group,
                          &args.nice, &args.max_fd)) {
        return NULL;
    }
    if (cwd_object != Py_None && !PyBytes_Check(cwd_object)) {
        PyErr_SetString(PyExc_TypeError, "cwd must be bytes or None");
        return NULL;
    }
    PyObject *keep_argv = NULL, *keep_envp = NULL;
    char **argv = string_array(argv_list, "argv", &keep_argv);
    if (argv == NULL) return NULL;
    char **envp = string_array(envp_list, "envp", &keep_envp);
    if (envp == NULL) {
        PyMem_Free(argv);
        Py_DECREF(keep_argv);
        return NULL;
    }
    if (argv[0] == NULL) {
        PyErr_SetString(PyExc_ValueError, "argv is empty");
        goto error;
    }
    args.path = path;
    args.argv = argv;
    args.envp = envp;
    args.cwd = cwd_object == Py_None ? NULL : PyBytes_AS_STRING(cwd_object);
    char *stack = PyMem_RawMalloc(CHILD_STACK_SIZE);
    if (stack == NULL) {
        PyErr_NoMemory();
        goto error;
    }
    pid_t pid;
    int clone_errno = 0;
    sigset_t all;
    sigfillset(&all);
    Py_BEGIN_ALLOW_THREADS
    pthread_sigmask(SIG_SETMASK, &all, &args.old_mask);
    pid = -1;
#ifdef HAVE_CLONE3_RUN
    if (args.cgroup_fd >= 0 && __atomic_load_n(&clone3_usable, __ATOMIC_RELAXED)) {
        struct clone3_args into;
        memset(&into, 0, sizeof(into));
        into.flags = CLONE_VM | CLONE_VFORK | CLONE3_INTO_CGROUP;
        into.exit_signal = SIGCHLD;
        into.stack = (uint64_t)(uintptr_t)stack;
        into.stack_size = CHILD_STACK_SIZE;
        into.cgroup = (uint64_t)args.cgroup_fd;
        args.born_in_cgroup = 1;
        long made = te_clone3_run(&into, sizeof(into), child_main, &args);
        if (made >= 0) {
            pid = (pid_t)made;
            __atomic_add_fetch(&born_in_cgroup, 1, __ATOMIC_RELAXED);
        } else {
            args.born_in_cgroup = 0;
            /* No clone3 (before 5.3, or filtered), no cgroup field (before 5.7), a v1
               hierarchy: never again.  Anything else (the cgroup removed meanwhile, a limit):
               the older way below tries once more, and says what is wrong. */
            if (made == -ENOSYS || made == -E2BIG || made == -EINVAL || made == -EBADF || made == -EPERM)
                __atomic_store_n(&clone3_usable, 0, __ATOMIC_RELAXED);
        }
    }
    if (pid < 0)
#endif
        pid = clone(child_main, stack + CHILD_STACK_SIZE, CLONE_VM | CLONE_VFORK | SIGCHLD, &args);
    if (pid < 0) clone_errno = errno;
    pthread_sigmask(SIG_SETMASK, &args.old_mask, NULL);
    Py_END_ALLOW_THREADS
    PyMem_RawFree(stack);
    if (pid < 0) {
        errno = clone_errno;
        PyErr_SetFromErrno(PyExc_OSError);
        goto error;
    }
    if (args.failed_step != STEP_NONE) {
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
        errno = args.failed_errno;
        PyObject *filename = NULL;
        if (args.failed_step == STEP_EXEC) filename = PyUnicode_DecodeFSDefault(path);
        else if (args.failed_step == STEP_CWD) filename = PyUnicode_DecodeFSDefault(args.cwd);
        else filename = PyUnicode_FromFormat("<%s>", step_name(args.failed_step));
        if (filename == NULL) goto error;
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, filename);
        Py_DECREF(filename);
        goto error;
    }
    PyMem_Free(argv);
    PyMem_Free(envp);
    Py_DECREF(keep_argv);
    Py_DECREF(keep_envp);
    return PyLong_FromLong((long)pid);

error:
    PyMem_Free(argv);
    PyMem_Free(envp);
    Py_DECREF(keep_argv);
    Py_DECREF(keep_envp);
    return NULL;
}

PyDoc_STRVAR(clone3_state_doc,
"clone3_state(allow=None) -> (tried, born)\n\n"
"Whether a child given a cgroup is created in it by clone3 (until the kernel refuses the call),\n"
"and how many children were so far.  `allow` turns that way off (False) or on again (True) for\n"
"this process: tests use it to exercise the older way, joining after the clone.");

static PyObject *clone3_state(PyObject *module, PyObject *arguments) {
    (void)module;
    PyObject *allow = Py_None;
    if (!PyArg_ParseTuple(arguments, "|O:clone3_state", &allow)) return NULL;
    int tried = 0;
#ifdef HAVE_CLONE3_RUN
    if (allow != Py_None) {
        int wanted = PyObject_IsTrue(allow);
        if (wanted < 0) return NULL;
        __atomic_store_n(&clone3_usable, wanted, __ATOMIC_RELAXED);
    }
    tried = __atomic_load_n(&clone3_usable, __ATOMIC_RELAXED);
#else
    (void)allow;
#endif
    return Py_BuildValue("(Nl)", PyBool_FromLong(tried), __atomic_load_n(&born_in_cgroup, __ATOMIC_RELAXED));
}

static PyMethodDef methods[] = {
    {"spawn", spawn, METH_VARARGS, spawn_doc},
    {"clone3_state", clone3_state, METH_VARARGS, clone3_state_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_spawn",
    .m_doc = "Start a program in a cgroup of its own, without a shell.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__spawn(void) {
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) return NULL;
#ifdef HAVE_CLONE3_RUN
    int has_clone3 = 1;
#else
    int has_clone3 = 0; /* the assembly that starts a clone3 child is x86-64's only */
#endif
    if (PyModule_AddIntConstant(module, "HAS_CLONE3", has_clone3) != 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
