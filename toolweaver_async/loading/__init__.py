"""One loader per key: single-flight within a process, a store lock across processes, the
``get_or_set`` engine and the ``@cached`` decorator built on it."""
