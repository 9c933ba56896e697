"""Put ``tritonserver`` on PATH in the CPU image: a wrapper around the nvidia-pytriton
wheel's binary with its backend folder and environment (tritonkit.serve.binary).

    python install_tritonserver.py BACKEND_CACHE WRAPPER_PATH
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from tritonkit.serve.binary import backend_directory, find_distribution, server_environment


def main() -> None:
    cache, wrapper = Path(sys.argv[1]), Path(sys.argv[2])
    dist = find_distribution()
    backends = backend_directory(dist, cache)
    env = server_environment(dist, {"PATH": "/opt/venv/bin:/usr/local/bin:/usr/bin:/bin"})
    wrapper.write_text(
        "#!/bin/sh\n"
        f"export LD_LIBRARY_PATH={shlex.quote(env['LD_LIBRARY_PATH'])}\n"
        f"exec {shlex.quote(str(dist.binary))} --backend-directory={shlex.quote(str(backends))}"
        ' "$@"\n'
    )
    wrapper.chmod(0o755)
    # Built by root, run by the image's user: readable (and folders enterable) by all.
    for path in [cache, *cache.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o444 | (0o111 if path.is_dir() else 0))


if __name__ == "__main__":
    main()
