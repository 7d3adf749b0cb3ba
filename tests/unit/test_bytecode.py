"""infra/bytecode.py on small zips: the bytecode a checkout's __pycache__ leaves in what Chalice
zips is replaced by bytecode compiled from the zip's own sources (unchecked-hash, /var/task paths)."""

from __future__ import annotations

import importlib.util
import marshal
import py_compile
import sys
import zipfile
from pathlib import Path

from infra import bytecode

TAG = sys.implementation.cache_tag


def stale_pyc(tmp_path: Path, source: str) -> bytes:
    """What a developer's Python wrote into chalicelib/__pycache__: timestamp-checked, their path."""
    src = tmp_path / "stale" / "m.py"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_text(source)
    pyc = src.with_suffix(".pyc")
    py_compile.compile(str(src), cfile=str(pyc), doraise=True)
    return pyc.read_bytes()


def make_zip(tmp_path: Path) -> Path:
    path = tmp_path / "deployment.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("chalicelib/m.py", "X = 2\n", compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr(f"chalicelib/__pycache__/m.{TAG}.pyc", stale_pyc(tmp_path, "X = 1\n"))
        zf.writestr(f"chalicelib/__pycache__/gone.{TAG}.pyc", stale_pyc(tmp_path, "Y = 1\n"))  # its source was deleted
        zf.writestr("app.py", "import chalicelib.m\n", compress_type=zipfile.ZIP_STORED)
        zf.writestr("vendor/data.bin", b"\x00" * 64)
    return path


def test_bytecode_copied_from_the_working_tree_is_compiled_again_from_the_zips_sources(tmp_path: Path) -> None:
    path = make_zip(tmp_path)
    with zipfile.ZipFile(path) as zf:
        before = {i.filename: (zf.read(i), i.compress_type) for i in zf.infolist() if not bytecode.is_bytecode(i.filename)}

    assert bytecode.add_bytecode(path, {bytecode.runtime()}) == 2  # app.py and chalicelib/m.py

    with zipfile.ZipFile(path) as zf:
        after = {i.filename: (zf.read(i), i.compress_type) for i in zf.infolist()}
    compiled = sorted(n for n in after if bytecode.is_bytecode(n))
    assert compiled == [f"__pycache__/app.{TAG}.pyc", f"chalicelib/__pycache__/m.{TAG}.pyc"]
    assert {n: v for n, v in after.items() if not bytecode.is_bytecode(n)} == before  # the rest as it was
    pyc = after[f"chalicelib/__pycache__/m.{TAG}.pyc"][0]
    assert pyc[:4] == importlib.util.MAGIC_NUMBER
    assert int.from_bytes(pyc[4:8], "little") == 0b01  # PEP 552 unchecked hash, not the stale timestamp one
    code = marshal.loads(pyc[16:])
    assert code.co_filename == "/var/task/chalicelib/m.py"
    namespace: dict[str, object] = {}
    exec(code, namespace)  # bytecode this test just built
    assert namespace["X"] == 2  # the zip's source, not the working tree's older one


def test_for_another_python_the_zip_ships_no_bytecode_at_all(tmp_path: Path) -> None:
    """Bytecode of another minor version would be ignored by the functions' interpreter: none is added,
    and the working tree's goes too."""
    path = make_zip(tmp_path)
    assert bytecode.add_bytecode(path, {"python3.9"}) == 0
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == ["app.py", "chalicelib/m.py", "vendor/data.bin"]


def test_a_zip_without_bytecode_is_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "plain.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("app.py", "pass\n")
    stamp = path.stat().st_mtime_ns
    assert bytecode.drop_bytecode(path) == 0
    assert path.stat().st_mtime_ns == stamp
