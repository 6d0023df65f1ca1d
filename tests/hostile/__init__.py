"""Tests that attack a live grpyc server: raw bytes, overload, slow peers."""
