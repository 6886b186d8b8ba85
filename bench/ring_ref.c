/*
 * ring_ref.c - C reference of the micronf pipeline stages (bench/ring.py compares it with numba).
 *
 * One process runs one stage of  source -> forward x K -> sink  on the very same shared-memory
 * segment that ring_pipeline.run_pipeline() (bench/ring_pipeline.py) creates, with the same algorithm as the
 * numba loops in bench/ring_pipeline.py:
 *
 *   - SPSC rings (micronf/dataplane/ring.py): an int64 control block of 48 words
 *     (CAP, MASK | HEAD, HEAD_SEEN_TAIL | TAIL, TAIL_SEEN_HEAD on three 128-byte lines) and
 *     uint32 slots; free-running int64 indices, cached copies of the other side's index,
 *     acquire loads / release stores.
 *   - the packet pool (micronf/dataplane/pool.py): the source owns it and pops handles from the
 *     free stack, draining the return rings into the stack when it runs short; the sink frees
 *     through return ring (client) 0.
 *   - the control region: int64 words GO=0, STOP=1, then one 16-word line per stage at
 *     (index + 1) * 16 holding COUNT=0, READY=1, ERRORS=2.
 *
 * Usage (argv built by ring_pipeline._stage_command):
 *   ring_ref PATH ROLE INDEX STAGES BURST YIELD RING_CAPACITY MARK_OFF \
 *            POOL_CTRL POOL_FREE POOL_RET_CTRL POOL_RET_SLOTS POOL_SLOTS RINGS_CTRL RINGS_SLOTS CTL
 * where ROLE is source | forward | sink and the last 8 arguments are region byte offsets.
 *
 * Build: cc -O3 -march=native -Wall -Wextra -o ring_ref ring_ref.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ring.py: control block words */
enum { CAP = 0, MASK = 1, HEAD = 16, HEAD_SEEN_TAIL = 17, TAIL = 32, TAIL_SEEN_HEAD = 33, RING_CTRL_WORDS = 48 };
/* pool.py: control block words, slot metadata words, data offset */
enum { C_MAGIC = 0, C_NSLOTS = 1, C_SLOT_SIZE = 2, C_NCLIENTS = 3, C_FREE_TOP = 16, C_ALLOCATED = 17,
       C_ALLOC_FAIL = 18 };
enum { M_LEN = 0, M_PORT, M_HASH, M_VERDICT, M_SYNC, M_SFC, M_DATA_OFF, M_FLAGS };
#define POOL_MAGIC 0x4D4E465F504F4F4CLL /* "MNF_POOL" */
#define DATA_OFF 192                    /* META_SIZE + HEADROOM */
/* ring_pipeline.py: control region words */
enum { W_GO = 0, W_STOP = 1, LINE = 16, S_COUNT = 0, S_READY = 1, S_ERRORS = 2 };

#define LOAD_ACQ(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STORE_REL(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* -- SPSC ring ------------------------------------------------------------------------------ */
struct ring {
    int64_t *ctrl;
    uint32_t *slots;
};

/* Producer: append up to n handles from src; returns how many fit (0..n). */
static inline int64_t ring_enqueue(struct ring r, const uint32_t *src, int64_t n)
{
    int64_t *c = r.ctrl;
    int64_t head = c[HEAD], cap = c[CAP];
    int64_t free_ = cap - (head - c[HEAD_SEEN_TAIL]);
    if (free_ < n) { /* looks full: refresh the cached tail */
        int64_t tail = LOAD_ACQ(&c[TAIL]);
        c[HEAD_SEEN_TAIL] = tail;
        free_ = cap - (head - tail);
    }
    int64_t k = min64(n, free_);
    if (k <= 0)
        return 0;
    int64_t mask = c[MASK];
    for (int64_t i = 0; i < k; i++)
        r.slots[(head + i) & mask] = src[i];
    STORE_REL(&c[HEAD], head + k);
    return k;
}

/* Consumer: take up to max_n handles into dst[0:k]; returns k (0 when empty). */
static inline int64_t ring_dequeue(struct ring r, uint32_t *dst, int64_t max_n)
{
    int64_t *c = r.ctrl;
    int64_t tail = c[TAIL];
    int64_t avail = c[TAIL_SEEN_HEAD] - tail;
    if (avail < max_n) { /* looks short: refresh the cached head */
        int64_t head = LOAD_ACQ(&c[HEAD]);
        c[TAIL_SEEN_HEAD] = head;
        avail = head - tail;
    }
    int64_t k = min64(max_n, avail);
    if (k <= 0)
        return 0;
    int64_t mask = c[MASK];
    for (int64_t i = 0; i < k; i++)
        dst[i] = r.slots[(tail + i) & mask];
    STORE_REL(&c[TAIL], tail + k);
    return k;
}

