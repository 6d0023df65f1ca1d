"""Soak test of a grpyc server: see run.py."""
