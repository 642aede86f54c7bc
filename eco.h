/*
 * eco.h - asymmetric stackful coroutines on a libevent event_base.
 *
 * Conventions, for every function below unless its comment says otherwise:
 *  - Functions returning int return 0 (or a count) on success and -1 on
 *    failure with errno set; functions returning a pointer return NULL on
 *    failure with errno set.  No function aborts on bad input.
 *  - Every function acts on the calling thread's runtime (see eco_setup).
 *    Calling one in a thread without a runtime fails with EPERM, except the
 *    channel calls, which plain threads may use too (see Channels), and
 *    eco_socket and eco_close, which never block.
 *  - "Blocking" functions (eco_sleep, eco_poll, eco_join, the socket calls,
 *    eco_fd_lock, and the channel calls that may wait) park only the
 *    calling coroutine and let the event loop run others.  Called outside
 *    any coroutine they fail with EPERM, with the exceptions of eco_join and
 *    of channels in a thread without a runtime (see there).  Besides their
 *    own errors, every blocking call of a coroutine fails with:
 *      ECANCELED  the coroutine was cancelled (eco_cancel), before or
 *                 during the call;
 *      ETIMEDOUT  its deadline (eco_set_deadline) has passed, or the call's
 *                 own bound ran out;
 *      ENOMEM     the wait could not be set up (libevent could not add a
 *                 timer or event); nothing was transferred.
 *  - Every bound in the library (timeouts, deadlines, sleeps) ends only once
 *    its full time has passed on CLOCK_MONOTONIC, never before.
 *  - A coroutine belongs to the thread that created it and only runs there
 *    (eco_cancel excepted, which any thread may call).
 */
#ifndef ECO_H
#define ECO_H

#include <poll.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct event_base;

#if defined(__GNUC__) && !defined(ECO_STATIC_BUILD)
#define ECO_API __attribute__((visibility("default")))
#else
#define ECO_API
#endif

/* ------------------------------------------------------------------------ */
/* Version                                                                  */
/* ------------------------------------------------------------------------ */

/* libeco is free software under the MIT license (the file LICENSE).
 *
 * The version of this header.  CMakeLists.txt's project() version is the
 * source; the build checks that these agree with it.  Until 1.0 a minor
 * release may change the API and the ABI (the soname is
 * libeco.so.MAJOR.MINOR); a patch release changes neither. */
#define ECO_VERSION_MAJOR 0
#define ECO_VERSION_MINOR 1
#define ECO_VERSION_PATCH 0
/* MAJOR * 10000 + MINOR * 100 + PATCH (MINOR and PATCH stay below 100), so
 * 0.1.0 is 100: for #if ECO_VERSION_NUMBER >= ... */
#define ECO_VERSION_NUMBER \
    (ECO_VERSION_MAJOR * 10000 + ECO_VERSION_MINOR * 100 + ECO_VERSION_PATCH)

/* The ECO_VERSION_NUMBER of the library the program runs with, which may
 * differ from the header it was compiled with.  Until 1.0 the two are
 * compatible when eco_version() / 100 == ECO_VERSION_NUMBER / 100 (the same
 * major and minor).  Never fails; needs no runtime. */
ECO_API unsigned eco_version(void);

/* ------------------------------------------------------------------------ */
/* Coroutines                                                               */
/* ------------------------------------------------------------------------ */

typedef struct eco eco_t;

/* The body of a coroutine.  Its return value is handed to eco_join. */
typedef void *(*eco_fn)(void *arg);

/*
 * The states of a coroutine.
 *  INIT     created by eco_create, never run yet.
 *  ACTIVE   running now (the one eco_self returns).
 *  STACKED  it resumed another coroutine and waits for that one to yield
 *           or return.
 *  PENDING  it yielded, or it is parked in a blocking call.
 *  DONE     its function returned; eco_join collects the value.
 */
typedef enum eco_state {
    ECO_INIT = 0,
    ECO_ACTIVE,
    ECO_STACKED,
    ECO_PENDING,
    ECO_DONE
} eco_state_t;

/* Longest diagnostic name kept, including the terminating NUL. */
#define ECO_NAME_MAX 32

/* Attributes for eco_create.  Initialise with eco_attr_init. */
typedef struct eco_attr {
    size_t stack_size; /* usable stack bytes; 0: the runtime's default */
    const char *name;  /* copied (truncated to ECO_NAME_MAX - 1); NULL: none */
} eco_attr_t;

/* Smallest and largest stack sizes eco_create accepts. */
#define ECO_STACK_MIN ((size_t)16 * 1024)
#define ECO_STACK_MAX ((size_t)1 << 30)
/* Default stack size of a new runtime. */
#define ECO_STACK_DEFAULT ((size_t)256 * 1024)

/* Sets *attr to the defaults (stack_size 0, name NULL).  Returns 0, or -1
 * with EINVAL when attr is NULL. */
ECO_API int eco_attr_init(eco_attr_t *attr);

/*
 * Creates a coroutine that will run fn(arg), in state INIT.  It does not
 * run until eco_resume (or, for eco_go, the loop) starts it.
 *
 * Its stack is mmap'd (committed by the kernel only as it is touched) with a
 * guard region below it, many stacks to a mapping; a finished stack of the
 * same size is taken from the runtime's pool when one is there.  Running off the
 * end of the stack prints "eco: stack overflow in coroutine NAME" to stderr
 * and aborts the process.
 *
 * The new coroutine is joinable: eco_join or eco_detach must eventually be
 * called on it, or its stack is never reclaimed.
 *
 * Returns NULL with: EINVAL (fn NULL, stack size out of
 * [ECO_STACK_MIN, ECO_STACK_MAX]), ENOMEM (no memory or no more mappings),
 * EPERM (no runtime in this thread).
 */
ECO_API eco_t *eco_create(eco_fn fn, void *arg, const eco_attr_t *attr);

/*
 * Runs co until it yields, parks in a blocking call or returns; then control
 * comes back here.  co becomes ACTIVE and the caller (a coroutine, or the
 * thread's own stack) is STACKED while it runs.
 *
 * A coroutine parked in a blocking call is resumed by the runtime when its
 * event comes, from a libevent callback; from then on the loop is its
 * caller.
 *
 * If co returns and is detached it is freed soon after (at the latest by
 * the next eco_create, eco_join, eco_stats or eco_teardown of the thread);
 * its handle is not to be used once detached anyway.
 *
 * Errors: EINVAL (co NULL), EPERM (no runtime, or co belongs to another
 * thread), EBUSY (co is ACTIVE or STACKED, or parked in a blocking call and so
 * owned by the runtime), ESRCH (co is DONE).
 */
ECO_API int eco_resume(eco_t *co);