/* -- packet pool ---------------------------------------------------------------------------- */
struct pool {
    int64_t *ctrl;
    uint32_t *free_stack; /* [n_slots], owner only */
    uint8_t *data;        /* [n_slots][slot_size] */
    int64_t n_slots, slot_size, n_clients, ret_cap;
    int64_t *ret_ctrl;   /* [n_clients][RING_CTRL_WORDS] */
    uint32_t *ret_slots; /* [n_clients][ret_cap] */
};

static inline struct ring pool_ret_ring(const struct pool *p, int64_t client)
{
    return (struct ring){p->ret_ctrl + client * RING_CTRL_WORDS, p->ret_slots + client * p->ret_cap};
}

static inline uint8_t *pkt(const struct pool *p, uint32_t h) { return p->data + (int64_t)h * p->slot_size; }

/* Owner: move everything waiting in the return rings onto the free stack; returns the new top. */
static int64_t pool_reclaim(struct pool *p, int64_t top)
{
    for (int64_t r = 0; r < p->n_clients; r++) {
        if (top >= p->n_slots)
            break;
        top += ring_dequeue(pool_ret_ring(p, r), p->free_stack + top, p->n_slots - top);
    }
    return top;
}

/* Owner: allocate up to n handles into out, resetting their metadata; short = exhaustion, counted. */
static inline int64_t pool_alloc(struct pool *p, uint32_t *out, int64_t n)
{
    int64_t top = p->ctrl[C_FREE_TOP];
    if (top < n)
        top = pool_reclaim(p, top);
    int64_t k = min64(n, top);
    for (int64_t i = 0; i < k; i++) {
        uint32_t h = p->free_stack[top - 1 - i];
        out[i] = h;
        uint32_t *w = (uint32_t *)pkt(p, h);
        w[M_LEN] = 0;
        w[M_PORT] = 0;
        w[M_HASH] = 0;
        w[M_VERDICT] = 0;
        w[M_SYNC] = 0;
        w[M_SFC] = 0;
        w[M_DATA_OFF] = DATA_OFF;
        w[M_FLAGS] = 0;
    }
    p->ctrl[C_FREE_TOP] = top - k;
    p->ctrl[C_ALLOCATED] += k;
    if (k < n)
        p->ctrl[C_ALLOC_FAIL] += n - k;
    return k;
}

/* Any process: return n handles through return ring `client` (never full: it holds n_slots). */
static inline int64_t pool_free(struct pool *p, int64_t client, const uint32_t *h, int64_t n)
{
    return ring_enqueue(pool_ret_ring(p, client), h, n);
}

/* -- stage loops ---------------------------------------------------------------------------- */
struct stage {
    struct pool pool;
    struct ring in, out;
    int64_t *ctl;
    int64_t line; /* first word of this stage's control line */
    int64_t burst, mark_off, expect;
    int yield_idle;
    uint32_t *buf;
};

static inline int stopped(const struct stage *s) { return LOAD_ACQ(&s->ctl[W_STOP]) != 0; }

/* Publish this stage's packet count (one writer: plain read, release store). */
static inline void count(struct stage *s, int64_t n)
{
    STORE_REL(&s->ctl[s->line + S_COUNT], s->ctl[s->line + S_COUNT] + n);
}

/* Enqueue buf[0:n] completely (back-pressure), yielding while full; 0 if stopped meanwhile. */
static inline int push(struct stage *s, int64_t n)
{
    int64_t sent = ring_enqueue(s->out, s->buf, n);
    while (sent < n) {
        if (stopped(s))
            return 0;
        if (s->yield_idle)
            sched_yield();
        sent += ring_enqueue(s->out, s->buf + sent, n - sent);
    }
    return 1;
}

/* Allocate, mark and enqueue bursts. */
static void source_loop(struct stage *s)
{
    while (!stopped(s)) {
        int64_t n = pool_alloc(&s->pool, s->buf, s->burst);
        if (n == 0) {
            if (s->yield_idle)
                sched_yield();
            continue;
        }
        for (int64_t i = 0; i < n; i++)
            pkt(&s->pool, s->buf[i])[s->mark_off] = 0;
        if (!push(s, n))
            break;
        count(s, n);
    }
}

/* Dequeue, touch one cache line per packet, enqueue. */
static void forward_loop(struct stage *s)
{
    while (!stopped(s)) {
        int64_t n = ring_dequeue(s->in, s->buf, s->burst);
        if (n == 0) {
            if (s->yield_idle)
                sched_yield();
            continue;
        }
        for (int64_t i = 0; i < n; i++)
            pkt(&s->pool, s->buf[i])[s->mark_off] += 1;
        if (!push(s, n))
            break;
        count(s, n);
    }
}

/* Dequeue, verify the marker, free through return ring 0. */
static void sink_loop(struct stage *s)
{
    while (!stopped(s)) {
        int64_t n = ring_dequeue(s->in, s->buf, s->burst);
        if (n == 0) {
            if (s->yield_idle)
                sched_yield();
            continue;
        }
        int64_t bad = 0;
        for (int64_t i = 0; i < n; i++)
            bad += pkt(&s->pool, s->buf[i])[s->mark_off] != s->expect;
        pool_free(&s->pool, 0, s->buf, n);
        if (bad)
            s->ctl[s->line + S_ERRORS] += bad;
        count(s, n);
    }
}

