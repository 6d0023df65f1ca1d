# Types for the compiled build of _incompressible.py (Cython reads this file
# beside the module; the pure-Python build ignores it): the sample is a typed
# memoryview and the loops run over C ints.
cimport cython

cdef double _MARGIN_BITS
cdef Py_ssize_t _SLOT_MASK, _PROBES_PER_BYTE
cdef double[:] _C_LOG2_C

@cython.locals(length=Py_ssize_t, data="const unsigned char[:]", bits_allowed=double)
cpdef bint cannot_shrink(object sample, double fraction) except? -1

@cython.locals(slots="unsigned int[:]", probes_left=Py_ssize_t, sequence="unsigned int",
               key="unsigned int", slot=Py_ssize_t, held="unsigned int", index=Py_ssize_t)
cdef bint _no_sequence_twice(const unsigned char[:] data, Py_ssize_t length) except? -1

@cython.locals(counts="unsigned int[:]", total=double, index=Py_ssize_t, byte=Py_ssize_t)
cdef double _entropy_bits(const unsigned char[:] data, Py_ssize_t length) except? -1.0
