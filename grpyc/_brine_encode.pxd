# Types for the compiled build of _brine_encode.py (Cython reads this file
# beside the module; the pure-Python build ignores it): the one-pass encoder
# of small tuples gets C ints and C calls. Everything else compiles as plain
# Python.
cimport cython


cdef object _dump_small(tuple container, bytes prefix)

@cython.locals(end=Py_ssize_t)
cdef object _dump_small_into(bytearray out, tuple container, bytes prefix)

cdef int _make_room(bytearray out, Py_ssize_t needed) except -1

@cython.locals(size=Py_ssize_t, scale=cython.ulonglong, last=Py_ssize_t)
cdef Py_ssize_t _put_decimal(bytearray out, Py_ssize_t end, unsigned long long value) except -2

cdef Py_ssize_t _put_byte(bytearray out, Py_ssize_t end, int byte) except -2

@cython.locals(size=Py_ssize_t, count=Py_ssize_t, digits=bytes, raw=bytes, text=str)
cdef Py_ssize_t _put_small(bytearray out, Py_ssize_t end, object value, int depth) except -2

@cython.locals(size=Py_ssize_t)
cdef Py_ssize_t _put_small_bytes(bytearray out, Py_ssize_t end, bytes raw) except -2

@cython.locals(size=Py_ssize_t, byte=cython.uchar)
cdef Py_ssize_t _put_raw(bytearray out, Py_ssize_t end, bytes raw) except -2

cdef bint _SMALL_PASS
cdef int _SMALL_DEPTH
cdef Py_ssize_t _SMALL_BYTES
cdef Py_ssize_t _SMALL_ROOM
cdef Py_ssize_t _SMALL_ROOM_KEPT
cdef Py_ssize_t _BYTE_LOOP
cdef bytearray _scratch
cdef bint _scratch_busy
