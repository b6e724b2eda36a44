"""``kill -9`` of a training process at seeded points, then the same command again: the run resumes
from ``checkpoints/last.ckpt`` and ends with exactly the weights of an uninterrupted run; the same
for one trial of the offline sweep agent killed together with the agent.

Kill points (toy method :class:`tests.reliability.toys.KillAtStep`, SIGKILL of its own process at
the end of a step): one drawn by a seeded RNG from each of "before the first checkpoint", "right
after a checkpoint" and "between checkpoints" of an 8-step run checkpointing every 3 steps.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG = ["--config", "tests/reliability/killable.yaml", "--config", "experiments/overrides/tiny.yaml",
          "--wandb", "disabled", "--trainer.log_every_n_steps", "1"]
EVERY, STEPS = 3, 8


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HDRLAB_TEST_KILL")}
    env.update({"PYTHONPATH": str(REPO), "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1",
                "HDRLAB_TORCH_THREADS": "1", **extra})
    return env


def _fit(run_dir: Path, **env: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "hdrlab", "fit", *CONFIG, "--run_dir", str(run_dir),
           "--checkpoint_every_n_steps", str(EVERY), "--ckpt_path", "last"]
    return subprocess.run(cmd, cwd=REPO, env=_env(**env), capture_output=True, text=True, timeout=300)


def _final(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == STEPS
    return ckpt["state_dict"]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def kill_points(seed: int = 20240611) -> list[int]:
    """One step from each kill class, drawn by a seeded RNG."""
    rng = random.Random(seed)
    steps = range(1, STEPS)
    before = [s for s in steps if s < EVERY]
    after = [s for s in steps if s % EVERY == 0]
    between = [s for s in steps if s > EVERY and s % EVERY]
    return [rng.choice(before), rng.choice(after), rng.choice(between)]


def test_sigkill_at_seeded_points_resumes_to_identical_weights(tmp_path):
    reference = tmp_path / "reference"
    done = _fit(reference)
    assert done.returncode == 0, done.stderr[-2000:]
    expected = _final(reference)
    points = kill_points()
    assert len(set(points)) == 3
    for step in points:
        run = tmp_path / f"killed_at_{step}"
        killed = _fit(run, HDRLAB_TEST_KILL_AT_STEP=str(step))
        assert killed.returncode == -signal.SIGKILL, (step, killed.returncode, killed.stderr[-2000:])
        last = run / "checkpoints" / "last.ckpt"
        saved = torch.load(last, weights_only=True)["global_step"] if last.exists() else 0
        assert saved == (step // EVERY) * EVERY, f"kill at {step}: last.ckpt at step {saved}"
        resumed = _fit(run)  # the same command, without the kill
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        assert _same(_final(run), expected), f"kill at step {step}: resumed weights differ"


def test_sweep_trial_killed_with_its_agent_resumes_from_last_ckpt(tmp_path):
    sweep = {
        "name": "killable", "method": "grid",
        "parameters": {"seed_everything": {"value": 0}},
        "command": ["${env}", "${interpreter}", "-m", "hdrlab", "fit", *CONFIG,
                    "--checkpoint_every_n_steps", str(EVERY), "${args}"],
    }
    sweep_file = tmp_path / "killable.yaml"
    sweep_file.write_text(yaml.safe_dump(sweep, sort_keys=False))

    def agent(sweep_dir: Path, **env: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "hdrlab", "sweep", str(sweep_file), "--offline", "--sweep_dir", str(sweep_dir)]
        return subprocess.run(cmd, cwd=REPO, env=_env(**env), capture_output=True, text=True, timeout=300)

    plain = agent(tmp_path / "plain")
    assert plain.returncode == 0, plain.stderr[-2000:]
    (expected_dir,) = (tmp_path / "plain" / "trials").iterdir()
    expected = _final(expected_dir)

    killed = agent(tmp_path / "sw", HDRLAB_TEST_KILL_AT_STEP="4", HDRLAB_TEST_KILL_AGENT="1")
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-2000:])
    (trial,) = (tmp_path / "sw" / "trials").iterdir()
    assert torch.load(trial / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3
    again = agent(tmp_path / "sw")  # the same sweep command
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resumed from" in again.stdout + again.stderr
    assert _same(_final(trial), expected), "the resumed trial's weights differ from an uninterrupted trial"