/*
 * Suspends the running coroutine (it becomes PENDING) and returns control to
 * the one that resumed it.  Returns 0 when the coroutine is resumed again.
 *
 * If the coroutine was last resumed by the runtime itself (it was started by
 * eco_go or woken from a blocking call), there is nobody to return to: the
 * coroutine is put at the back of the runtime's run queue instead and runs
 * again after the coroutines already ready, a cooperative "let others run".
 *
 * Errors: EPERM (not called from a coroutine).
 */
ECO_API int eco_yield(void);

/*
 * Waits until co is DONE, stores its return value in *retval (when retval is
 * not NULL) and frees it.
 *
 * From a coroutine, the caller parks until co returns; if that wait fails
 * (ECANCELED, ETIMEDOUT) co stays joinable.  From the thread's own stack
 * (outside any coroutine) eco_join runs the event loop (event_base_loop
 * with EVLOOP_ONCE) until co is done; it fails with EDEADLK when nothing
 * could ever finish co (as eco_loop).
 *
 * Errors: EINVAL (co NULL, detached, or already being joined), EDEADLK (co is
 * the caller, or nothing could finish it), EPERM (no runtime, or co belongs
 * to another thread), EIO (event_base_loop failed; it does, for one, when
 * eco_join is called from the main stack inside a libevent callback, since
 * libevent loops do not nest: join from a coroutine there).
 */
ECO_API int eco_join(eco_t *co, void **retval);

/*
 * Marks co detached: it is freed as soon as it returns, and can no longer be
 * joined.  A co that is already DONE is freed now.  After eco_detach the
 * handle must not be used again except by the coroutine itself.
 *
 * Errors: EINVAL (co NULL, already detached or being joined), EPERM (no
 * runtime, or co belongs to another thread).
 */
ECO_API int eco_detach(eco_t *co);

/*
 * Go's `go`: creates a detached coroutine running fn(arg) with default
 * attributes and queues it to be started by the event loop.  Coroutines
 * started by eco_go begin in the order of the eco_go calls.  It works
 * before the loop runs: they start when the loop does.
 *
 * Errors: as eco_create.
 */
ECO_API int eco_go(eco_fn fn, void *arg);

/* eco_go with attributes (NULL: defaults). */
ECO_API int eco_go_attr(eco_fn fn, void *arg, const eco_attr_t *attr);

/* The running coroutine, or NULL on the thread's own stack or without a
 * runtime (errno is left alone). */
ECO_API eco_t *eco_self(void);

/* ------------------------------------------------------------------------ */
/* Cancellation and deadlines                                               */
/* ------------------------------------------------------------------------ */

/*
 * Cancels co: the blocking call co is parked in, if any, returns -1 with
 * ECANCELED, and so does every later blocking call of co, at once, until co
 * returns or calls eco_uncancel (the cancel is sticky, like a closed
 * handle).  Callable from any coroutine, a libevent callback, the thread's
 * own stack, and any other thread (there it takes effect when co's loop
 * next runs; co must not be freed meanwhile).
 *
 * Nothing is lost: a wait that had already completed when the cancel came
 * (an element received, a lock handed over, readiness handed over) keeps
 * its result, and the cancel shows at the next blocking call; a cancelled
 * send did not deliver its element, a cancelled receive took none, the fd's
 * queue or lock serves its next waiter, and a cancelled join leaves the
 * joined coroutine joinable.  Calls that never wait (eco_chan_trysend,
 * eco_close, eco_fd_unlock...) are not affected.
 *
 * Cancelling a coroutine that is DONE, INIT (its first blocking call fails)
 * or running is not an error.  Returns 0, or -1 with EINVAL (co NULL) or
 * ENOMEM (from another thread: the request could not be queued).
 */
ECO_API int eco_cancel(eco_t *co);

/*
 * Clears the calling coroutine's cancel, so that it can clean up with
 * blocking calls (say, write a last reply).  A cancel from another thread
 * that arrives later cancels again.  Errors: EPERM (not in a coroutine).
 */
ECO_API int eco_uncancel(void);

/*
 * Gives co a deadline ms milliseconds from now: from then on every blocking
 * call of co fails with ETIMEDOUT, the one it may be parked in included.
 * ms < 0 clears it.  It combines with the per-call and per-fd timeouts: the
 * earliest wins.  A coroutine that never blocks is not affected.  Errors:
 * EINVAL (co NULL), EPERM (no runtime, or co belongs to another thread).
 */
ECO_API int eco_set_deadline(eco_t *co, long ms);

/* ------------------------------------------------------------------------ */
/* Seeing inside                                                            */
/* ------------------------------------------------------------------------ */

/* What eco_foreach tells about one coroutine. */
typedef struct eco_info {
    unsigned long id;
    const char *name;    /* "" when none */
    eco_state_t state;
    char wait[64];       /* what it is parked on, in words: "read fd 7",
                            "write fd 9", "accept fd 3", "connect fd 4",
                            "lock fd 7 write", "chan 0x55d0 recv",
                            "select 3 cases", "sleep 250 ms left",
                            "join #12", "poll 2 fds", "bev read fd 7";
                            "runnable" when it is
                            ready and waits for its turn; "" otherwise */
    long waited_ms;      /* how long it has waited (a few ms coarse, and
                            for a coroutine the loop resumed counted from
                            that resume, so a long run before it parked
                            counts too), -1 if it is not waiting */
    long deadline_ms;    /* time left to its deadline, -1 without one */
    int cancelled;       /* eco_cancel'led */
    size_t stack_used;   /* deepest its stack has been, in bytes, from the
                            pages the kernel has committed (a reused stack
                            remembers earlier coroutines'; 0 if unknown) */
    size_t stack_size;
} eco_info_t;

/* Called for each coroutine; nonzero stops the walk. */
typedef int (*eco_visit_fn)(const eco_info_t *info, void *arg);

/*
 * Calls fn for every coroutine of this thread's runtime that has not been
 * freed (DONE ones not yet joined included), newest first.  fn must not
 * create, resume or free coroutines.  Returns the number visited, or -1 with
 * EINVAL (fn NULL) or EPERM (no runtime).
 */
ECO_API int eco_foreach(eco_visit_fn fn, void *arg);

/*
 * Writes to fd a line "eco: N coroutines alive", then one line per
 * coroutine of eco_foreach:
 *     #ID name=NAME state=STATE wait="WAIT" waited_ms=MS stack_kib=KIB
 *         deadline_ms=MS cancelled=0|1
 * (on one line; NAME is "-" without a name; STATE one of init, running,
 * stacked, yielded, runnable, waiting, done).  Meant for a signal handler's
 * libevent event (SIGQUIT, as Go does).  Returns the number of coroutines,
 * or -1 with errno (EPERM without a runtime, or write(2)'s error).
 */
