"""Bundles and datalists are found in an installed wheel's ``app/_shipped`` and in a checkout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app import resources
from app.bundles import BUNDLES, bundle_dir, default_root, installed_bundles, manifest_path
from tests.conftest import REPO_ROOT


@pytest.fixture()
def installed_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installed-like package: ``site/app/_shipped/{bundles/<name>/configs, data_manifests}``
    with no repository around it; returns the ``_shipped`` folder."""
    shipped = tmp_path / "site" / "app" / resources.SHIPPED_DIR
    for name in BUNDLES:
        (shipped / "bundles" / name / "configs").mkdir(parents=True)
        (shipped / "bundles" / name / "configs" / "metadata.json").write_text(json.dumps({"name": name}))
    (shipped / "data_manifests").mkdir()
    (shipped / "data_manifests" / "brats2018_cv5.json").write_text("{}")
    monkeypatch.setattr(resources, "package_dir", lambda: shipped.parent)
    monkeypatch.chdir(tmp_path)
    return shipped


def test_installed_layout_is_used(installed_layout: Path) -> None:
    assert resources.source_root() is None
    assert resources.resource_root() == installed_layout
    assert bundle_dir("brats_unet3d") == installed_layout / "bundles" / "brats_unet3d"
    assert manifest_path("brats2018_cv5") == installed_layout / "data_manifests" / "brats2018_cv5.json"
    assert manifest_path("brats2018_cv5.json") == manifest_path("brats2018_cv5")
    assert installed_bundles() == {n: installed_layout / "bundles" / n for n in sorted(BUNDLES)}
    assert default_root("ct_unet3d") == str(installed_layout / "bundles" / "ct_unet3d")


def test_installed_layout_keeps_configs_relative_paths(installed_layout: Path) -> None:
    """The wheel keeps the checkout's layout: ``data_manifests/`` beside ``bundles/``."""
    relative = bundle_dir("brats_unet3d") / ".." / ".." / "data_manifests" / "brats2018_cv5.json"
    assert relative.resolve() == manifest_path("brats2018_cv5").resolve()


def test_missing_resources_say_where_they_looked(installed_layout: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no shipped datalist 'nope'.*shipped: brats2018_cv5"):
        manifest_path("nope")
    (installed_layout / "bundles" / "ct_unet3d" / "configs" / "metadata.json").unlink()
    (installed_layout / "bundles" / "ct_unet3d" / "configs").rmdir()
    with pytest.raises(FileNotFoundError, match="bundle 'ct_unet3d' is registered but .*missing"):
        bundle_dir("ct_unet3d")
    assert "ct_unet3d" not in installed_bundles()
    with pytest.raises(ValueError, match="unknown bundle 'nope'"):
        bundle_dir("nope")


@pytest.mark.skipif(resources.shipped_root() is not None, reason="running from an installed wheel")
def test_checkout_uses_the_repository_folders() -> None:
    """A source checkout (editable install) has no ``app/_shipped``: the top-level folders are used."""
    assert resources.shipped_root() is None
    assert resources.source_root() == REPO_ROOT
    assert bundle_dir("brats_unet3d") == REPO_ROOT / "bundles" / "brats_unet3d"
    assert manifest_path("brats2018_shared") == REPO_ROOT / "data_manifests" / "brats2018_shared.json"
    assert set(BUNDLES) <= set(installed_bundles())


def test_default_brats_dir_without_a_repository(installed_layout: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Installed, ``../shared/data/brats2018`` is taken beside the current folder, not inside site-packages."""
    from app.data import default_brats_dir

    monkeypatch.delenv("VOLSEG_BRATS_DIR", raising=False)
    assert default_brats_dir() == (tmp_path.parent / "shared" / "data" / "brats2018").resolve()


def test_installed_from_a_wheel_the_shared_data_is_found_from_a_copied_bundle_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`python -m monai.bundle run` runs from inside a copied bundle folder, where ../shared is not
    the data: the nearest parent with a shared/data folder beside it is."""
    from app.data import cases

    monkeypatch.setattr(cases, "source_root", lambda: None)
    data = tmp_path / "shared" / "data" / "brats2018"
    data.mkdir(parents=True)
    bundle = tmp_path / "work" / "bundles" / "brats_unet3d"
    bundle.mkdir(parents=True)
    monkeypatch.chdir(bundle)
    assert cases.shared_data_dir("brats2018") == data.resolve()
    assert cases.shared_data_dir("msd_spleen") == (bundle.parent / "shared" / "data" / "msd_spleen").resolve()  # none: beside the working folder
    monkeypatch.chdir(tmp_path / "work")
    assert cases.shared_data_dir("brats2018") == data.resolve()


def test_a_bundle_folder_of_the_working_folder_is_announced_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    from app.bundles import bundle_path

    (tmp_path / "brats_unet3d" / "configs").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    with caplog.at_level("WARNING", logger="app.bundles"):  # a warning: shown with --quiet too
        for _ in range(3):  # a batch asks several times
            assert bundle_path("brats_unet3d") == Path("brats_unet3d")
    assert sum("not the shipped bundle of that name" in r.getMessage() for r in caplog.records) == 1


def test_an_unfinished_training_run_given_as_a_bundle_is_named_so(tmp_path: Path):
    from app.bundles import config_files

    run = tmp_path / "early"
    run.mkdir()
    (run / "run_config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"bundle 'early' has no config 'common.yaml': it looks like a training run that has not finished"):
        config_files(run, "inference")
    with pytest.raises(FileNotFoundError, match=r"has no configs/\*.yaml at all; is '.*empty' a bundle folder\?"):
        (tmp_path / "empty").mkdir()
        config_files(tmp_path / "empty", "inference")
