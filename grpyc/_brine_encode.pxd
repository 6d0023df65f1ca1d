# Types for the compiled build of _brine_encode.py (Cython reads this file
# beside the module; the pure-Python build ignores it): the one-pass encoder
# of small tuples gets C ints and C calls. Everything else compiles as plain
# Python.
cimport cython


@cython.locals(out=bytearray)
cdef object _dump_small(tuple container, bytes prefix)

@cython.locals(size=int, scale=cython.ulonglong)
cdef int _put_decimal(bytearray out, unsigned long long value) except -1

@cython.locals(size=Py_ssize_t, count=Py_ssize_t, digits=bytes, raw=bytes)
cdef bint _put_small(bytearray out, object value, int depth) except -1

@cython.locals(size=Py_ssize_t)
cdef bint _put_small_bytes(bytearray out, bytes raw) except -1

cdef bint _SMALL_PASS
cdef int _SMALL_DEPTH
cdef Py_ssize_t _SMALL_BYTES
