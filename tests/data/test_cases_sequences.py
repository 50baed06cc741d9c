"""Cases with missing sequences, BraTS 2023+ names, and loose files matched to sequences by name."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from app.constants import MODALITIES
from app.data.cases import find_case, split_sequence_name
from app.data.verify import InputError
from app.inference import resolve_inputs
from tests.conftest import case_files

_BRATS23 = {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f"}


@pytest.fixture()
def case(phantom_root: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "Phantom_000"
    shutil.copytree(phantom_root / "Phantom_000", dst)
    return dst


@pytest.mark.parametrize(("name", "expected"), [
    ("Brats18_2013_11_1_t1ce.nii.gz", ("Brats18_2013_11_1", "t1ce")),
    ("Brats18_2013_11_1_t1.nii.gz", ("Brats18_2013_11_1", "t1")),
    ("BraTS2021_00000_flair.nii.gz", ("BraTS2021_00000", "flair")),
    ("BraTS-GLI-00000-000-t1n.nii.gz", ("BraTS-GLI-00000-000", "t1")),
    ("BraTS-GLI-00000-000-t1c.nrrd", ("BraTS-GLI-00000-000", "t1ce")),
    ("BraTS-GLI-00000-000-t2w.mha", ("BraTS-GLI-00000-000", "t2")),
    ("BraTS-GLI-00000-000-t2f.nii", ("BraTS-GLI-00000-000", "flair")),
    ("case_SEG.nii.gz", ("case", "seg")),
    ("FLAIR.nii.gz", (None, "flair")),
    ("scan.nii.gz", None),
    ("t1ce_scan.nii.gz", None),
])
def test_split_sequence_name(name: str, expected):
    assert split_sequence_name(name) == expected


@pytest.mark.parametrize("absent", list(MODALITIES))
def test_every_single_missing_sequence_is_a_case_with_none_in_place(case: Path, absent: str):
    (case / f"Phantom_000_{absent}.nii.gz").unlink()
    [(case_id, images)] = resolve_inputs([case])
    assert case_id == "Phantom_000"
    assert [p is None for p in images] == [m == absent for m in MODALITIES]
    assert find_case(case, allow_missing=True).missing == (absent,)
    with pytest.raises(FileNotFoundError, match=f"found 3: missing {absent}"):
        find_case(case)  # strict by default (training and evaluation data)
    with pytest.raises(InputError, match=f"missing {absent}"):
        resolve_inputs([case], allow_missing=False)


def test_only_flair_and_t1ce(case: Path):
    for m in ("t1", "t2"):
        (case / f"Phantom_000_{m}.nii.gz").unlink()
    [(_, images)] = resolve_inputs([case])
    assert [p.name if p else None for p in images] == [None, "Phantom_000_t1ce.nii.gz", None, "Phantom_000_flair.nii.gz"]


def test_case_without_any_sequence_is_refused(case: Path):
    for f in case_files(case):
        f.unlink()
    with pytest.raises(InputError, match=r"at least one of the 4 modalities \(t1, t1ce, t2, flair; any non-empty subset is segmented\).* found none"):
        resolve_inputs([case])


def test_brats2023_names_in_a_case_folder(case: Path, tmp_path: Path):
    new = tmp_path / "BraTS-GLI-00001-000"
    new.mkdir()
    for m, f in zip(MODALITIES, case_files(case)):
        shutil.copy(f, new / f"{new.name}-{_BRATS23[m]}.nii.gz")
    [(case_id, images)] = resolve_inputs([new])
    assert case_id == new.name
    assert [p.name for p in images] == [f"{new.name}-{_BRATS23[m]}.nii.gz" for m in MODALITIES]


def test_loose_files_in_any_order_map_to_the_same_channels(case: Path):
    files = case_files(case)
    in_order = resolve_inputs(files)
    shuffled = resolve_inputs([files[3], files[1], files[0], files[2]])
    assert in_order == shuffled == [("Phantom_000", files)]


def test_loose_files_of_two_cases_are_grouped_by_case(phantom_root: Path):
    a, b = case_files(phantom_root / "Phantom_000"), case_files(phantom_root / "Phantom_001")
    cases = resolve_inputs([a[0], b[3], a[3], b[1]])
    assert cases == [("Phantom_000", [a[0], None, None, a[3]]), ("Phantom_001", [None, b[1], None, b[3]])]


def test_unnamed_loose_files_need_sequences(case: Path, tmp_path: Path):
    flair, t1ce = tmp_path / "scan_a.nii.gz", tmp_path / "scan_b.nii.gz"
    shutil.copy(case / "Phantom_000_flair.nii.gz", flair)
    shutil.copy(case / "Phantom_000_t1ce.nii.gz", t1ce)
    with pytest.raises(InputError, match=r"cannot tell which sequence.*scan_a.*--sequences"):
        resolve_inputs([flair, t1ce])
    [(_, images)] = resolve_inputs([flair, t1ce], sequences=["FLAIR", "t1c"])
    assert images == [None, t1ce, None, flair]
    with pytest.raises(InputError, match="one of t1, t1ce, t2, flair for each of the 2"):
        resolve_inputs([flair, t1ce], sequences=["flair"])


def test_two_files_for_one_sequence_are_refused(case: Path, tmp_path: Path):
    other = tmp_path / "Phantom_000_flair.nrrd"
    other.write_bytes(b"x")
    with pytest.raises(InputError, match="two files for flair"):
        resolve_inputs([case / "Phantom_000_flair.nii.gz", other])


def test_load_volumed_zero_fills_missing_channels(case: Path):
    import torch

    from app.io import LoadVolumed

    files = case_files(case)
    full = LoadVolumed("image", ensure_channel_first=True)({"image": [str(f) for f in files]})["image"]
    part = LoadVolumed("image", ensure_channel_first=True)({"image": [None, str(files[1]), None, str(files[3])]})["image"]
    assert part.shape == full.shape
    assert torch.equal(part[1], full[1]) and torch.equal(part[3], full[3])
    assert part[0].abs().sum() == 0 and part[2].abs().sum() == 0
    assert part.meta["missing_channels"] == [0, 2]
    assert torch.allclose(part.affine, full.affine)
    with pytest.raises(ValueError, match="every channel is missing"):
        LoadVolumed("image", ensure_channel_first=True)({"image": [None, None]})


def test_a_folder_of_bare_sequence_names_is_a_case_as_its_loose_files_are(case: Path, tmp_path: Path):
    """FLAIR.nii.gz, T1.nii.gz, T1c.nii.gz and T2.nii.gz were matched as loose files but refused as a folder."""
    bare = tmp_path / "data" / "PatientX"
    bare.mkdir(parents=True)
    for key, name in zip(MODALITIES, ("T1", "T1c", "T2", "FLAIR")):
        shutil.copy(case / f"Phantom_000_{key}.nii.gz", bare / f"{name}.nii.gz")
    found = find_case(bare)
    assert found.case_id == "PatientX" and [p.name for p in found.images] == ["T1.nii.gz", "T1c.nii.gz", "T2.nii.gz", "FLAIR.nii.gz"]
    assert resolve_inputs([bare]) == resolve_inputs([tmp_path / "data"]) == [("PatientX", list(found.images))]  # also in a dataset folder
    shutil.copy(case / "Phantom_000_t2.nii.gz", bare / "PatientX_t2.nii.gz")  # a file named for the case wins over a bare one
    assert find_case(bare).images[2].name == "PatientX_t2.nii.gz"


def test_sequences_keep_a_name_key_that_is_not_the_declared_sequence_in_the_case_id(case: Path, tmp_path: Path):
    """A spinal-cord t2_t2.nii.gz given as FLAIR was case 't2' (its '_t2' dropped as if it were the T2)."""
    odd = shutil.copy(case / "Phantom_000_t2.nii.gz", tmp_path / "t2_t2.nii.gz")
    assert [c for c, _ in resolve_inputs([odd], sequences=["flair"])] == ["t2_t2"]
    assert [c for c, _ in resolve_inputs([odd], sequences=["t2"])] == ["t2"]
    assert [c for c, _ in resolve_inputs([case / "Phantom_000_t1.nii.gz"], sequences=["t1"])] == ["Phantom_000"]


def test_sequences_that_swap_named_files_or_name_a_case_folder_are_refused(case: Path, caplog: pytest.LogCaptureFixture):
    """X_t1ce.nii.gz X_flair.nii.gz --sequences flair,t1ce fed FLAIR as T1ce without a word (Dice 0.65 / 0.43 /
    0.35 against 0.83 / 0.75 / 0.83); with a case folder, --sequences was ignored."""
    t1ce, flair = case / "Phantom_000_t1ce.nii.gz", case / "Phantom_000_flair.nii.gz"
    with pytest.raises(InputError, match=r"--sequences disagrees with the file names: 'Phantom_000_t1ce.nii.gz' is named t1ce, given as flair; "
                                         r".*in the order of the files: t1ce,flair\)"):
        resolve_inputs([t1ce, flair], sequences=["flair", "t1ce"])
    assert resolve_inputs([t1ce, flair], sequences=["t1ce", "flair"]) == [("Phantom_000", [None, t1ce, None, flair])]
    with pytest.raises(InputError, match=r"a case folder \(.*\) is read by its files' names: leave --sequences out"):
        resolve_inputs([case], sequences=["flair"])
    resolve_inputs([case / "Phantom_000_t2.nii.gz"], sequences=["flair"])  # one T2 read as FLAIR on purpose: taken, with a warning
    assert "'Phantom_000_t2.nii.gz' is named t2, given as flair" in caplog.text


def test_bids_and_tcia_named_files_are_one_case(case: Path, tmp_path: Path):
    """sub-01_ce-gd_T1w was the T1 of a second case 'sub-01_ce-gd', and P002_T2-FLAIR the FLAIR of a case 'P002_T2'."""
    for names in (("sub-01_T1w", "sub-01_ce-gd_T1w", "sub-01_T2w", "sub-01_FLAIR"), ("P002_T1", "P002_T1Gd", "P002_T2", "P002_T2-FLAIR")):
        folder = tmp_path / names[0].split("_")[0] / "anat"
        folder.mkdir(parents=True)
        files = [shutil.copy(case / f"Phantom_000_{m}.nii.gz", folder / f"{n}.nii.gz") for n, m in zip(names, MODALITIES)]
        expected = [(names[0].split("_")[0], [Path(f) for f in files])]
        assert resolve_inputs(files[::-1]) == expected
        assert resolve_inputs([folder]) == expected  # a BIDS anat/ folder is the case its files name, not 'anat'