ECO_API int eco_dump(int fd);

/*
 * Watches this thread's runtime for a coroutine that runs ms milliseconds
 * or more without parking or yielding: one line
 *     eco: coroutine NAME #ID has run 250 ms without yielding
 * goes to stderr per such episode, at most a quarter of the limit after
 * the limit has passed.  ms <= 0 stops watching (the default).  A watchdog
 * thread, shared by the process, samples the runtime's running coroutine
 * and its count of resumes (which every resume keeps, watched or not): the
 * switch does the same work with the watch on or off.  Errors: EPERM (no
 * runtime), or pthread_create's error.
 */
ECO_API int eco_set_hog_limit(long ms);

/* The state of co.  co must be a live handle (not freed). */
ECO_API eco_state_t eco_state(const eco_t *co);

/* The name given at creation, or "" when none was given.  Never NULL. */
ECO_API const char *eco_name(const eco_t *co);

/* A number unique among the coroutines of the process (1, 2, ...). */
ECO_API unsigned long eco_id(const eco_t *co);

/* ------------------------------------------------------------------------ */
/* The runtime and the event loop                                           */
/* ------------------------------------------------------------------------ */

/*
 * Creates this thread's runtime, bound to base.  With base NULL the runtime
 * creates its own event_base and frees it in eco_teardown.
 *
 * Installs, once per process, a SIGSEGV handler that reports coroutine stack
 * overflows (other faults are passed on to the handler that was there
 * before), and gives the thread an alternate signal stack if it has none.
 *
 * Errors: EEXIST (this thread already has a runtime), ENOMEM.
 */
ECO_API int eco_setup(struct event_base *base);

/*
 * Destroys this thread's runtime: frees pooled stacks and the event_base if
 * the runtime created it.  Coroutines that have not finished are abandoned:
 * the wait each is parked in is withdrawn first (it leaves its fd's or
 * channel's queue, its events leave the base), so the channels and fds they
 * waited on stay usable, then their stacks are unmapped without running
 * them further (nothing on those stacks is cleaned up: finish or cancel and
 * join them first).  Does nothing without a runtime, or when called from a
 * coroutine (it must run on the thread's own stack).
 */
ECO_API void eco_teardown(void);

/* The event_base of this thread's runtime, or NULL without one. */
ECO_API struct event_base *eco_base(void);

/*
 * Runs the event loop until no coroutine of this runtime is alive (created
 * and not DONE).  Other events of the base may keep running meanwhile; they
 * do not keep eco_loop going by themselves.
 *
 * Returns 0 when no coroutine is left, or when the user broke the loop
 * (event_base_loopbreak, event_base_loopexit).  Errors: EPERM (no runtime,
 * or called from a coroutine), EDEADLK (coroutines are alive but nothing
 * could ever wake them: none is ready, none waits on an fd, a timer, a
 * channel or eco_poll, and the base holds no event but libeco's own - e.g.
 * a coroutine that was created and never resumed, or coroutines joining
 * each other), EIO (event_base_loop failed).  A coroutine waiting on a
 * channel counts as wakeable: another thread may send.
 */
ECO_API int eco_loop(void);

/* Sets the default stack size of coroutines created from now on in this
 * thread.  Errors: EINVAL (out of [ECO_STACK_MIN, ECO_STACK_MAX]), EPERM. */
ECO_API int eco_set_stack_size(size_t size);

/*
 * Sets the most finished stacks the runtime keeps for reuse with their
 * memory (default SIZE_MAX: no bound; 0 disables pooling).  Within that
 * bound the pool follows demand: a stack that no coroutine of the last
 * second or so needed gives its memory back, from a libevent timer that
 * the runtime keeps pending only while the pool holds something to give
 * back.  That timer keeps event_base_dispatch running for about a second
 * after the last coroutine finished (eco_loop returns at once, and its
 * deadlock check does not count it).  Beyond the bound, a finished stack
 * gives its memory back at once.  Errors: EPERM.
 */
ECO_API int eco_set_pool_limit(size_t n);

/* Counters of this thread's runtime, for tests and monitoring. */
typedef struct eco_stats {
    size_t alive;     /* coroutines created and not DONE */
    size_t stacks;    /* stacks in use or pooled */
    size_t pooled;    /* finished stacks kept for reuse with their memory */
    size_t mapped;    /* stacks whose address space is mapped: in use, pooled,
                         or given back inside a mapping still in use */
    size_t committed; /* estimate of the bytes of memory the stacks and their
                         records hold: one page per stack in use or pooled
                         (deeper stacks hold more), the records, and the top
                         pages of a new mapping's unused stacks */
} eco_stats_t;

/* Fills *st.  Errors: EINVAL (st NULL), EPERM (no runtime). */
ECO_API int eco_stats(eco_stats_t *st);

/*
 * Parks the running coroutine for at least ms milliseconds (0: goes to the
 * back of the run queue, letting every ready coroutine run first).
 * Errors: EINVAL (ms < 0), EPERM (not in a coroutine), ECANCELED, ETIMEDOUT
 * (the coroutine's deadline came first), ENOMEM.
 */
ECO_API int eco_sleep(long ms);

/*
 * Cooperative poll(2): waits until one of the nfds descriptors is ready for
 * what its events ask (POLLIN, POLLOUT, POLLPRI are honoured; POLLERR and
 * POLLHUP are always reported) or timeout_ms milliseconds pass (-1: no
 * limit, 0: just check).  Entries with fd < 0 are ignored and get revents 0.
 * Sets revents like poll(2) (POLLNVAL for an fd that is not open).
 *
 * eco_close of a watched fd ends the wait (the fd then reports POLLNVAL).
 *
 * Returns the number of entries with nonzero revents, 0 on timeout.
 * Errors: EINVAL (fds NULL with nfds > 0, nfds too large, or no fd to watch
 * and no timeout), EPERM (not in a coroutine or, from epoll, an fd that
 * cannot be polled, such as a regular file), ECANCELED, ETIMEDOUT (the
 * coroutine's deadline), ENOMEM.
 */
ECO_API int eco_poll(struct pollfd *fds, nfds_t nfds, long timeout_ms);

/* ------------------------------------------------------------------------ */
/* Sockets (eco_socket.c)                                                   */
/* ------------------------------------------------------------------------ */

