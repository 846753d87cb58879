"""The gallery: server-rendered pages for people, over the same selectors and services."""
