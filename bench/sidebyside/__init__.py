"""The prototype and this service side by side: ``python -m bench.sidebyside`` (see ``__main__``).

``servers`` (the prototype's stand-in and ours, started and given an image),
``machine`` (how busy the box is; wrk), ``download`` and ``ingest`` (the two
phases).
"""
