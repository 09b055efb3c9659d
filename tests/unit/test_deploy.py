"""cluster.yaml and deploy/: validated with Ray's own schema, parsed, exercised."""

from __future__ import annotations

import copy
import fcntl
import os
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def load(path: Path):
    return yaml.safe_load(path.read_text())


def validate(config: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_cluster_yaml_passes_rays_validator():
    config = load(ROOT / "cluster.yaml")
    prepared = validate(config)
    types = prepared["available_node_types"]
    assert prepared["head_node_type"] == "head"
    assert types["gpu_worker"]["resources"] == {"GPU": 1}
    assert types["gpu_worker"]["min_workers"] == 0
    assert types["gpu_worker"]["max_workers"] >= 1
    assert "GPU" not in types["head"]["resources"]
    setup = " ".join(prepared["setup_commands"])
    assert "pip install -q -e /home/ubuntu/ensemble" in setup
    assert prepared["file_mounts"] == {"/home/ubuntu/ensemble": "."}


@pytest.mark.parametrize(
    "mutate, message",
    [
        (
            lambda c: c["available_node_types"]["gpu_worker"].update(
                resources={"GPU": 0.5}
            ),
            "GPU",
        ),
        (lambda c: c.update(head_node_type="nope"), "head_node_type"),
        (lambda c: c.update(not_a_key=1), "not_a_key"),
    ],
)
def test_the_validator_rejects_broken_variants(mutate, message):
    config = load(ROOT / "cluster.yaml")
    mutate(config)
    with pytest.raises(Exception, match=message):
        validate(config)


def entrypoint_args(entry: str) -> list[str]:
    args = shlex.split(entry)
    assert args[:3] == ["python", "-m", "ensemble"]
    return args[3:]


def test_rayjob_manifest():
    doc = load(DEPLOY / "rayjob.yaml")
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayJob"
    spec = doc["spec"]
    assert spec["rayClusterSpec"]["rayVersion"] == "2.60.0"
    gpu = spec["rayClusterSpec"]["workerGroupSpecs"][0]
    limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"
    # the entrypoint is a valid `ensemble fit` command line
    from ensemble.cli import _fit_arguments

    args = entrypoint_args(spec["entrypoint"])
    assert args[0] == "fit"
    _, overrides = _fit_arguments(args[1:])
    assert overrides["out"].startswith("s3://") and overrides["target"] == "target"


def test_raycronjob_manifest():
    doc = load(DEPLOY / "raycronjob.yaml")
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayCronJob"
    spec = doc["spec"]
    assert len(spec["schedule"].split()) == 5
    assert spec["concurrencyPolicy"] == "Forbid"
    job = spec["jobTemplate"]
    assert job["rayClusterSpec"]["rayVersion"] == "2.60.0"
    args = entrypoint_args(job["entrypoint"])
    assert args[0] == "nightly"
    import typer

    from ensemble.cli import app

    cmd = typer.main.get_command(app).commands["nightly"]
    params = cmd.make_context("nightly", args[1:]).params
    assert params["registry"] == "/mnt/registry" and params["margin"] == 0.001
    # the config it names ships in the image and is a valid run config
    assert str(params["config_file"]) == "/home/ray/ensemble/deploy/nightly.yaml"
    from ensemble.config import resolve

    config = resolve(DEPLOY / "nightly.yaml")
    assert config.target == "target" and config.time_limit == 1800
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "deploy/nightly.yaml /home/ray/ensemble/deploy/nightly.yaml" in dockerfile
    assert "FROM rayproject/ray:2.60.0" in dockerfile


def test_crontab_and_timer_run_the_submit_script():
    lines = [
        line
        for line in (DEPLOY / "crontab").read_text().splitlines()
        if line.strip() and not line.startswith(("#", "CRON_TZ"))
    ]
    assert len(lines) == 1
    fields = lines[0].split()
    assert fields[:5] == ["0", "2", "*", "*", "*"]
    assert "deploy/nightly-submit.sh" in lines[0]
    service = (DEPLOY / "ensemble-nightly.service").read_text()
    assert "ExecStart=/opt/ensemble/deploy/nightly-submit.sh" in service
    assert (
        "OnCalendar=*-*-* 02:00:00 UTC"
        in (DEPLOY / "ensemble-nightly.timer").read_text()
    )


@pytest.fixture
def fake_ray(tmp_path):
    """A stand-in for the `ray` CLI that records its arguments."""
    log = tmp_path / "ray-args"
    script = tmp_path / "ray"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {log}\n')
    script.chmod(0o755)
    return script, log


def run_script(fake, tmp_path, **env):
    base = {
        "PATH": os.environ["PATH"],
        "RAY": str(fake),
        "RAY_ADDRESS": "http://127.0.0.1:8265",
        "REGISTRY": "/mnt/registry",
        "LOCK_FILE": str(tmp_path / "lock"),
        "DAY": "2026-11-24",
    }
    return subprocess.run(
        ["bash", str(DEPLOY / "nightly-submit.sh")],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_nightly_submit_script_uses_a_dated_submission_id(fake_ray, tmp_path):
    fake, log = fake_ray
    res = run_script(fake, tmp_path)
    assert res.returncode == 0, res.stderr
    args = log.read_text().splitlines()
    assert args[:2] == ["job", "submit"]
    assert args[args.index("--submission-id") + 1] == "ensemble-nightly-2026-11-24"
    tail = args[args.index("--") + 1 :]
    assert tail == [
        "python",
        "jobs/nightly.py",
        "deploy/nightly.yaml",
        "--registry",
        "/mnt/registry",
        "--date",
        "2026-11-24",
    ]
    assert (ROOT / "jobs" / "nightly.py").is_file()


def test_nightly_submit_script_refuses_to_overlap(fake_ray, tmp_path):
    fake, log = fake_ray
    with open(tmp_path / "lock", "w") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        res = run_script(fake, tmp_path)
    assert res.returncode == 75
    assert "another run holds" in res.stderr
    assert not log.exists()  # nothing was submitted


def test_nightly_submit_script_needs_its_settings(fake_ray, tmp_path):
    fake, _ = fake_ray
    res = run_script(fake, tmp_path, REGISTRY="")
    assert res.returncode != 0
    assert "set REGISTRY" in res.stderr
