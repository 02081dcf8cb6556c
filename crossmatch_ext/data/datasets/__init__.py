"""Datasets as data: one module per dataset holds its layouts and data list rules; the bundles name the module.

A bundle config selects its dataset with one setting, ``dataset_module``: a dotted module path (the built-in
``crossmatch_ext.data.datasets.la`` and ``crossmatch_ext.data.datasets.acdc``, or a module of the bundle such as
``scripts.dataset``, imported with the bundle root on ``sys.path``) or a path to a ``.py`` file. Adding a dataset
therefore needs no edit to this package. A dataset module provides:

* ``LAYOUTS: tuple[str, ...]``: the layouts it reads (``"auto"`` is not one of them);
* ``detect_layout(dataset_dir) -> str``: the layout of a folder (one of ``LAYOUTS``), or an error saying what was
  expected;
* ``datalists(dataset_dir, num_labeled, *, layout="auto", val_list="val.list") -> dict[str, list[dict]]``: the
  ``"labeled"``, ``"unlabeled"`` and ``"validation"`` lists of ``{"image", "label", "case"}`` items (no ``label``
  in unlabeled items);
* ``RAW_LABEL_MAPS: dict[str, dict[int, int]]``: for each layout whose label files do not store classes, the map
  from raw values to classes (checked before training; ``{}`` when every layout stores classes).

:mod:`crossmatch_ext.data.datasets.common` holds the rules a dataset module can reuse, among them the ``"json"``
(MONAI datalist) and ``"studies"`` (MONAI Label) layouts in one call
(:func:`~crossmatch_ext.data.datasets.common.shared_layout_datalists`).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, Union

from monai.config import PathLike

from ...errors import InputError, SettingError
from .common import Datalists

__all__ = [
    "PROTOCOL",
    "dataset_datalists",
    "load_dataset_module",
    "raw_label_map",
    "resolve_layout",
]

#: What a dataset module must define: name -> (check, description for messages).
PROTOCOL: dict[str, tuple[Callable[[Any], bool], str]] = {
    "LAYOUTS": (lambda v: isinstance(v, (tuple, list)) and all(isinstance(x, str) for x in v),
                "LAYOUTS (a tuple of layout names)"),
    "detect_layout": (callable, "detect_layout(dataset_dir) -> str"),
    "datalists": (callable, 'datalists(dataset_dir, num_labeled, *, layout="auto", val_list="val.list") -> dict'),
    "RAW_LABEL_MAPS": (lambda v: isinstance(v, dict), "RAW_LABEL_MAPS (a dict: layout -> {raw value: class})"),
}

DatasetModule = Union[str, PathLike, ModuleType]


def _is_file_path(name: str) -> bool:
    return name.endswith(".py") or "/" in name or "\\" in name


def _under(path: str | None, root: Path) -> bool:
    if not path:
        return False
    try:
        Path(path).resolve().relative_to(root)
        return True
    except ValueError:
        return False


def _import_file(file: Path) -> ModuleType:
    resolved = file.resolve()
    name = f"crossmatch_dataset_{file.stem}_{hashlib.sha1(str(resolved).encode()).hexdigest()[:12]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {resolved} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _import_dotted(name: str, bundle_root: Path | None) -> ModuleType:
    parts = name.split(".")
    if bundle_root is None:
        return importlib.import_module(name)
    local = bundle_root.joinpath(*parts)
    if not (local.with_suffix(".py").is_file() or (local / "__init__.py").is_file()):
        return importlib.import_module(name)
    if str(bundle_root) not in sys.path:
        sys.path.insert(1, str(bundle_root))  # where MONAI's ConfigWorkflow.run puts it, before the run starts
    module = sys.modules.get(name)
    if module is not None and _under(getattr(module, "__file__", None), bundle_root):
        return module
    # another bundle's module of the same name (``scripts.dataset``) may be imported already: import this bundle's
    for key in [k for k in sys.modules if k == parts[0] or k.startswith(parts[0] + ".")]:
        if not _under(getattr(sys.modules[key], "__file__", None), bundle_root):
            del sys.modules[key]
    sys.path.remove(str(bundle_root))
    sys.path.insert(0, str(bundle_root))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(bundle_root))
        sys.path.insert(1, str(bundle_root))


def load_dataset_module(name: DatasetModule, bundle_root: PathLike | None = None) -> ModuleType:
    """Import a dataset module and check that it provides the dataset-module protocol (see the package docstring).

    Args:
        name: a dotted module path (``"crossmatch_ext.data.datasets.la"``, ``"scripts.dataset"``), a path to a
            ``.py`` file (relative paths are tried in the current folder, then in ``bundle_root``), or a module.
        bundle_root: the bundle's folder. When it holds the named module, the folder is put on ``sys.path`` (as
            MONAI does when a bundle runs, but already while the config is parsed) and that module is imported, also
            when a module of the same name was imported from elsewhere (another bundle's ``scripts.dataset``).

    Returns:
        The module.

    Raises:
        SettingError: when the module cannot be imported or lacks part of the protocol; the message names the
            config key ``dataset_module``, the module and what is wrong.
    """
    if isinstance(name, ModuleType):
        module = name
    else:
        text = str(name)
        root = Path(bundle_root).expanduser().resolve() if bundle_root is not None else None
        try:
            if isinstance(name, Path) or _is_file_path(text):
                file = Path(text).expanduser()
                if not file.is_absolute() and not file.is_file() and root is not None:
                    file = root / file
                if not file.is_file():
                    raise SettingError(
                        f"config key 'dataset_module': file {text!r} not found"
                        f"{f' (also looked in {root})' if root is not None and not Path(text).is_absolute() else ''}"
                        ": give a dotted module path (crossmatch_ext.data.datasets.la) or an existing .py file."
                    )
                module = _import_file(file)
            else:
                module = _import_dotted(text, root)
        except InputError:
            raise
        except Exception as e:
            raise SettingError(
                f"config key 'dataset_module': cannot import {text!r} ({type(e).__name__}: {e}); give a dotted module "
                "path such as crossmatch_ext.data.datasets.la, a module of the bundle such as scripts.dataset, or a "
                ".py file."
            ) from e
    missing = [description for attr, (check, description) in PROTOCOL.items()
               if not hasattr(module, attr) or not check(getattr(module, attr))]
    if missing:
        raise SettingError(
            f"config key 'dataset_module': module {module.__name__!r} ({getattr(module, '__file__', None)}) is not a "
            f"dataset module: it lacks {', '.join(missing)}. See crossmatch_ext.data.datasets for the protocol."
        )
    return module


def resolve_layout(
    dataset_module: DatasetModule, dataset_dir: PathLike, layout: str = "auto", bundle_root: PathLike | None = None
) -> str:
    """The layout of ``dataset_dir``: detected by the module for ``"auto"``, else ``layout`` checked against its
    ``LAYOUTS``.

    Args:
        dataset_module: see :func:`load_dataset_module`.
        dataset_dir: the data folder (or a datalist JSON file).
        layout: the ``data_layout`` setting.
        bundle_root: see :func:`load_dataset_module`.

    Returns:
        A layout of the module's ``LAYOUTS``.

    Raises:
        SettingError: for a layout the module does not know.
    """
    module = load_dataset_module(dataset_module, bundle_root)
    if layout == "auto":
        return str(module.detect_layout(dataset_dir))
    if layout not in module.LAYOUTS:
        raise SettingError(
            f"config key 'data_layout' must be one of {['auto', *module.LAYOUTS]} (the layouts of "
            f"{module.__name__}), got {layout!r}."
        )
    return layout


def dataset_datalists(
    dataset_module: DatasetModule,
    dataset_dir: PathLike,
    num_labeled: int,
    *,
    layout: str = "auto",
    val_list: str | None = "val.list",
    bundle_root: PathLike | None = None,
) -> Datalists:
    """The labeled / unlabeled / validation lists of ``dataset_dir``, built by the dataset module's ``datalists``.

    Args:
        dataset_module: see :func:`load_dataset_module`.
        dataset_dir: the data folder (or a datalist JSON file).
        num_labeled: the number of labeled cases (the module says what it counts: ACDC counts patients).
        layout: the ``data_layout`` setting (``"auto"`` or one of the module's ``LAYOUTS``).
        val_list: name of the validation list in ``dataset_dir``, or None.
        bundle_root: see :func:`load_dataset_module`.

    Returns:
        ``{"labeled": [...], "unlabeled": [...], "validation": [...]}``.

    Raises:
        SettingError: for a module that is not a dataset module; the module's own errors for bad data.
    """
    module = load_dataset_module(dataset_module, bundle_root)
    lists = module.datalists(dataset_dir, num_labeled, layout=layout, val_list=val_list)
    if not isinstance(lists, dict) or any(key not in lists for key in ("labeled", "unlabeled", "validation")):
        raise SettingError(
            f"config key 'dataset_module': {module.__name__}.datalists must return a dict with 'labeled', "
            f"'unlabeled' and 'validation' lists, got {type(lists).__name__}"
            f"{f' with keys {sorted(lists)}' if isinstance(lists, dict) else ''}."
        )
    return dict(lists)


def raw_label_map(
    dataset_module: DatasetModule, layout: str | None, bundle_root: PathLike | None = None
) -> dict[int, int] | None:
    """The map from raw label values to classes of a layout (None when its labels store the classes).

    Args:
        dataset_module: see :func:`load_dataset_module`.
        layout: a layout of the module (None gives None).
        bundle_root: see :func:`load_dataset_module`.

    Returns:
        ``{raw value: class}``, or None.
    """
    module = load_dataset_module(dataset_module, bundle_root)
    if layout is None:
        return None
    mapping = module.RAW_LABEL_MAPS.get(layout)
    return {int(k): int(v) for k, v in mapping.items()} if mapping else None
