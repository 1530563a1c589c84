"""Fake ``tensorrt`` and ``pycuda`` modules for tests that run without a GPU."""
