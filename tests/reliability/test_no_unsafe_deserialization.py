"""User data (videos, records, CSVs, configs, requests) is parsed as protobufs, images, video containers, CSV, JSON
and safe YAML only: no project module may load anything with a deserializer that can run code.

A static scan of the project's own source (libraries such as Beam pickle their own pipeline internals; that is
not user data). Any import of pickle-like modules fails, as do ``yaml.load``/``yaml.unsafe_load``/``full_load``
and ``numpy.load(..., allow_pickle=True)``."""
import ast
import pathlib

import pytest

PROJECT = pathlib.Path(__file__).resolve().parents[2]
SOURCE_DIRS = ("bresnet", "components", "pipeline", "bench", "scripts")
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "marshal", "shelve", "joblib"}
UNSAFE_YAML = {"load", "unsafe_load", "full_load", "load_all", "unsafe_load_all", "full_load_all"}


def unsafe_uses(source: str, filename: str = "<source>") -> list[str]:
    """Lines of ``source`` that import a pickle-like module or call an unsafe YAML/NumPy loader."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found += [f"{filename}:{node.lineno}: import {a.name}" for a in node.names
                      if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
            found.append(f"{filename}:{node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
            if owner == "yaml" and node.func.attr in UNSAFE_YAML:
                loader = next((k.value for k in node.keywords if k.arg == "Loader"), None)
                if not (isinstance(loader, ast.Attribute) and loader.attr in ("SafeLoader", "CSafeLoader")):
                    found.append(f"{filename}:{node.lineno}: yaml.{node.func.attr} without SafeLoader")
            if owner in ("np", "numpy") and node.func.attr == "load" and any(
                    k.arg == "allow_pickle" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                    for k in node.keywords):
                found.append(f"{filename}:{node.lineno}: numpy.load with allow_pickle")
    return found


@pytest.mark.parametrize("snippet", [
    "import pickle\npickle.load(open('x', 'rb'))",
    "from dill import loads",
    "import cloudpickle as cp",
    "import yaml\nyaml.load(text)",
    "import yaml\nyaml.load(text, Loader=yaml.FullLoader)",
    "import numpy as np\nnp.load('x.npy', allow_pickle=True)",
])
def test_the_scan_finds_unsafe_loading(snippet):
    assert unsafe_uses(snippet)


@pytest.mark.parametrize("snippet", [
    "import yaml\nyaml.safe_load(text)",
    "import yaml\nyaml.load(text, Loader=yaml.SafeLoader)",
    "import numpy as np\nnp.load('x.npy')",
    "import json\njson.load(f)",
])
def test_the_scan_passes_safe_loading(snippet):
    assert unsafe_uses(snippet) == []


def test_project_source_loads_no_user_data_with_pickle_like_deserializers():
    files = [p for d in SOURCE_DIRS for p in sorted((PROJECT / d).rglob("*.py"))]
    assert len(files) > 20, "project source not found"
    found = [hit for p in files for hit in unsafe_uses(p.read_text(), str(p.relative_to(PROJECT)))]
    assert found == []