/*
 * The calls below take the arguments of their POSIX namesakes and report
 * errors the same way (-1 and errno), but park only the calling coroutine
 * where the POSIX call would block.  Besides the POSIX errors:
 *  - EPERM: called outside a coroutine (eco_socket and eco_close work
 *    anywhere, eco_fd_timeout anywhere in a thread with a runtime).
 *  - EBADF: fd is negative or not open, or was closed with eco_close while
 *    the call was parked (every parked call on it is woken with EBADF).
 *  - ETIMEDOUT: the fd's timeout for that direction (eco_fd_timeout) ran
 *    out, or the coroutine's deadline passed.  Nothing was transferred and
 *    the fd stays usable.  ECANCELED likewise (eco_cancel).
 *  - EFAULT: a NULL buffer with a nonzero length.
 * EINTR is retried.  An fd first seen by libeco is switched to O_NONBLOCK
 * (the flag is shared with every duplicate of the fd), so no call ever
 * blocks the thread.  Writes on sockets never raise SIGPIPE: they fail with
 * EPIPE (on pipes, SIGPIPE is the process's to ignore).  Waiters on one fd
 * and direction are served first-in first-out; a reader and a writer of one
 * fd do not wait for each other.
 *
 * libeco keeps per fd and direction one level-triggered libevent event in
 * the thread's base: a read event from the first wait until it fires with
 * nobody reading, a write event while a writer waits.  Close such fds with
 * eco_close, not close(2), which would leave the event and any parked
 * coroutine behind.  Do not add your own edge-triggered (EV_ET) event for
 * the same fd to the same event_base: libevent refuses to mix the two kinds.
 */

#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

/* Directions, for eco_fd_timeout, eco_fd_lock and eco_fd_unlock. */
#define ECO_RD 1
#define ECO_WR 2

/* socket(2), with SOCK_NONBLOCK and SOCK_CLOEXEC added. */
ECO_API int eco_socket(int domain, int type, int protocol);

/* accept(2); the new fd is nonblocking and close-on-exec.  Honours the read
 * timeout of the listening fd.  ECONNABORTED is retried. */
ECO_API int eco_accept(int fd, struct sockaddr *addr, socklen_t *addrlen);

/* connect(2), completed: an in-progress connect is awaited and its outcome
 * (SO_ERROR) reported, e.g. ECONNREFUSED.  Honours the write timeout; after
 * ETIMEDOUT the connect may still be in progress: close the fd.  A Unix
 * socket whose listener's backlog is full fails with EAGAIN, as a
 * nonblocking connect(2) does (there is no readiness to wait for). */
ECO_API int eco_connect(int fd, const struct sockaddr *addr, socklen_t addrlen);

/* read(2), readv(2), recv(2), recvfrom(2), recvmsg(2): read timeout. */
ECO_API ssize_t eco_read(int fd, void *buf, size_t len);
ECO_API ssize_t eco_readv(int fd, const struct iovec *iov, int iovcnt);
ECO_API ssize_t eco_recv(int fd, void *buf, size_t len, int flags);
ECO_API ssize_t eco_recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *addr,
                             socklen_t *addrlen);
ECO_API ssize_t eco_recvmsg(int fd, struct msghdr *msg, int flags);

/* write(2), writev(2), send(2), sendto(2), sendmsg(2): write timeout.  Like
 * their namesakes they may transfer less than asked; eco_write_full does
 * not. */
ECO_API ssize_t eco_write(int fd, const void *buf, size_t len);
ECO_API ssize_t eco_writev(int fd, const struct iovec *iov, int iovcnt);
ECO_API ssize_t eco_send(int fd, const void *buf, size_t len, int flags);
ECO_API ssize_t eco_sendto(int fd, const void *buf, size_t len, int flags,
                           const struct sockaddr *addr, socklen_t addrlen);
ECO_API ssize_t eco_sendmsg(int fd, const struct msghdr *msg, int flags);

/*
 * Whole buffers: eco_read_full reads until n bytes or end of file,
 * eco_write_full writes all n bytes.  Each holds the direction (as
 * eco_fd_lock) for its whole duration, so concurrent whole-buffer calls on
 * one fd never interleave; the fd's timeout bounds the whole call.
 *
 * Returns n on success.  A shorter count means end of file (errno 0) or an
 * error after part of the buffer was transferred (errno says which; the
 * count tells how much was).  -1 with errno when nothing was transferred.
 */
ECO_API ssize_t eco_read_full(int fd, void *buf, size_t n);
ECO_API ssize_t eco_write_full(int fd, const void *buf, size_t n);

/*
 * Closes fd: first wakes every coroutine of this thread's runtime parked on
 * it (their calls fail with EBADF; an eco_poll watching it returns with
 * POLLNVAL) and forgets its state, so a new file that gets the same number
 * starts clean; then close(2).  Works outside coroutines.  Coroutines of
 * other threads parked on the same fd are not woken: close an fd from the
 * thread whose coroutines use it.
 */
ECO_API int eco_close(int fd);

/*
 * Bounds every later blocking call on fd in the directions of how (ECO_RD:
 * accept and reads; ECO_WR: connect and writes) to ms milliseconds per call
 * (-1: no bound, the default; 0: fail at once with ETIMEDOUT instead of
 * waiting).  A call already waiting when the timeout is set keeps waiting
 * unbounded until it is woken, and is bounded from its next wait on.  The
 * setting lasts until eco_close.  Errors: EINVAL (how), EBADF, EPERM (no
 * runtime).
 */
ECO_API int eco_fd_timeout(int fd, int how, long ms);

/*
 * Holds one direction of fd (or both: ECO_RD | ECO_WR) across several calls
 * of the calling coroutine.  Meanwhile other coroutines' calls on that
 * direction wait, first-in first-out, until eco_fd_unlock.  The fd's
 * timeout bounds the wait.  Errors: EDEADLK
 * (already held by the caller), EINVAL (how), EBADF (closed while waiting),
 * ETIMEDOUT, EPERM (not in a coroutine).
 *
 * Pipelining over a shared connection, replies in request order:
 *     eco_fd_lock(fd, ECO_WR);  eco_write_full(fd, req, len);
 *     eco_fd_unlock(fd, ECO_WR);
 *     eco_fd_lock(fd, ECO_RD);  <read one whole reply>;
 *     eco_fd_unlock(fd, ECO_RD);
 * Unlocking never switches coroutines and a lock call joins its queue
 * before it parks, so with nothing in between, the ECO_RD queue is joined
 * in the order the requests were written.  eco_close releases both
 * directions, and so does the holder's return: what a coroutine still
 * holds when its function returns goes to the next waiter in line.
 */
ECO_API int eco_fd_lock(int fd, int how);

/* Releases what eco_fd_lock took; the next waiter in line gets it.
 * Errors: EPERM (the caller does not hold it, or not in a coroutine),
 * EINVAL (how). */
ECO_API int eco_fd_unlock(int fd, int how);

/* end of sockets */

