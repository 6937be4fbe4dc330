"""The service as systemd runs it: boot bookworm with `systemd-nspawn --boot`, install with
scripts/install.sh from a checkout (as a user would), then exercise READY, STATUS, the watchdog,
a bad config, the sandbox and a clean stop that publishes `offline` to the host's broker."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from device_tests._rootfs import BootedMachine, Overlay

pytestmark = pytest.mark.slow

PREFIX = f"edge-agent-test/{uuid.uuid4().hex[:8]}"
Broker = tuple[str, int]


def agent_config(broker: Broker) -> str:
    """Synthetic frames, detections to the session's broker (conftest.py) under a per-run prefix."""
    return f"""\
source: {{type: synthetic, fps: 10}}
sinks:
  - type: mqtt
    host: {broker[0]}
    port: {broker[1]}
    topic_prefix: {PREFIX}
model: {{threads: 1}}
"""


# Shorter than the shipped unit, so the test does not wait 30 s for a watchdog timeout.
DROP_IN = """\
[Service]
WatchdogSec=6
RestartSec=1
"""


def exposure(report: str) -> float:
    """The figure from `systemd-analyze security`'s last line (its exit code varies inside a container)."""
    return float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", report).group(1))  # type: ignore[union-attr]


def show(m: BootedMachine, *props: str) -> dict[str, str]:
    out = m.run(f"systemctl show edge-agent -p {','.join(props)}").stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def wait_for(pred, timeout: float, what: str, step: float = 0.5):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def retained(broker: Broker, topic: str) -> str | None:
    """The retained message on ``topic`` at the host's broker (mosquitto_sub), or None."""
    proc = subprocess.run(
        ["mosquitto_sub", "-h", broker[0], "-p", str(broker[1]), "-t", topic, "-C", "1", "-W", "3", "--retained-only"],
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    return proc.stdout.strip() or None


@pytest.fixture(scope="module")
def machine(host_tools: None, broker: Broker) -> Iterator[BootedMachine]:
    ov = Overlay("amd64")
    m = None
    try:
        ov.copy_checkout("/root/edge-agent")
        m = BootedMachine(ov)
        t0 = time.monotonic()
        out = m.run("/root/edge-agent/scripts/install.sh", timeout=1500).stdout
        print(f"install.sh took {time.monotonic() - t0:.0f} s\n{out[-3000:]}")
        assert "systemctl start edge-agent.service" in out
        yield m
    finally:
        if m is not None:
            m.close()
        ov.close()


def configure(m: BootedMachine, config: str) -> None:
    m.run(
        f"cat > /etc/edge-agent/config.yaml <<'EOF'\n{config}EOF\n"
        "mkdir -p /etc/systemd/system/edge-agent.service.d\n"
        f"cat > /etc/systemd/system/edge-agent.service.d/test.conf <<'EOF'\n{DROP_IN}EOF\n"
        "systemctl daemon-reload; systemctl reset-failed edge-agent || true"
    )


def test_install_enables_and_starts_the_service(machine: BootedMachine) -> None:
    m = machine
    assert m.run("systemctl is-enabled edge-agent").stdout.strip() == "enabled"
    wait_for(lambda: show(m, "ActiveState")["ActiveState"] == "active", 180, "edge-agent active")
    st = m.run("stat -c '%U:%G %a' /etc/edge-agent/config.yaml; ls /opt/edge-agent/venv/bin/edge-agent").stdout
    assert "root:edge-agent 640" in st


def test_unit_verifies_clean_and_scores_low_exposure(machine: BootedMachine) -> None:
    proc = machine.run("systemd-analyze verify /etc/systemd/system/edge-agent.service 2>&1", check=False)
    assert proc.returncode == 0 and proc.stdout.strip() == "", proc.stdout
    out = machine.run("systemd-analyze security --offline=yes /etc/systemd/system/edge-agent.service 2>&1 || true").stdout
    assert exposure(out) <= 3.0, out[-2000:]


def test_active_only_after_ready_and_status_shows_fps(machine: BootedMachine, broker: Broker) -> None:
    m = machine
    configure(m, agent_config(broker))
    m.run("systemctl restart --no-block edge-agent")
    seen = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        p = show(m, "ActiveState", "SubState", "StatusText")
        seen.append((p["ActiveState"], p["SubState"], p["StatusText"]))
        if p["ActiveState"] == "active":
            break
        time.sleep(0.1)
    assert seen[-1][0] == "active", seen[-5:]
    # it sat in "activating" while the model loaded and the first frame ran ...
    assert ("activating", "start", "") in seen, seen[:5]
    # ... and became active with READY=1, whose datagram carries the first STATUS=
    assert "fps" in seen[-1][2] and "model" in seen[-1][2], seen[-1]
    p = show(m, "ExecMainStartTimestampMonotonic", "ActiveEnterTimestampMonotonic", "Type", "NotifyAccess")
    assert p["Type"] == "notify" and p["NotifyAccess"] == "main"
    assert int(p["ActiveEnterTimestampMonotonic"]) - int(p["ExecMainStartTimestampMonotonic"]) > 300_000  # > 0.3 s of start-up
    time.sleep(6)  # STATUS refreshes every 5 s from the frame loop
    status = m.run("systemctl status --no-pager edge-agent", check=False).stdout
    print(status)
    line = next(ln for ln in status.splitlines() if "Status:" in ln)
    assert " fps, model " in line and 'Status: "0.0 fps' not in line, line


def test_detections_reach_the_host_broker(machine: BootedMachine, broker: Broker) -> None:
    proc = subprocess.run(
        ["mosquitto_sub", "-h", broker[0], "-p", str(broker[1]), "-t", f"{PREFIX}/detections", "-C", "1", "-W", "30"],
        text=True,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout.strip(), "no detection message reached the host's broker within 30 s"
    msg = json.loads(proc.stdout.splitlines()[0])
    assert "detections" in json.dumps(msg)
    assert retained(broker, f"{PREFIX}/availability") == "online"


def test_sigstop_is_caught_by_the_watchdog(machine: BootedMachine) -> None:
    m = machine
    before = show(m, "MainPID", "NRestarts")
    m.run("systemctl kill --kill-who=main --signal=SIGSTOP edge-agent")
    wait_for(lambda: show(m, "NRestarts")["NRestarts"] != before["NRestarts"], 60, "a watchdog restart")
    wait_for(lambda: show(m, "ActiveState")["ActiveState"] == "active", 180, "active again after the restart")
    assert show(m, "MainPID")["MainPID"] != before["MainPID"]
    journal = m.run("journalctl -u edge-agent --no-pager -o cat").stdout
    assert "Watchdog timeout" in journal, journal[-3000:]


def test_agent_writes_only_under_its_state_directory(machine: BootedMachine) -> None:
    m = machine
    owned = m.run(
        "find / \\( -path /proc -o -path /sys -o -path /dev \\) -prune -o -user edge-agent -print 2>/dev/null || true"
    ).stdout.split()
    assert owned, "the agent wrote nothing at all (expected its MQTT outbox)"
    stray = [p for p in owned if not (p == "/var/lib/edge-agent" or p.startswith("/var/lib/edge-agent/"))]
    # PrivateTmp= gives the unit its own /tmp, removed on stop; it lives under /tmp/systemd-private-*
    stray = [p for p in stray if not p.startswith("/tmp/systemd-private-")]
    assert not stray, f"edge-agent owns files outside /var/lib/edge-agent: {stray}"
    assert any(p.endswith(".sqlite") for p in owned), owned
    # and the sandbox holds: the service cannot write to /etc or /opt even if it tried
    probe = m.run(
        "systemd-run --wait --pipe -p User=edge-agent -p ProtectSystem=strict -p ProtectHome=yes "
        "sh -c 'touch /opt/edge-agent/x 2>&1; touch /etc/x 2>&1; echo done'",
        check=False,
    ).stdout
    assert "Read-only file system" in probe or "Permission denied" in probe, probe


def test_stop_is_clean_and_publishes_offline(machine: BootedMachine, broker: Broker) -> None:
    m = machine
    m.run("systemctl stop edge-agent")
    p = show(m, "ActiveState", "Result", "ExecMainStatus")
    assert p["ActiveState"] == "inactive" and p["Result"] == "success" and p["ExecMainStatus"] == "0", p
    journal = m.run("journalctl -u edge-agent --no-pager -o cat -n 30").stdout
    assert "stopped after" in journal, journal
    assert retained(broker, f"{PREFIX}/availability") == "offline"


def test_bad_config_fails_once_with_a_clear_line(machine: BootedMachine) -> None:
    m = machine
    configure(m, "source: {type: synthetic, fps: -5}\n")
    m.run("systemctl start edge-agent || true")
    wait_for(lambda: show(m, "ActiveState")["ActiveState"] == "failed", 120, "failed state")
    time.sleep(3)  # longer than RestartSec=1: a restart loop would show up here
    p = show(m, "ActiveState", "Result", "ExecMainStatus", "NRestarts")
    assert p == {"ActiveState": "failed", "Result": "exit-code", "ExecMainStatus": "2", "NRestarts": "0"}, p
    journal = m.run("journalctl -u edge-agent --no-pager -o cat -n 20").stdout
    assert "fps" in journal and "source" in journal, journal


def test_journal_priorities_filter_warnings(machine: BootedMachine) -> None:
    """`journalctl -p warning` (the README's advice) shows the agent's errors, and only those: <N> prefixes reach journald."""
    m = machine
    warnings = m.run("journalctl -u edge-agent -p warning --no-pager -o cat").stdout
    assert "config error" in warnings and "source.fps" in warnings, warnings[-3000:]
    everything = m.run("journalctl -u edge-agent --no-pager -o cat").stdout
    assert "stopped after" in everything and "stopped after" not in warnings, "info lines stay out of -p warning"
    assert "<3>" not in everything and "<6>" not in everything, "journald consumed the prefixes"
    priorities = m.run("journalctl -u edge-agent --no-pager -o json --output-fields=PRIORITY,MESSAGE").stdout
    levels = {json.loads(line).get("PRIORITY") for line in priorities.splitlines() if line.strip()}
    assert {"3", "6"} <= levels, levels


def test_reinstall_keeps_config_then_uninstall(machine: BootedMachine, broker: Broker) -> None:
    m = machine
    configure(m, agent_config(broker))
    out = m.run("/root/edge-agent/scripts/install.sh", timeout=900).stdout
    assert "kept existing /etc/edge-agent/config.yaml" in out
    assert "fps: 10" in m.run("cat /etc/edge-agent/config.yaml").stdout
    wait_for(lambda: show(m, "ActiveState")["ActiveState"] == "active", 180, "active after the upgrade")
    dry = m.run("/root/edge-agent/scripts/install.sh --uninstall --dry-run").stdout
    assert "+ rm -rf /opt/edge-agent" in dry and m.run("test -d /opt/edge-agent && echo yes").stdout.strip() == "yes"
    m.run("/root/edge-agent/scripts/install.sh --uninstall")
    assert (
        m.run("test -e /etc/systemd/system/edge-agent.service || test -d /opt/edge-agent || echo gone").stdout.strip() == "gone"
    )
    assert m.run("test -f /etc/edge-agent/config.yaml && echo kept").stdout.strip() == "kept"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_shipped_unit_verifies_on_the_host(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The repo's unit, ExecStart pointed at a binary that exists here (verify checks it)."""
    from device_tests._rootfs import REPO

    unit = tmp_path / "edge-agent.service"
    unit.write_text(
        (REPO / "systemd/edge-agent.service").read_text().replace("/opt/edge-agent/venv/bin/edge-agent", "/usr/bin/python3")
    )
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], text=True, capture_output=True, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stderr == "" and proc.stdout == "", proc.stderr  # 252 exits 0 on warnings
    # the figure, not the exit code: on a host without systemd as PID 1 security exits 1 even below --threshold
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--threshold=3", str(unit)], text=True, capture_output=True, cwd=tmp_path
    )
    assert exposure(proc.stdout) <= 3.0, proc.stdout[-2000:] + proc.stderr[-1000:]
    print(proc.stdout.strip().splitlines()[-1])
