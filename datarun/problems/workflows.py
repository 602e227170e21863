"""The workflows a problem can use: which files a submission must and may hold.

A workflow is the contract between a problem and its participants' code. This registry
is the organiser's side of it (what `submit` accepts and what a kit may name); running
the code is the harness's side, in `datarun/remote/`, which keys on the same name.

A RAMP problem's workflow comes from its kit: the files are the workflow's element names
(`classifier` -> `classifier.py`; an element with an extension, such as
`external_data.csv`, is a data file); a data file the kit provides a default for is
optional. Code files are capped at CODE_FILE_CAP, data files at the problem's own cap.
Sizes are decimal (kB = 1000 bytes, MB = 1000 kB) in the caps and in every message.
"""

from dataclasses import dataclass, field

from datarun.errors import UsageError

CODE_FILE_CAP = 512 * 1000  # bytes: a Python file of a submission


@dataclass(frozen=True)
class Workflow:
    name: str
    description: str
    required: tuple[str, ...]  # files a submission must have
    optional: tuple[str, ...] = ()  # files it may have besides
    # the functions each file must define, checked at submit time
    functions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    kinds: tuple[str, ...] = ("classification", "regression")
    data_file_cap: int = 0  # bytes: a data file of a submission (files not ending in .py)

    @property
    def files(self) -> tuple[str, ...]:
        """Every file name a submission of this workflow may hold."""
        return self.required + self.optional


WORKFLOWS: dict[str, Workflow] = {
    "estimator": Workflow(
        name="estimator",
        description="estimator.py defines get_estimator() returning a scikit-learn-like "
        "estimator (fit, and predict_proba for classification or predict for regression)",
        required=("estimator.py",),
        functions={"estimator.py": ("get_estimator",)},
    ),
}


def get_workflow(name: str) -> Workflow:
    if name not in WORKFLOWS:
        raise UsageError(
            f"unknown workflow {name!r} (known: {', '.join(sorted(WORKFLOWS))})"
        )
    return WORKFLOWS[name]


def workflow_for(problem: dict) -> Workflow:
    """The workflow a registered problem's submissions follow."""
    if problem["workflow"] != "ramp":
        return get_workflow(problem["workflow"])
    from datarun.problems.rampdata import DEFAULT_DATA_FILE_CAP
    from datarun.problems.rampkit import EARLY_CHECKS

    ramp = problem["spec"]["ramp"]
    defaults = set(ramp.get("external", []))
    required = tuple(f for f in ramp["files"] if f not in defaults)
    optional = tuple(f for f in ramp["files"] if f in defaults)
    # Old problems were registered when only ramp-workflow's own workflows ran.
    wanted = EARLY_CHECKS.get(ramp["workflow"], ()) if ramp.get("early_checks", True) else ()
    functions = {f: names for f, names in zip(ramp["files"], wanted, strict=False)
                 if names and f.endswith(".py")}
    return Workflow(
        name=f"RAMP {ramp['workflow']}",
        description=f"the kit's {ramp['workflow']} workflow: {', '.join(ramp['files'])}",
        required=required, optional=optional, functions=functions,
        data_file_cap=int(ramp.get("data_file_cap") or DEFAULT_DATA_FILE_CAP),
    )
