"""Reading and validating a native kit's `problem.toml` into a `ProblemSpec`.

This module only parses settings: it never reads the data files nor touches the
workspace, so `load_kit` is cheap and every mistake in the file is reported before any
work is done. Unknown keys are refused in every table: a misspelt `n_split` silently
falling back to a default would give the organiser folds they did not ask for.
"""

import re
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from datarun.errors import UsageError
from datarun.problems.resources import Needs, parse_environment, parse_resources
from datarun.sizes import parse_duration, parse_size

KIT_FILE = "problem.toml"
NAME_RE = re.compile(r"^[a-z0-9_-]+$")
KINDS = ("classification", "regression")
CV_STRATEGIES = ("kfold", "stratified-kfold", "shuffle-split", "stratified-shuffle-split",
                 "time-series")
SHUFFLE_STRATEGIES = ("shuffle-split", "stratified-shuffle-split")
STRATIFIED_STRATEGIES = ("stratified-kfold", "stratified-shuffle-split")

DEFAULT_TEST_SIZE = 0.2
DEFAULT_N_SPLITS = 5
DEFAULT_SEED = 42
DEFAULT_WALL_TIME = "10m"
DEFAULT_MEMORY = "4GB"

# Which keys each table may hold, and which of them must be there.
_TOP_KEYS = {"name", "title", "kind", "data", "cv", "workflow", "scores", "limits", "resources", "environment"}
_TABLE_KEYS = {
    "data": {"train", "test", "target", "test_size", "drop"},
    "cv": {"strategy", "n_splits", "seed", "test_size"},
    "workflow": {"kind"},
    "scores": {"names"},
    "limits": {"wall_time", "cpu_time", "memory"},
}
_REQUIRED = {"": ("name", "kind", "data", "scores"), "data": ("train", "target"),
             "scores": ("names",)}


@dataclass(frozen=True)
class Limits:
    wall_time: float  # seconds
    cpu_time: float | None  # seconds; None: no limit
    memory: int  # bytes

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ProblemSpec:
    kit_dir: Path
    name: str
    title: str
    kind: str
    train: str  # relative to the kit
    target: str
    test: str | None = None
    test_size: float | None = None  # the share of train held out when there is no test file
    drop: tuple[str, ...] = ()
    cv_strategy: str = "kfold"
    n_splits: int = DEFAULT_N_SPLITS
    seed: int = DEFAULT_SEED
    cv_test_size: float | None = None  # shuffle-split variants only
    workflow: str = "estimator"
    score_names: tuple[str, ...] = field(default_factory=tuple)
    limits: Limits = field(default_factory=lambda: Limits(600.0, None, 4 * 1000**3))
    resources: Needs = field(default_factory=Needs)  # what a host must offer its tasks
    environment: dict = field(default_factory=dict)  # {"requirements", "strict"}

    @property
    def train_path(self) -> Path:
        return self.kit_dir / self.train

    @property
    def test_path(self) -> Path | None:
        return self.kit_dir / self.test if self.test else None

    def to_dict(self) -> dict:
        """The settings as stored in `problems.spec`: the kit's tables, defaults filled in."""
        return {
            "name": self.name,
            "title": self.title,
            "kind": self.kind,
            "data": {"train": self.train, "test": self.test, "target": self.target,
                     "test_size": self.test_size, "drop": list(self.drop)},
            "cv": {"strategy": self.cv_strategy, "n_splits": self.n_splits, "seed": self.seed,
                   "test_size": self.cv_test_size},
            "workflow": {"kind": self.workflow},
            "scores": {"names": list(self.score_names)},
            "limits": self.limits.to_dict(),
            "resources": self.resources.to_dict(),
            "environment": self.environment,
        }


def _where(table: str, key: str) -> str:
    return f"{KIT_FILE}: [{table}] {key}" if table else f"{KIT_FILE}: {key}"


