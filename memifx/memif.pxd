# C declarations of csrc/memif.h: the shared-memory layout, declared once.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from "memif.h" nogil:
    const uint32_t MEMIF_COOKIE
    const uint32_t MEMIF_VERSION
    const uint32_t MEMIF_RING_HDR_SIZE
    const uint32_t MEMIF_DESC_SIZE
    const uint16_t MEMIF_RING_FLAG_MASK_INT
    const uint16_t MEMIF_DESC_FLAG_NEXT
    const uint32_t MEMIF_CACHELINE
    const uint32_t MEMIF_MAX_LOG2_RING_SIZE
    const uint32_t MEMIF_RING_COOKIE_OFFSET
    const uint32_t MEMIF_RING_FLAGS_OFFSET
    const uint32_t MEMIF_RING_HEAD_OFFSET
    const uint32_t MEMIF_RING_TAIL_OFFSET
    const uint32_t MEMIF_PAGE_SIZE
    # an enum, not a const: Cython sizes arrays with it (memory.pxd)
    enum: MEMIF_MAX_REGIONS

    ctypedef struct memif_desc_t:
        uint16_t flags
        uint16_t region
        uint32_t length
        uint32_t offset
        uint32_t metadata

    ctypedef struct memif_ring_t:
        uint32_t cookie
        uint16_t flags
        uint16_t head
        uint16_t tail
        memif_desc_t desc[1]

    uint64_t memif_ring_bytes(uint32_t log2_size)
    uint64_t memif_ring_stride(uint32_t log2_size)
    uint64_t memif_desc_offset(uint32_t slot)
    uint64_t memif_slave_ring_offset(uint32_t i, uint32_t log2_size)
    uint64_t memif_slave_buffers_at(uint32_t n_rings, uint32_t log2_size)
    uint16_t memif_load_acquire(const uint16_t *p)
    void memif_store_release(uint16_t *p, uint16_t v)
    uint16_t memif_load_relaxed(const uint16_t *p)
    void memif_store_relaxed(uint16_t *p, uint16_t v)
    void memif_fence()
    memif_desc_t memif_desc_read(const memif_desc_t *d)
    uint16_t memif_peer_load16(const void *p)
    uint32_t memif_peer_load32(const void *p)
    uint64_t memif_peer_load64(const void *p)
    uint16_t memif_ring_flags(const memif_ring_t *r)
    void memif_set_ring_flags(memif_ring_t *r, uint16_t v)
