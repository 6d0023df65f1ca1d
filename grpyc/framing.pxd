# Types for the compiled build of framing.py (Cython reads this file beside
# the module; the pure-Python build ignores it): the frame decoder becomes an
# extension type, its position and lengths C ints, so the per-frame path
# (`next_frame`, `has_frame`) reads its state without attribute lookups.
cimport cython

# FRAME_HEADER.size, a C constant (set by the module's own assignment).
cdef Py_ssize_t _HEADER_SIZE


cdef class FrameDecoder:
    cdef public object max_frame_size
    cdef public object max_decompressed_size
    cdef public object _data
    cdef public Py_ssize_t _pos
    cdef public Py_ssize_t _length
    cdef public bint _compressed
    cdef public object _body
    cdef public bint _lent
    cdef public object _error
    cdef public object progress

    @cython.locals(data=bytes, start=Py_ssize_t, end=Py_ssize_t, length=Py_ssize_t, flag=int)
    cpdef object next_frame(self)

    @cython.locals(available=Py_ssize_t, length=Py_ssize_t, flag=int)
    cpdef bint has_frame(self)

# Whether a compression argument needs no check (`encode_frame`, `join_small_frames`): a C call.
cdef bint _is_frame_mode(object compress)
