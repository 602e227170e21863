"""Each benchmark runs end to end at its --quick size and reports its figures.

The benches are scripts nobody imports, so without this they would rot silently when the
CLI or the schema changes. The figures themselves are not judged here (the machine may be
busy): only that each side of each comparison was measured and the goal was reported.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def run_bench(name: str, *options: str) -> tuple[dict, str]:
    # The benches build their own temporary workspaces; DATARUN_HOME from the test
    # fixtures must not leak into them (each sets its own).
    env = {k: v for k, v in os.environ.items() if k != "DATARUN_HOME"}
    result = subprocess.run([sys.executable, str(BENCH / name), "--quick", "--json", *options],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout), result.stderr


@pytest.mark.slow
def test_overhead_bench_measures_datarun_and_both_baselines():
    figures, text = run_bench("overhead.py")
    assert figures["tasks"] == 4
    for side in ("datarun_1_slot", "datarun_2_slots", "loop", "process_per_task"):
        assert figures[side]["wall"] > 0
        assert figures[side]["model_time"] > 0
        assert figures[side]["per_task"] == pytest.approx(
            (figures[side]["wall"] - figures[side]["model_time"] / (2 if side == "datarun_2_slots" else 1))
            / figures["tasks"])
    assert figures["datarun_1_slot_unsandboxed"]["wall"] > 0
    assert figures["sandbox_pairs"]["pairs"] == 5
    assert all(value > 0 for value in figures["sandbox_pairs"]["median"].values())
    assert figures["met"] == (figures["datarun_1_slot"]["per_task"] <= figures["goal_per_task"]
                              and figures["sandbox_pairs"]["cost"] <= 0.025)
    assert "the sandbox adds" in text
    assert 0 < figures["datarun_1_slot"]["steady_interval"] < figures["datarun_1_slot"]["wall"]
    assert "goal: datarun on 1 slot at most 0.100 s per task" in text
    assert "one fresh Python per task" in text
    assert not Path(figures["scratch"]).exists()


@pytest.mark.slow
def test_memory_bench_measures_an_empty_task_and_200_mb_more():
    figures, text = run_bench("memory.py")
    methods = [run["measured_by"] for run in figures["runs"]]
    assert methods[-1] == ["procfs"] and len(methods) == (2 if os.geteuid() == 0 else 1)
    for run in figures["runs"]:
        assert 0 < run["empty"] < run["alloc200"] and run["runner_rss"] > run["empty"]
    assert "goal at most 30 MB" in text and "goal 200 +/- 20" in text


@pytest.mark.slow
def test_parallel_bench_compares_train_with_a_loop():
    figures, text = run_bench("parallel.py")
    assert figures["tasks"] == 4
    assert figures["datarun"]["wall"] > figures["datarun"]["model_time"] > 0
    assert figures["loop"]["wall"] > figures["loop"]["model_time"] > 0
    for row in ("datarun_cold", "datarun_up"):
        assert figures[row]["wall"] > figures[row]["model_time"] > 0
    assert figures["ratio"] == pytest.approx(figures["datarun"]["wall"] / figures["loop"]["wall"])
    assert figures["cold_ratio"] == pytest.approx(figures["datarun_cold"]["wall"] / figures["loop"]["wall"])
    assert "goal: datarun at most 0.6 x the loop's wall time" in text
    assert not Path(figures["scratch"]).exists()


@pytest.mark.slow
def test_cli_bench_times_status_and_leaderboard_on_a_filled_workspace():
    figures, text = run_bench("cli.py")
    assert figures["submissions"] == 50 and figures["tasks"] == 250
    for name in ("status", "leaderboard", "python_pandas_sklearn"):
        assert figures[name]["median"] > 0 and figures[name]["cpu_median"] > 0
        assert len(figures[name]["runs"]) == 3
    assert figures["status"]["met"] == (figures["status"]["median"] <= 0.4)
    assert "datarun leaderboard iris --json" in text
    assert not Path(figures["scratch"]).exists()


def test_site_bench_times_a_build_an_update_and_the_leaderboard():
    figures, text = run_bench("site.py")
    assert figures["submissions"] == 50 and figures["pages"] == 54  # index, css, event, spread, 50
    for name in ("scratch", "update", "unchanged", "leaderboard"):
        assert figures[name]["median"] > 0 and len(figures[name]["runs"]) == 2
    assert figures["update"]["files_written"] == [4, 4]
    assert figures["update"]["met"] == (figures["update"]["median"] <= 1.0)
    assert "datarun site OUT, after one new submission" in text
    assert "datarun leaderboard iris --json" in text
    assert not Path(figures["scratch_folder"]).exists()


@pytest.mark.slow
def test_ramp_bench_times_registration_training_and_export_beside_ramp_test():
    figures, text = run_bench("ramp.py")
    assert sorted(figures["kits"]) == ["iris_classifier", "wine_custom"]
    for kit in figures["kits"].values():
        for side in ("import_rampwf", "rampwf_data", "problem_add", "train", "export",
                     "ramp_test"):
            assert kit[side]["min"] == kit[side]["median"] > 0 and len(kit[side]["runs"]) == 1
        assert kit["problem_add_met"] == (kit["problem_add"]["min"] <= kit["goal"])
        assert kit["cpu"]["add_critical_path"] == pytest.approx(
            kit["cpu"]["child"] + kit["cpu"]["store"])
        assert kit["cpu"]["parent"] > 0 and kit["cpu"]["rampwf_data"] > 0
    assert "goal: problem add and export --ramp at most 'rampwf + data'" in text
    assert not Path(figures["scratch"]).exists()


def ssh_bench_skip_reason() -> str | None:
    """The SSH benches' own verdict on this machine (root, sshd, the datarun-test user)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_common", BENCH / "common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ssh_setup_missing()


