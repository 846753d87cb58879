"""An image's end of life at scale, one program: ``python -m bench.lifecycle`` (see ``__main__``).

``fill`` (a fresh database filled fast, in a subprocess), ``processes`` (serve,
its granian worker's memory, a measured ``manage.py`` command), ``export``
(a device's export over HTTP and by ``exportimages``) and ``prune`` (``manage.py
prune`` under an open-loop upload load).
"""
