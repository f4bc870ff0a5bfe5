"""The gallery's quick pass (``python -m zoo.app.gallery --quick``) writes every image and its README."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from zoo.app.gallery import main

IMAGES = {
    "diffusion.png": 256,
    "jit.png": 256,
    "lightningdit.png": 256,
    "repa.png": 256,
    "vae.png": 256,
    "jit_toy.png": 300,
    "dae_rows.png": 150,
    "repa_fd.png": 200,
    "probe_map.png": 200,
    "rep_dynamics_bands.png": 200,
}
"""Every image of the gallery and the least its shorter side may be, in pixels."""

MAX_BYTES = 150_000


def test_the_quick_gallery_writes_every_image_small_and_lists_it(tmp_path: Path) -> None:
    out = tmp_path / "gallery"
    main(["--quick", "--out", str(out), "--runs", str(tmp_path / "runs")])
    assert {path.name for path in out.glob("*.png")} == set(IMAGES)
    readme = (out / "README.md").read_text()
    for name, min_side in IMAGES.items():
        path = out / name
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert min(image.size) >= min_side, f"{name} is {image.size} px, under {min_side}"
        assert path.stat().st_size < MAX_BYTES, f"{name} is {path.stat().st_size} bytes"
        assert f"![{name}]({name})" in readme
