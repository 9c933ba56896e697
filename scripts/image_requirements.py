"""Write each image's requirements from the tritonkit wheel's own metadata:

    python scripts/image_requirements.py WHEEL OUT_DIR

``OUT_DIR/client.txt`` is the base install (the client image), ``OUT_DIR/cpu.txt`` adds the
serve, azure and gateway extras (the CPU image) and the pins of ``tritonkit/versions.py``
(the GPU image's onnxruntime version). Markers other than ``extra`` are decided
here, for this Python: the images use the same Debian Python 3.11 as the build host.
"""

from __future__ import annotations

import sys
import zipfile
from email.parser import HeaderParser
from pathlib import Path

from packaging.requirements import Requirement

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tritonkit"))
from versions import IMAGE_REQUIREMENTS  # stdlib only: no package needed

IMAGES = {"client": ("",), "cpu": ("", "serve", "azure", "gateway")}


def requirements(wheel: Path) -> list[Requirement]:
    """The wheel's ``Requires-Dist`` headers (not the description below them)."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        headers = HeaderParser().parsestr(z.read(meta).decode())
    return [Requirement(value) for value in headers.get_all("Requires-Dist") or []]


def main() -> None:
    wheel, out = Path(sys.argv[1]), Path(sys.argv[2])
    found = requirements(wheel)
    for image, extras in IMAGES.items():
        chosen: dict[str, None] = {}
        for req in found:
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras):
                bare = Requirement(str(req))
                bare.marker = None
                chosen[str(bare)] = None
        for pin in IMAGE_REQUIREMENTS.get(image, ()):
            chosen[pin] = None
        (out / f"{image}.txt").write_text("".join(f"{r}\n" for r in chosen))


if __name__ == "__main__":
    main()
