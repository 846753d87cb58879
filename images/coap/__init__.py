"""The CoAP front end (RFC 7252 over UDP, API.md §5).

``resources`` holds thin resources over the same services, selectors,
discovery and serializers as HTTP; ``blockwise`` does RFC 7959 transfers with
bounded memory; ``errors`` maps domain errors to response codes; ``security``
is token mode's OSCORE (RFC 8613): provisioned contexts, their bindings to
devices and readers, and who may do what; ``server`` builds the site and runs
it (``manage.py runcoap``).
"""
