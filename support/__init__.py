"""What the tests and the benchmarks share: the daemon as a process, synthesised speech and
conversations, the broker and database they run against, threaded servers, the DER.

It sits beside ``tests/`` and ``bench/`` rather than in either so that neither imports the
other, and outside ``daemon/`` and ``plugins/`` so that the stenod wheel does not ship it.
"""