/* ------------------------------------------------------------------------ */
/* Channels (eco_chan.c)                                                    */
/* ------------------------------------------------------------------------ */

/*
 * Channels carry fixed-size elements, copied in and out, between coroutines
 * of any runtime and plain threads, in any mix:
 *  - A coroutine that has to wait parks; its runtime's loop runs others.  It
 *    is woken by its own thread, through the runtime's event loop (from
 *    another thread, through one coalesced eventfd write per burst).
 *  - A thread without a runtime (no eco_setup) that has to wait blocks on a
 *    condition variable.
 *  - The thread's own stack of a thread WITH a runtime may not wait (it would
 *    freeze the loop that must wake it): there the calls that would wait fail
 *    with EPERM; the try variants, timeout 0 and the calls that complete at
 *    once work (eco_chan_select too, when a case is ready).
 * Capacity 0 makes an unbuffered channel: a send completes only when a
 * receiver takes the element (rendezvous).  With capacity N, send waits only
 * while N elements are buffered and receive only while none is.
 * Elements of one sender arrive in the order sent; waiting senders and
 * receivers are served first-come first-served.  An element goes straight
 * from the sender's memory to a waiting receiver's.
 *
 * Timeouts are in milliseconds: a negative timeout waits without limit, 0
 * does not wait at all (fails with EAGAIN, like the try variants), a
 * positive one fails with ETIMEDOUT once it has passed.
 *
 * Every function below but eco_chan_free fails with EINVAL when ch is NULL.
 */
typedef struct eco_chan eco_chan_t;

/*
 * Creates a channel of elements of elem_size bytes (0 is allowed: a channel
 * of pure events) holding up to capacity elements (0: unbuffered).
 * Returns NULL with EINVAL (elem_size * capacity overflows) or ENOMEM.
 * Needs no runtime.
 */
ECO_API eco_chan_t *eco_chan_new(size_t elem_size, size_t capacity);

/*
 * Frees ch.  Returns 0 (also for ch NULL), or -1 with EBUSY while a sender
 * or receiver still waits on ch (close it, and let them return, first).
 * Calling it while another thread may still use ch is the caller's bug.
 */
ECO_API int eco_chan_free(eco_chan_t *ch);

/*
 * Closes ch: sends from now on fail with EPIPE; receivers get what is still
 * buffered, then the end of the channel (eco_chan_recv returns 0).  Every
 * waiting receiver sees the end at once and every waiting sender fails with
 * EPIPE (its element is not delivered).
 * Returns 0, or -1 with EPIPE when ch was already closed.
 */
ECO_API int eco_chan_close(eco_chan_t *ch);

/*
 * Copies the element at elem (elem_size bytes; elem may be NULL when
 * elem_size is 0) into ch, waiting while the buffer is full, or for an
 * unbuffered channel until a receiver takes it.
 * Returns 0, or -1 with EPIPE (ch is closed, or was closed while this send
 * waited: the element was not delivered), EINVAL (elem NULL), EPERM (would
 * wait on the own stack of a thread with a runtime), or, in a coroutine,
 * ECANCELED, ETIMEDOUT or ENOMEM (the element was not delivered).
 */
ECO_API int eco_chan_send(eco_chan_t *ch, const void *elem);

/*
 * Receives the oldest element of ch into elem (NULL: drops it), waiting
 * while there is none.
 * Returns 1 when an element was received, 0 at the end of a closed channel
 * (closed, and nothing buffered is left: not an error, errno untouched), or
 * -1 with EPERM, ECANCELED, ETIMEDOUT or ENOMEM as eco_chan_send (nothing
 * was taken).
 */
ECO_API int eco_chan_recv(eco_chan_t *ch, void *elem);

/* eco_chan_send waiting at most timeout_ms: fails also with ETIMEDOUT (the
 * element was not sent) or, for timeout_ms 0, EAGAIN. */
ECO_API int eco_chan_send_timeout(eco_chan_t *ch, const void *elem, long timeout_ms);

/* eco_chan_recv waiting at most timeout_ms: fails also with ETIMEDOUT or,
 * for timeout_ms 0, EAGAIN. */
ECO_API int eco_chan_recv_timeout(eco_chan_t *ch, void *elem, long timeout_ms);

/* eco_chan_send that never waits: fails with EAGAIN when no receiver waits
 * and the buffer is full.  Works anywhere, also on a runtime's own stack. */
ECO_API int eco_chan_trysend(eco_chan_t *ch, const void *elem);

/* eco_chan_recv that never waits: fails with EAGAIN when nothing is buffered
 * and no sender waits (an unbuffered channel needs a waiting sender). */
ECO_API int eco_chan_tryrecv(eco_chan_t *ch, void *elem);

/* The operation of a select case. */
#define ECO_CHAN_SEND 1
#define ECO_CHAN_RECV 2

/* One case of eco_chan_select. */
struct eco_chan_case {
    eco_chan_t *ch; /* NULL: the case is ignored (Go's nil channel) */
    int op;         /* ECO_CHAN_SEND or ECO_CHAN_RECV */
    void *elem;     /* SEND: the element to copy from; RECV: where to copy it
                       (NULL: drop it) */
    int result;     /* set in the chosen case only.  RECV: 1 element
                       received, 0 end of the closed channel; SEND: 0 sent,
                       -1 the channel is closed (not sent) */
};

/*
 * Waits until one of the n cases can complete, completes it, and returns
 * its index.  When several are ready one is chosen at random, each ready
 * case equally likely.  A closed channel makes its cases ready (see result).
 * timeout_ms 0 only polls (Go's default case); negative waits without
 * limit.  A case's channel may appear in other cases too.
 * Returns the index, or -1 with ETIMEDOUT, EAGAIN (timeout_ms 0 and nothing
 * ready), EINVAL (cases NULL with n > 0, n > 65536, a bad op, a SEND case
 * with elem NULL and elements of nonzero size, or no case with a channel and
 * no timeout), ENOMEM (more than 8 cases and no memory), EPERM, ECANCELED
 * or ETIMEDOUT as eco_chan_send (no case completed).
 */
ECO_API int eco_chan_select(struct eco_chan_case *cases, size_t n, long timeout_ms);

/* end of channels */

/* ------------------------------------------------------------------------ */
/* Waiting for a callback: promises (eco_promise.c)                         */
/* ------------------------------------------------------------------------ */

