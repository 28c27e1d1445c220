"""Budget TOML files: defaults, a full valid file, the bundled default, and one-line errors naming the dotted key."""
import re
from pathlib import Path

import pytest

from dse.budget import AxbxpSpace, Budget, LayerSpace, load_budget
from dse.data import Preprocess
from dse.energy import ArrayConfig
from dse.errors import DseError

DEFAULT_TOML = Path(__file__).resolve().parents[1] / "search_spaces" / "default.toml"


def write(tmp_path, text, name="b.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_empty_file_gives_defaults(tmp_path):
    b = load_budget(write(tmp_path, ""))
    assert b == Budget(path=str(tmp_path / "b.toml"))
    assert b.model.path == "lenet5" and b.data.search == "fashion-mnist:search" and b.data.images is None
    assert b.budget.max_accuracy_loss == 1.0 and b.search.mode == "constrained" and b.search.n_trials >= 1
    assert b.accelerator == ArrayConfig() and b.space.pin_first_last is True and b.space.multipliers


FULL = """
[model]
path = "net.onnx"
preprocess = { scale = 0.5, mean = [0.1, 0.2, 0.3], std = 0.25 }

[data]
calib = "fashion-mnist:all"
search = "imgs.gz,labels.gz"
holdout = "fashion-mnist:holdout"
images = 1234
confirm = 500

[budget]
max_accuracy_loss = 0.5
metric = "top1"

[accelerator]
rows = 8
cols = 32
frequency_mhz = 1000
glb_kib = 128.5
batch = 4

[energy]
mult8 = 0.25
dram = { value = 10.0, unit = "pJ/bit", source = "LPDDR4" }

[search]
mode = "pareto"
sampler = "nsga2"
n_trials = 77
seed = 3
storage = "postgresql://u@h/db"
workers = 3
threads = 2
timeout_s = 60
racing = [100, 400, 0]
confidence = 0.9
predictor_skip = 0
predictor_max_share = 0.25
n_holdout = 2
image_cache_mib = 64

[space]
multipliers = ["drum", "mitch_w6"]
cv = [true, false, true]
pin_first_last = false

[space.axbxp]
K = [2, 4]
Lw = [1]
La = [1]
modes = ["dynamic"]

[space.layers.fc1]
multipliers = ["perf_j0_k2"]
cv = [true]

[space.layers."features.0"]
pin = true
"""


def test_full_file_round_trip(tmp_path):
    for f in ("net.onnx", "imgs.gz", "labels.gz"):
        (tmp_path / f).write_bytes(b"x")
    b = load_budget(write(tmp_path, FULL))
    assert b.model.path == str((tmp_path / "net.onnx").resolve())
    assert b.model.preprocess == Preprocess(mean=(0.1, 0.2, 0.3), std=(0.25,), scale=0.5,
                                            source="budget [model] preprocess")
    assert b.data.calib == "fashion-mnist:all" and b.data.images == 1234 and b.data.confirm == 500
    assert b.data.search == f"{(tmp_path / 'imgs.gz').resolve()},{(tmp_path / 'labels.gz').resolve()}"
    assert b.budget.max_accuracy_loss == 0.5
    assert b.accelerator == ArrayConfig(rows=8, cols=32, frequency_mhz=1000.0, glb_kib=128.5, batch=4)
    assert b.energy == {"mult8": 0.25, "dram": {"value": 10.0, "source": "LPDDR4"}}
    m = b.energy_model()
    assert m.array.rows == 8 and m.constants["mult8"].value == 0.25
    assert m.constants["dram"].value == 10.0 and m.constants["dram"].source == "LPDDR4"
    s = b.search
    assert (s.mode, s.sampler, s.n_trials, s.seed, s.storage, s.workers, s.timeout_s) == \
        ("pareto", "nsga2", 77, 3, "postgresql://u@h/db", 3, 60.0)
    assert s.threads == 2
    assert (s.racing, s.confidence, s.predictor_skip, s.n_holdout) == ((100, 400, 0), 0.9, 0.0, 2)
    assert s.predictor_max_share == 0.25 and s.image_cache_mib == 64.0
    sp = b.space
    assert sp.multipliers == ("drum3", "drum4", "drum5", "drum6", "drum7", "drum8", "mitch_w6")  # family expanded
    assert sp.cv == (False, True) and sp.pin_first_last is False
    assert sp.axbxp == AxbxpSpace(K=(2, 4), Lw=(1,), La=(1,), modes=("dynamic",))
    assert "axbxp_k4_w1_a1_dynamic" in sp.all_multipliers and "axbxp_k2_w1_a1_dynamic" in sp.all_multipliers
    assert sp.layers == {"fc1": LayerSpace(multipliers=("perf_j0_k2",), cv=(True,)),
                         "features.0": LayerSpace(pin=True)}


def test_paths_fall_back_to_working_directory(tmp_path, monkeypatch):
    (tmp_path / "m.onnx").write_bytes(b"x")
    sub = tmp_path / "budgets"
    sub.mkdir()
    monkeypatch.chdir(tmp_path)
    b = load_budget(write(sub, '[model]\npath = "m.onnx"\n'))
    assert b.model.path == str((tmp_path / "m.onnx").resolve())


def test_bundled_default_is_valid_and_fully_commented():
    b = load_budget(DEFAULT_TOML)
    assert b.model.path == "lenet5" and b.budget.max_accuracy_loss == 1.0
    assert b.search.workers <= 2 and b.search.timeout_s is not None and b.search.timeout_s <= 180
    assert "exact" not in b.space.multipliers and len(b.space.all_multipliers) >= 10
    lines = DEFAULT_TOML.read_text().splitlines()
    in_array = False
    for i, line in enumerate(lines):
        s = line.strip()
        if in_array:
            in_array = not s.startswith("]")
            continue
        if not s or s.startswith("#"):
            continue
        prev = lines[i - 1].strip() if i else ""
        if s.startswith("["):
            assert prev.startswith("#") or i == 0, f"section {s} has no comment above it"
            continue
        assert "#" in s or prev.startswith("#"), f"line {i + 1} '{s}' is not commented"
        in_array = s.endswith("[")


def err(tmp_path, text) -> str:
    p = write(tmp_path, text)
    with pytest.raises(DseError) as ei:
        load_budget(p)
    msg = str(ei.value)
    assert "\n" not in msg and str(p) in msg
    return msg


@pytest.mark.parametrize("text, key, extra", [
    ("[serch]\nn_trials = 3\n", "'serch'", "unknown section"),
    ("[search]\nntrials = 3\n", "'search.ntrials'", "n_trials"),
    ('[search]\nn_trials = "ten"\n', "'search.n_trials'", "must be a positive integer, got 'ten'"),
    ("[search]\nn_trials = 0\n", "'search.n_trials'", "got 0"),
    ("[search]\nn_trials = 2.5\n", "'search.n_trials'", "got 2.5"),
    ("[search]\nworkers = true\n", "'search.workers'", "got true"),
    ("[search]\nthreads = 0\n", "'search.threads'", "got 0"),
    ('[search]\nmode = "fast"\n', "'search.mode'", "'constrained', 'pareto'"),
    ('[search]\nsampler = "cmaes"\n', "'search.sampler'", "'tpe'"),
    ('[search]\nstorage = "journal.log"\n', "'search.storage'", "URL"),
    ("[search]\nracing = [2000, 500]\n", "'search.racing'", "increasing"),
    ("[search]\nracing = [0, 500]\n", "'search.racing'", "0 (= all) only last"),
    ("[search]\nracing = [500, -1]\n", "'search.racing[1]'", "non-negative"),
    ("[search]\nseeds = [\"random\"]\n", "'search.seeds[0]'", "uniform"),
    ("[search]\nconfidence = 1.0\n", "'search.confidence'", "got 1.0"),
    ("[search]\ntimeout_s = -5\n", "'search.timeout_s'", "positive"),
    ("[search]\nimage_cache_mib = -1\n", "'search.image_cache_mib'", "non-negative number of MiB"),
    ("[search]\npredictor_max_share = 0\n", "'search.predictor_max_share'", "(0, 1], or inf (no bound"),
    ("[search]\npredictor_max_share = 1.5\n", "'search.predictor_max_share'", "got 1.5"),
    ("[budget]\nmax_accuracy_loss = 120\n", "'budget.max_accuracy_loss'", "[0, 100)"),
    ('[budget]\nmax_accuracy_loss = "1%"\n', "'budget.max_accuracy_loss'", "got '1%'"),
    ('[budget]\nmetric = "top5"\n', "'budget.metric'", "'top1'"),
    ("[accelerator]\nrows = 0\n", "'accelerator.rows'", "got 0"),
    ("[accelerator]\nfrequency_mhz = 0\n", "'accelerator.frequency_mhz'", "positive"),
    ("[accelerator]\ndepth = 3\n", "'accelerator.depth'", "rows"),
    ("[energy]\nmult16 = 1.0\n", "'energy.mult16'", "mult8"),
    ("[energy]\ndram = -3\n", "'energy.dram'", "non-negative"),
    ('[energy]\ndram = { value = 1.0, unit = "pJ" }\n', "'energy.dram.unit'", "'pJ/bit'"),
    ('[energy]\ndram = { source = "x" }\n', "'energy.dram'", "needs 'value'"),
    ('[space]\nmultipliers = ["drum6", "drum99"]\n', "'space.multipliers[1]'", "drum99"),
    ('[space]\nmultipliers = ["nosuchfamily"]\n', "'space.multipliers[0]'", "families:"),
    ('[space]\nmultipliers = "drum6"\n', "'space.multipliers'", "list"),
    ("[space]\ncv = [0, 1]\n", "'space.cv[0]'", "true or false"),
    ("[space]\npin_first_last = 1\n", "'space.pin_first_last'", "true or false"),
    ("[space.axbxp]\nK = [3]\n", "'space.axbxp'", "axbxp_k3"),
    ("[space.axbxp]\nk = [2]\n", "'space.axbxp.k'", "K, Lw, La, modes"),
    ('[space.axbxp]\nmodes = ["fixed"]\n', "'space.axbxp.modes[0]'", "'static', 'dynamic'"),
    ("[space.layers.fc1]\nmultiplier = [\"drum4\"]\n", "'space.layers.fc1.multiplier'", "multipliers"),
    ('[space]\nmultipliers = []\n', "'space.multipliers'", "at least one"),
    ('[model]\npath = "missing.onnx"\n', "'model.path'", "lenet5"),
    ('[model]\npreprocess = { scale = 1.0, std = 0 }\n', "'model.preprocess.std'", "non-zero"),
    ('[model]\npreprocess = { gamma = 1.0 }\n', "'model.preprocess.gamma'", "scale"),
    ('[data]\nsearch = "nope.npz"\n', "'data.search'", "nope.npz"),
    ('[data]\ncalib = "fashion-mnist:train"\n', "'data.calib'", "fashion-mnist:calib|search|holdout|all"),
    ("[data]\nimages = -10\n", "'data.images'", "got -10"),
    ("[data]\nconfirm = -1\n", "'data.confirm'", "non-negative"),
    ("search = 3\n", "'search'", "section"),
])
def test_errors_name_the_key_on_one_line(tmp_path, text, key, extra):
    msg = err(tmp_path, text)
    assert key in msg, msg
    assert extra in msg, msg


@pytest.mark.parametrize("text, line, col", [
    ("[search]\nn_trials = \n", 2, 12),
    ('[model]\npath = "lenet5\n', 2, 15),
    ("[search]\nseed = 1\nseed = 2\n", 3, 9),  # tomllib reports the end of the value
    ("[search", 1, 8),
])
def test_syntax_error_gives_line_and_column(tmp_path, text, line, col):
    msg = err(tmp_path, text)
    assert re.search(rf"b\.toml:{line}:{col}: TOML syntax error: .*line {line}, column {col}$", msg), msg


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(DseError, match="not found"):
        load_budget(tmp_path / "nope.toml")
    p = tmp_path / "bin.toml"
    p.write_bytes(b"\xff\xfe[search]")
    with pytest.raises(DseError, match="UTF-8"):
        load_budget(p)


@pytest.mark.parametrize("path", sorted((DEFAULT_TOML.parent).glob("*.toml")), ids=lambda p: p.name)
def test_every_bundled_budget_loads(path):
    b = load_budget(path)
    assert b.budget.max_accuracy_loss > 0 and b.search.n_trials > 0


def test_search_threads_default_divides_cores_among_workers():
    from dse import kernels
    from dse.search.context import set_search_threads

    with kernels.using_threads(None):   # the setting from before the test back afterwards
        assert set_search_threads(None, 2) == max(1, kernels.available_cores() // 2) == kernels.get_threads()
        assert set_search_threads(None, 1000) == 1
        assert set_search_threads(3, 2) == 3


def test_data_folders_and_preprocess_size(tmp_path):
    (tmp_path / "imgs" / "a").mkdir(parents=True)
    (tmp_path / "labels.txt").write_text("a\n")
    (tmp_path / "cifar-10-batches-bin").mkdir()
    b = load_budget(write(tmp_path, '[model]\npreprocess = { mean = [0.4, 0.5, 0.6], std = 0.2, size = 36 }\n'
                                    '[data]\nsearch = "imgs,labels.txt"\nholdout = "cifar-10-batches-bin"\n'))
    assert b.data.search == f"{(tmp_path / 'imgs').resolve()},{(tmp_path / 'labels.txt').resolve()}"
    assert b.data.holdout == str((tmp_path / "cifar-10-batches-bin").resolve())
    assert b.model.preprocess.size == 36 and b.model.preprocess.source == "budget [model] preprocess"
    with pytest.raises(DseError, match=r"key 'model.preprocess.size' must be a positive integer, got 0"):
        load_budget(write(tmp_path, '[model]\npreprocess = { size = 0 }\n'))


def test_predictor_max_share_inf_lifts_the_bound(tmp_path):
    """inf is the documented way to keep a one-process search reproducible (no time-dependent pauses of the gate)."""
    b = load_budget(write(tmp_path, "[search]\npredictor_max_share = inf\n"))
    assert b.search.predictor_max_share == float("inf")
    assert "'search.predictor_max_share'" in err(tmp_path, "[search]\npredictor_max_share = -inf\n")
