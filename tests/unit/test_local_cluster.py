"""What a new machine lacks and a stopped cluster must not leave: the Ray token, HAProxy.

Real processes and files; no Ray needed (the quickstart in .ci/quickstart runs the whole
`make run` / `make stop` path as a new user)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from kuberay import local_cluster


def test_cluster_env_creates_a_private_token_when_the_machine_has_none(tmp_path, monkeypatch):
    token = tmp_path / "mlops" / "ray_auth_token"
    monkeypatch.setenv("HOME", str(tmp_path / "empty-home"))  # no ~/.ray/auth_token
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))

    env = local_cluster.cluster_env()

    assert env["RAY_AUTH_MODE"] == "token"
    assert env["RAY_AUTH_TOKEN_PATH"] == str(token)
    value = token.read_text()
    assert len(value) == 64 and int(value, 16) >= 0  # `ray get-auth-token --generate`'s format
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    # Every later command reads the same token: it is never regenerated.
    assert local_cluster.cluster_env()["RAY_AUTH_TOKEN_PATH"] == str(token)
    assert token.read_text() == value


def test_cluster_env_keeps_a_token_the_caller_gives(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "never-made"))
    env = local_cluster.cluster_env({"RAY_AUTH_TOKEN": "t" * 32})
    assert env["RAY_AUTH_TOKEN"] == "t" * 32
    assert not (tmp_path / "never-made").exists()


def test_project_token_is_git_ignored():
    root = local_cluster.PROJECT_TOKEN.parents[1]
    out = subprocess.run(
        ["git", "check-ignore", str(local_cluster.PROJECT_TOKEN)],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, "the Ray token file must never be committed"


def test_haproxy_dir_is_short_enough_for_haproxy_sockets(tmp_path):
    short = local_cluster.haproxy_dir("/tmp/ray")
    assert short == "/tmp/ray/hap"
    deep = local_cluster.haproxy_dir(str(tmp_path / ("x" * 40) / "ray"))
    try:
        assert deep.startswith("/tmp/rhp")
        # Serve adds "/<56-character node id>/admin.sock"; HAProxy refuses paths over 97 bytes.
        assert len(deep) + 1 + 56 + len("/admin.sock") <= 97
    finally:
        os.rmdir(deep)
    env = local_cluster.haproxy_env(short)
    assert {os.path.dirname(v) for v in env.values()} <= {short, os.path.dirname(short)}
    assert env["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"] == "/tmp/ray/hap/haproxy.cfg"


def _orphan(cmd_arg: str) -> subprocess.Popen:
    """A process in a session of its own whose command line names ``cmd_arg``, as the HAProxy
    that Serve starts is left after its node stops (re-parented to init, outside the node's
    session)."""
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "-f", cmd_arg],
        start_new_session=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    # Only once it ignores SIGTERM: a signal before that would end it the easy way.
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_stop_haproxy_ends_only_the_processes_of_this_cluster(tmp_path):
    ours = tmp_path / "hap"
    other = tmp_path / "hap-other"  # another cluster's directory, a prefix match of ours
    mine = _orphan(str(ours / ("a" * 56) / "haproxy.cfg"))
    theirs = _orphan(str(other / ("b" * 56) / "haproxy.cfg"))
    try:
        assert mine.pid in local_cluster.processes_naming(str(ours))
        assert theirs.pid not in local_cluster.processes_naming(str(ours))

        # It ignores SIGTERM, as a HAProxy busy draining would: stop_haproxy must still end it.
        local_cluster.stop_haproxy(str(ours), grace_s=1.0)

        assert mine.wait(timeout=10) == -signal.SIGKILL
        assert theirs.poll() is None, "a process of another cluster was stopped"
    finally:
        for p in (mine, theirs):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_stop_without_a_recorded_cluster_touches_nothing(tmp_path):
    bystander = _orphan(str(tmp_path / "hap" / "haproxy.cfg"))
    try:
        assert local_cluster.stop(str(tmp_path)) is False
        time.sleep(0.2)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def _makefile_deps() -> dict[str, list[str]]:
    text = (local_cluster.PROJECT_TOKEN.parents[1] / "Makefile").read_text()
    deps = {}
    for line in text.splitlines():
        head, sep, rest = line.partition(":")
        if sep and not line.startswith(("\t", " ", "#", ".")) and "=" not in line:
            deps[head.strip()] = rest.split()
    return deps


@pytest.mark.parametrize("target", ["run", "serve", "demo", "cluster", "bench", "status", "test"])
def test_every_make_target_that_talks_to_ray_makes_the_token_first(target):
    """A new machine has no token: each of these targets makes it (directly or through a
    prerequisite) before any Ray command, and the Makefile exports its path."""
    text = (local_cluster.PROJECT_TOKEN.parents[1] / "Makefile").read_text()
    assert "export RAY_AUTH_TOKEN_PATH ?= $(RAY_TOKEN_FILE)" in text
    assert "RAY_TOKEN_FILE := $(CURDIR)/.mlops/ray_auth_token" in text
    deps = _makefile_deps()

    def needs_token(t: str, seen: set[str]) -> bool:
        if t in seen:
            return False
        seen.add(t)
        return "ray-token" in deps.get(t, []) or any(needs_token(d, seen) for d in deps.get(t, []))

    assert target in deps
    assert needs_token(target, set()), f"make {target} does not make the Ray token first"