/*
 * A promise carries one result from a callback to the coroutine waiting
 * for it.  The coroutine makes a promise, starts a callback-based
 * operation (a libevent timer or evdns lookup, hiredis, libpq, a thread of
 * its own...) handing the promise to its callback, and parks in
 * eco_promise_wait; the callback calls eco_promise_resolve with its result
 * (or eco_promise_reject with an errno), from the coroutine's own thread or
 * from any other.
 *
 * Who frees it, the one rule.  A promise has two sides and is freed when
 * both are done:
 *  - the waiter's side ends with its one eco_promise_wait call, whatever
 *    that call returns (the value, a timeout, ECANCELED, even EPERM);
 *  - the resolver's side ends with its one eco_promise_resolve or
 *    eco_promise_reject call.
 * Whichever side comes second frees it, so neither ever finds it gone: if
 * the waiter gave up first (its timeout, its deadline, eco_cancel,
 * eco_teardown), the late eco_promise_resolve calls drop(value) - nobody
 * else will have the value - and frees the promise; a waiter resolved but
 * abandoned by eco_teardown before it ran again has its value dropped by
 * eco_teardown.  Both calls are
 * required.  A promise whose resolver never resolves or rejects is never
 * freed (and an unbounded wait on it never ends, cancel and deadline
 * aside): so every path of the operation must end in one of the two calls,
 * its failures and its "cancelled" callbacks included, and when starting
 * the operation fails, reject the promise yourself before waiting.
 *
 * Wrapping a callback API, say `int fetch(const char *key,
 * void (*cb)(char *val, int err, void *arg), void *arg)`, whose callback
 * may come late and hands over a malloc'd value:
 *
 *     static void on_fetch(char *val, int err, void *arg)
 *     {
 *         if (err != 0)
 *             eco_promise_reject(arg, EIO);
 *         else
 *             eco_promise_resolve(arg, val);   (free()d if nobody waits)
 *     }
 *
 *     char *fetch_co(const char *key, long timeout_ms)    (in a coroutine)
 *     {
 *         void *val = NULL;
 *         eco_promise_t *p = eco_promise_new(free);
 *         if (p == NULL)
 *             return NULL;
 *         if (fetch(key, on_fetch, p) != 0)
 *             eco_promise_reject(p, EIO);     (on_fetch will not run)
 *         if (eco_promise_wait(p, timeout_ms, &val) != 0)
 *             return NULL;                    (errno: ETIMEDOUT, EIO...)
 *         return val;
 *     }
 *
 * eco_getaddrinfo (eco_dns.c) is built this way on evdns, and cancels its
 * lookup when the waiter gives up (eco_promise_on_cancel).  eco_dump shows
 * a coroutine parked in eco_promise_wait as wait="promise".
 */
typedef struct eco_promise eco_promise_t;

/*
 * Makes a promise.  drop (may be NULL) is called with a resolved value
 * that no waiter takes: the waiter had given up, or called eco_promise_wait
 * with value NULL.  It runs in the thread that calls the late
 * eco_promise_resolve (or eco_promise_wait), and must not block.
 * Returns NULL with ENOMEM.  Needs no runtime.
 */
ECO_API eco_promise_t *eco_promise_new(void (*drop)(void *value));

/*
 * Parks the calling coroutine until p is resolved or rejected, at most
 * timeout_ms milliseconds (-1: no limit; 0: does not wait, and then works
 * anywhere, also outside coroutines and runtimes).  On success stores the
 * value in *value (value NULL: drop(value) is called instead) and returns
 * 0.  Whatever it returns, this call ends the waiter's side of p: p must
 * not be used by the caller afterwards.
 *
 * The value of a promise resolved before the call is handed over at once,
 * also to a cancelled coroutine.  Errors: the errno of eco_promise_reject;
 * ETIMEDOUT (timeout_ms passed, 0 included, or the coroutine's deadline),
 * ECANCELED (eco_cancel), EPERM (it would wait outside a coroutine),
 * ENOMEM (no timer), EINVAL (p NULL).  On each but EINVAL a value that
 * comes later is given to drop.
 */
ECO_API int eco_promise_wait(eco_promise_t *p, long timeout_ms, void **value);

/*
 * Hands value to p's waiter, waking it; callable from any thread, from
 * callbacks and coroutines (it never blocks nor switches: a waiter in this
 * thread is resumed from the run queue, after the caller returns to the
 * loop).  Ends the resolver's side of p.  Returns 0 when the waiter gets
 * the value, 1 when the waiter had given up (drop(value) has run and p is
 * freed), -1 with EINVAL (p NULL) or EALREADY (p was already resolved or
 * rejected, and so may be freed: a bug the call detects only sometimes).
 */
ECO_API int eco_promise_resolve(eco_promise_t *p, void *value);

/* eco_promise_resolve without a value: the waiter's eco_promise_wait
 * fails with errno err (> 0; EINVAL otherwise).  Nothing is dropped. */
ECO_API int eco_promise_reject(eco_promise_t *p, int err);

/*
 * Asks for fn(arg) to be called if the waiter gives up before p is
 * settled (its timeout, deadline, eco_cancel, eco_teardown, or a wait that
 * could not park): meant to cancel the operation where its API can
 * (evdns_getaddrinfo_cancel, evhttp_cancel_request...).  It is called at
 * most once, in the waiter's thread, from inside libeco (a timer, the
 * eco_cancel call, eco_teardown), so it must not block or switch.  The
 * operation must still end in eco_promise_resolve or eco_promise_reject
 * (most APIs call their callback with a "cancelled" status); fn may call
 * them itself.  fn must not touch p: it may already be freed by a resolver
 * in another thread.  Set it before eco_promise_wait.  Errors: EINVAL.
 */
ECO_API int eco_promise_on_cancel(eco_promise_t *p, void (*fn)(void *arg), void *arg);

/* end of promises */

/* ------------------------------------------------------------------------ */
/* Names (eco_dns.c)                                                        */
/* ------------------------------------------------------------------------ */

