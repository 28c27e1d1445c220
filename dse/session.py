"""One home for what every command loads: the model, its data sets, the run's preprocessing and FxP8 calibration.

``open_session(RunInputs) -> Session`` is called by ``dse evaluate`` (:func:`dse.emulate.evaluate`), ``dse predict``
(:func:`dse.predict.predict_report`) and the search (:func:`dse.search.context.build_context`); none of them loads
anything itself. What it guarantees:

* one :class:`dse.data.Preprocess` per run, from the first of: the explicit value of the inputs (command-line flags,
  the budget's ``[model] preprocess`` or an exported configuration's ``[meta]``), the model's ``dse.preprocess``
  metadata, the bundled data set's own preprocessing when every data set is a bundled split; otherwise DseError
  (never a guess). Calibration and every data set use it, and :meth:`Session.info` reports it with its source;
* the calibration set is disjoint from every other data set, and the other data sets from each other
  (:func:`dse.data.specs_overlap`);
* every data set fits the model (input shape; labels and declared classes vs the model's outputs, not for the
  calibration set, whose labels are unused).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dse.data import (BUNDLED_PREPROCESS, SOURCE_METADATA, Dataset, Preprocess, is_bundled, open_dataset,
                      specs_overlap)
from dse.errors import DseError
from dse.quant import CalibrationState, Checkpoints


# How the 'nothing says how to normalise' error names the missing settings when the caller does not say otherwise
# (the CLI names its flags, a budget its key).
PREPROCESS_SETTINGS = "the preprocessing settings (mean and std, optionally scale and size)"


@dataclass(frozen=True)
class DataRef:
    """A data set spec and how messages name it: the setting it came from (``b.toml: key 'data.search'``, the CLI's
    ``--data SPEC``); :meth:`setting` names a library parameter."""

    spec: str
    label: str

    @classmethod
    def setting(cls, name: str, spec: str) -> "DataRef":
        return cls(spec, f"{name} {spec}")


@dataclass(frozen=True)
class RunInputs:
    model: str                              # ONNX path or bundled model name
    calib: DataRef
    data: tuple[DataRef, ...] = ()          # the other data sets, in the order Session.data returns them
    preprocess: Preprocess | None = None    # explicit preprocessing (flags, budget, exported configuration)
    preprocess_hint: str = PREPROCESS_SETTINGS  # how the caller's user states it, for the 'nothing says' error


@dataclass
class Session:
    model: str
    model_path: Path
    graph: object            # dse.model.graph.Graph
    preprocess: Preprocess
    calib: Dataset
    data: tuple[Dataset, ...]
    qmodel: object           # dse.quant.QuantModel
    calibration: str         # calibration method (dse.quant)

    def info(self) -> dict:
        """JSON-friendly description of what was loaded (every command's output includes it)."""
        return {"model": str(self.model), "path": str(self.model_path), "calib": self.calib.name,
                "calibration": self.calibration, "preprocess": self.preprocess.to_dict()}


def check_disjoint(inputs: RunInputs) -> None:
    """DseError unless the calibration set and the other data sets are pairwise disjoint."""
    refs = (inputs.calib,) + tuple(inputs.data)
    for i, a in enumerate(refs):
        for b in refs[i + 1:]:
            if specs_overlap(a.spec, b.spec):
                raise DseError(f"{a.label} and {b.label} overlap; calibrate, search and evaluate on disjoint sets "
                               "(e.g. fashion-mnist:calib, fashion-mnist:search, fashion-mnist:holdout)")


def resolve_preprocess(inputs: RunInputs, graph) -> Preprocess:
    """The run's one preprocessing (module docstring: explicit > model metadata > bundled default > error)."""
    from dse.model.onnx_import import preprocess_from_metadata

    if inputs.preprocess is not None:
        return inputs.preprocess
    meta = preprocess_from_metadata(graph)
    if meta is not None:
        return Preprocess.from_mapping(meta, SOURCE_METADATA, f"{graph.source}: metadata 'dse.preprocess'")
    refs = (inputs.calib,) + tuple(inputs.data)
    foreign = [r for r in refs if not is_bundled(r.spec)]
    if not foreign:
        return BUNDLED_PREPROCESS
    raise DseError(f"model {inputs.model} has no 'dse.preprocess' metadata and {foreign[0].label} is not a bundled "
                   f"data set: nothing says how to normalise its pixels; give {inputs.preprocess_hint}")


def open_session(inputs: RunInputs, calibration: str | None = None,
                 calibrated: CalibrationState | None = None, checkpoints: Checkpoints | None = None,
                 calib_progress=None) -> Session:
    """Load the model, resolve the preprocessing, open (lazily) and check the data sets, calibrate FxP8 (unless
    ``calibrated``: the :meth:`dse.quant.QuantModel.state` of this model and calibration set computed earlier, e.g.
    the search's run-directory cache). ``checkpoints`` and ``calib_progress(done, total)`` go to
    :func:`dse.quant.calibrate` (a stopped calibration raises dse.quant.CalibrationStopped)."""
    from dse.model.onnx_import import load_onnx, resolve_model
    from dse.quant import DEFAULT_METHOD, QuantModel, calibrate, stream_batch_size

    check_disjoint(inputs)
    path = resolve_model(inputs.model)
    graph = load_onnx(path)
    pre = resolve_preprocess(inputs, graph)

    def load(ref: DataRef, n_classes) -> Dataset:
        ds = open_dataset(ref.spec, pre, graph.input_shape)
        ds.check_fits(graph.input_shape, n_classes, ref.label, inputs.model)
        return ds

    data = tuple(load(r, graph.n_classes) for r in inputs.data)
    calib = load(inputs.calib, None)
    method = calibration or DEFAULT_METHOD
    qmodel = (QuantModel.from_state(graph, calibrated) if calibrated is not None
              else calibrate(graph, calib.image_batches(stream_batch_size(graph)), method=method,
                             checkpoints=checkpoints, progress=calib_progress))
    return Session(model=inputs.model, model_path=Path(path), graph=graph, preprocess=pre, calib=calib, data=data,
                   qmodel=qmodel, calibration=method)
