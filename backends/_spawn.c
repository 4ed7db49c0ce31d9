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
 * The Python side (backends/spawn.py) finds the program on PATH and builds argv and the
 * environment; this file only carries them out.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h> /* first, as Python asks; its pyconfig.h defines _GNU_SOURCE (clone) */

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHILD_STACK_SIZE (64 * 1024)

enum step { STEP_NONE = 0, STEP_CGROUP, STEP_SESSION, STEP_FDS, STEP_CWD, STEP_EXEC };

struct child_args {
    const char *path;
    char *const *argv;
    char *const *envp;
    const char *cwd;      /* NULL: stay */
    int fds[3];           /* become 0, 1, 2 */
    int cgroup_fd;        /* cgroup.procs, open for writing; -1: none */
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
    if (args->cgroup_fd >= 0 && write_pid(args->cgroup_fd) != 0) fail(args, STEP_CGROUP);
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
"spawn(path, argv, envp, cwd, stdin, stdout, stderr, cgroup_fd, own_group, nice, max_fd) -> pid\n\n"
"Start `path` (bytes, as found: no PATH search) with `argv` and `envp` (lists of bytes) in\n"
"`cwd` (bytes, or None to stay), the three file descriptors as its 0, 1 and 2, after\n"
"writing its pid to `cgroup_fd` (-1: no cgroup), in a process group of its own and without\n"
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

static PyMethodDef methods[] = {
    {"spawn", spawn, METH_VARARGS, spawn_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_spawn",
    .m_doc = "Start a program in a cgroup of its own, without a shell.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__spawn(void) { return PyModule_Create(&module_def); }
