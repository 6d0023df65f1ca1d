# Types for the compiled build of _brine_small.py (Cython reads this file
# beside the module; the pure-Python build ignores it): C ints for positions,
# sizes and tags, C calls between the functions, C globals for the constants.
cimport cython


cdef class _SmallReader:
    cdef public bytes data
    cdef public Py_ssize_t pos, end, cost
    cdef public int max_depth


@cython.locals(depth=int, reader=_SmallReader, value=object)
cpdef object decode_small(bytes data, Py_ssize_t start, int max_depth)

@cython.locals(data=bytes, pos=Py_ssize_t, tag=int)
cdef object _small_value(_SmallReader reader, int depth)

@cython.locals(count=Py_ssize_t, first=object, second=object, item=object, items=list)
cdef object _small_tuple(_SmallReader reader, int tag, Py_ssize_t pos, int depth)

@cython.locals(data=bytes, size=Py_ssize_t, end=Py_ssize_t, digits=bytes, value=object)
cdef object _small_int(_SmallReader reader, Py_ssize_t pos)

@cython.locals(data=bytes, tag=int, size=Py_ssize_t, end=Py_ssize_t, text=str)
cdef object _small_str(_SmallReader reader, Py_ssize_t pos)

@cython.locals(data=bytes, size=Py_ssize_t, end=Py_ssize_t)
cdef object _small_bytes(_SmallReader reader, int tag, Py_ssize_t pos)

@cython.locals(data=bytes, size=Py_ssize_t)
cdef Py_ssize_t _small_size_l4(_SmallReader reader, Py_ssize_t pos)

@cython.locals(negative=cython.bint, value=cython.longlong, digit=cython.int)
cdef object _small_int_digits(bytes data, Py_ssize_t pos, Py_ssize_t end)

# Module constants the compiled decoder reads as C globals.
cdef object _SMALL_SKIP
cdef tuple _S_IMM_VALUES, _S_SINGLETONS
cdef Py_ssize_t _SMALL_INT_DIGITS, _S_LONG_INT_DIGITS
cdef int _S_TUPLE_1, _S_TUPLE_L1, _S_IMM_FIRST
cdef Py_ssize_t _S_TUPLE_SIZE, _S_SLOT_SIZE, _S_BYTES_SIZE
cdef tuple _S_INT_SIZES
cdef Py_ssize_t _S_PROGRESS_EVERY
