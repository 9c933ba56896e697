"""The request core every part of tritonkit shares, and nothing else.

``interface`` declares the entry model's inputs and outputs (names, types, the settings
they carry, the coded errors); ``params`` parses one request against it; ``layout``
declares what a model repository looks like on disk. Export, the repository builders,
the entry models inside Triton, the clients, the gateway, perf, Blob and deploy all
import these three modules and no copy of them exists elsewhere.

They import the standard library and numpy only: ``tritonkit repo build`` copies them
into each repository's ``tritonkit_runtime/`` next to the engine runtime, so a served
version carries the contract it was built with (``model_repository/builders/common.py``).
"""
