"""Work outside a request, one module per job and one command each (API.md §10, §11, §14, §16).

- :mod:`.optimizer`: the shared backlog of images whose served bytes may
  still shrink (and, until "final bytes first" splits it, of JPEGs waiting
  to be compacted at rest): ``optimize``, and the workers ``serve`` runs;
- :mod:`.retention`: deleting by age, count and bytes: ``prune``, and
  ``serve`` every few minutes; :mod:`.expiry` says which images go,
  :mod:`.policies` which bounds govern each device (``policy``, API.md §16);
- :mod:`.tarball`: a device's images as one tar file and back:
  ``exportimages``, ``importimages``, ``GET /devices/{id}/export``.
"""
