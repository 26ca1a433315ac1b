# cython: language_level=3
"""A NumPy memory handler that keeps freed large blocks for the next array of the same size,
installed only for the engine's own work (tinygrad_seq.runtime.enter_engine_memory and
in_engine_memory), never for the process.

Why: a training step allocates the same big arrays every time (a Transformer's 1-4 MB
activations and gradients).  glibc maps each fresh from the kernel and unmaps it on free, so
every step page-faults all of them in again: ~5,000 faults and ~15-25% of the transformer
step in a script that did not call configure_for_speed() (whose mallopt settings would change
the allocator for the whole process, which importing a library must not do).  NumPy (>= 1.22)
takes a memory handler per context (a context variable, so per thread and per asyncio task):
arrays made while this one is current come from it, and each array is freed through the
handler that made it, wherever it dies.  So the engine sets it around its ops, its backward
sweep and its optimiser steps, and every other array in the process keeps NumPy's default.

Blocks of at least 1 MiB are kept on free, up to 256 blocks and 256 MiB in all (the oldest go
back to the C library to make room, so a size no longer used ages out), and handed out again
for a request of exactly their size; everything else is plain malloc/calloc/realloc/free.
calloc's zeros are written by memset when a kept block serves it.
"""
from cpython.pycapsule cimport PyCapsule_New
cimport numpy as cnp

cnp.import_array()


cdef extern from "numpy/arrayobject.h":
    object PyDataMem_SetHandler(object handler)   # the previous handler (a new reference)

cdef extern from *:
    """
    #include <stdlib.h>
    #include <string.h>
    #include <stdint.h>
    #include <pthread.h>

    #define TGS_MIN_BLOCK ((size_t)1 << 20)
    #define TGS_SLOTS 256
    #define TGS_CAP ((size_t)256 << 20)

    typedef struct {
        void *ctx;
        void *(*malloc)(void *ctx, size_t size);
        void *(*calloc)(void *ctx, size_t nelem, size_t elsize);
        void *(*realloc)(void *ctx, void *ptr, size_t new_size);
        void (*free)(void *ctx, void *ptr, size_t size);
    } tgs_allocator;            /* NumPy's PyDataMemAllocator */

    typedef struct {
        char name[127];
        uint8_t version;
        tgs_allocator allocator;
    } tgs_handler;              /* NumPy's PyDataMem_Handler, version 1 */

    static void *tgs_kept_blocks[TGS_SLOTS];
    static size_t tgs_kept_sizes[TGS_SLOTS];
    static int tgs_kept_count = 0;
    static size_t tgs_kept_bytes = 0;
    static pthread_mutex_t tgs_kept_lock = PTHREAD_MUTEX_INITIALIZER;

    /* Forgets kept block i, keeping the others oldest first. */
    static void tgs_forget(int i)
    {
        tgs_kept_bytes -= tgs_kept_sizes[i];
        tgs_kept_count -= 1;
        memmove(tgs_kept_blocks + i, tgs_kept_blocks + i + 1, (tgs_kept_count - i) * sizeof(void *));
        memmove(tgs_kept_sizes + i, tgs_kept_sizes + i + 1, (tgs_kept_count - i) * sizeof(size_t));
    }

    /* The newest kept block of exactly `size` bytes, or NULL. */
    static void *tgs_take(size_t size)
    {
        void *block = NULL;
        pthread_mutex_lock(&tgs_kept_lock);
        for (int i = tgs_kept_count - 1; i >= 0; --i) {
            if (tgs_kept_sizes[i] == size) {
                block = tgs_kept_blocks[i];
                tgs_forget(i);
                break;
            }
        }
        pthread_mutex_unlock(&tgs_kept_lock);
        return block;
    }

    /* Keeps the block, giving the oldest kept ones back to the C library to make room (a size
       the program stopped using ages out); returns whether it kept it. */
    static int tgs_keep(void *block, size_t size)
    {
        if (size > TGS_CAP)
            return 0;
        pthread_mutex_lock(&tgs_kept_lock);
        while (tgs_kept_count == TGS_SLOTS || tgs_kept_bytes + size > TGS_CAP) {
            free(tgs_kept_blocks[0]);
            tgs_forget(0);
        }
        tgs_kept_blocks[tgs_kept_count] = block;
        tgs_kept_sizes[tgs_kept_count] = size;
        tgs_kept_count += 1;
        tgs_kept_bytes += size;
        pthread_mutex_unlock(&tgs_kept_lock);
        return 1;
    }

    static void *tgs_malloc(void *ctx, size_t size)
    {
        void *block = size >= TGS_MIN_BLOCK ? tgs_take(size) : NULL;
        return block ? block : malloc(size);
    }

    static void *tgs_calloc(void *ctx, size_t nelem, size_t elsize)
    {
        if (elsize != 0 && nelem <= SIZE_MAX / elsize && nelem * elsize >= TGS_MIN_BLOCK) {
            void *block = tgs_take(nelem * elsize);
            if (block) {
                memset(block, 0, nelem * elsize);
                return block;
            }
        }
        return calloc(nelem, elsize);
    }

    static void *tgs_realloc(void *ctx, void *ptr, size_t new_size)
    {
        return realloc(ptr, new_size);
    }

    static void tgs_free(void *ctx, void *ptr, size_t size)
    {
        if (ptr != NULL && size >= TGS_MIN_BLOCK && tgs_keep(ptr, size))
            return;
        free(ptr);
    }

    static tgs_handler tgs_reusing_handler = {
        "tinygrad_seq_reusing", 1, {NULL, tgs_malloc, tgs_calloc, tgs_realloc, tgs_free}};

    static void tgs_release_kept(void)
    {
        pthread_mutex_lock(&tgs_kept_lock);
        for (int i = 0; i < tgs_kept_count; ++i)
            free(tgs_kept_blocks[i]);
        tgs_kept_count = 0;
        tgs_kept_bytes = 0;
        pthread_mutex_unlock(&tgs_kept_lock);
    }
    """
    void* reusing_handler_address "(&tgs_reusing_handler)"
    size_t kept_bytes_c "tgs_kept_bytes"
    int kept_count_c "tgs_kept_count"
    void release_kept_c "tgs_release_kept"() noexcept nogil

_HANDLER = PyCapsule_New(reusing_handler_address, b"mem_handler", NULL)


def use_reusing_handler():
    """Make this handler current in this context; returns the one it replaces, for restore()."""
    return PyDataMem_SetHandler(_HANDLER)


def restore(previous):
    """Make `previous` (what use_reusing_handler returned) current again."""
    PyDataMem_SetHandler(previous)


def kept():
    """(blocks, bytes) kept for reuse now."""
    return kept_count_c, kept_bytes_c


def release_kept():
    """Give every kept block back to the C library (the arrays they served are gone)."""
    release_kept_c()
