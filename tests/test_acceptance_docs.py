"""Every command the README and docs/ tell a user to run has a test that runs it.

The commands are read from the fenced code blocks of README.md and docs/*.md; each must
match an entry of DOC_COMMANDS (longest prefix first), which names the tests that run it as a
user would, or NOT_RUN, which says why it cannot run on these machines. A doc command with no
entry, or an entry naming a test that does not exist, fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

from acceptance import REPO

ACC = "tests/test_acceptance_run.py::"
DVC = "tests/test_acceptance_dvc.py::"
DATA = "tests/test_acceptance_datasets.py::"
SLOW = "tests/test_acceptance_slow.py::"
SERVER = "tests/test_prefect_server.py::test_deployments_on_a_real_server"
LAUNCH = "tests/test_launch.py::"
BENCH = "tests/test_bench_smoke.py::test_script_answers_help"

DOC_COMMANDS: dict[str, tuple[str, ...]] = {
    "make demo": (SLOW + "test_make_demo_registers_the_sms_spam_champion",),
    "make test": (".ci/run",),  # CI runs it on every landing
    "make test-slow": ("tests/test_acceptance_docs.py::test_the_slow_tier_is_what_make_runs",),
    "tunesmith run --dataset assistant": (
        ACC + "test_the_readme_llm_command_trains_smollm2_and_answers",
        SLOW + "test_the_readme_llm_command_at_its_defaults"),
    "tunesmith run --all": (ACC + "test_run_all_again_reuses_every_step",),
    "tunesmith run --dataset sst2": (DATA + "test_the_adding_a_dataset_walkthrough_on_sst2",),
    "tunesmith run --dataset NAME --set train.processes=auto": (
        ACC + "test_processes_auto_trains_in_one_process_on_cpu",),
    "tunesmith run --dataset NAME --set train.processes=4": (
        LAUNCH + "test_lora_and_fsdp_train_in_two_launched_processes",),
    "tunesmith run --dataset toy": (SERVER,),  # docs/orchestration.md, on the server
    "tunesmith run": (ACC + "test_quick_start_runs_sms_spam_and_the_champion_answers",),
    "tunesmith step train --dataset NAME --set train.processes": (
        LAUNCH + "test_two_processes_train_like_one_with_the_same_global_batch",),
    "PET_NODE_RANK=1 tunesmith step train": (SLOW + "test_two_nodes_join_one_training_run",),
    "tunesmith step": (ACC + "test_processes_auto_trains_in_one_process_on_cpu",
                       DVC + "test_dvc_repro_runs_every_shipped_dataset_then_is_a_no_op"),
    "tunesmith tune": (ACC + "test_tune_two_trials_prints_and_writes_the_choice",
                       "tests/test_tune.py::test_space_specs_parse_and_bad_ones_are_one_line_errors"),
    "tunesmith resolve": (ACC + "test_every_shipped_dataset_resolves_and_lists",),
    "tunesmith dvc-yaml": (ACC + "test_every_shipped_dataset_resolves_and_lists",),
    "tunesmith dataset add sst2": (DATA + "test_the_adding_a_dataset_walkthrough_on_sst2",),
    "tunesmith dataset add NAME --source alpaca.json": (
        DATA + "test_dataset_add_instruction_data_in_every_shape",
        DATA + "test_the_added_alpaca_dataset_runs_at_the_defaults_and_answers"),
    "tunesmith dataset add alpaca": (DATA + "test_dataset_add_instruction_data_in_every_shape",),
    "tunesmith dataset add NAME --source FOLDER": (
        DATA + "test_dataset_add_image_folders",
        DATA + "test_an_added_image_dataset_runs_on_efficientnet_lite0"),
    "tunesmith dataset add": (DATA + "test_dataset_add_a_text_table_in_every_format",),
    "tunesmith dataset list": (ACC + "test_every_shipped_dataset_resolves_and_lists",),
    "tunesmith dataset check": (DATA + "test_dataset_check_on_every_shipped_dataset",),
    "tunesmith predict --dataset assistant": (
        ACC + "test_the_readme_llm_command_trains_smollm2_and_answers",),
    "tunesmith predict": (ACC + "test_quick_start_runs_sms_spam_and_the_champion_answers",
                          ACC + "test_the_image_dataset_runs_and_predicts_a_folder"),
    "tunesmith promote": (ACC + "test_promote_and_rollback_move_the_champion",),
    "tunesmith rollback": (ACC + "test_promote_and_rollback_move_the_champion",),
    "tunesmith serve": (SLOW + "test_serve_schedules_one_deployment_per_dataset", SERVER),
    "dvc repro": (DVC + "test_dvc_repro_runs_every_shipped_dataset_then_is_a_no_op",),
    "dvc exp run": (DVC + "test_experiments_metrics_plots_and_the_local_remote",),
    "dvc exp show": (DVC + "test_experiments_metrics_plots_and_the_local_remote",),
    "dvc metrics diff": (DVC + "test_experiments_metrics_plots_and_the_local_remote",),
    "dvc plots diff": (DVC + "test_experiments_metrics_plots_and_the_local_remote",),
    "dvc push": (DVC + "test_experiments_metrics_plots_and_the_local_remote",),
    "dvc pull": (DVC + "test_experiments_metrics_plots_and_the_local_remote",),
    "mlflow ui": (ACC + "test_quick_start_runs_sms_spam_and_the_champion_answers",),
    "python scripts/show_mlflow_run.py": (ACC + "test_show_mlflow_run_lists_the_pipeline_run",),
    "python scripts/check_mlflow_ui.py": (SLOW + "test_the_mlflow_ui_check_script",),
    "python scripts/check_prefect_ui.py": ("tests/test_register.py::",),
    "prefect server start": (SERVER,),
    "prefect work-pool create tunesmith-process": (SERVER,),
    "TUNESMITH_ROOT=<project> prefect --no-prompt deploy": (SERVER,),
    "TUNESMITH_ROOT=$PWD prefect --no-prompt deploy": (SERVER,),
    "prefect deployment run": (SERVER,),
    "prefect deploy --all": (SERVER,),
    "PREFECT_API_URL=http://host:4200/api tunesmith run": (SERVER,),
    "prefect worker start --pool tunesmith-process": (SERVER,),
    # Benchmarks: each script answers --help and its helpers are tested; a full run takes
    # minutes to hours and prints its figures into docs/benchmarks.md.
    "python bench/": (BENCH,),
}
NOT_RUN: dict[str, str] = {
    "dvc remote add -d s3": "needs an S3 bucket and credentials; these machines reach only "
                            "package registries (the local remote is tested: dvc push/pull)",
    "dvc remote modify s3": "the same S3 remote",
    "dvc remote add": "a cloud remote (S3/GCS/Azure) needs an account; the local one is tested",
    'pip install "dvc[s3]"': "the same S3 remote",
    "prefect work-pool create tunesmith-docker": "needs a Docker engine (none runs here)",
    "prefect worker start --pool tunesmith-docker": "needs a Docker engine",
    "prefect work-pool get-default-base-job-template --type kubernetes": "needs a cluster",
    "prefect work-pool create tunesmith-k8s": "needs a Kubernetes cluster",
    "prefect worker start --pool tunesmith-k8s": "needs a Kubernetes cluster",
    "pip install prefect-docker": "needs a Docker engine",
    "pip install prefect-kubernetes": "needs a Kubernetes cluster",
    "pip install prefect-dask": "a Dask cluster for task runners; not part of the pipeline",
    # Not tested yet: the team-scale issue (PostgreSQL-backed MLflow and Prefect servers with
    # auth, on loopback) is where this gets its test.
    "mlflow server --app-name basic-auth": "team scale: not yet run by a test",
}
PROGRAMS = re.compile(r"^(?:\.venv/bin/)?((?:[A-Z_]+=\S+ )*(?:tunesmith|dvc|make|mlflow|prefect|"
                      r"pip|python) .*)$")


def documented_commands() -> list[tuple[str, str]]:
    """(page, command) for every command line in a fenced block of README.md and docs/, and
    every inline `code span` that is a command (e.g. `.venv/bin/mlflow ui ...`)."""
    found = []
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = page.read_text(encoding="utf-8")
        inside, prose = False, []
        for line in text.splitlines():
            if line.lstrip().startswith("```"):
                inside = not inside
                continue
            match = PROGRAMS.match(line.strip()) if inside else None
            if match:
                command = re.split(r"\s{2,}#|\s{3,}", match.group(1))[0].strip()
                found.append((page.name, command))
            if not inside:
                prose.append(line)
        for span in re.findall(r"`([^`]+)`", "\n".join(prose)):
            match = PROGRAMS.match(" ".join(span.split()))
            if match and " " in match.group(1):
                found.append((page.name, match.group(1)))
    return found


def covering(command: str) -> str | None:
    """The longest entry the command starts with, tried again without its leading
    environment assignments (`ALPACA_JSON=... python bench/...` is the bench entry)."""
    keys = sorted([*DOC_COMMANDS, *NOT_RUN], key=len, reverse=True)
    bare = re.sub(r"^(?:[A-Z_]+=\S+ )+", "", command)
    return next((k for c in (command, bare) for k in keys if c.startswith(k)), None)


def test_every_documented_command_has_a_test():
    commands = documented_commands()
    assert len(commands) > 40  # the README alone gives ~25
    missing = [f"{page}: {cmd}" for page, cmd in commands if covering(cmd) is None]
    assert not missing, "documented commands no test runs:\n" + "\n".join(missing)


def test_an_environment_prefix_is_matched_on_the_command_behind_it():
    assert covering("ALPACA_JSON=a.json python bench/causal_throughput.py") == "python bench/"
    assert covering("PET_NODE_RANK=1 tunesmith step train --dataset x") == (
        "PET_NODE_RANK=1 tunesmith step train")
    assert covering("FOO=1 rm -rf /") is None


def test_every_named_test_exists():
    for key, tests in DOC_COMMANDS.items():
        for test in tests:
            file, _, func = test.partition("::")
            assert (REPO / file).is_file(), (key, file)
            if func:
                assert re.search(rf"def {func}\(", (REPO / file).read_text()), (key, test)


def test_every_entry_is_documented():
    """No stale entry: each key still matches some documented command."""
    commands = [c for _, c in documented_commands()]
    stale = [k for k in (*DOC_COMMANDS, *NOT_RUN) if not any(c.startswith(k) for c in commands)]
    assert not stale, stale


def test_the_slow_tier_is_what_make_runs():
    """`make test-slow` runs `pytest -m slow`, which collects the slow acceptance tests."""
    makefile = (REPO / "Makefile").read_text()
    assert "pytest -q -m slow" in makefile
    slow = Path(REPO / "tests" / "test_acceptance_slow.py").read_text()
    assert "pytestmark = pytest.mark.slow" in slow
