"""experiment=ssl_vs_diffusion: its config, and the study end to end at tiny sizes."""

from __future__ import annotations

import json

import pytest

from zoo.app.configs import compose_run
from zoo.app.studies import ssl_vs_diffusion
from zoo.app.train import main

TINY_MAP = ["callbacks.probe_map.levels=[0.3,0.9]", "callbacks.probe_map.draws=1"]
TINY_LEARNERS = {
    "moco_v2": [
        "method=moco",
        "data.views=mocov2_noflip",
        "callbacks=default",
        "method.queue_size=128",
        "net.width=4",
        "trainer.max_epochs=1",
    ],
    "diffusion": [
        "method=diffusion",
        "trainer.max_epochs=1",
        "callbacks=probe_map",
        *TINY_MAP,
        "net.block_out_channels=[8,16]",
        "net.norm_groups=4",
        "net.attention_head_dim=4",
    ],
    "dae": ["method=dae", "callbacks=default", "method.hidden=10", "trainer.max_epochs=1"],
}
SIZES = {"all": {"n_train": None, "repeats": 1}, "60": {"n_train": 60, "repeats": 2}}


def test_config_compares_moco_diffusion_and_the_dae_at_two_sizes() -> None:
    cfg = compose_run(["experiment=ssl_vs_diffusion"])
    study = cfg.study
    assert list(study.learners) == ["moco_v2", "moco_v3", "diffusion", "dae"]
    assert study.map_learner == "diffusion" and list(study.ssl) == ["moco_v2", "moco_v3"]
    assert dict(study.sizes["200"]) == {"n_train": 200, "repeats": 7} and study.sizes.all.n_train is None
    diffusion = compose_run(["experiment=ssl_vs_diffusion", *study.learners.diffusion])
    assert (
        diffusion.callbacks.probe_map._target_ == "callbacks.ProbeMap"
        and diffusion.callbacks.probe_map.layers is None
    )
    v3 = compose_run(["experiment=ssl_vs_diffusion", *study.learners.moco_v3])
    assert (v3.method.variant, v3.data.views) == ("v3", "mocov3_noflip")


def test_study_refuses_names_it_does_not_know() -> None:
    learners = {"moco_v2": [], "diffusion": []}
    with pytest.raises(ValueError, match="study.map_learner='jit'"):
        ssl_vs_diffusion.check_study(learners, SIZES, "jit", ["moco_v2"], [])
    with pytest.raises(ValueError, match=r"study.ssl=\['simclr'\]"):
        ssl_vs_diffusion.check_study(learners, SIZES, "diffusion", ["simclr"], [])
    with pytest.raises(ValueError, match=r"study.random_init=\['dae'\]"):
        ssl_vs_diffusion.check_study(learners, SIZES, "diffusion", ["moco_v2"], ["dae"])
    with pytest.raises(ValueError, match="study.sizes.60"):
        ssl_vs_diffusion.check_study(learners, {"60": {"n_train": 60}}, "diffusion", ["moco_v2"], [])


@pytest.mark.slow
def test_study_writes_one_table_per_size(make_config, tmp_path) -> None:
    """Two optimizer steps per learner; every row probed on the same 1,437 train / 180 test features."""
    cfg = make_config(
        "experiment=ssl_vs_diffusion",
        "study_jobs=2",
        "trainer=debug",
        "trainer.limit_train_batches=2",
        output_dir=tmp_path / "study",
    )
    cfg.study.learners = TINY_LEARNERS
    cfg.study.sizes = SIZES
    cfg.study.ssl = ["moco_v2"]
    cfg.study.draws = 1
    main(cfg)
    table = json.loads((tmp_path / "study" / "ssl_vs_diffusion.json").read_text())
    rows = {"moco_v2", "diffusion", "dae", "random_init_moco_v2", "random_init_diffusion", "raw_pixels"}
    for size in ("all", "60"):
        assert set(table[size]) == rows
        assert all(0.0 <= row[probe] <= 1.0 for row in table[size].values() for probe in ("knn", "linear"))
        assert table["cells"][size]["t"] in (0.3, 0.9)
        gap = table["gap"][size]["moco_v2-diffusion"]
        assert gap["linear"] == pytest.approx(
            table[size]["moco_v2"]["linear"] - table[size]["diffusion"]["linear"]
        )
        assert gap["linear_lo"] <= gap["linear"] <= gap["linear_hi"]
    change = table["gap"]["all-60"]["moco_v2-diffusion"]
    assert change["knn"] == pytest.approx(
        table["gap"]["all"]["moco_v2-diffusion"]["knn"] - table["gap"]["60"]["moco_v2-diffusion"]["knn"]
    )
    # The pixels do not depend on the learners' data size; a probe on them beats chance by far.
    assert (
        table["all"]["raw_pixels"] == table["60"]["raw_pixels"] and table["all"]["raw_pixels"]["linear"] > 0.8
    )
    assert (tmp_path / "study" / "all_diffusion" / "probe_map.png").is_file()
    assert "read at (block, t)" in (tmp_path / "study" / "ssl_vs_diffusion.md").read_text()