/*
 * getaddrinfo(3) that parks the calling coroutine instead of the thread:
 * the same arguments, the same results (free them with eco_freeaddrinfo,
 * not freeaddrinfo) and the same EAI_* codes.  Names go to libevent's evdns
 * on the runtime's base: first the hosts file, then the name servers.
 *
 * A numeric host (or node NULL) is answered at once without the resolver,
 * anywhere, also in a thread without a runtime.  A name needs a runtime:
 * in a coroutine the coroutine parks; on the thread's own stack the call
 * runs the event loop until the answer is in, as eco_join does (other
 * coroutines and events run meanwhile: for a program's start-up), but not
 * from inside a libevent callback of the base, where loops do not nest
 * (EAI_SYSTEM with EIO; the lookup is cancelled).  Besides getaddrinfo's
 * codes it returns EAI_SYSTEM with errno set to ECANCELED (eco_cancel),
 * ETIMEDOUT (the coroutine's deadline: eco_set_deadline is how to bound a
 * lookup), EPERM (a name, in a thread without a runtime), ENOMEM, or
 * EINVAL (res NULL).  A lookup the coroutine gives up is cancelled in
 * evdns.  eco_dump shows the coroutine as wait="getaddrinfo NAME".  EAI_FAIL covers a server that fails or does
 * not answer within evdns's own bounds (5 s a try, 3 tries: set them with
 * evdns_base_set_option on eco_evdns_base()).
 *
 * The runtime's resolver is made on first use from /etc/resolv.conf and
 * the hosts file (a missing resolv.conf, or one without a server, means a
 * server on 127.0.0.1, as in the C library), with
 * EVDNS_BASE_DISABLE_WHEN_INACTIVE: an idle resolver keeps no event in the
 * base, so event_base_dispatch still returns when the program is done.
 * (evdns probes a name server that stopped answering on a timer of its
 * own, which would stay in the base; when the last coroutine has finished
 * the runtime's resolver takes its name servers afresh, keeping its
 * options, hosts and search list, which drops those timers.)  eco_teardown
 * frees it.  Lookups in flight when eco_teardown abandons
 * their coroutines are cancelled, and libevent finishes a cancel in a
 * later pass of the loop: their memory (and the resolver's) comes back
 * when the base runs again; with the runtime's own base, which
 * eco_teardown frees, it never does (a few hundred bytes a lookup).
 */

#include <netdb.h>

struct addrinfo;
struct evdns_base;

ECO_API int eco_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                            struct addrinfo **res);

/* Frees what eco_getaddrinfo returned (NULL is fine). */
ECO_API void eco_freeaddrinfo(struct addrinfo *res);

/* The evdns_base eco_getaddrinfo uses in this thread, made if need be:
 * to tune it (evdns_base_set_option, evdns_base_load_hosts...).  NULL
 * with errno EPERM (no runtime) or ENOMEM. */
ECO_API struct evdns_base *eco_evdns_base(void);

/*
 * Makes eco_getaddrinfo use evdns, an evdns_base of the user's on the
 * runtime's event_base, from now on; NULL goes back to the runtime's own
 * (made anew on next use).  The runtime never frees the user's; the user
 * frees it after eco_teardown, or after replacing it once the lookups in
 * flight on it have ended.  A resolver made without
 * EVDNS_BASE_DISABLE_WHEN_INACTIVE keeps events in the base: then
 * event_base_dispatch does not return by itself, and eco_loop cannot tell
 * a deadlock (it still returns when the coroutines are done).  A lookup in
 * flight finishes on the resolver it started on.  evdns's probe timers
 * for a failed name server stay in the base too (see above): the user's
 * resolver is left as it is.  Errors: EPERM, ENOMEM.
 */
ECO_API int eco_set_evdns_base(struct evdns_base *evdns);

/* end of names */

/* ------------------------------------------------------------------------ */
/* Blocking work off the loop (eco_blocking.c)                              */
/* ------------------------------------------------------------------------ */

/*
 * Runs fn(arg) on one of the runtime's pool threads and parks the calling
 * coroutine until it returns; then stores its return value in *result
 * (result NULL: it goes to drop) and returns 0.  For what cannot be made
 * to wait on the loop: disk I/O, a synchronous client library, long
 * computation.  fn runs in another thread: it may block, but must not call
 * libeco's coroutine functions (promises and channels are fine: they work
 * from any thread).
 *
 * The name says what it costs: a thread wake-up each way (microseconds,
 * tens of them on a busy or virtualised host: BENCHMARKS.md), so it is for
 * calls that would block, not for short work.
 *
 * Giving up.  When the caller is cancelled (ECANCELED) or its deadline
 * passes (ETIMEDOUT), before or during the call, eco_run_blocking returns
 * at once, but fn cannot be stopped: it still runs - or, when it is still
 * queued, will run - to its end, exactly once.  Its result then goes to drop(arg, result) in the pool
 * thread (drop NULL: nothing is called and the result is lost).  So arg
 * must stay valid until fn returns even when the caller has gone: a caller
 * that can be cancelled or has a deadline must not point arg into its own
 * stack, but hand over memory that drop frees.
 *
 * The pool.  At most eco_set_blocking_threads (default 4) calls run at
 * once; later ones wait in first-come first-served order (and can be
 * cancelled while they wait; the function still runs later).  Threads are
 * started one at a time when a call finds none idle, block every signal,
 * and are joined by eco_teardown, which first waits for every call queued
 * or running.
 *
 * Errors: ECANCELED and ETIMEDOUT (fn runs anyway, its result goes to
 * drop); EINVAL (fn NULL), EPERM (not in a coroutine), ENOMEM, or
 * pthread_create's error when the pool has no thread and cannot start one:
 * with these four, fn did not run and arg is still the caller's.  eco_dump shows the caller as
 * wait="blocking call", queued or running; the threads are named
 * "eco-blocking".
 */
ECO_API int eco_run_blocking(void *(*fn)(void *arg), void *arg, void **result,
                             void (*drop)(void *arg, void *result));

/* Sets how many calls of eco_run_blocking may run at once in this thread's
 * runtime (1 to 1024, default 4); raising it starts threads for calls
 * waiting; lowering it leaves the threads above it idle until
 * eco_teardown.  Errors: EINVAL, EPERM (no runtime), ENOMEM. */
ECO_API int eco_set_blocking_threads(size_t n);

/* end of blocking work */

/* ------------------------------------------------------------------------ */
/* Bufferevents (eco_bev.c)                                                 */
/* ------------------------------------------------------------------------ */

