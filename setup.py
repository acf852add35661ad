"""Only the optional C extension; everything else is in pyproject.toml.

`optional=True`: where it does not compile (no compiler, not Linux), the install goes on
and the UDP server uses its pure-Python loop (clusterset/server/udp.py).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "clusterset.server._fastudp",
            ["src/clusterset/server/_fastudp.c"],
            optional=True,
        )
    ]
)