/* -- setup ---------------------------------------------------------------------------------- */
static _Noreturn void die(const char *msg)
{
    fprintf(stderr, "ring_ref: %s\n", msg);
    exit(1);
}

static int64_t arg_int(const char *s, const char *what)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || end == s || v < 0) {
        fprintf(stderr, "ring_ref: bad %s: %s\n", what, s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    if (argc != 17) {
        fprintf(stderr, "usage: %s PATH ROLE INDEX STAGES BURST YIELD RING_CAPACITY MARK_OFF "
                        "POOL_CTRL POOL_FREE POOL_RET_CTRL POOL_RET_SLOTS POOL_SLOTS RINGS_CTRL RINGS_SLOTS CTL\n",
                argv[0]);
        return 2;
    }
    const char *path = argv[1], *role = argv[2];
    int64_t index = arg_int(argv[3], "index"), stages = arg_int(argv[4], "stages");
    int64_t burst = arg_int(argv[5], "burst"), yield_idle = arg_int(argv[6], "yield");
    int64_t ring_capacity = arg_int(argv[7], "ring capacity"), mark_off = arg_int(argv[8], "mark offset");
    int64_t off[8];
    for (int i = 0; i < 8; i++)
        off[i] = arg_int(argv[9 + i], "region offset");
    enum { O_POOL_CTRL, O_POOL_FREE, O_RET_CTRL, O_RET_SLOTS, O_POOL_SLOTS, O_RINGS_CTRL, O_RINGS_SLOTS, O_CTL };

    /* Map the whole segment file. */
    int fd = open(path, O_RDWR);
    if (fd < 0)
        die(strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0)
        die(strerror(errno));
    uint8_t *base = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED)
        die(strerror(errno));
    close(fd);
    for (int i = 0; i < 8; i++)
        if (off[i] >= st.st_size)
            die("region offset beyond the end of the segment");

    /* Geometry comes from the control words, like PacketPool.attach / RingTable.attach. */
    struct stage s = {0};
    struct pool *p = &s.pool;
    p->ctrl = (int64_t *)(base + off[O_POOL_CTRL]);
    if (p->ctrl[C_MAGIC] != POOL_MAGIC)
        die("no formatted packet pool at the pool.ctrl offset");
    p->free_stack = (uint32_t *)(base + off[O_POOL_FREE]);
    p->data = base + off[O_POOL_SLOTS];
    p->n_slots = p->ctrl[C_NSLOTS];
    p->slot_size = p->ctrl[C_SLOT_SIZE];
    p->n_clients = p->ctrl[C_NCLIENTS];
    p->ret_ctrl = (int64_t *)(base + off[O_RET_CTRL]);
    p->ret_slots = (uint32_t *)(base + off[O_RET_SLOTS]);
    p->ret_cap = p->ret_ctrl[CAP];
    if (off[O_POOL_SLOTS] + p->n_slots * p->slot_size > st.st_size || mark_off >= p->slot_size)
        die("pool geometry does not fit the segment");

    int64_t *rings_ctrl = (int64_t *)(base + off[O_RINGS_CTRL]);
    uint32_t *rings_slots = (uint32_t *)(base + off[O_RINGS_SLOTS]);
    int64_t cap = rings_ctrl[CAP];
    if (cap != ring_capacity || burst < 1 || burst > cap)
        die("ring capacity in the segment differs from the command line, or bad burst");
#define RING(i) ((struct ring){rings_ctrl + (i) * RING_CTRL_WORDS, rings_slots + (i) * cap})

    s.ctl = (int64_t *)(base + off[O_CTL]);
    s.line = (index + 1) * LINE;
    s.burst = burst;
    s.mark_off = mark_off;
    s.expect = stages;
    s.yield_idle = yield_idle != 0;
    s.buf = calloc((size_t)burst, sizeof(uint32_t));
    if (!s.buf)
        die("out of memory");

    void (*loop)(struct stage *);
    if (!strcmp(role, "source")) {
        s.out = RING(0);
        loop = source_loop;
    } else if (!strcmp(role, "forward")) {
        if (index < 1 || index > stages)
            die("forward index must be in 1..stages");
        s.in = RING(index - 1);
        s.out = RING(index);
        loop = forward_loop;
    } else if (!strcmp(role, "sink")) {
        s.in = RING(stages);
        loop = sink_loop;
    } else {
        die("role must be source, forward or sink");
    }

    /* Report ready, wait for go (or stop), run until stop. */
    STORE_REL(&s.ctl[s.line + S_READY], 1);
    while (!LOAD_ACQ(&s.ctl[W_GO]) && !LOAD_ACQ(&s.ctl[W_STOP]))
        usleep(1000);
    loop(&s);
    return 0;
}
