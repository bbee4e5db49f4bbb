"""Worker processes: the data path of a pipeline, pinned to CPUs.

- protocol.py: the messages between the main process and a worker (JSON
  and fds over a socketpair, in parts).
- pool.py: the main side: Worker, WorkerPool (spawn, pin, ownership,
  attach/detach on link changes, restarts, counters), parse_cpus.
- loop.py: the worker process, ``python -m memifx.workers.loop FD``
  (WorkerLoop, Attached).
- node.py: the Node contract and the registry by import path.

The node kinds and their pools live in memifx.nodes (xconnect, router,
tester); they import this package, never the other way round.
"""
