"""Serving bundles on Triton Inference Server (``medexport serve``) and the wire format a remote
model (``engine/remote.py``) shares with it. Importing this package loads neither pytriton nor
tritonclient: :mod:`.server` imports pytriton when it starts."""
