"""A stand-in for the Django prototype this service replaced (a bench fixture, see README.md)."""
