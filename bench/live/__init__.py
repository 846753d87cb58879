"""Live push under load, one program: ``python -m bench.live`` (see ``__main__``).

``__main__`` (the options and the order of the measurements), ``server`` (the
``manage.py serve`` measured and what is read of it), ``clients`` (the watcher
process: every event stream and Observe registration), ``measure`` (opening,
memory, latency) and ``rates`` (wrk with the clients open and not).
"""
