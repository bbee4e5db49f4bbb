"""memifx agent: a declarative configuration (a file or etcd) applied live to
a Dataplane by difference, with an HTTP API for state, health and metrics.

config.py  the document format and its validation
plan.py    applied vs desired -> ordered operations
apply.py   the operations as Dataplane calls (the one adapter to memifx.runtime)
store.py   document sources: a file (poll + SIGHUP), etcd (watch + resync)
http.py    GET /config /state /healthz /readyz /metrics
main.py    the Agent (desired/applied/errors) and the process loop
"""
