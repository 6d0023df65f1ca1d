# Types for the compiled build of boxing.py (Cython reads this file beside
# the module; the pure-Python build ignores it): the tables and the boxer
# become extension types, so `box` and `unbox` reach their connection, their
# tables and each other through C fields and C calls, not attribute lookups.
cimport cython


cdef class ObjectTable:
    cdef public dict _entries
    cdef public object _lock
    cdef public object max_objects

    cpdef object add(self, object obj)
    cpdef object get(self, object id_pack)


cdef tuple _key(object id_pack)


cdef class ProxyTable:
    cdef public dict _proxies
    cdef public object _classes
    cdef public object _lock
    cdef public object max_classes

    cpdef object proxy_for(self, object conn, tuple id_pack, object unresolved=*)
    cpdef object known_class(self, tuple id_pack)


cdef class Boxer:
    cdef public object _conn
    cdef public list _releases
    cdef public ObjectTable objects
    cdef public ProxyTable proxies

    cpdef tuple box(self, object obj)
    cpdef object unbox(self, object package, object unresolved=*)