@pytest.fixture
def ssh_bench_setup():
    reason = ssh_bench_skip_reason()
    if reason:
        pytest.skip(f"SSH benches: {reason}")


@pytest.mark.slow
@pytest.mark.ssh
def test_ssh_overhead_bench_compares_ssh_hosts_with_the_local_host(ssh_bench_setup):
    # --compare: the same run measures the code of a git revision too (here the one checked
    # out, so only that the comparison runs and reports is checked).
    figures, text = run_bench("ssh_overhead.py", "--compare", "HEAD")
    assert figures["tasks"] == 4
    for side in ("local", "ssh"):
        assert figures[side]["wall"] > figures[side]["model_time"] > 0
    assert figures["added_per_task"] == pytest.approx(
        (figures["ssh"]["wall"] - figures["local"]["wall"]) / figures["tasks"])
    assert figures["met"] == (figures["added_per_task"] <= 0.05)
    first, second = figures["shipping"]["first"], figures["shipping"]["second"]
    assert first["harness"] > 0 and first["data"] > 0 and first["bundles"] > 0
    # Shipping once is a property, not a timing: it must hold on any machine.
    assert second["harness"] == 0 and second["data"] == 0 and second["bundles"] > 0
    assert figures["second_only_bundles"] is True
    assert "goal: SSH adds at most 50 ms per task" in text
    compare = figures["compare"]
    assert compare["wall"] > compare["model_time"] > 0 and len(compare["walls"]) == 1
    assert compare["wall_ratio"] == pytest.approx(figures["ssh"]["wall"] / compare["wall"])
    for side in ("old", "new"):
        assert all(compare["layers"][side][key] > 0
                   for key in ("connect", "command", "upload", "download"))
    assert compare["layers"]["new"]["fabric_run"] > 0
    assert f"goal: the SSH wall at most 1.10 x datarun at {compare['revision']}'s" in text
    assert not Path(figures["scratch"]).exists()


