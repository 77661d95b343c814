"""A participant's own data, loaded where it lies: files, folders and objects of a notebook.

`load_data(source, target=..., contract=...)` gives ``(x, y)`` numpy arrays from:

- a CSV or Parquet file with a target column (``target``); the feature columns are the model's
  (its data contract names them, in its input order), or every other column;
- a ``.npz`` file holding arrays ``x`` and ``y``;
- a folder of images with one sub-folder per class (read by Keras' own
  ``image_dataset_from_directory``, at the model's input size);
- from Python: an ``(x, y)`` pair of arrays, a pandas DataFrame (with ``target``), or a
  ``tf.data.Dataset`` of ``(x, y)`` pairs, batched or not.

When a contract is given, the data is checked against it (`fl.contract.check_data`): a missing
column, a wrong shape, a label out of range, a NaN or too few examples is a `DataMismatch`
naming it. Nothing here sends anything anywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from decentralml_jupyter.errors import DataMismatch, UsageError
from decentralml_jupyter.fl.contract import MIN_EXAMPLES, DataContract, check_data

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def load_data(
    source: Any,
    target: str | None = None,
    contract: DataContract | None = None,
    min_examples: int = MIN_EXAMPLES,
) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` from ``source`` (see the module's docstring), checked against ``contract``
    (with at least ``min_examples``: a worker's training data may hold fewer than held-out
    data that evaluates a model)."""
    x, y = _load(source, target, contract)
    x = np.asarray(x)
    y = np.asarray(y)
    if x.dtype.kind not in "biuf":
        raise DataMismatch(
            f"the features are not numbers (dtype {x.dtype})",
            hint="encode text columns as numbers, or add the encoding to the model as a "
            "Keras preprocessing layer",
        )
    if contract is not None:
        check_data(contract, x, y, min_examples)
    return x.astype(np.float32), y


def _load(source: Any, target: str | None, contract: DataContract | None):
    if isinstance(source, str | Path):
        return _load_path(Path(source).expanduser(), target, contract)
    if isinstance(source, tuple | list) and len(source) == 2:
        return np.asarray(source[0]), np.asarray(source[1])
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(source, pd.DataFrame):
        return _from_frame(source, target, contract, "the DataFrame")
    if type(source).__module__.startswith("tensorflow") and hasattr(source, "as_numpy_iterator"):
        return _from_tf_dataset(source)
    raise UsageError(
        f"cannot read data from a {type(source).__name__}",
        hint="give a CSV/Parquet/.npz file, a folder of images, an (x, y) pair, a DataFrame "
        "with --target, or a tf.data.Dataset",
    )


def _load_path(path: Path, target: str | None, contract: DataContract | None):
    if not path.exists():
        raise UsageError(f"no data at {path}", hint="check the path")
    if path.is_dir():
        return _from_image_folder(path, contract)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                missing = [k for k in ("x", "y") if k not in data.files]
                if missing:
                    raise DataMismatch(
                        f"{path} holds {sorted(data.files)}, not {' and '.join(missing)}",
                        hint="save it with np.savez(path, x=features, y=labels)",
                    )
                return data["x"], data["y"]
        except (OSError, ValueError) as err:
            raise UsageError(f"cannot read {path} as .npz: {err}") from None
    if suffix in TABLE_SUFFIXES:
        import pandas as pd

        try:
            frame = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
        except Exception as err:  # noqa: BLE001 - pandas and Arrow raise many kinds
            raise UsageError(f"cannot read {path}: {err}") from None
        return _from_frame(frame, target, contract, str(path))
    raise UsageError(
        f"{path}: unknown kind of data file",
        hint="use a .csv, .parquet or .npz file, or a folder with one sub-folder per class",
    )


def _from_frame(frame: Any, target: str | None, contract: DataContract | None, what: str):
    if not target:
        raise UsageError(
            f"{what} needs a target column: which column holds the labels?",
            hint="pass --target COLUMN (target= in Python)",
        )
    if target not in frame.columns:
        raise DataMismatch(
            f"{what} has no column {target!r} (columns: {', '.join(map(str, frame.columns))})",
            hint="pass the name of the label column as --target",
        )
    features = list(contract.features) if contract is not None and contract.features else None
    if features:
        missing = [c for c in features if c not in frame.columns]
        if missing:
            raise DataMismatch(
                f"{what} lacks the model's feature column(s) {', '.join(missing)}",
                hint="the model was registered with these columns; add them (same names)",
            )
    else:
        features = [c for c in frame.columns if c != target]
    x = frame[features]
    text = [c for c in features if x[c].dtype.kind not in "biuf"]
    if text:
        raise DataMismatch(
            f"column(s) {', '.join(map(str, text))} of {what} are not numbers",
            hint="encode them as numbers, or add the encoding to the model as a Keras "
            "preprocessing layer",
        )
    return x.to_numpy(dtype=np.float32), frame[target].to_numpy()


def _from_tf_dataset(dataset: Any):
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) != 2:
        raise UsageError(
            "the tf.data.Dataset must yield (features, label) pairs",
            hint="e.g. tf.data.Dataset.from_tensor_slices((x, y))",
        )
    if spec[0].shape.rank is not None and spec[0].shape.rank >= 1 and spec[0].shape[0] is None:
        dataset = dataset.unbatch()  # batched: one example per element
    xs, ys = [], []
    for x, y in dataset.as_numpy_iterator():
        xs.append(x)
        ys.append(y)
    if not xs:
        raise DataMismatch("the tf.data.Dataset is empty")
    return np.stack(xs), np.stack(ys)


def _from_image_folder(folder: Path, contract: DataContract | None):
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise DataMismatch(
            f"{folder} has no sub-folders: images go in one sub-folder per class",
            hint="e.g. DIR/cat/1.png, DIR/dog/2.png",
        )
    if contract is None or len(contract.input_shape) != 3:
        shape = None if contract is None else contract.input_shape
        raise DataMismatch(
            f"a folder of images needs a model that takes images (height, width, channels); "
            f"this one takes {shape}",
            hint="register the model with an image input, e.g. keras.Input(shape=(32, 32, 3))",
        )
    height, width, channels = contract.input_shape
    if channels not in (1, 3, 4):
        raise DataMismatch(f"images have 1, 3 or 4 channels, the model takes {channels}")
    from decentralml_jupyter.fl._tf import keras

    mode = {1: "grayscale", 3: "rgb", 4: "rgba"}[channels]
    try:
        ds = keras().utils.image_dataset_from_directory(
            folder,
            labels="inferred",
            label_mode="int",
            class_names=classes,
            color_mode=mode,
            image_size=(height, width),
            shuffle=False,
            batch_size=64,
            verbose=False,
        )
    except ValueError as err:
        raise DataMismatch(f"cannot read the images in {folder}: {err}") from None
    xs, ys = [], []
    for x, y in ds.as_numpy_iterator():
        xs.append(x)
        ys.append(y)
    if not xs:
        raise DataMismatch(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    return np.concatenate(xs), np.concatenate(ys)


__all__ = ["load_data"]