/*
 * A coroutine reads and writes a libevent bufferevent - any kind: socket,
 * pair, filter, bufferevent_openssl for TLS - as it would a socket.  The
 * calls take data from the bufferevent's input buffer and append to its
 * output buffer, and park the coroutine only while the buffers do not
 * allow the call to complete.
 *
 *   ssize_t n;                                  (in a coroutine)
 *   bev = bufferevent_openssl_socket_new(eco_base(), fd, ssl,
 *                                        BUFFEREVENT_SSL_ACCEPTING, 0);
 *   if (eco_bev_wait_connected(bev) != 0)       (the handshake)
 *       ... errno, bufferevent_get_openssl_error(bev) ...
 *   while ((n = eco_bev_read(bev, buf, sizeof buf)) > 0)
 *       if (eco_bev_write(bev, buf, n) < 0) break;
 *   eco_bev_flush(bev);
 *   bufferevent_free(bev);
 *
 * What happens to the bufferevent's callbacks.  While at least one call
 * below is parked on a bufferevent, libeco's own callbacks are installed
 * on it (bufferevent_setcb; the write callback only while a write or flush
 * is parked or the user has a write callback, as it would have nothing to
 * do), and each of them hands on what no parked call takes to the user's
 * callback of the same kind, with the user's argument:
 *  - the read callback wakes the parked reads; with none parked it calls
 *    the user's read callback;
 *  - the write callback wakes parked writes and flushes, likewise;
 *  - an event wakes the calls it concerns: BEV_EVENT_CONNECTED the
 *    eco_bev_wait_connected calls; BEV_EVENT_EOF reads and connect waits
 *    (writing goes on: a half-close; parked writes and flushes only look
 *    again, as a bufferevent_openssl stops writing at the end until it is
 *    enabled anew); BEV_EVENT_ERROR every call;
 *    BEV_EVENT_TIMEOUT the calls of its direction (READING, WRITING) and
 *    connect waits, or every call when it names no direction.  An event
 *    that no parked call takes goes to the user's event callback.
 * When the last parked call returns, the user's callbacks are put back as
 * they were (unless the user set new ones meanwhile, which stay - and
 * which leave the parked calls waiting until cancelled: do not call
 * bufferevent_setcb while a coroutine waits).  Between calls, nothing of
 * libeco is on the bufferevent.  So callbacks may fire for the user while
 * a coroutine also uses the bufferevent (data that arrives while nobody
 * reads goes to the user's read callback, if there is one, which may take
 * it): a program that moves a bufferevent to a coroutine usually sets its
 * callbacks to NULL, or leaves only an event callback for logging.
 *
 * Directions.  A read enables EV_READ (bufferevent_enable) and a write or
 * flush that has to wait enables EV_WRITE, and they stay enabled: a
 * bufferevent that a timeout, an error or end of file disabled is enabled
 * again by the next call, which then sees the end of file (0) or the error
 * again from the transport.  (One case does not repeat: a
 * bufferevent_openssl reports a close_notify once, and when the data
 * before it came in the same read, the call returns that data and the
 * next one sees the end only when the peer closes its TCP side too, as
 * peers do right after close_notify.)
 *
 * Bounds.  The bufferevent's own timeouts (bufferevent_set_timeouts) end a
 * parked call of their direction with ETIMEDOUT; so do the coroutine's
 * deadline (eco_set_deadline), and eco_cancel with ECANCELED.  A call that
 * gives up leaves the buffers as they were, except what eco_bev_read_full
 * has already taken (see there).
 *
 * One reader and one writer can be parked on one bufferevent at once (a
 * proxy moves data both ways).  Several readers are all woken when data
 * comes, and which gets it is not said.
 *
 * Threads.  The bufferevent must belong to the calling thread's runtime
 * (created on eco_base(), or on the base given to eco_setup), and no other
 * thread may use it while a call is parked on it: the calls read its
 * callbacks, flags and watermarks without taking its lock.
 *
 * Errors, besides ECANCELED, ETIMEDOUT, ENOMEM and EPERM (not in a
 * coroutine): EINVAL (bev NULL), EFAULT (buf NULL with n > 0), and on
 * BEV_EVENT_ERROR the socket's errno that libevent saw (ECONNRESET,
 * EPIPE, ECONNREFUSED...) or, when it saw none, EPROTO: a TLS failure,
 * which bufferevent_get_openssl_error tells.  End of file is 0, not an
 * error.
 *
 * Freeing a bufferevent (bufferevent_free) on which a coroutine is parked
 * is a bug, as close(2) on an fd it waits on: cancel the coroutine and let
 * it return first.  Callbacks may run inside these calls (a
 * bufferevent_openssl writes from bufferevent_write); a coroutine they wake
 * then runs after the caller parks or yields.  eco_dump shows a parked
 * call as wait="bev read fd 7" (read, readln, write, flush, connect; a
 * bufferevent without an fd is shown by its address).
 */

struct bufferevent;

/* Up to n bytes of what is in the input, at least 1, waiting for data
 * while there is none.  Returns the count, 0 at end of file (or for n 0),
 * or -1 with errno. */
ECO_API ssize_t eco_bev_read(struct bufferevent *bev, void *buf, size_t n);

/* Exactly n bytes, taken as they arrive (so n may be larger than the
 * input's high-water mark).  Returns n; a shorter count means end of file
 * (errno 0) or an error after part was taken (errno says which; what was
 * taken is in buf and not in the input any more); -1 with errno when
 * nothing was. */
ECO_API ssize_t eco_bev_read_full(struct bufferevent *bev, void *buf, size_t n);

/*
 * One line, ended as eol_style says (an enum evbuffer_eol_style:
 * EVBUFFER_EOL_LF, EVBUFFER_EOL_CRLF...), as evbuffer_readln: a malloc'd,
 * NUL-terminated copy without the end of line (free it), its length in
 * *len (len may be NULL).  At end of file a last line without an end of
 * line is returned as a line; after it, NULL with errno 0.  max > 0 bounds
 * a line with its end of line: a longer one fails with EMSGSIZE and stays
 * in the input, as does one that fills the input to its high-water mark
 * (the bufferevent would stop reading).  NULL with errno on errors (EINVAL
 * for an unknown eol_style).
 */
ECO_API char *eco_bev_readln(struct bufferevent *bev, int eol_style, size_t max, size_t *len);

/*
 * Appends all n bytes to the output, which the bufferevent sends on its
 * own.  Back-pressure: when the output already holds the bufferevent's
 * write high-water mark (bufferevent_setwatermark(bev, EV_WRITE, low,
 * high); 64 KiB when high is 0), the call first waits until the output is
 * down to its low-water mark (default 0: sent).  Returns n, or -1 with
 * errno, in which case nothing was appended.  Use eco_bev_flush to know
 * the bytes have left.
 */
ECO_API ssize_t eco_bev_write(struct bufferevent *bev, const void *buf, size_t n);

/* Waits until the output buffer is empty: everything written has gone to
 * the transport (the socket; for bufferevent_openssl, through SSL_write).
 * Returns 0, or -1 with errno. */
ECO_API int eco_bev_flush(struct bufferevent *bev);

/*
 * Waits for BEV_EVENT_CONNECTED: the end of bufferevent_socket_connect, or
 * of a bufferevent_openssl's handshake (client or server side).  Call it
 * right after starting the connect or making the bufferevent, before the
 * loop runs: an event that came earlier went to the user's event callback
 * (or nowhere).  Returns 0, or -1 with errno: the socket's error
 * (ECONNREFUSED...), EPROTO for a failed handshake, ECONNRESET when the
 * peer closed first, ETIMEDOUT (the bufferevent's timeouts bound a connect
 * and a handshake).
 */
ECO_API int eco_bev_wait_connected(struct bufferevent *bev);

/* end of bufferevents */

#ifdef __cplusplus
}
#endif

#endif /* ECO_H */
