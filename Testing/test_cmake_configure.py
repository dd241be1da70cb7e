"""The extension's CMake configuration, run for real: ``cmake -S <copy of the extension> -B <build>`` against
stand-ins of Slicer's build tree (Testing/SlicerStandIn: ``find_package(Slicer)``, ``slicerMacroBuildScriptedModule``,
CTK's ``ctkMacroCompilePythonScript``, ``slicer_add_python_unittest`` and the extension packaging step), which stop
where the real macros of Slicer 5.6-5.10 stop and record what would be installed and registered as tests.

Checks: every file of the modules, of ``QSMLogic`` (but not its benchmarks) and of ``SusceptibilityMRILib`` is
installed into qt-scripted-modules, files added later included; the installed tree imports; the extension's icon,
screenshot, README and LICENSE exist; and the configuration stops on an empty script list (the relative glob this
project once had), on a missing module resource and on a missing LICENSE.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import Dict, List, Tuple

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STANDIN = os.path.join(ROOT, "Testing", "SlicerStandIn")
SCRIPTED = "lib/Slicer-5.10/qt-scripted-modules"
RAW_URL = "https://raw.githubusercontent.com/SusceptibilityMRI/SusceptibilityMRI/main/"
#: What the extension's CMake files read (copied for each configuration, so that a test may change its copy).
TREE = ("CMakeLists.txt", "README.md", "LICENSE", "Resources", "SusceptibilityMRI", "QSMLogic")
#: Files a test adds to its copy: they must be installed without any CMake edit.
ADDED = ("SusceptibilityMRI/SusceptibilityMRILib/added_by_another_branch.py",
         "QSMLogic/inversion/added_by_another_branch.py")


def cmake_executable() -> str:
    """cmake of the test environment (PyPI's ``cmake`` package, in the test extra) or on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "cmake")
    found = here if os.path.isfile(here) else shutil.which("cmake")
    assert found, "cmake not found: pip install cmake (it is in the test extra of pyproject.toml)"
    return found


def copy_tree(dest: str) -> str:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    os.makedirs(dest)
    for name in TREE:
        src = os.path.join(ROOT, name)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(dest, name), ignore=ignore)
        else:
            shutil.copy2(src, os.path.join(dest, name))
    return dest


def configure(source: str, build: str) -> Tuple[subprocess.CompletedProcess, List[Tuple[str, str]]]:
    """Run the configuration; return the process and the manifest's (kind, value) lines."""
    res = subprocess.run([cmake_executable(), "-S", source, "-B", build, f"-DSlicer_DIR={STANDIN}"],
                         capture_output=True, text=True, timeout=120)
    manifest = os.path.join(build, "standin-manifest.txt")
    lines = []
    if os.path.isfile(manifest):
        with open(manifest, encoding="utf-8") as f:
            lines = [tuple(line.rstrip("\n").split(" ", 1)) for line in f if line.strip()]
    return res, lines


def module_folders(source: str) -> List[str]:
    """The scripted modules: folders SusceptibilityMRI/<name>/ holding <name>.py."""
    base = os.path.join(source, "SusceptibilityMRI")
    return sorted(d for d in os.listdir(base) if os.path.isfile(os.path.join(base, d, f"{d}.py")))


def files_under(base: str, skip_dirs: Tuple[str, ...] = ()) -> List[str]:
    """Files below ``base`` (relative, '/'-separated), without bytecode and ``skip_dirs``."""
    out = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        rel_dir = os.path.relpath(dirpath, base).replace(os.sep, "/")
        if any(rel_dir == d or rel_dir.startswith(d + "/") for d in skip_dirs):
            continue
        out += [f"{rel_dir}/{f}".lstrip("./") if rel_dir != "." else f for f in filenames
                if not f.endswith((".pyc", ".pyo"))]
    return sorted(out)


@pytest.fixture(scope="module")
def configured(tmp_path_factory) -> Dict[str, object]:
    """The extension configured once, with a file added to SusceptibilityMRILib and to QSMLogic."""
    base = tmp_path_factory.mktemp("configure")
    source = copy_tree(str(base / "src"))
    for rel in ADDED:
        with open(os.path.join(source, rel), "w", encoding="utf-8") as f:
            f.write('"""A file the CMake lists never named."""\n')
    res, lines = configure(source, str(base / "build"))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    installed = {}
    for kind, value in lines:
        if kind == "install":
            dest, src = value.split(" ", 1)
            installed[dest] = src
    return {"source": source, "lines": lines, "installed": installed, "base": base}


def test_every_file_is_installed_into_qt_scripted_modules(configured):
    source, installed = configured["source"], configured["installed"]
    expected = {}
    for module in module_folders(source):
        folder = os.path.join(source, "SusceptibilityMRI", module)
        for rel in files_under(folder):
            if rel != "CMakeLists.txt":
                expected[f"{SCRIPTED}/{rel}"] = os.path.join(folder, rel)
    lib = os.path.join(source, "SusceptibilityMRI", "SusceptibilityMRILib")
    for rel in files_under(lib):
        if rel != "CMakeLists.txt":
            expected[f"{SCRIPTED}/SusceptibilityMRILib/{rel}"] = os.path.join(lib, rel)
    qsmlogic = os.path.join(source, "QSMLogic")
    for rel in files_under(qsmlogic, skip_dirs=("bench",)):
        expected[f"{SCRIPTED}/QSMLogic/{rel}"] = os.path.join(qsmlogic, rel)
    atlases = os.path.join(source, "Resources", "Atlases")
    for rel in files_under(atlases):
        expected[f"{SCRIPTED}/Resources/Atlases/{rel}"] = os.path.join(atlases, rel)
    assert len(expected) > 60
    missing = sorted(set(expected) - set(installed))
    assert not missing, f"not installed (a new kind of data file needs a pattern in QSMLogicPackage): {missing}"
    # anything else installed comes from the extension-wide Resources/ (e.g. data the modules share)
    extra = sorted(d for d in set(installed) - set(expected)
                   if not os.path.realpath(installed[d]).startswith(os.path.realpath(os.path.join(source, "Resources"))
                                                                     + os.sep))
    assert not extra, f"installed but not expected: {extra}"
    for dest, src in installed.items():
        assert os.path.realpath(src) == os.path.realpath(expected[dest]), dest
    # files other branches add are picked up by the absolute-prefix globs
    assert f"{SCRIPTED}/SusceptibilityMRILib/added_by_another_branch.py" in installed
    assert f"{SCRIPTED}/QSMLogic/inversion/added_by_another_branch.py" in installed
    assert f"{SCRIPTED}/SusceptibilityMRILib/requirements.txt" in installed
    assert not any("/bench/" in d for d in installed), "the benchmarks are not part of the extension"


