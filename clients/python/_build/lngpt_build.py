"""A PEP 517 build backend in the standard library alone, so that ``pip install ./clients/python``
works offline, with or without build isolation, on any pip that reads pyproject.toml.

Why not setuptools: with ``requires = ["setuptools"]`` pip must download it into an isolated
environment, and setuptools before 70.1 also needs the ``wheel`` package to build a wheel at all
(``--no-build-isolation`` with the setuptools 65 that Python 3.11 bundles fails with "invalid command
'bdist_wheel'"). This package is pure Python with no dependencies: a wheel is a zip file with three
metadata files, which is all this writes.
"""

import base64
import hashlib
import io
import os
import re
import tarfile
import time
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "lngpt_collector"
DIST = "lngpt_collector"  # the normalized distribution name used in file names
SUMMARY = "Client for lngpt-collector: logging handler, cost and performance records, budget check; never blocks the app"


def _version():
    with open(os.path.join(ROOT, PACKAGE, "__init__.py"), encoding="utf-8") as f:
        match = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M)
    if not match:
        raise RuntimeError("no __version__ in %s/__init__.py" % PACKAGE)
    return match.group(1)


def _metadata():
    readme = os.path.join(ROOT, "README.md")
    text = (
        "Metadata-Version: 2.1\n"
        "Name: lngpt-collector\n"
        "Version: %s\n"
        "Summary: %s\n"
        "License: MIT\n"
        "Requires-Python: >=3.8\n"
        "Classifier: Programming Language :: Python :: 3\n"
        "Classifier: Operating System :: POSIX :: Linux\n" % (_version(), SUMMARY)
    )
    if os.path.exists(readme):
        with open(readme, encoding="utf-8") as f:
            text += "Description-Content-Type: text/markdown\n\n" + f.read()
    return text


_WHEEL = "Wheel-Version: 1.0\nGenerator: lngpt_build\nRoot-Is-Purelib: true\nTag: py3-none-any\n"


def _sources():
    """(path in the archive, path on disk) of every module of the package."""
    base = os.path.join(ROOT, PACKAGE)
    for directory, dirs, files in os.walk(base):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py") or name == "py.typed":
                full = os.path.join(directory, name)
                yield os.path.relpath(full, ROOT).replace(os.sep, "/"), full


def _dist_info():
    return "%s-%s.dist-info" % (DIST, _version())


def _write_wheel(wheel_directory, entries):
    """Writes a wheel holding ``entries`` (archive path, bytes) plus the metadata; returns its name."""
    name = "%s-%s-py3-none-any.whl" % (DIST, _version())
    info = _dist_info()
    entries = list(entries) + [
        (info + "/METADATA", _metadata().encode("utf-8")),
        (info + "/WHEEL", _WHEEL.encode("ascii")),
    ]
    record = []
    stamp = time.localtime(max(time.time(), 315532800))[:6]  # zip cannot hold dates before 1980
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w", zipfile.ZIP_DEFLATED) as wheel:
        for path, data in entries:
            zinfo = zipfile.ZipInfo(path, stamp)
            zinfo.external_attr = 0o644 << 16
            zinfo.compress_type = zipfile.ZIP_DEFLATED
            wheel.writestr(zinfo, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode("ascii")
            record.append("%s,sha256=%s,%d" % (path, digest, len(data)))
        record.append(info + "/RECORD,,")
        wheel.writestr(zipfile.ZipInfo(info + "/RECORD", stamp), "\n".join(record) + "\n")
    return name


def _read(path):
    with open(path, "rb") as f:
        return f.read()


# -- the PEP 517 / PEP 660 hooks -------------------------------------------------------------------


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def get_requires_for_build_editable(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    info = os.path.join(metadata_directory, _dist_info())
    os.makedirs(info, exist_ok=True)
    with open(os.path.join(info, "METADATA"), "w", encoding="utf-8") as f:
        f.write(_metadata())
    with open(os.path.join(info, "WHEEL"), "w", encoding="ascii") as f:
        f.write(_WHEEL)
    return _dist_info()


prepare_metadata_for_build_editable = prepare_metadata_for_build_wheel


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    return _write_wheel(wheel_directory, ((path, _read(full)) for path, full in _sources()))


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    """``pip install -e``: a .pth file that puts this directory on sys.path."""
    return _write_wheel(wheel_directory, [("%s.pth" % PACKAGE, (ROOT + "\n").encode("utf-8"))])


def build_sdist(sdist_directory, config_settings=None):
    base = "%s-%s" % (DIST, _version())
    name = base + ".tar.gz"
    files = [(path, full) for path, full in _sources()]
    for extra in ("pyproject.toml", "README.md", "_build/lngpt_build.py"):
        full = os.path.join(ROOT, extra)
        if os.path.exists(full):
            files.append((extra, full))
    with tarfile.open(os.path.join(sdist_directory, name), "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for path, full in files:
            tar.add(full, arcname="%s/%s" % (base, path), recursive=False)
        pkg_info = _metadata().encode("utf-8")
        info = tarfile.TarInfo("%s/PKG-INFO" % base)
        info.size = len(pkg_info)
        info.mtime = int(time.time())
        tar.addfile(info, io.BytesIO(pkg_info))
    return name