def _check_keys(table: str, data: dict, allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        place = f"[{table}]" if table else "the top level"
        raise UsageError(
            f"{KIT_FILE}: unknown key {unknown[0]!r} in {place} (known: {', '.join(sorted(allowed))})"
        )
    for key in _REQUIRED.get(table, ()):
        if key not in data:
            raise UsageError(f"{KIT_FILE}: missing required key {key!r}"
                             + (f" in [{table}]" if table else ""))


def _string(table: str, key: str, value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{_where(table, key)} must be a non-empty string, got {value!r}")
    return value


def _fraction(table: str, key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise UsageError(f"{_where(table, key)} must be a number between 0 and 1, got {value!r}")
    return float(value)


def _integer(table: str, key: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"{_where(table, key)} must be a whole number >= {minimum}, got {value!r}")
    return value


def _relative_file(table: str, key: str, value) -> str:
    path = _string(table, key, value)
    parts = Path(path).parts
    if Path(path).is_absolute() or ".." in parts:
        raise UsageError(f"{_where(table, key)} must be a path inside the kit, got {path!r}")
    return path


def _table(data: dict, name: str) -> dict:
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise UsageError(f"{KIT_FILE}: {name!r} must be a table ([{name}])")
    _check_keys(name, table, _TABLE_KEYS[name])
    return table


MEMORY_WHERE = _where("limits", "memory")


def parse_limits(table: dict) -> Limits:
    wall = parse_duration(table.get("wall_time", DEFAULT_WALL_TIME), _where("limits", "wall_time"))
    cpu = table.get("cpu_time")
    cpu = None if cpu is None else parse_duration(cpu, _where("limits", "cpu_time"))
    # Its floor (what an empty task measures on the hosts) is checked where the workspace
    # is known: `register_problem`'s check_memory.
    memory = parse_size(table.get("memory", DEFAULT_MEMORY), MEMORY_WHERE)
    return Limits(wall_time=wall, cpu_time=cpu, memory=memory)


def parse_spec(data: dict, kit_dir: Path) -> ProblemSpec:
    """A ProblemSpec from the decoded TOML; UsageError naming the first thing to fix."""
    from datarun.problems.workflows import get_workflow
    from datarun.remote.scoring.scores import get_score_type

    _check_keys("", data, _TOP_KEYS)
    name = _string("", "name", data["name"])
    if not NAME_RE.match(name):
        raise UsageError(
            f"{KIT_FILE}: name {name!r} may hold only lower-case letters, digits, '_' and '-'"
        )
    title = _string("", "title", data.get("title", name))
    kind = data["kind"]
    if kind not in KINDS:
        raise UsageError(f"{KIT_FILE}: kind must be one of {', '.join(KINDS)}, got {kind!r}")

    data_table = _table(data, "data")
    train = _relative_file("data", "train", data_table["train"])
    test = data_table.get("test")
    test = None if test is None else _relative_file("data", "test", test)
    target = _string("data", "target", data_table["target"])
    test_size = data_table.get("test_size")
    if test_size is not None:
        if test is not None:
            raise UsageError(f"{KIT_FILE}: [data] has both test and test_size: keep one")
        test_size = _fraction("data", "test_size", test_size)
    elif test is None:
        test_size = DEFAULT_TEST_SIZE
    drop = data_table.get("drop", [])
    if not isinstance(drop, list) or not all(isinstance(c, str) for c in drop):
        raise UsageError(f"{_where('data', 'drop')} must be a list of column names")
    if target in drop:
        raise UsageError(f"{KIT_FILE}: [data] drop lists the target column {target!r}")

    cv = _table(data, "cv")
    default_strategy = "stratified-kfold" if kind == "classification" else "kfold"
    strategy = cv.get("strategy", default_strategy)
    if strategy not in CV_STRATEGIES:
        raise UsageError(
            f"{KIT_FILE}: unknown [cv] strategy {strategy!r} (use one of {', '.join(CV_STRATEGIES)})"
        )
    if strategy in STRATIFIED_STRATEGIES and kind != "classification":
        raise UsageError(
            f"{KIT_FILE}: [cv] strategy {strategy!r} needs classes: use kfold, shuffle-split "
            "or time-series for a regression problem"
        )
    n_splits = _integer("cv", "n_splits", cv.get("n_splits", DEFAULT_N_SPLITS),
                        1 if strategy in SHUFFLE_STRATEGIES else 2)
    seed = _integer("cv", "seed", cv.get("seed", DEFAULT_SEED), 0)
    cv_test_size = cv.get("test_size")
    if cv_test_size is not None:
        if strategy not in SHUFFLE_STRATEGIES:
            raise UsageError(
                f"{KIT_FILE}: [cv] test_size applies only to {' and '.join(SHUFFLE_STRATEGIES)}"
            )
        cv_test_size = _fraction("cv", "test_size", cv_test_size)
    elif strategy in SHUFFLE_STRATEGIES:
        cv_test_size = DEFAULT_TEST_SIZE

    workflow_table = _table(data, "workflow")
    workflow = _string("workflow", "kind", workflow_table.get("kind", "estimator"))
    get_workflow(workflow)

    names = _table(data, "scores")["names"]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise UsageError(f"{_where('scores', 'names')} must be a non-empty list of score names")
    if len(set(names)) != len(names):
        raise UsageError(f"{_where('scores', 'names')} lists a score twice")
    for score in names:
        get_score_type(score, kind)

    limits = parse_limits(_table(data, "limits"))
    resources = parse_resources(data.get("resources", {}), f"{KIT_FILE}: [resources]")
    environment = parse_environment(data.get("environment"), kit_dir, f"{KIT_FILE}: [environment]")
    return ProblemSpec(
        kit_dir=kit_dir, name=name, title=title, kind=kind, train=train, target=target,
        test=test, test_size=test_size, drop=tuple(drop), cv_strategy=strategy,
        n_splits=n_splits, seed=seed, cv_test_size=cv_test_size, workflow=workflow,
        score_names=tuple(names), limits=limits, resources=resources, environment=environment,
    )


def load_kit(kit_dir: Path) -> ProblemSpec:
    """Parse and validate a kit's problem.toml (the data files are not read here)."""
    kit_dir = Path(kit_dir).expanduser().resolve()
    if not kit_dir.is_dir():
        raise UsageError(f"kit folder {kit_dir} does not exist")
    path = kit_dir / KIT_FILE
    if not path.is_file():
        raise UsageError(f"{kit_dir} has no {KIT_FILE}: a native kit needs one")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        # tomllib's message names the line and column.
        raise UsageError(f"{KIT_FILE}: TOML syntax error: {error}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{KIT_FILE}: not UTF-8 text") from None
    return parse_spec(data, kit_dir)