def test_modules_tests_and_extension_description(configured):
    lines = configured["lines"]
    modules = module_folders(configured["source"])
    assert {"QSM", "SWI"} <= set(modules)
    assert sorted(v for k, v in lines if k == "module") == modules
    tests = dict(v.split(" ", 1) for k, v in lines if k == "test")
    assert sorted(tests) == [f"py_{m}" for m in modules]
    meta: Dict[str, List[str]] = {}
    for kind, value in lines:
        if kind.startswith("EXTENSION_") or kind == "extension_name":
            meta.setdefault(kind, []).append(value)
    assert meta["extension_name"] == ["SusceptibilityMRI"]
    assert meta["EXTENSION_CATEGORY"] == ["Quantification"] and meta["EXTENSION_DEPENDS"] == ["NA"]
    source = configured["source"]
    assert meta["EXTENSION_LICENSE_FILE"] == [os.path.join(source, "LICENSE")]
    assert meta["EXTENSION_README_FILE"] == [os.path.join(source, "README.md")]
    # the icon and screenshot URLs name files of this repository: a 128x128 PNG and PNG screenshots
    (icon_url,) = meta["EXTENSION_ICONURL"]
    assert icon_url == RAW_URL + "Resources/Icons/SusceptibilityMRI.png"
    with open(os.path.join(source, icon_url[len(RAW_URL):]), "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")) == (128, 128)
    assert meta["EXTENSION_SCREENSHOTURLS"]
    for url in meta["EXTENSION_SCREENSHOTURLS"]:
        assert url.startswith(RAW_URL + "Resources/Screenshots/"), url
        with open(os.path.join(source, url[len(RAW_URL):]), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", url


def test_installed_tree_imports_the_library_and_finds_the_requirements(configured):
    """Lay the recorded files out as Slicer installs them and import from there (nothing from the checkout)."""
    install = configured["base"] / "install"
    for dest, src in configured["installed"].items():
        os.makedirs(os.path.dirname(install / dest), exist_ok=True)
        shutil.copy2(src, install / dest)
    scripted = str(install / SCRIPTED)
    code = (f"import sys; sys.path.insert(0, {scripted!r}); import SusceptibilityMRILib, QSMLogic; "
            "from SusceptibilityMRILib import dependencies, mrml_adapter, param_forms, runner; "
            "from importlib.machinery import PathFinder; print(QSMLogic.__file__); "
            "print(dependencies.requirements_path()); print(PathFinder.find_spec('bench', QSMLogic.__path__))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-c", code], cwd=str(install), env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    lib_file, requirements, bench = res.stdout.strip().splitlines()
    assert lib_file == os.path.join(scripted, "QSMLogic", "__init__.py")
    assert requirements == os.path.join(scripted, "SusceptibilityMRILib", "requirements.txt")
    assert os.path.isfile(requirements) and bench == "None"
    assert ROOT not in res.stdout


def failing_configuration(tmp_path, change) -> str:
    source = copy_tree(str(tmp_path / "src"))
    change(source)
    res, _ = configure(source, str(tmp_path / "build"))
    assert res.returncode != 0, "the configuration should have stopped"
    return " ".join(res.stderr.split())  # CMake wraps long messages


def test_relative_glob_patterns_stop_the_configuration(tmp_path):
    """The patterns this project once had (relative to the repository root, so resolved against the folder of the
    CMakeLists.txt and matching nothing) leave SCRIPTS empty: CTK stops."""
    def relative_patterns(source: str) -> None:
        path = os.path.join(source, "SusceptibilityMRI", "QSMLogicPackage", "CMakeLists.txt")
        with open(path, encoding="utf-8") as f:
            text = f.read()
        old = text.replace("${QSMLogic_PACKAGE_DIR}/*.", "QSMLogic/*.")
        assert old.count("QSMLogic/*.") == 6
        with open(path, "w", encoding="utf-8") as f:
            f.write(old)

    assert "SCRIPTS is mandatory" in failing_configuration(tmp_path, relative_patterns)


def test_missing_module_resource_stops_the_configuration(tmp_path):
    stderr = failing_configuration(tmp_path, lambda s: os.remove(
        os.path.join(s, "SusceptibilityMRI", "SWI", "Resources", "Icons", "SWI.png")))
    assert "nonexistent file or directory 'Resources/Icons/SWI.png'" in stderr


def test_missing_license_stops_the_configuration(tmp_path):
    stderr = failing_configuration(tmp_path, lambda s: os.remove(os.path.join(s, "LICENSE")))
    assert "EXTENSION_LICENSE_FILE points to an inexistent file" in stderr