@pytest.mark.slow
@pytest.mark.ssh
def test_makespan_bench_compares_four_ssh_hosts_with_the_ideal(ssh_bench_setup):
    figures, text = run_bench("makespan.py")
    assert figures["tasks"] == 16 and figures["hosts"] == 4 and figures["slots_per_host"] == 2
    assert figures["ideal"] == pytest.approx(figures["sum_of_durations"] / 8)
    assert figures["ideal"] <= figures["first_free_slot"]
    assert figures["ideal"] <= figures["datarun_makespan"] < figures["datarun_wall"]
    assert figures["ratio"] == pytest.approx(figures["datarun_makespan"] / figures["ideal"])
    assert 0 < figures["start_up"] < figures["datarun_wall"] - figures["datarun_makespan"]
    # Each task slept what its submission says, and little more.
    assert 0 <= figures["max_fit_beyond_sleep"] < 5.0
    assert "goal: makespan at most 1.15 x the ideal" in text
    assert not Path(figures["scratch"]).exists()


@pytest.mark.slow
@pytest.mark.ssh
def test_ship_bench_measures_datarun_beside_scp_and_a_resumed_transfer():
    if os.geteuid() != 0:
        pytest.skip("needs root: the bench's sshd logs in the unprivileged test user")
    figures, text = run_bench("ship.py")
    assert figures["scp"]["wall"] > 0 and figures["scp_after"]["wall"] > 0
    assert figures["datarun_auto"]["wall"] > 0 and figures["datarun_auto"]["sent"] > 0
    assert figures["datarun_auto"]["gzip"] == figures["auto_compresses"]
    assert figures["resume"]["kept"] > 0 and figures["resume"]["ratio"] <= 1.10
    assert "vs scp (goal <= 1.2x)" in text and "resumed after a cut" in text


@pytest.mark.slow
def test_scale_bench_measures_each_figure_beside_its_baseline():
    figures, text = run_bench("scale.py")
    registration = figures["registration"]
    assert registration["problem_add_s"] > 0 and registration["read_csv_s"] > 0
    disk = figures["disk_per_task"]
    assert disk["tasks"] == 5 and 0 < disk["bytes_per_task"] < disk["npy_bytes_per_task"]
    assert 0 < disk["logreg_packed_bytes"] < disk["logreg_npy_bytes"]
    assert disk["host_data_extra_bytes"] < 1024 < disk["data_set_bytes"]  # one copy: hard links
    throughput = figures["throughput"]
    assert throughput["fresh"]["tasks_per_s"] > 0 and throughput["scored"]["scored"] == 40
    assert throughput["scored"]["sustained_tasks_per_s"] >= throughput["scored"]["tasks_per_s"]
    (blend,) = figures["contributivity"]
    assert blend["cached_s"] > 0 and blend["uncached_s"] > 0
    for words in ("read_csv", "as .npy", "a copy", "fresh workspace", "without cache", "load average"):
        assert words in text


@pytest.mark.slow
def test_cluster_bench_measures_a_dask_host_beside_the_local_host():
    pytest.importorskip("distributed", reason="bench/cluster.py needs `distributed` (pip install '.[cluster]')")
    figures, text = run_bench("cluster.py")
    assert figures["tasks"] == 8
    for side in ("local_2_slots", "dask_2_workers", "dask_many_workers"):
        assert figures[side]["tasks"] == 8
        assert figures[side]["wall"] > figures[side]["model_time"] > 0
    assert figures["dask_many_workers"]["workers"] == 3
    assert figures["dask_added_per_task"] == pytest.approx(
        figures["dask_2_workers"]["per_task"] - figures["local_2_slots"]["per_task"])
    assert figures["met"] == (figures["dask_added_per_task"] <= 0.010)
    assert figures["dask_many_workers"]["tasks_per_second"] == pytest.approx(
        8 / figures["dask_many_workers"]["wall"])
    assert "goal: a Dask host adds at most 10 ms per task beside the local host" in text
    assert "throughput with 3 workers" in text
    assert not Path(figures["scratch"]).exists()
