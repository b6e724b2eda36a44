"""Tests of hdrlab.sweep: sweep-file validation, W&B macro expansion, the offline agent
(grid/random/bayes, hyperband, crash + retry, lock, kill-and-resume) and the online path
against a mocked W&B API.

Trials run ``tests/stub_trial.py`` (no torch), so the whole file is CPU-light.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from hdrlab.errors import ConfigError, HDRIOError
from hdrlab.sweep import agent as agent_mod
from hdrlab.sweep import online
from hdrlab.sweep.agent import (
    OfflineSweepAgent,
    SweepDirLock,
    SweepLockedError,
    atomic_write_json,
    load_state,
    read_metric_history,
    tail_lines,
    threads_per_worker,
    to_sweep_run,
)
from hdrlab.sweep.config import (
    command_arg_formats,
    expand_command,
    grid_points,
    load_sweep,
    split_server_keys,
    validate_sweep_config,
)

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
STUB = REPO / "tests" / "stub_trial.py"
SWEEP_FILES = sorted((REPO / "sweeps").glob("*.yaml")) + sorted(DATA.glob("sweep_*.yaml"))


def stub_config(method: str, parameters: dict, **extra) -> dict:
    """A sweep config whose command runs the stub trial."""
    cfg = {
        "name": f"test-{method}",
        "method": method,
        "metric": {"name": "val/score", "goal": "maximize"},
        "parameters": parameters,
        "command": ["${env}", "${interpreter}", str(STUB), "${args}"],
    }
    cfg.update(extra)
    return cfg


def ledger_lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def ledger(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "ledger.txt"
    monkeypatch.setenv("STUB_LEDGER", str(path))
    monkeypatch.delenv("STUB_CRASH", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.chdir(REPO)
    return path


def run_agent(cfg: dict, sweep_dir: Path, **kwargs) -> dict:
    spec = validate_sweep_config(cfg)
    kwargs.setdefault("poll_interval", 0.05)
    kwargs.setdefault("log", lambda msg: None)
    return OfflineSweepAgent(spec, sweep_dir=sweep_dir, **kwargs).run()


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_sweep_file_validates(path):
    spec = load_sweep(path)
    assert spec.method in ("grid", "random", "bayes")
    assert isinstance(spec.raw.get("command", []), list)


def test_run_cap_is_stripped_before_the_engine_and_kept():
    import jsonschema
    import sweeps

    cfg = stub_config("grid", {"x": {"values": [1, 2, 3]}}, run_cap=2)
    with pytest.raises(jsonschema.ValidationError, match="run_cap"):
        sweeps.SweepConfig(cfg)  # the trap: sweeps 0.2 rejects the server key
    engine, server = split_server_keys(cfg)
    assert server == {"run_cap": 2} and "run_cap" not in engine
    spec = validate_sweep_config(cfg)
    assert spec.run_cap == 2 and "run_cap" not in spec.engine and spec.raw["run_cap"] == 2


@pytest.mark.parametrize(
    "cfg, match",
    [
        ({"method": "grid", "parameters": {"lr": {"min": 0.1, "max": 1.0}}}, "disallowed type with grid"),
        ({"method": "bayes", "parameters": {"lr": {"min": 0.1, "max": 1.0}}}, "requires \"metric\""),
        ({"method": "random", "parameterz": {"lr": {"values": [1]}}}, "parameters"),
        ({"method": "random", "parameters": {"a": {"values": [1]}}, "command": ["${interpreter}", "${arg}"]}, r"\$\{arg\}"),
        ({"method": "random", "parameters": {"a": {"values": [1]}}, "command": ["${program}"]}, "program"),
        ({"method": "random", "parameters": {"a": {"values": [1]}}, "run_cap": 0}, "run_cap"),
    ],
)
def test_invalid_sweep_configs_raise_config_error(cfg, match):
    with pytest.raises(ConfigError, match=match):
        validate_sweep_config(cfg, source="x.yaml")


def test_flow_list_command_is_reported_with_the_fix(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("method: grid\nparameters: {a: {values: [1]}}\ncommand: [${env}, ${interpreter}]\n")
    with pytest.raises(HDRIOError, match="block list"):
        load_sweep(path)
    with pytest.raises(HDRIOError, match="does not exist"):
        load_sweep(tmp_path / "missing.yaml")


MACRO_COMMAND = [
    "${env}", "${interpreter}", "${program}", "-m", 3, "x${args}", "${args}", "${args_no_hyphens}",
    "${args_json}", "${args_json_file}", "${args_no_boolean_flags}", "${args_no_equals}",
    "${args_append_hydra}", "${args_override_hydra}", "${unknown_macro}", "a${envvar:HDRLAB_T_VAR}b",
    "${envvar:HDRLAB_T_UNSET}",
]  # fmt: skip
MACRO_PARAMS = {"lr": 0.001, "flag": False, "on": True, "name": "a b", "n": None, "d": {"k": 1}, "i": 7}


def test_macro_expansion_matches_wandb_agent(tmp_path, monkeypatch):
    """Reference: wandb's own Agent._command_run with the process start captured."""
    import wandb.wandb_agent as wandb_agent

    monkeypatch.setenv("HDRLAB_T_VAR", "VAL")
    monkeypatch.delenv("HDRLAB_T_UNSET", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SWEEP_ID", "sw1")
    for var in ("WANDB_RUN_ID", "WANDB_SWEEP_PARAM_PATH"):
        monkeypatch.setenv(var, "placeholder")  # restored after the test; _command_run sets them
    captured = {}

    class CapturedProcess:
        def __init__(self, command=None, env=None, **kwargs):
            captured["command"] = command

    monkeypatch.setattr(wandb_agent, "AgentProcess", CapturedProcess)
    agent = wandb_agent.Agent(api=None, queue=None, sweep_id="sw1")
    agent._sweep_command = list(MACRO_COMMAND)
    args = {k: {"value": v} for k, v in MACRO_PARAMS.items()}
    agent._command_run({"run_id": "r1", "program": "train.py", "args": args})
    reference = captured["command"]

    json_file = str(tmp_path / "wandb" / "sweep-sw1" / "config-r1.json")
    ours = expand_command(MACRO_COMMAND, MACRO_PARAMS, program="train.py", interpreter="python", args_json_file=json_file)
    assert ours == reference
    assert "x${args}" in ours and "aVALb" in ours and "HDRLAB_T_UNSET" in ours  # partial macro kept
    # the default command and the offline interpreter
    default = expand_command(None, {"a": 1}, program="p.py")
    assert default == ["/usr/bin/env", sys.executable, "p.py", "--a=1"]


def test_grid_points_enumerate_the_grid():
    points = grid_points(load_sweep(DATA / "sweep_grid.yaml"))
    assert [(p["x"], p["y"]) for p in points] == [(1, 0.5), (1, 0.25), (2, 0.5), (2, 0.25)]
    assert all(p["epochs"] == 2 for p in points)
    with pytest.raises(ConfigError, match="grid"):
        grid_points(validate_sweep_config({"method": "random", "parameters": {"a": {"values": [1]}}}))


def test_arg_formats_closed_form():
    import numpy as np

    out = command_arg_formats({"lr": np.float64(0.5), "on": True, "off": False, "k": np.int64(3)})
    assert out["args"] == ["--lr=0.5", "--on=True", "--off=False", "--k=3"]
    assert out["args_no_boolean_flags"] == ["--lr=0.5", "--on", "--k=3"]
    assert json.loads(out["args_json"][0]) == {"lr": 0.5, "on": True, "off": False, "k": 3}


# ----------------------------------------------------------------------------- pure helpers


def test_read_metric_history_reads_lightning_csvlogger(tmp_path):
    """Reference file written by Lightning's own CSVLogger (blank cells in train rows)."""
    from lightning.fabric.loggers import CSVLogger

    logger = CSVLogger(tmp_path, name="run", version=0)
    values = [20.5, 21.25, 22.0]
    for epoch, value in enumerate(values):
        logger.log_metrics({"train/loss": 1.0 / (epoch + 1), "epoch": epoch}, step=2 * epoch)
        logger.log_metrics({"val/psnr_mu": value, "epoch": epoch}, step=2 * epoch + 1)
    logger.save()
    history = read_metric_history(Path(logger.log_dir) / "metrics.csv", "val/psnr_mu")
    assert [h["val/psnr_mu"] for h in history] == values
    assert [h["_step"] for h in history] == [1, 3, 5] and [h["epoch"] for h in history] == [0, 1, 2]
    assert read_metric_history(tmp_path / "missing.csv", "val/psnr_mu") == []


def test_sweep_run_uses_aliases_so_metrics_reach_the_engine():
    trial = {"id": "t0000", "state": "failed", "params": {"a": 1}}
    history = [{"m": 1.0, "_step": 0}, {"m": 2.0, "_step": 1}]
    run = to_sweep_run(trial, history, "m")
    assert run.summary_metrics == {"m": 2.0} and run.history == history  # dropped without aliases
    assert run.state == "crashed" and run.config == {"a": {"value": 1}}
    assert run.metric_extremum("m", "maximum") == 2.0


def test_threads_per_worker_closed_form():
    assert [threads_per_worker(w, cores=8) for w in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]


def test_atomic_write_and_state_validation(tmp_path):
    path = tmp_path / "state.json"
    atomic_write_json(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1} and not (tmp_path / ".state.json.tmp").exists()
    with pytest.raises(HDRIOError, match="not an hdrlab sweep state"):
        load_state(path)
    path.write_text("{")
    with pytest.raises(HDRIOError, match="not valid JSON"):
        load_state(path)


def test_tail_lines(tmp_path):
    log = tmp_path / "trial.log"
    log.write_text("".join(f"line {i}\n" for i in range(120)))
    tail = tail_lines(log, 50).splitlines()
    assert len(tail) == 50 and tail[0] == "line 70" and tail[-1] == "line 119"


# ----------------------------------------------------------------------------- the agent


def test_grid_2x2_runs_each_trial_exactly_once(tmp_path, ledger, monkeypatch):
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    monkeypatch.setenv("WANDB_SWEEP_ID", "inherited")  # from a surrounding `wandb agent`: must not leak
    spec = load_sweep(DATA / "sweep_grid.yaml")
    agent = OfflineSweepAgent(spec, sweep_dir=tmp_path / "sw", workers=2, poll_interval=0.05, project="p", log=lambda m: None)
    state = agent.run()
    state = load_state(tmp_path / "sw" / "state.json")
    assert [t["state"] for t in state["trials"]] == ["finished"] * 4
    grid = sorted((t["params"]["x"], t["params"]["y"]) for t in state["trials"])
    assert grid == [(1, 0.25), (1, 0.5), (2, 0.25), (2, 0.5)]
    lines = ledger_lines(ledger)
    completed = sorted(parts[0] for parts in lines if parts[1] == "completed")
    assert completed == ["t0000", "t0001", "t0002", "t0003"]
    assert sum(parts[1] == "start" for parts in lines) == 4
    for t in state["trials"]:
        # stub metric closed form: quality * epochs + x + 10 y, epochs = 2, quality = 1
        assert t["metric"] == pytest.approx(2 + t["params"]["x"] + 10 * t["params"]["y"])
        assert t["launches"] == 1 and t["history_len"] == 2
        env = json.loads((Path(t["run_dir"]) / "env.json").read_text())
        threads = str(threads_per_worker(2))
        assert env["OMP_NUM_THREADS"] == threads and env["HDRLAB_TORCH_THREADS"] == threads
        assert env["WANDB_MODE"] == "offline" and env["WANDB_RUN_GROUP"] == state["group"]
        assert env["WANDB_SWEEP_ID"] is None and env["WANDB_PROJECT"] == "p"
        assert t["command"][-2:] == ["--run_dir", t["run_dir"]]
    # a second run of the same command does nothing
    run_agent_state = OfflineSweepAgent(spec, sweep_dir=tmp_path / "sw", poll_interval=0.05, log=lambda m: None).run()
    assert len(run_agent_state["trials"]) == 4 and len(ledger_lines(ledger)) == len(lines)


@pytest.mark.parametrize("method", ["random", "bayes"])
def test_random_and_bayes_respect_count(tmp_path, ledger, method):
    params = {
        "x": {"distribution": "uniform", "min": 0.0, "max": 1.0},
        "y": {"distribution": "log_uniform_values", "min": 0.01, "max": 0.1},
        "epochs": {"value": 1},
        "sleep": {"value": 0.0},
    }
    state = run_agent(stub_config(method, params), tmp_path / "sw", count=3)
    assert len(state["trials"]) == 3 and all(t["state"] == "finished" for t in state["trials"])
    for t in state["trials"]:
        assert 0.0 <= t["params"]["x"] <= 1.0 and 0.01 <= t["params"]["y"] <= 0.1
        assert t["metric"] == pytest.approx(1 + t["params"]["x"] + 10 * t["params"]["y"], abs=1e-5)
    if method == "bayes":  # after the random cold start the GP reports its suggestion info
        assert "expected_improvement" in json.dumps(state["trials"][-1]["search_info"])
    # run_cap (server key) caps as well
    capped = run_agent(stub_config(method, params, run_cap=2), tmp_path / "sw_cap")
    assert len(capped["trials"]) == 2


def test_hyperband_stops_the_bad_trial(tmp_path, ledger):
    cfg = stub_config(
        "grid",
        {"quality": {"values": [3.0, 2.0, 0.1]}, "epochs": {"value": 6}, "sleep": {"value": 0.3}},
        early_terminate={"type": "hyperband", "min_iter": 1, "eta": 2},
    )
    state = run_agent(cfg, tmp_path / "sw", workers=1, kill_delay=2.0)
    by_quality = {t["params"]["quality"]: t for t in state["trials"]}
    assert by_quality[3.0]["state"] == "finished" and by_quality[2.0]["state"] == "finished"
    bad = by_quality[0.1]
    assert bad["state"] == "stopped" and "STOP" in bad["stop_reason"]
    assert 2 <= bad["history_len"] < 6
    completed = {parts[0] for parts in ledger_lines(ledger) if parts[1] == "completed"}
    assert bad["id"] not in completed and len(completed) == 2


def test_crashed_trial_is_recorded_and_only_it_is_retried(tmp_path, ledger, monkeypatch):
    spec = load_sweep(DATA / "sweep_grid.yaml")
    monkeypatch.setenv("STUB_CRASH", "t0001")
    quiet = dict(poll_interval=0.05, log=lambda m: None)
    state = OfflineSweepAgent(spec, sweep_dir=tmp_path / "sw", **quiet).run()
    failed = [t for t in state["trials"] if t["state"] == "failed"]
    assert [t["id"] for t in failed] == ["t0001"] and failed[0]["exit_code"] == 3
    assert "RuntimeError: stub crash on purpose" in failed[0]["log_tail"]
    assert sum(t["state"] == "finished" for t in state["trials"]) == 3
    before = ledger_lines(ledger)
    # without --retry_failed nothing runs again
    OfflineSweepAgent(spec, sweep_dir=tmp_path / "sw", **quiet).run()
    assert ledger_lines(ledger) == before
    monkeypatch.delenv("STUB_CRASH")
    state = OfflineSweepAgent(spec, sweep_dir=tmp_path / "sw", retry_failed=True, **quiet).run()
    new = ledger_lines(ledger)[len(before) :]
    assert [parts[:2] for parts in new] == [["t0001", "start"], ["t0001", "completed"]]
    retried = state["trials"][1]
    assert retried["state"] == "finished" and retried["attempt"] == 2
    assert retried["previous_attempts"][0]["exit_code"] == 3
    assert (tmp_path / "sw" / "trials" / "t0001.attempt1" / "trial.log").exists()


def test_second_agent_on_the_same_sweep_dir_fails_naming_the_lock(tmp_path, ledger):
    spec = load_sweep(DATA / "sweep_grid.yaml")
    with SweepDirLock(tmp_path / "sw"):
        with pytest.raises(SweepLockedError, match=r"\.lock"):
            OfflineSweepAgent(spec, sweep_dir=tmp_path / "sw", log=lambda m: None).run()


def test_changed_sweep_config_in_the_same_dir_is_refused(tmp_path, ledger):
    cfg = stub_config("grid", {"x": {"values": [1]}, "epochs": {"value": 1}, "sleep": {"value": 0.0}})
    run_agent(cfg, tmp_path / "sw")
    cfg["parameters"]["x"]["values"] = [1, 2]
    with pytest.raises(ConfigError, match="different sweep config"):
        run_agent(cfg, tmp_path / "sw")


def _agent_cmd(sweep_file: Path, sweep_dir: Path) -> list[str]:
    return [sys.executable, "-m", "hdrlab.commands.sweep", str(sweep_file), "--sweep_dir", str(sweep_dir),
            "--workers", "2", "--poll_interval", "0.05"]  # fmt: skip


def _wait_for(predicate, timeout: float, step: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def test_kill_and_resume(tmp_path, ledger, capsys):
    """SIGTERM once, SIGKILL the agent at random points and during state writes, re-run until done."""
    cfg = stub_config(
        "grid",
        {"x": {"values": [1, 2, 3]}, "y": {"values": [0.0, 1.0]}, "epochs": {"value": 3}, "sleep": {"value": 0.3}},
    )
    sweep_file = tmp_path / "sweep_kill.yaml"
    sweep_file.write_text(yaml.safe_dump(cfg, sort_keys=False))
    sweep_dir = tmp_path / "sw"
    state_path = sweep_dir / "state.json"
    tmp_state = sweep_dir / ".state.json.tmp"
    env = dict(os.environ, **{agent_mod.SLOW_WRITE_ENV: "0.1"})
    rng = random.Random(4)
    started = time.monotonic()
    plan = ["term", "mid_write", "random", "mid_write", "random", "mid_write"]
    kills = {"term": 0, "mid_write": 0, "random": 0, "mid_write_confirmed": 0}
    agent_runs = 0
    finished_early = False

    def seq() -> int:
        try:
            return int(json.loads(state_path.read_text()).get("seq", 0))
        except (FileNotFoundError, json.JSONDecodeError):
            return -1

    for mode in plan:
        last_seq = seq()
        with (tmp_path / "agent.log").open("ab") as agent_log:
            proc = subprocess.Popen(_agent_cmd(sweep_file, sweep_dir), env=env, cwd=REPO,
                                    stdout=agent_log, stderr=subprocess.STDOUT)  # fmt: skip
        agent_runs += 1
        assert _wait_for(lambda: seq() > last_seq or proc.poll() is not None, 60), "agent made no progress"
        if mode == "mid_write":
            hit = _wait_for(lambda: tmp_state.exists() or proc.poll() is not None, 30, step=0.002)
            assert hit
        elif mode == "random":
            time.sleep(rng.uniform(0.0, 1.0))
        else:  # graceful stop once a trial has a checkpoint: the agent takes its trials down with it
            assert _wait_for(lambda: _running_with_ckpt(sweep_dir) or proc.poll() is not None, 60)
        if proc.poll() is not None:
            finished_early = True
            break
        if mode == "term":
            pids = [int(p.read_text()) for p in sweep_dir.glob("trials/*/.trial.pid")
                    if not (p.parent / ".trial.exit").exists()]  # fmt: skip
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 128 + signal.SIGTERM
            for pid in pids:
                assert _wait_for(lambda: not _alive(pid), 10), f"trial pid {pid} survived the agent's SIGTERM"
        else:
            proc.kill()
            proc.wait(30)
            if mode == "mid_write":
                kills["mid_write_confirmed"] += int(_is_partial_json(tmp_state))
        kills[mode] += 1
        load_state(state_path)  # valid JSON after every kill

    proc = subprocess.run(_agent_cmd(sweep_file, sweep_dir), env=dict(os.environ), cwd=REPO,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    agent_runs += 1
    assert proc.returncode == 0, proc.stderr[-2000:]
    wall = time.monotonic() - started

    state = load_state(state_path)
    assert len(state["trials"]) == 6 and all(t["state"] == "finished" for t in state["trials"])
    assert sorted((t["params"]["x"], t["params"]["y"]) for t in state["trials"]) == [
        (x, y) for x in (1, 2, 3) for y in (0.0, 1.0)
    ]
    lines = ledger_lines(ledger)
    completed = sorted(parts[0] for parts in lines if parts[1] == "completed")
    assert completed == [f"t{i:04d}" for i in range(6)], "every trial completes exactly once"
    for t in state["trials"]:
        assert t["metric"] == pytest.approx(3 + t["params"]["x"] + 10 * t["params"]["y"])
        assert not agent_mod.lock_is_held(Path(t["run_dir"]) / ".trial.lock")
    relaunches = sum(t["launches"] for t in state["trials"]) - 6
    resumed = sum(parts[1] == "start" and "ckpt=True" in parts for parts in lines)
    assert kills["term"] == 1 or finished_early
    with capsys.disabled():
        print(
            f"\n[kill-and-resume] kills={kills} agent_runs={agent_runs} trials=6 relaunches={relaunches} "
            f"resumed_from_ckpt={resumed} trial_starts={sum(p[1] == 'start' for p in lines)} wall={wall:.1f}s"
        )


def _running_with_ckpt(sweep_dir: Path) -> bool:
    return any(
        (d / "checkpoints" / "last.ckpt").exists() and (d / ".trial.pid").exists() and not (d / ".trial.exit").exists()
        for d in sweep_dir.glob("trials/t*")
    )


def _is_partial_json(path: Path) -> bool:
    try:
        json.loads(path.read_text())
    except json.JSONDecodeError:
        return True
    except FileNotFoundError:
        return False
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by init) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# ----------------------------------------------------------------------------- online (mocked W&B)


def test_is_logged_in_detection(tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert not online.is_logged_in()
    host = wandb.Settings().base_url.split("//", 1)[1].split("/")[0]
    (tmp_path / "netrc").write_text(f"machine {host}\n  login user\n  password {'k' * 40}\n")
    os.chmod(tmp_path / "netrc", 0o600)
    assert online.is_logged_in()
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert not online.is_logged_in()
    assert online.is_logged_in({"WANDB_API_KEY": "k" * 40})


def test_online_sweep_with_mocked_wandb(monkeypatch):
    import wandb

    calls = {}
    monkeypatch.setattr(wandb, "sweep", lambda config, project=None, entity=None: calls.setdefault("sweep", (config, project, entity)) and "abc123")
    monkeypatch.setattr(wandb, "agent", lambda sweep_id, **kw: calls.setdefault("agent", (sweep_id, kw)))
    monkeypatch.setenv("OMP_NUM_THREADS", "0")
    monkeypatch.setenv("HDRLAB_TORCH_THREADS", "0")
    spec = validate_sweep_config(stub_config("grid", {"x": {"values": [1, 2]}}, run_cap=5))
    messages = []
    sweep_id = online.run_online_sweep(spec, project="proj", entity="me", count=2, workers=1, cores=4, log=messages.append)
    assert sweep_id == "abc123"
    config, project, entity = calls["sweep"]
    assert config["run_cap"] == 5 and config["command"] == spec.raw["command"] and (project, entity) == ("proj", "me")
    assert calls["agent"] == ("abc123", {"project": "proj", "entity": "me", "count": 2})
    assert os.environ["HDRLAB_TORCH_THREADS"] == "4"
    assert "wandb agent me/proj/abc123" in messages[0]

    started = []

    class FakePopen:
        def __init__(self, argv, env=None, start_new_session=False):
            started.append((argv, env["HDRLAB_TORCH_THREADS"], start_new_session))

        def wait(self):
            return 0

        def poll(self):
            return 0

    monkeypatch.setattr(online.subprocess, "Popen", FakePopen)
    online.run_online_sweep(spec, project="proj", count=3, workers=2, cores=4, log=messages.append)
    assert started == [([sys.executable, "-m", "wandb", "agent", "--count", "3", "proj/abc123"], "2", True)] * 2


def test_sweep_command_chooses_online_or_offline(tmp_path, monkeypatch, ledger):
    from hdrlab.commands import sweep as sweep_cmd

    chosen = []
    monkeypatch.setattr(sweep_cmd, "is_logged_in", lambda: True)
    monkeypatch.setattr(sweep_cmd, "run_online_sweep", lambda spec, **kw: chosen.append(kw) or "id")
    assert sweep_cmd.main([str(DATA / "sweep_grid.yaml"), "--project", "p", "--count", "1"]) == 0
    assert chosen == [{"project": "p", "entity": None, "count": 1, "workers": 1, "overrides": None}]
    code = sweep_cmd.main([str(DATA / "sweep_grid.yaml"), "--offline", "--sweep_dir", str(tmp_path / "sw"), "--count", "1", "--poll_interval", "0.05"])
    assert code == 0 and len(chosen) == 1
    assert [t["state"] for t in load_state(tmp_path / "sw" / "state.json")["trials"]] == ["finished"]


# ----------------------------------------------------------------------------- trial overrides, paths


def make_checkout(root: Path) -> Path:
    """A miniature repository: sweeps/ov.yaml whose command names experiments/*.yaml relatively."""
    (root / "sweeps").mkdir(parents=True)
    (root / "experiments" / "overrides").mkdir(parents=True)
    (root / "experiments" / "base.yaml").write_text("y: 0.0\nsleep: 0.0\n")
    (root / "experiments" / "variant.yaml").write_text("y: 0.5\n")
    (root / "experiments" / "overrides" / "cpu.yaml").write_text("quality: 3.0\n")
    cfg = stub_config(
        "grid",
        {
            "x": {"values": [1, 2]},
            "config": {"values": [{"config": "experiments/variant.yaml"}, {"config": "experiments/variant.yaml", "y": 1.0}]},
            "quality": {"value": 1.0},
            "epochs": {"value": 1},
        },
        name="ov",
    )
    cfg["command"] = ["${env}", "${interpreter}", str(STUB), "--config", "experiments/base.yaml", "${args}"]
    path = root / "sweeps" / "ov.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_overrides_come_last_in_every_trial_and_are_kept_on_resume(tmp_path, ledger, monkeypatch, capsys):
    """From a directory without experiments/: paths resolve, overrides win, resume keeps them, others are refused."""
    from hdrlab.cli import main as hdrlab_main
    from hdrlab.commands import sweep as sweep_cmd

    root = tmp_path / "checkout"
    sweep_file = make_checkout(root)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    sweep_dir = tmp_path / "sw"
    base = [str(sweep_file), "--offline", "--sweep_dir", str(sweep_dir), "--poll_interval", "0.05"]
    typed = ["--config", "experiments/overrides/cpu.yaml", "--epochs", "2"]
    assert sweep_cmd.main(base + ["--count", "2", "--"] + typed) == 0
    stored = ["--config", str(root / "experiments" / "overrides" / "cpu.yaml"), "--epochs", "2"]
    state = load_state(sweep_dir / "state.json")
    assert state["overrides"] == stored  # absolute: a resume from anywhere finds the same file
    assert len(state["trials"]) == 2

    # resumed without the overrides (from the repository root this time): the recorded ones are kept
    monkeypatch.chdir(root)
    capsys.readouterr()
    assert sweep_cmd.main(base) == 0
    assert "trial overrides (recorded in state.json)" in capsys.readouterr().out
    state = load_state(sweep_dir / "state.json")
    assert len(state["trials"]) == 4 and all(t["state"] == "finished" for t in state["trials"])
    for t in state["trials"]:
        cmd = t["command"]
        assert cmd[-2:] == ["--run_dir", t["run_dir"]] and cmd[-2 - len(stored) : -2] == stored  # last before the agent's own
        seen = json.loads((Path(t["run_dir"]) / "argv.json").read_text())
        assert seen["argv"] == cmd[3:]
        assert seen["params"]["quality"] == "3.0" and seen["params"]["epochs"] == "2"  # the last word over fixed values
        # stub metric: quality * epochs + x + 10 y, y from the swept `config` mapping (variant.yaml: 0.5, or 1.0)
        y = t["params"]["config"].get("y", 0.5)
        assert t["metric"] == pytest.approx(3.0 * 2 + t["params"]["x"] + 10 * y)
    first, last = state["trials"][0]["command"], state["trials"][-1]["command"]
    assert first[first.index("--config") + 1] == str(root / "experiments" / "base.yaml")  # launched from elsewhere
    assert last[last.index("--config") + 1] == "experiments/base.yaml"  # launched from the root: untouched

    # the same overrides, typed relative to the repository root: accepted, nothing re-runs
    before = ledger_lines(ledger)
    assert sweep_cmd.main(base + ["--"] + typed) == 0
    assert ledger_lines(ledger) == before

    # different overrides: one error line naming both and the fix, nothing runs
    capsys.readouterr()
    assert hdrlab_main(["sweep"] + base + ["--", "--epochs", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("hdrlab sweep: error: ")
    assert f"`-- {' '.join(stored)}`" in err and "`-- --epochs 3`" in err
    assert "same overrides" in err and "--sweep_dir" in err
    assert ledger_lines(ledger) == before


def test_sweep_from_another_directory_resolves_repository_paths(tmp_path, ledger, monkeypatch):
    root = tmp_path / "checkout"
    sweep_file = make_checkout(root)
    monkeypatch.chdir(tmp_path)  # no experiments/ here
    spec = load_sweep(sweep_file)
    state = OfflineSweepAgent(spec, sweep_dir=tmp_path / "sw", count=2, poll_interval=0.05, log=lambda m: None).run()
    assert [t["state"] for t in state["trials"]] == ["finished", "finished"]  # the stub exits 4 on a missing --config
    for t in state["trials"]:
        cmd = t["command"]
        assert cmd[cmd.index("--config") + 1] == str(root / "experiments" / "base.yaml")
        rendered = [c for c in cmd if c.startswith("--config={")]
        assert len(rendered) == 1 and repr(str(root / "experiments" / "variant.yaml")) in rendered[0]
        assert t["params"]["config"]["config"] == "experiments/variant.yaml"  # state keeps the suggested value
        assert json.loads((Path(t["run_dir"]) / "argv.json").read_text())["cwd"] == str(tmp_path)


@pytest.mark.parametrize("name", ["smoke.yaml", "losses.yaml", "stage_combinations.yaml"])
def test_shipped_sweep_commands_resolve_from_any_directory(tmp_path, monkeypatch, name):
    """Every --config of every trial command names an existing file, from the root or from elsewhere."""
    import ast

    spec = load_sweep(REPO / "sweeps" / name)
    overrides = ["--config", "experiments/overrides/tiny.yaml", "--max_samples", "800"]
    for cwd in (REPO, tmp_path):
        monkeypatch.chdir(cwd)
        agent = OfflineSweepAgent(spec, sweep_dir=tmp_path / "sw", overrides=overrides, log=lambda m: None)
        for point in grid_points(spec)[:3]:
            argv = agent.trial_argv(point)
            assert argv[-4:] == ["--config", str(REPO / "experiments/overrides/tiny.yaml"), "--max_samples", "800"]
            configs = [argv[i + 1] for i, a in enumerate(argv) if a == "--config"]
            configs += [ast.literal_eval(a.split("=", 1)[1])["config"] for a in argv if a.startswith("--config={")]
            assert configs and all(Path(c).is_file() for c in configs), configs
            if cwd == REPO:  # from the root nothing in the sweep's own command changes
                assert argv[:-4] == expand_command(spec.command, point, interpreter=agent.interpreter)


def test_overrides_that_would_break_the_sweep_are_refused(tmp_path):
    from hdrlab.sweep.overrides import check_overrides, split_overrides

    assert split_overrides(["f.yaml", "--offline"]) == (["f.yaml", "--offline"], None)
    assert split_overrides(["f.yaml", "--", "--a", "--", "b"]) == (["f.yaml"], ["--a", "--", "b"])
    params = {"x": {"values": [1, 2]}, "lr": {"distribution": "uniform", "min": 0.1, "max": 1.0},
              "config": {"values": ["a.yaml", "b.yaml"]}, "epochs": {"value": 3}}  # fmt: skip
    check_overrides(["--epochs", "1", "--config", "c.yaml", "--y=2"], params)  # fixed values and --config: fine
    for flag in ("--run_dir", "--run_id", "--ckpt_path"):
        with pytest.raises(ConfigError, match=f"may not set {flag}"):
            check_overrides([f"{flag}=somewhere"], params)
    with pytest.raises(ConfigError, match=r"swept axis of s\.yaml \(x: values \[1, 2\]\)"):
        check_overrides(["--x", "5"], params, source="s.yaml")
    with pytest.raises(ConfigError, match="lr: distribution uniform"):
        check_overrides(["--lr=0.5"], params)
    axis_file = tmp_path / "o.yaml"
    axis_file.write_text("epochs: 1\nx: 7\n")
    with pytest.raises(ConfigError, match=f"x \\(via --config {axis_file}\\)"):
        check_overrides(["--config", str(axis_file)], params)
    # the shipped pitfall: tiny.yaml sets data.init_args.num_train_scenes, dataset_size.yaml's axis
    roots = [REPO]
    tiny = ["--config", "experiments/overrides/tiny.yaml", "--max_samples", "800"]
    with pytest.raises(ConfigError, match="data.init_args.num_train_scenes"):
        check_overrides(tiny, load_sweep(REPO / "sweeps/dataset_size.yaml").raw["parameters"], roots=roots)
    for name in ("stage_combinations", "smoke", "losses", "mask_thresholds", "memory_budgets"):
        check_overrides(tiny, load_sweep(REPO / f"sweeps/{name}.yaml").raw["parameters"], roots=roots)
    # the agent checks before taking the sweep dir
    spec = validate_sweep_config(stub_config("grid", {"x": {"values": [1, 2]}}))
    with pytest.raises(ConfigError, match="swept axis"):
        OfflineSweepAgent(spec, sweep_dir=tmp_path / "sw", overrides=["--x=3"])
    assert not (tmp_path / "sw").exists()


def test_online_sweep_gets_the_overrides_in_its_command(monkeypatch, tmp_path):
    import wandb

    from hdrlab.commands import sweep as sweep_cmd

    sent = {}
    monkeypatch.setattr(sweep_cmd, "is_logged_in", lambda: True)
    monkeypatch.setattr(wandb, "sweep", lambda config, project=None, entity=None: sent.setdefault("config", config) and "abc")
    monkeypatch.setattr(wandb, "agent", lambda sweep_id, **kw: None)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("HDRLAB_TORCH_THREADS", "1")
    monkeypatch.chdir(REPO)
    assert sweep_cmd.main([str(REPO / "sweeps/stage_combinations.yaml"), "--", "--config",
                           "experiments/overrides/tiny.yaml", "--max_samples", "800"]) == 0  # fmt: skip
    original = load_sweep(REPO / "sweeps/stage_combinations.yaml").raw["command"]
    assert sent["config"]["command"] == original + ["--config", "experiments/overrides/tiny.yaml", "--max_samples", "800"]
    assert original[-1] == "${args}"  # so they come after the grid values
    with pytest.raises(ConfigError, match="swept axis"):
        sweep_cmd.main([str(REPO / "sweeps/stage_combinations.yaml"), "--", "--seed_everything", "3"])
